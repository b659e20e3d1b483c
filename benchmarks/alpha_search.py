"""Benchmark the alpha* searches (exact, gp, grid) on scores with a planted length bias.

Each prompt gets ``--responses`` responses whose log-ratio (log pi - log pi_ref) is
``quality + bias * len_chars`` and whose reward is ``beta * logratio``, so the unshaped pairs
prefer long responses and alpha* on the log-ratio scale is close to ``bias`` (the paper's 0.023
by default). The searches run with config/paper.yaml's own ``defaults.alpha`` block (bounds,
grid_step, n_calls), through dicewf.alpha.run_search as the workflow does. Run from the repo root:

    python benchmarks/alpha_search.py --prompts 3000 --responses 16 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

from dicewf.alpha import run_search
from dicewf.io import write_json


def planted_scores(
    n_prompts: int, n_responses: int, bias: float, beta: float, seed: int
) -> pd.DataFrame:
    """Implicit-reward scores: prompt-specific typical lengths, log-ratios that favour length."""
    rng = np.random.default_rng(seed)
    typical = rng.lognormal(np.log(1200.0), 0.5, size=(n_prompts, 1))
    len_chars = np.maximum(1, rng.normal(typical, 0.3 * typical, (n_prompts, n_responses)))
    len_chars = len_chars.round().astype(np.int64)
    logratio = rng.normal(0.0, 5.0, size=(n_prompts, n_responses)) + bias * len_chars
    ids = np.array([f"p{i:06d}" for i in range(n_prompts)], dtype=object)
    return pd.DataFrame(
        {
            "prompt_id": np.repeat(ids, n_responses),
            "prompt": np.repeat(ids, n_responses),
            "sample_idx": np.tile(np.arange(n_responses), n_prompts),
            "response": "",
            "logratio": logratio.ravel(),
            "beta": beta,
            "reward": beta * logratio.ravel(),
            "len_chars": len_chars.ravel(),
            "len_tokens": (len_chars // 4).ravel(),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3000)
    parser.add_argument("--responses", type=int, default=16)
    parser.add_argument("--bias", type=float, default=0.023, help="log-ratio per character")
    parser.add_argument("--beta", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--gp-seeds", type=int, default=4, help="gp runs, seeds 0..N-1")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "paper.yaml")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/alpha_search.json"))
    args = parser.parse_args()

    block = yaml.safe_load(args.config.read_text())["defaults"]["alpha"]
    scores = planted_scores(args.prompts, args.responses, args.bias, args.beta, args.seed)
    gap0 = r_alpha0(scores, block)
    runs = {"exact": {"method": "exact"}, "grid": {"method": "grid"}}
    runs.update({f"gp_seed{s}": {"method": "gp", "seed": s} for s in range(args.gp_seeds)})
    results = {}
    for name, override in runs.items():
        r = run_search(
            scores, {**block, **override, "fixed": None, "scale": 1.0}, landscape_points=2
        ).result
        results[name] = {
            k: r[k]
            for k in (
                "method",
                "alpha",
                "alpha_reward",
                "objective",
                "mean_len_diff",
                "seconds",
                "n_evaluations",
            )
        }
        results[name]["alpha_error"] = r["alpha"] - args.bias
    exact = results["exact"]
    for r in results.values():
        r["objective_ratio"] = r["objective"] / exact["objective"] if exact["objective"] else None
        r["time_ratio"] = r["seconds"] / exact["seconds"]

    print(
        f"{args.prompts} prompts x {args.responses} responses, planted bias {args.bias} "
        f"log-ratio per character (beta {args.beta}); {args.config.name} alpha: bounds "
        f"{block['bounds']}, grid_step {block['grid_step']}, n_calls {block['n_calls']}; "
        f"mean |y_w| - |y_l| at alpha = 0: {gap0:.1f}"
    )
    print(
        f"{'run':<9} {'alpha':>9} {'alpha err':>10} {'len gap':>8} {'obj ratio':>10} "
        f"{'seconds':>8} {'time ratio':>10} {'evals':>6}"
    )
    for name, r in results.items():
        ratio = "n/a" if r["objective_ratio"] is None else f"{r['objective_ratio']:.1f}"
        print(
            f"{name:<9} {r['alpha']:>9.6f} {r['alpha_error']:>+10.6f} "
            f"{r['mean_len_diff']:>+8.2f} {ratio:>10} {r['seconds']:>8.3f} "
            f"{r['time_ratio']:>10.1f} {r['n_evaluations']:>6}"
        )

    write_json(
        {
            "prompts": args.prompts,
            "responses": args.responses,
            "seed": args.seed,
            "planted_bias_logratio": args.bias,
            "beta": args.beta,
            "config": str(args.config.relative_to(REPO)),
            "alpha_block": block,
            "mean_len_diff_alpha0": gap0,
            "runs": results,
        },
        args.out,
    )
    print(f"wrote {args.out}")


def r_alpha0(scores: pd.DataFrame, block: dict) -> float:
    """Mean |y_w| - |y_l| of the unshaped pairs D(0)."""
    out = run_search(scores, {**block, "fixed": 0.0, "scale": 1.0}, landscape_points=2)
    return out.result["mean_len_diff"]


if __name__ == "__main__":
    main()
