"""Where a scoring pass spends its GPU time, and what ``torch.compile`` of the model's body gives.

Scores DICE-shaped sequences (``dice_shaped.py``) with ``dicewf.scoring.sequence_logprobs`` at one
token budget, in one run: (1) eager, the best of ``--repeats`` passes; (2) the first
``--profile-batches`` batches under ``torch.profiler``, the kernels' time summed by kind (matrix
products, attention, the rest) against the wall time, so the gap (launches, host work) shows;
(3) with ``--compile``, the same passes with the body (``model.model``) compiled
(``torch.compile(dynamic=True)``; the first pass, compilation included, is reported apart),
log-probs checked against eager. MFU as in ``scoring_throughput.py``. Run from the repo root:

    python benchmarks/dice_shaped.py --out /tmp/llama-1b
    python benchmarks/scoring_profile.py --model /tmp/llama-1b --compile
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import dice_shaped
import numpy as np
import torch
from dicewf.io import write_json
from dicewf.scoring import encode, load_model, sequence_logprobs, token_budget_batches
from scoring_throughput import best_seconds, machine_info
from transformers import AutoTokenizer

KINDS = {  # substrings of kernel names, first match wins (sdpa's fmha kernels are cutlass ones)
    "attention": ("fmha", "flash", "attention", "efficient", "sdpa"),
    "matmul": ("gemm", "cutlass", "nvjet", "sm90_xmma", "cublas", "addmm", "mm"),
}


def kind(name: str) -> str:
    low = name.lower()
    return next((k for k, keys in KINDS.items() if any(s in low for s in keys)), "other")


def profile(run, device: torch.device) -> dict[str, object]:
    """Kernel time by kind and the top kernels of ``run()``, against its wall time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    rows = []
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0 and (not cuda or e.device_type.name == "CUDA"):
            rows.append((e.key, us / 1e6, e.count))
    if not cuda:  # on a CPU the operators, not kernels: leave the wrappers out of the sums
        rows = [r for r in rows if r[0].startswith("aten::")]
    by_kind: dict[str, float] = {}
    for name, seconds, _ in rows:
        by_kind[kind(name)] = by_kind.get(kind(name), 0.0) + seconds
    busy = sum(by_kind.values())
    top = sorted(rows, key=lambda r: -r[1])[:15]
    return {
        "wall_seconds": wall,
        "kernel_seconds": busy,
        "kernel_share_of_wall": busy / wall,
        "seconds_by_kind": by_kind,
        "share_by_kind": {k: v / busy for k, v in by_kind.items()},
        "top": [{"name": n[:120], "seconds": s, "calls": c} for n, s, c in top],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder")
    parser.add_argument("--n-sequences", type=int, default=384)
    parser.add_argument("--budget", type=int, default=32768, help="tokens a batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile-batches", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also time a compiled body")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scoring_profile.json"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts, drawn = dice_shaped.texts(tokenizer, args.n_sequences, seed=args.seed)
    encoded = encode(tokenizer, prompts, [r[0] for r in drawn])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = load_model(args.model, dtype="bfloat16", attn_implementation="sdpa")
    device = next(model.parameters()).device
    n_params = sum(p.numel() for p in model.parameters())
    real = sum(len(e.input_ids) for e in encoded)

    def score(subset=encoded):
        return sequence_logprobs(model, subset, max_tokens_per_batch=args.budget, pad_token_id=pad)

    def mfu(seconds: float) -> float | None:
        return (
            2 * n_params * real / seconds / (args.peak_tflops * 1e12)
            if device.type == "cuda"
            else None
        )

    score(encoded[:8])  # warm-up
    eager_s, eager_lp = best_seconds(score, device, args.repeats)
    result: dict[str, object] = {
        "model": str(args.model),
        "n_params": n_params,
        "n_sequences": len(encoded),
        "real_tokens": real,
        "budget": args.budget,
        "eager": {"seconds": eager_s, "tokens_per_s": real / eager_s, "mfu": mfu(eager_s)},
    }
    print(f"eager: {eager_s:.3f} s, {real / eager_s:,.0f} tokens/s, MFU {mfu(eager_s)}")

    lengths = [len(e.input_ids) for e in encoded]
    batches = token_budget_batches(lengths, args.budget)[: args.profile_batches]
    subset = [encoded[i] for b in batches for i in b]
    prof = profile(lambda: score(subset), device)
    result["profile"] = {"batches": len(batches), "sequences": len(subset), **prof}
    print(
        f"profile of {len(batches)} batches: kernels {prof['kernel_seconds']:.3f} s of "
        f"{prof['wall_seconds']:.3f} s wall; by kind "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in prof["share_by_kind"].items())
    )
    for row in prof["top"]:
        print(f"  {row['seconds'] * 1e3:9.2f} ms {row['calls']:6d}  {row['name']}")
    write_json(result, args.out)  # what is measured so far, should compilation fail

    if args.compile:
        model.model = torch.compile(model.model, dynamic=True)
        first, _ = best_seconds(score, device, 1)  # compilation included
        seconds, logps = best_seconds(score, device, args.repeats)
        diff = float(np.max(np.abs(logps - eager_lp)))
        result["compiled"] = {
            "first_pass_seconds": first,
            "seconds": seconds,
            "tokens_per_s": real / seconds,
            "mfu": mfu(seconds),
            "speedup_vs_eager": eager_s / seconds,
            "max_abs_diff_vs_eager": diff,
        }
        print(
            f"compiled: first pass {first:.1f} s, then {seconds:.3f} s "
            f"({eager_s / seconds:.2f}x eager), MFU {mfu(seconds)}, max |dlogp| {diff:.2e}"
        )
    result["machine"] = machine_info(device, load_before)
    write_json(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
