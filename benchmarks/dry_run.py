"""Benchmark the paper configuration's dry run against Snakemake's own start-up.

Times `snakemake --configfile config/paper.yaml -n` (the command README shows, offline) and, in
the same run, a one-rule Snakefile's dry run: the ratio says how much the workflow adds to what
any Snakemake start costs on this machine. Each is the fastest of ``--repeats`` runs (the first
may read the packages from a cold disk). Run from the repo root:

    python benchmarks/dry_run.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fastest(argv: list[str], cwd: Path, repeats: int) -> tuple[float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    best, out = float("inf"), ""
    for _ in range(repeats):
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", *argv],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        best = min(best, time.monotonic() - t0)
        out = proc.stdout
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/dry_run.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Snakefile").write_text("rule all:\n    output: 'x'\n    shell: 'touch x'\n")
        startup, _ = fastest(["-n", "--quiet", "rules"], Path(tmp), args.repeats)
    paper, out = fastest(
        ["--configfile", "config/paper.yaml", "-n", "--quiet", "rules"], REPO, args.repeats
    )
    jobs = int(re.search(r"^total\s+(\d+)", out, flags=re.MULTILINE)[1])
    result = {
        "paper_jobs": jobs,
        "paper_seconds": round(paper, 3),
        "one_rule_seconds": round(startup, 3),
        "ratio": round(paper / startup, 2),
        "ms_per_job_over_startup": round(1000 * (paper - startup) / jobs, 2),
    }
    print(
        f"paper dry run: {jobs} jobs in {paper:.2f} s; a one-rule Snakefile: {startup:.2f} s; "
        f"ratio {result['ratio']}; {result['ms_per_job_over_startup']} ms per job above start-up"
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
