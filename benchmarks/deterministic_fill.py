"""Benchmark a toy DPO step under deterministic algorithms with and without torch's NaN fill.

With ``torch.use_deterministic_algorithms(True)`` torch by default fills the memory of every new
tensor (``torch.empty``) with NaN (``torch.utils.deterministic.fill_uninitialized_memory``).
TRL's fused log-prob head allocates a buffer of up to 4,096 tokens x 32,768 vocabulary columns on
every forward and backward pass, whatever the model's vocabulary, so on a CPU the fill is a large
part of a small model's step. :func:`dicewf.jobs.deterministic` turns it off; this measures what
that saves and checks that the trained weights are the same bits either way.

Both modes run :func:`dicewf.training.train_dpo` as a ``train`` job of the default config does:
deterministic algorithms on, one thread, the toy Llama of config.yaml's shape, 512 pairs of the
default toy world's D_offline with their reference log-probs filled (so no reference model runs),
batch 32. Runs alternate (fill, no fill, fill, ...) so drift in the machine's load hits both;
each mode's time per step is the fastest of its runs (TRL's ``train_runtime`` over
``max_steps``). Run from the repo root:

    python benchmarks/deterministic_fill.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from dicewf import jobs, reflogps, toyworld
from dicewf.io import write_json
from ref_reuse import seconds_per_step
from safetensors.torch import load_file
from scoring_throughput import build_toy_model  # the toy Llama of config.yaml's shape

OUT = Path(__file__).resolve().parent / "results" / "deterministic_fill.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a toy job's 1)")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()

    load_before = os.getloadavg()[0]
    jobs.set_threads(opts.threads)
    world = toyworld.build_world(toyworld.WorldSpec(seed=0))
    args = {
        "beta": 0.1,
        "learning_rate": 5e-5,
        "max_steps": opts.steps,
        "per_device_train_batch_size": 32,
        "lr_scheduler_type": "constant",
        "loss_type": "sigmoid",
        "logging_steps": opts.steps,
        "disable_tqdm": True,
    }
    runs: dict[str, list[float]] = {"fill": [], "no_fill": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_toy_model(
            list(toyworld.tasks_from_frame(world["train_prompts"]).values()), tmp
        )
        pairs = reflogps.fill(world["offline"].head(512).reset_index(drop=True), model, model)
        jobs.deterministic()  # turns the fill off; each run below sets it as its mode says
        weights = {}
        for i in range(opts.repeats):
            for mode, times in runs.items():
                torch.utils.deterministic.fill_uninitialized_memory = mode == "fill"
                out = tmp / f"{mode}{i}"
                times.append(seconds_per_step(model, pairs, args, out))
                weights[mode] = load_file(out / "model.safetensors")
    same_bits = weights["fill"].keys() == weights["no_fill"].keys() and all(
        torch.equal(weights["fill"][k], weights["no_fill"][k]) for k in weights["fill"]
    )
    fill, no_fill = min(runs["fill"]), min(runs["no_fill"])
    result = {
        "steps": opts.steps,
        "batch": args["per_device_train_batch_size"],
        "pairs": len(pairs),
        "seconds_per_step": {
            "fill": fill,
            "no_fill": no_fill,
            "ratio_no_fill_to_fill": no_fill / fill,
        },
        "runs": runs,
        "weights_same_bits": same_bits,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1m_before": load_before,
            "load_average_1m_after": os.getloadavg()[0],
        },
    }
    write_json(result, opts.out)
    print(f"{'mode':<8} {'s/step':>8}")
    for mode, seconds in (("fill", fill), ("no fill", no_fill)):
        print(f"{mode:<8} {seconds:>8.4f}")
    print(f"no fill / fill: time {no_fill / fill:.3f}; weights the same bits: {same_bits}")
    print(f"wrote {opts.out}")
    if not same_bits:
        sys.exit("the weights differ with and without the fill")


if __name__ == "__main__":
    main()
