"""Benchmark a local job of the workflow as a `script:` job against the same job as a `run:` block.

Snakemake's local executor runs a rule's `run:` block in a new Snakemake process, which parses
the whole workflow (config validation and every experiment's expansion included) before it runs
the block; a `script:` job is one Python process that runs the script. The `experiment_config`
and `train_args` rules (150 of the default run's 672 jobs) are `script:` jobs for this reason.

In a scratch copy of the repository (no results), this times `snakemake --cores 2` on N of the
default config's `train_args` files (the rule as it is) and on the same N settings written by a
copy of the rule with the `run:` block it had before, each less the start-up of the same command
when its targets are already there (Snakemake parses the workflow and builds the DAG, then has
nothing to do). Each figure is the fastest of ``--repeats`` runs. Run from the repo root:

    python benchmarks/local_rules.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import yaml
from dry_run import fastest  # python -m snakemake, offline, timed

REPO = Path(__file__).resolve().parents[1]
RUN_RULE = """
include: "Snakefile"


rule settings_by_run_block:
    output:
        "bench/run/{exp}/iter{iter}/train_args.json",
    localrule: True
    params:
        settings=lambda w: xp(w)["train"],
    run:
        from dicewf.io import write_settings

        write_settings(params.settings, output[0])
"""


def seconds(argv: list[str], cwd: Path) -> float:
    """One run's wall time (each run changes what the next one finds, so no repeats here)."""
    return fastest(argv, cwd, repeats=1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="local jobs of each kind")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/local_rules.json")
    opts = parser.parse_args()

    experiments = list(yaml.safe_load((REPO / "config.yaml").read_text())["experiments"])
    chosen = experiments[: opts.jobs]
    targets = {
        "script": [f"results/{e}/iter1/train_args.json" for e in chosen],
        "run": [f"bench/run/{e}/iter1/train_args.json" for e in chosen],
    }
    best: dict[str, dict[str, float]] = {k: {"with_jobs": float("inf")} for k in targets}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        skip = shutil.ignore_patterns(".git", ".venv", "results", "logs", ".snakemake", "*.whl")
        shutil.copytree(REPO, work, ignore=skip)
        (work / "bench.smk").write_text(RUN_RULE)
        for _ in range(opts.repeats):
            for kind, files in targets.items():
                for f in files:
                    (work / f).unlink(missing_ok=True)
                argv = ["-s", "bench.smk", "--cores", "2", *files]
                best[kind]["with_jobs"] = min(best[kind]["with_jobs"], seconds(argv, work))
                best[kind]["start_up"] = min(
                    best[kind].get("start_up", float("inf")), seconds(argv, work)
                )
    per_job = {k: (v["with_jobs"] - v["start_up"]) / len(chosen) for k, v in best.items()}
    result = {
        "jobs": len(chosen),
        "seconds": best,
        "seconds_per_job": per_job,
        "ratio_script_to_run": per_job["script"] / per_job["run"],
    }
    print(f"{'job':<7} {'with jobs s':>12} {'start-up s':>11} {'per job s':>10}")
    for kind, v in best.items():
        print(f"{kind:<7} {v['with_jobs']:>12.2f} {v['start_up']:>11.2f} {per_job[kind]:>10.2f}")
    print(f"script / run per job: {result['ratio_script_to_run']:.3f} ({len(chosen)} jobs each)")
    opts.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
