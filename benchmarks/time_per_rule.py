"""Where a finished run's time went: wall time per rule (jobs, sum, mean, max) and the critical
path, read from Snakemake's metadata records (:mod:`dicewf.jobtimes`). Run from the repo root
after a run from a clean state (``make clean && make run``):

    python benchmarks/time_per_rule.py                 # the run in this folder
    python benchmarks/time_per_rule.py --top 8 --out benchmarks/results/time_per_rule.json
    python benchmarks/time_per_rule.py --target results/tables/table1.md --cores 2

With ``--target`` (repeatable) it also prints what building those files alone from a clean state
took in the run: the jobs upstream of them, their summed time, their critical path and the least
wall time that ``--cores`` cores allow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from dicewf import jobtimes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metadata", type=Path, default=Path(".snakemake/metadata"))
    parser.add_argument("--top", type=int, default=None, help="rules to print (default: all)")
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    parser.add_argument(
        "--target", action="append", default=[], help="an output; what it alone needed"
    )
    parser.add_argument("--cores", type=int, default=2, help="for --target's least wall time")
    args = parser.parse_args(argv)
    jobs = jobtimes.jobs_from_records(jobtimes.read_records(args.metadata))
    run = jobtimes.summary(jobs)
    print(
        f"{run['jobs']} jobs in {run['wall_s']:.0f} s of wall time; {run['job_time_s']:.0f} s "
        f"of job time (x{run['parallelism']:.2f} in parallel); critical path "
        f"{run['critical_path_s']:.0f} s ({run['critical_path_s'] / run['wall_s']:.0%} of wall)"
    )
    print(f"\n{'rule':<24} {'jobs':>5} {'sum s':>8} {'share':>6} {'mean s':>7} {'max s':>7}")
    for r in run["per_rule"][: args.top]:
        share = r["total"] / run["job_time_s"]
        print(
            f"{r['rule']:<24} {r['jobs']:>5} {r['total']:>8.0f} {share:>6.1%} "
            f"{r['mean']:>7.1f} {r['max']:>7.1f}"
        )
    rep = run["replicates"]
    if rep["jobs"]:
        print(
            f"\nreplicates {', '.join(map(str, rep['replicates']))}: {rep['jobs']} jobs, "
            f"{rep['job_time_s']:.0f} s of job time ({rep['share']:.0%} of all; about "
            f"{rep['job_time_s'] / run['parallelism'] / 60:.0f} min of wall at this run's "
            "parallelism)"
        )
    print("\ncritical path:")
    for step in run["critical_path"]:
        print(f"  {step['seconds']:>7.1f} s  {step['rule']:<20} {step['output']}")
    if args.target:
        cost = jobtimes.target_cost(jobs, args.target, args.cores)
        print(
            f"\n{', '.join(args.target)} alone: {cost['jobs']} jobs, {cost['job_time_s']:.0f} s "
            f"of job time, critical path {cost['critical_path_s']:.0f} s; at least "
            f"{cost['least_wall_s'] / 60:.1f} min on {cost['cores']} cores"
        )
        run["targets"] = {"targets": args.target, **cost}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(run, indent=2) + "\n")


if __name__ == "__main__":
    main()
