"""Benchmark DPO training with reused reference log-probs against the live reference model.

Both modes run :func:`dicewf.training.train_dpo` on the same pairs with the same settings (the
toy config's train block, fewer steps); the reused mode gets the pairs with their reference
log-probs (:func:`dicewf.reflogps.fill`, the ``ref_logps`` job, timed too) and TRL runs no
reference model. Runs alternate (reused, live, reused, live, ...) so drift in the machine's load
hits both; each mode's time per step is the fastest of its runs (TRL's ``train_runtime`` over
``max_steps``). The pairs are a default-sized toy world's D_offline, the model a freshly
initialised toy Llama of config.yaml's ``toy_model`` shape, or an existing folder (``--model``).
Run from the repo root:

    python benchmarks/ref_reuse.py
    python benchmarks/ref_reuse.py --model /path/to/1b --pairs 256 --steps 10 --batch 4

``--texts dice`` trains on DICE-shaped pairs instead (``dice_shaped.py``: a prompt of about 200
tokens, two responses of 300 to 1,500), with ``--bf16`` and ``--gradient-checkpointing`` as the
paper config trains (``gpu_figures.sh`` runs it on a GPU with a Llama-3.2-1B-shaped model).

FLOPs per step are estimated as 2 x N x T for a forward pass and 6 x N x T for a forward and
backward pass, with N the parameters that take part in matrix products (all but the input
embedding) and T the real tokens of a step's chosen and rejected sequences (the mean over the
pairs x the batch size): the live reference adds 2 N T to the policy's 6 N T. On a GPU, MFU is
those FLOPs per second over ``--peak-tflops`` (gradient checkpointing's recomputed forward, 2 N T
more, is not counted: the usual convention).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dice_shaped
import numpy as np
import torch
from dicewf import reflogps, toyworld, training
from dicewf.io import write_json
from scoring_throughput import build_toy_model  # the toy Llama of config.yaml's shape
from transformers import AutoModelForCausalLM, AutoTokenizer

OUT = Path(__file__).resolve().parent / "results" / "ref_reuse.json"


def matmul_params(model_path: Path) -> int:
    """Parameters in matrix products: all but the input embedding (an untied LM head counts)."""
    model = AutoModelForCausalLM.from_pretrained(model_path)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embedding
    return total if tied else total - embedding.numel()


def tokens_per_pair(model_path: Path, pairs) -> float:
    """Mean real tokens of a pair's chosen and rejected sequences, as TRL tokenizes them."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    chosen, rejected = reflogps.encode_pairs(
        tokenizer, pairs["prompt"].tolist(), pairs["chosen"].tolist(), pairs["rejected"].tolist()
    )
    return float(np.mean([len(c.input_ids) + len(r.input_ids) for c, r in zip(chosen, rejected)]))


def seconds_per_step(model_path: Path, pairs, args: dict, out: Path) -> float:
    history = training.train_dpo(model_path, pairs, out, args, seed=0)
    runtime = next(e["train_runtime"] for e in history if "train_runtime" in e)
    return float(runtime) / args["max_steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the toy Llama)")
    parser.add_argument("--pairs", type=int, default=512, help="pairs to train on")
    parser.add_argument("--steps", type=int, default=20, help="training steps per run")
    parser.add_argument("--batch", type=int, default=32, help="per_device_train_batch_size")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode")
    parser.add_argument(
        "--texts",
        choices=("toy", "dice"),
        default="toy",
        help="the toy world's D_offline, or DICE-shaped pairs (benchmarks/dice_shaped.py)",
    )
    parser.add_argument("--bf16", action="store_true", help="DPOConfig bf16")
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="DPOConfig gradient_checkpointing"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="GPU peak for MFU (H100/H200 bf16 dense)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()

    load_before = os.getloadavg()[0]
    world = toyworld.build_world(toyworld.WorldSpec(seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = opts.model or build_toy_model(
            list(toyworld.tasks_from_frame(world["train_prompts"]).values()), tmp
        )
        if opts.texts == "dice":
            pairs = dice_shaped.pairs(AutoTokenizer.from_pretrained(model), opts.pairs, seed=0)
        else:
            pairs = world["offline"].head(opts.pairs).reset_index(drop=True)
        start = time.perf_counter()
        filled = reflogps.fill(pairs, model, model)
        fill_seconds = time.perf_counter() - start
        args = {
            "beta": 0.1,
            "learning_rate": 5e-5,
            "max_steps": opts.steps,
            "per_device_train_batch_size": opts.batch,
            "lr_scheduler_type": "constant",
            "loss_type": "sigmoid",
            "logging_steps": opts.steps,
            "disable_tqdm": True,
            "bf16": opts.bf16,
            "gradient_checkpointing": opts.gradient_checkpointing,
        }
        if opts.texts == "dice":  # config/paper.yaml's max_length: no pair (<= 1,750 tokens) cut
            args["max_length"] = 4096
        runs: dict[str, list[float]] = {"reused": [], "live": []}
        for i in range(opts.repeats):
            for mode, data in (("reused", filled), ("live", pairs)):
                runs[mode].append(seconds_per_step(model, data, args, tmp / f"{mode}{i}"))
        n_params = matmul_params(model)
        tokens = tokens_per_pair(model, pairs) * opts.batch

    reused, live = min(runs["reused"]), min(runs["live"])
    flops_reused = 6 * n_params * tokens
    flops_live = flops_reused + 2 * n_params * tokens
    cuda = torch.cuda.is_available()
    mfu = {
        mode: flops / seconds / (opts.peak_tflops * 1e12) if cuda else None
        for mode, flops, seconds in (("live", flops_live, live), ("reused", flops_reused, reused))
    }
    result = {
        "model": str(opts.model) if opts.model else "toy",
        "texts": opts.texts,
        "bf16": opts.bf16,
        "gradient_checkpointing": opts.gradient_checkpointing,
        "n_matmul_params": n_params,
        "pairs": len(pairs),
        "steps": opts.steps,
        "batch": opts.batch,
        "tokens_per_step": tokens,
        "seconds_per_step": {"live": live, "reused": reused, "ratio_reused_to_live": reused / live},
        "runs": runs,
        "flops_per_step": {
            "live": flops_live,
            "reused": flops_reused,
            "ratio_reused_to_live": flops_reused / flops_live,
        },
        "mfu": mfu,
        "peak_tflops": opts.peak_tflops if cuda else None,
        "ref_logps_job_seconds": fill_seconds,
        "seconds_saved_per_run": (live - reused) * opts.steps,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "load_average_1m_before": load_before,
            "load_average_1m_after": os.getloadavg()[0],
        },
    }
    write_json(result, opts.out)
    print(f"{'mode':<8} {'s/step':>8} {'GFLOP/step':>11} {'MFU':>7}")
    for mode, seconds, flops in (("live", live, flops_live), ("reused", reused, flops_reused)):
        shown = "n/a" if mfu[mode] is None else f"{100 * mfu[mode]:.1f}%"
        print(f"{mode:<8} {seconds:>8.4f} {flops / 1e9:>11.3f} {shown:>7}")
    print(
        f"reused / live: time {reused / live:.3f}, FLOPs {flops_reused / flops_live:.3f}; "
        f"the ref_logps pass over {len(pairs)} pairs took {fill_seconds:.2f} s, "
        f"{(live - reused) * opts.steps:.2f} s saved over {opts.steps} steps"
    )
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
