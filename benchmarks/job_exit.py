"""Benchmark the end of a model job: Python's normal exit against :func:`dicewf.jobs.exit_now`.

A job process imports what a job of the kind imports (``vllm``: vLLM's ``LLM`` with torch and
transformers, as the sample, evaluation and judge jobs; ``trl``: TRL's ``DPOTrainer``, as the
train, score and ref_logps jobs), times its imports, and ends either normally or with
``exit_now()``. The benchmark times each process from start to end; runs alternate (normal,
exit_now, normal, ...) so drift in the machine's load hits both, and each figure is the fastest
of its runs. The teardown is the normal process's time after its imports less the exit_now
process's. Run from the repo root:

    python benchmarks/job_exit.py
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
sys.path.insert(0, str(SCRIPTS))

from dicewf.io import write_json

OUT = Path(__file__).resolve().parent / "results" / "job_exit.json"
IMPORTS = {"vllm": "from vllm import LLM", "trl": "from trl import DPOTrainer"}
JOB = """
import sys, time
start = time.perf_counter()
{imports}
import torch
torch.ones(1)
print(time.perf_counter() - start, flush=True)
if sys.argv[1] == "exit_now":
    from dicewf import jobs
    jobs.exit_now()
"""


def run(kind: str, ending: str) -> tuple[float, float]:
    """(seconds from start to end, seconds of imports) of one job process."""
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS), "HF_HUB_OFFLINE": "1"}
    code = JOB.format(imports=IMPORTS[kind])
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, ending], env=env, capture_output=True, text=True, check=True
    )
    total = time.perf_counter() - start
    return total, float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per kind and ending")
    parser.add_argument("--kinds", nargs="+", choices=list(IMPORTS), default=list(IMPORTS))
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()

    load_before = os.getloadavg()[0]
    result: dict = {"kinds": {}}
    for kind in opts.kinds:
        runs: dict[str, list[list[float]]] = {"normal": [], "exit_now": []}
        for _ in range(opts.repeats):
            for ending, rows in runs.items():
                rows.append(list(run(kind, ending)))
        best = {ending: min(r[0] for r in rows) for ending, rows in runs.items()}
        after_imports = {
            ending: min(total - imports for total, imports in rows) for ending, rows in runs.items()
        }
        result["kinds"][kind] = {
            "seconds": best,
            "seconds_after_imports": after_imports,
            "teardown_seconds": after_imports["normal"] - after_imports["exit_now"],
            "ratio_exit_now_to_normal": best["exit_now"] / best["normal"],
            "runs": runs,
        }
    result["machine"] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m_before": load_before,
        "load_average_1m_after": os.getloadavg()[0],
    }
    write_json(result, opts.out)
    print(f"{'job':<6} {'normal s':>9} {'exit_now s':>11} {'teardown s':>11} {'ratio':>6}")
    for kind, r in result["kinds"].items():
        print(
            f"{kind:<6} {r['seconds']['normal']:>9.2f} {r['seconds']['exit_now']:>11.2f}"
            f" {r['teardown_seconds']:>11.2f} {r['ratio_exit_now_to_normal']:>6.2f}"
        )
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
