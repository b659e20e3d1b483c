"""Benchmark implicit-reward scoring: token-budget batching against one sequence per forward pass,
and the scoring paths (the former full log-softmax, the response-positions-only one, vLLM).

Both batching modes call ``dicewf.scoring.sequence_logprobs``; one sequence per forward pass is
the same call with ``max_tokens_per_batch=1`` (every sequence is longer than the budget, so each
gets a batch of its own). The paths are compared at one budget (``--compare-budget``): "old" is a
copy of the former implementation kept here for comparison only (full logits, float32
log-softmax over every position), "new" is ``sequence_logprobs``, "vllm" is
``dicewf.vllm_scoring.sequence_logprobs`` with the engine arguments of config.yaml's
``sampler.vllm`` (or ``--vllm-engine``), timed without its engine start. They are compared by
the model and by a copy whose vocabulary is widened to ``--wide-vocab`` rows (Mistral's 32,000;
the toy tokenizer's ids stay below 600), where the logits take a real model's share of memory
(the toy vocabulary of 600 is small beside the layers' activations). Peak memory is what the
scoring call adds to what was allocated before it: on CUDA ``torch.cuda.max_memory_allocated``;
on Linux CPUs the peak resident set (VmHWM, reset through /proc/self/clear_refs) with glibc's
mmap threshold lowered to 64 KiB during that pass, so a freed tensor leaves the resident set at
once (measured in a separate, untimed pass). The vLLM path's KV cache, allocated at engine start,
is not in its figure. The sequences are toy-world prompts with candidate responses in every style,
right and wrong, scored by a freshly initialised toy Llama of config.yaml's ``toy_model`` shape,
or by an existing model folder given with ``--model``; with ``--texts dice`` they are DICE-shaped
instead (a prompt of about 200 tokens, a response of 300 to 1,500: ``dice_shaped.py``, which
also builds a Llama-3.2-1B-shaped model; ``gpu_figures.sh`` runs both on a GPU). Run from the
repo root:

    python benchmarks/scoring_throughput.py
    python benchmarks/scoring_throughput.py --model /path/to/1b --dtype bfloat16 --attn sdpa \
        --vllm-engine '{"dtype": "bfloat16", "gpu_memory_utilization": 0.5}'

Throughput counts the real (non-pad) tokens of the sequences. Padding overhead is padded tokens /
real tokens. MFU (CUDA only) is achieved FLOP/s over ``--peak-tflops``, with 2 * n_params FLOPs
per real token for a forward pass.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")  # keep scoring progress bars out of the table

import dice_shaped
import torch
from dicewf import toymodel, toyworld, vllm_scoring
from dicewf.io import write_json
from dicewf.scoring import (
    Encoded,
    encode,
    load_model,
    sequence_logprobs,
    token_budget_batches,
)
from transformers import AutoTokenizer

ONE_PER_FORWARD = 1
ROOT = Path(__file__).resolve().parents[1]
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@dataclass(frozen=True)
class Row:
    """The measurements of one batching mode."""

    mode: str
    max_tokens_per_batch: int
    n_batches: int
    seconds: float
    real_tokens: int
    padded_tokens: int
    tokens_per_s: float
    padding_overhead: float
    speedup: float
    max_abs_diff: float
    agrees: bool
    achieved_tflops: float
    mfu: float | None


@dataclass(frozen=True)
class PathRow:
    """The measurements of one scoring path at the comparison budget."""

    path: str
    vocab: int
    seconds: float
    tokens_per_s: float
    peak_mib: float | None
    speedup_vs_old: float
    memory_vs_old: float | None
    max_abs_diff_vs_old: float
    agrees: bool


def old_response_logprobs(logits, input_ids, response_mask):
    """The former ``dicewf.scoring.response_logprobs``, for comparison only: log_softmax of the
    whole (B, T, V) logits in float32."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:]
    tok_logp = torch.gather(logp, 2, target.unsqueeze(-1)).squeeze(-1)
    return (tok_logp * response_mask[:, 1:].to(tok_logp.dtype)).sum(dim=-1)


