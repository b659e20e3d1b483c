"""Benchmark implicit-reward scoring: token-budget batching against one sequence per forward pass.

Both modes call ``dicewf.scoring.sequence_logprobs``; one sequence per forward pass is the same
call with ``max_tokens_per_batch=1`` (every sequence is longer than the budget, so each gets a
batch of its own). The sequences are toy-world prompts with candidate responses in every style,
right and wrong, scored by a freshly initialised toy Llama of config.yaml's ``toy_model`` shape,
or by an existing model folder given with ``--model``. Run from the repo root:

    python benchmarks/scoring_throughput.py
    python benchmarks/scoring_throughput.py --model /path/to/1b --dtype bfloat16 --attn sdpa

Throughput counts the real (non-pad) tokens of the sequences. Padding overhead is padded tokens /
real tokens. MFU (CUDA only) is achieved FLOP/s over ``--peak-tflops``, with 2 * n_params FLOPs
per real token for a forward pass.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")  # keep scoring progress bars out of the table

import torch
from dicewf import toymodel, toyworld
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/scoring_throughput.json")
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tasks = toy_tasks(args.seed)
    prompts, responses = draw_pairs(tasks, args.n_sequences, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_toy_model(tasks, Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
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

    write_json(
        {
            "machine": machine,
            "model": str(args.model) if args.model else "toy",
            "model_dtype": str(next(model.parameters()).dtype),
            "attn_implementation": args.attn,
            "n_params": n_params,
            "n_sequences": args.n_sequences,
            "real_tokens": real,
            "max_length": max(lengths),
            "seed": args.seed,
            "repeats": args.repeats,
            "atol": args.atol,
            "peak_tflops": args.peak_tflops if device.type == "cuda" else None,
            "rows": [asdict(r) for r in rows],
        },
        args.out,
    )
    print(f"wrote {args.out}")
    failed = [r.max_tokens_per_batch for r in rows if not r.agrees]
    if failed:
        sys.exit(
            f"log-probs differ from one-per-forward by more than {args.atol} at budgets {failed}"
        )


if __name__ == "__main__":
    main()