def old_sequence_logprobs(
    model, encoded: list[Encoded], *, max_tokens_per_batch: int, pad_token_id: int
) -> np.ndarray:
    """The former ``dicewf.scoring.sequence_logprobs`` (full logits), for comparison only."""
    device = next(model.parameters()).device
    lengths = [len(e.input_ids) for e in encoded]
    result = np.zeros(len(encoded), dtype=np.float64)
    with torch.inference_mode():
        for batch in token_budget_batches(lengths, max_tokens_per_batch):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                e = encoded[i]
                n = len(e.input_ids)
                ids[row, :n] = torch.tensor(e.input_ids)
                attn[row, :n] = 1
                mask[row, e.response_start : n] = 1
            ids, attn, mask = ids.to(device), attn.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=attn).logits
            result[batch] = old_response_logprobs(logits, ids, mask).double().cpu().numpy()
    return result


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_bytes(run, device: torch.device) -> float | None:
    """Bytes ``run()`` allocates at its peak above what was allocated before it (see the module
    docstring), or None where neither CUDA nor Linux's /proc gives it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    if not Path("/proc/self/clear_refs").exists():
        return None
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    libc.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _proc_status_kib("VmRSS")
    run()
    return 1024.0 * (_proc_status_kib("VmHWM") - before)


def best_seconds(run, device: torch.device, repeats: int) -> tuple[float, np.ndarray]:
    """Best wall seconds of ``repeats`` calls of ``run()`` and the last result."""
    best, out = float("inf"), np.empty(0)
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def toy_tasks(seed: int) -> list[toyworld.Task]:
    """The train tasks of a default-sized toy world drawn from ``seed``."""
    world = toyworld.build_world(toyworld.WorldSpec(seed=seed))
    return list(toyworld.tasks_from_frame(world["train_prompts"]).values())


def draw_pairs(tasks: list[toyworld.Task], n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` (prompt, response) pairs: a random task, style and a right or wrong answer each."""
    rng = np.random.default_rng(seed)
    prompts, responses = [], []
    for _ in range(n):
        task = tasks[int(rng.integers(len(tasks)))]
        style = toyworld.STYLES[int(rng.integers(len(toyworld.STYLES)))]
        answer = task.answer if rng.random() < 0.5 else toyworld.wrong_answer(task, rng)
        prompts.append(task.prompt)
        responses.append(toyworld.render(task, answer, style))
    return prompts, responses


def build_toy_model(tasks: list[toyworld.Task], folder: Path) -> Path:
    """Train a tokenizer and initialise the toy Llama (config.yaml's shape) under ``folder``."""
    toymodel.train_tokenizer(toyworld.corpus(tasks, 0), 600, folder / "tok")
    toymodel.init_model(
        folder / "tok",
        folder / "model",
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=384,
        max_position_embeddings=256,
        seed=0,
    )
    return folder / "model"


def padded_tokens(lengths: list[int], budget: int) -> int:
    """Pad tokens added when ``lengths`` are batched under ``budget`` as the scorer does."""
    batches = token_budget_batches(lengths, budget)
    return sum(max(lengths[i] for i in b) * len(b) for b in batches) - sum(lengths)


def timed_logprobs(
    model: torch.nn.Module, encoded: list[Encoded], budget: int, pad_id: int, repeats: int
) -> tuple[float, np.ndarray]:
    """Best wall seconds of ``repeats`` scoring runs and their log-probs, after a warm-up batch."""
    device = next(model.parameters()).device
    lengths = [len(e.input_ids) for e in encoded]
    first = token_budget_batches(lengths, budget)[0]
    sequence_logprobs(
        model, [encoded[i] for i in first], max_tokens_per_batch=budget, pad_token_id=pad_id
    )
    best = float("inf")
    logps = np.empty(0)
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        logps = sequence_logprobs(model, encoded, max_tokens_per_batch=budget, pad_token_id=pad_id)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, logps


def machine_info(device: torch.device, load_before: float) -> dict[str, object]:
    """Where the benchmark ran; the load averages show whether other work skewed the timings."""
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "load_average_1m_before": load_before,
        "load_average_1m_after": os.getloadavg()[0],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parse_budgets(text: str) -> list[int]:
    """Comma-separated token budgets; one sequence per forward (1) is always measured first."""
    budgets = sorted({int(b) for b in text.split(",") if b.strip()})
    if not budgets or budgets[0] < 1:
        raise argparse.ArgumentTypeError(f"budgets must be integers >= 1, got {text!r}")
    return budgets if budgets[0] == ONE_PER_FORWARD else [ONE_PER_FORWARD, *budgets]


def print_paths(rows: list[PathRow], budget: int) -> None:
    """The scoring paths at ``budget`` tokens a batch, with ratios to the old one."""
    print(
        f"\nscoring paths at {budget} tokens a batch (ratios: against old at the same vocabulary)"
    )
    print(
        f"{'path':<6} {'vocab':>7} {'seconds':>8} {'tokens/s':>10} {'peak MiB':>9} "
        f"{'speed-up':>9} {'memory':>7} {'max|dlogp|':>11}"
    )
    for r in rows:
        peak = "n/a" if r.peak_mib is None else f"{r.peak_mib:.1f}"
        mem = "n/a" if r.memory_vs_old is None else f"{r.memory_vs_old:.3f}"
        print(
            f"{r.path:<6} {r.vocab:>7} {r.seconds:>8.2f} {r.tokens_per_s:>10.0f} {peak:>9} "
            f"{r.speedup_vs_old:>8.2f}x {mem:>7} {r.max_abs_diff_vs_old:>11.2e}"
        )


def widened(model_dir: Path, vocab: int, out: Path) -> Path:
    """The model of ``model_dir`` with its embedding and head widened to ``vocab`` rows, saved
    under ``out`` with its tokenizer: the logits get a real model's width (Mistral's 32,000,
    Llama-3's 128,256) while the toy tokenizer's ids stay what they were."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    model.resize_token_embeddings(vocab, mean_resizing=False)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def torch_paths(model, encoded, budget, pad_id, repeats) -> tuple[dict, dict]:
    """{path: (best seconds, log-probs)} and {path: peak bytes} of the old and new paths:
    the timings first, then the untimed memory passes (they change malloc's settings)."""
    device = next(model.parameters()).device
    runs = {
        "old": partial(
            old_sequence_logprobs, model, encoded, max_tokens_per_batch=budget, pad_token_id=pad_id
        ),
        "new": partial(
            sequence_logprobs, model, encoded, max_tokens_per_batch=budget, pad_token_id=pad_id
        ),
    }
    first = token_budget_batches([len(e.input_ids) for e in encoded], budget)[0]
    measured = {}
    for name, run in runs.items():
        sequence_logprobs(  # warm-up
            model, [encoded[i] for i in first], max_tokens_per_batch=budget, pad_token_id=pad_id
        )
        measured[name] = best_seconds(run, device, repeats)
    return measured, {name: peak_bytes(run, device) for name, run in runs.items()}


def vllm_path(model_dir, encoded, engine, device, repeats) -> tuple[tuple, float | None]:
    """(best seconds, log-probs) and peak bytes of the vLLM path; the engine start is not timed."""
    llm = vllm_scoring.start(model_dir, engine)
    try:
        run = partial(vllm_scoring.scored_with, llm, encoded)
        vllm_scoring.scored_with(llm, encoded[:8])  # warm-up
        return best_seconds(run, device, repeats), peak_bytes(run, device)
    finally:
        vllm_scoring.shutdown(llm)
        del llm
        vllm_scoring.free_memory()


def path_rows(vocab, measured, peaks, real, atol) -> list[PathRow]:
    """Rows of one vocabulary's paths, with ratios to its old path."""
    old_s, old_lp = measured["old"]
    rows = []
    for name, (seconds, logps) in measured.items():
        diff = float(np.max(np.abs(logps - old_lp)))
        peak = peaks[name]
        rows.append(
            PathRow(
                path=name,
                vocab=vocab,
                seconds=seconds,
                tokens_per_s=real / seconds,
                peak_mib=None if peak is None else peak / 2**20,
                speedup_vs_old=old_s / seconds,
                memory_vs_old=None if peak is None or not peaks["old"] else peak / peaks["old"],
                max_abs_diff_vs_old=diff,
                agrees=diff <= atol,
            )
        )
    return rows


def compare_paths(
    model,
    model_dir: Path,
    wide_dir: Path | None,
    encoded: list[Encoded],
    args: argparse.Namespace,
    pad_id: int,
    engine: dict | None,
) -> list[PathRow]:
    """Old, new and (with ``engine``) vLLM scoring of ``encoded`` at ``args.compare_budget``, by
    the model and by its widened copy ``wide_dir``; vLLM last (its CPU build binds threads)."""
    device = next(model.parameters()).device
    real = sum(len(e.input_ids) for e in encoded)
    models = {model.get_output_embeddings().out_features: (model, model_dir)}
    if wide_dir is not None:
        wide = load_model(wide_dir, dtype=args.dtype, attn_implementation=args.attn)
        models[wide.get_output_embeddings().out_features] = (wide, wide_dir)
    results = {}
    for vocab, (m, _) in models.items():
        results[vocab] = torch_paths(m, encoded, args.compare_budget, pad_id, args.repeats)
    models = {vocab: folder for vocab, (_, folder) in models.items()}
    m = wide = None  # the wide model is freed before the vLLM engines start
    if engine is not None:
        for vocab, folder in models.items():
            measured, peaks = results[vocab]
            measured["vllm"], peaks["vllm"] = vllm_path(
                folder, encoded, engine, device, args.repeats
            )
    return [
        row
        for vocab, (measured, peaks) in results.items()
        for row in path_rows(vocab, measured, peaks, real, args.atol)
    ]


def print_table(rows: list[Row]) -> None:
    """The rows as a fixed-width table."""
    print(
        f"{'mode':<16} {'budget':>7} {'batches':>7} {'seconds':>8} {'tokens/s':>10} "
        f"{'pad ovh':>8} {'speed-up':>8} {'max|dlogp|':>11} {'MFU':>7}"
    )
    for r in rows:
        mfu = "n/a" if r.mfu is None else f"{100 * r.mfu:.2f}%"
        print(
            f"{r.mode:<16} {r.max_tokens_per_batch:>7} {r.n_batches:>7} {r.seconds:>8.2f} "
            f"{r.tokens_per_s:>10.0f} {r.padding_overhead:>8.3f} {r.speedup:>7.1f}x "
            f"{r.max_abs_diff:>11.2e} {mfu:>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="existing model folder (default: build the toy model)",
    )
    parser.add_argument("--dtype", default="auto", help="torch dtype name, e.g. bfloat16")
    parser.add_argument("--attn", default=None, help="attn_implementation, e.g. sdpa")
    parser.add_argument("--n-sequences", type=int, default=2000)
    parser.add_argument(
        "--budgets",
        type=parse_budgets,
        default=parse_budgets("1,2048,8192,32768"),
        help="comma-separated tokens per batch; 1 = one sequence per forward",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--atol",
        type=float,
        default=1e-3,
        help="largest allowed |log-prob difference| from one-per-forward",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="accelerator peak for MFU (default: H100 bf16 dense)",
    )
    parser.add_argument(
        "--compare-budget",
        type=int,
        default=8192,
        help="tokens per batch at which the old, new and vLLM paths are compared",
    )
    parser.add_argument(
        "--vllm-engine",
        type=json.loads,
        default=None,
        help="vllm.LLM(...) arguments as JSON (default: config.yaml's sampler.vllm)",
    )
    parser.add_argument("--no-vllm", action="store_true", help="leave the vLLM path out")
    parser.add_argument(
        "--wide-vocab",
        type=int,
        default=32000,
        help="also compare the paths with the model's vocabulary widened to this size (0: not)",
    )
    parser.add_argument(
        "--texts",
        choices=("toy", "dice"),
        default="toy",
        help="toy-world prompts and responses, or DICE-shaped ones (benchmarks/dice_shaped.py)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/scoring_throughput.json")
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        benchmark(args, Path(tmp))


def vllm_engine(args: argparse.Namespace) -> dict | None:
    """The engine arguments of the vLLM path, or None when it is left out (or vllm is absent)."""
    if args.no_vllm:
        return None
    if importlib.util.find_spec("vllm") is None:
        print("vllm is not installed: the vLLM path is left out")
        return None
    if args.vllm_engine is not None:
        return dict(args.vllm_engine)
    return dict(yaml.safe_load((ROOT / "config.yaml").read_text())["sampler"]["vllm"])


def benchmark(args: argparse.Namespace, tmp: Path) -> None:
    """Build (or load) the model in ``tmp``, measure, print and write ``args.out``."""
    tasks = toy_tasks(args.seed)
    model_dir = args.model or build_toy_model(tasks, tmp)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if args.texts == "dice":
        prompts, drawn = dice_shaped.texts(tokenizer, args.n_sequences, seed=args.seed)
        responses = [r[0] for r in drawn]
    else:
        prompts, responses = draw_pairs(tasks, args.n_sequences, args.seed)
    model = load_model(model_dir, dtype=args.dtype, attn_implementation=args.attn)
    encoded = encode(tokenizer, prompts, responses)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    device = next(model.parameters()).device
    n_params = sum(p.numel() for p in model.parameters())
    lengths = [len(e.input_ids) for e in encoded]
    real = sum(lengths)

    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    baseline: tuple[float, np.ndarray] | None = None
    for budget in args.budgets:
        seconds, logps = timed_logprobs(model, encoded, budget, pad_id, args.repeats)
        if baseline is None:
            baseline = (seconds, logps)
        diff = float(np.max(np.abs(logps - baseline[1])))
        flops_per_s = 2.0 * n_params * real / seconds
        pad = padded_tokens(lengths, budget)
        rows.append(
            Row(
                mode="one-per-forward" if budget == ONE_PER_FORWARD else "token-budget",
                max_tokens_per_batch=budget,
                n_batches=len(token_budget_batches(lengths, budget)),
                seconds=seconds,
                real_tokens=real,
                padded_tokens=pad,
                tokens_per_s=real / seconds,
                padding_overhead=pad / real,
                speedup=baseline[0] / seconds,
                max_abs_diff=diff,
                agrees=diff <= args.atol,
                achieved_tflops=flops_per_s / 1e12,
                mfu=flops_per_s / (args.peak_tflops * 1e12) if device.type == "cuda" else None,
            )
        )

    engine = vllm_engine(args)
    wide_dir = widened(model_dir, args.wide_vocab, tmp / "wide") if args.wide_vocab else None
    paths = compare_paths(model, model_dir, wide_dir, encoded, args, pad_id, engine)

    machine = machine_info(device, load_before)
    print(
        f"{args.n_sequences} sequences, {real} tokens (mean {real / len(lengths):.1f}, "
        f"max {max(lengths)}); model {args.model or 'toy'} ({n_params:,} parameters, "
        f"{next(model.parameters()).dtype}) on {device}, {torch.get_num_threads()} threads, "
        f"load average {load_before:.2f} before, {machine['load_average_1m_after']:.2f} after"
    )
    print_table(rows)
    if device.type != "cuda":
        print("MFU: not applicable on CPU")
    print_paths(paths, args.compare_budget)

    write_json(
        {
            "machine": machine,
            "model": str(args.model) if args.model else "toy",
            "model_dtype": str(next(model.parameters()).dtype),
            "attn_implementation": args.attn,
            "n_params": n_params,
            "texts": args.texts,
            "n_sequences": args.n_sequences,
            "real_tokens": real,
            "max_length": max(lengths),
            "seed": args.seed,
            "repeats": args.repeats,
            "atol": args.atol,
            "peak_tflops": args.peak_tflops if device.type == "cuda" else None,
            "rows": [asdict(r) for r in rows],
            "compare_budget": args.compare_budget,
            "wide_vocab": args.wide_vocab,
            "vllm_engine": engine,
            "peak_memory": "torch.cuda.max_memory_allocated"
            if device.type == "cuda"
            else "VmHWM - VmRSS before, glibc mmap threshold 64 KiB",
            "paths": [asdict(r) for r in paths],
        },
        args.out,
    )
    print(f"wrote {args.out}")
    failed = [r.max_tokens_per_batch for r in rows if not r.agrees]
    if failed:
        sys.exit(
            f"log-probs differ from one-per-forward by more than {args.atol} at budgets {failed}"
        )
    differ = [r.path for r in paths if not r.agrees]
    if differ:
        sys.exit(f"log-probs of paths {differ} differ from the old path's by more than {args.atol}")


if __name__ == "__main__":
    main()
