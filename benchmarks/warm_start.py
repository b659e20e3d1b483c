"""Benchmark the fork server (dicewf.forkserver): a Snakemake run with each job started afresh
against the same run under ``workflow/scripts/forkserver.py``, as `make run` starts it.

The run is DICE's two iterations and iteration 2's evaluation on CI's reduced toy world
(`.test/config.yaml` with DICE alone: 21 jobs from the toy world to the evaluation), in two
fresh folders, one after the other (cold first). It prints each run's wall time (the warm one
with its server's start), their ratio, and checks that the two runs wrote the same bytes:
every file under ``results/`` except the benchmark records, whose timings differ, and the
timing fields of the training and alpha-search metrics. Run from the repo root:

    python benchmarks/warm_start.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
sys.path.insert(0, str(SCRIPTS))

from dicewf.io import write_json

OUT = Path(__file__).resolve().parent / "results" / "warm_start.json"
TARGET = "results/eval/dice-iter2/metrics.json"
# fields that hold a run's timings, not its results
TIMING = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "seconds"}


def config() -> dict:
    cfg = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    cfg["experiments"] = {"dice": {"description": "DICE", "iterations": 2}}
    return cfg


def run(folder: Path, warm: bool) -> float:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config(), sort_keys=False))
    runner = [sys.executable, str(SCRIPTS / "forkserver.py"), "--"] if warm else []
    command = [*runner, sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    start = time.perf_counter()
    with open(folder / "snakemake.out", "w") as log:
        subprocess.run(
            [*command, "-d", str(folder), "--cores", "2", TARGET],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return time.perf_counter() - start


def _drop_timings(value):
    if isinstance(value, dict):
        return {k: _drop_timings(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_drop_timings(v) for v in value]
    return value


def differences(cold: Path, warm: Path) -> tuple[int, list[str]]:
    """(files compared, those that differ) under the two runs' ``results/``."""
    files = sorted(
        p.relative_to(cold)
        for p in (cold / "results").rglob("*")
        if p.is_file() and "benchmarks" not in p.parts
    )
    differ = []
    for rel in files:
        a, b = cold / rel, warm / rel
        if not b.is_file():
            differ.append(str(rel))
        elif rel.suffix == ".json" and rel.name != "metrics.json":
            if _drop_timings(json.loads(a.read_text())) != _drop_timings(json.loads(b.read_text())):
                differ.append(str(rel))
        elif a.read_bytes() != b.read_bytes():
            differ.append(str(rel))
    return len(files), differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="warm-start-") as tmp:
        cold_dir, warm_dir = Path(tmp) / "cold", Path(tmp) / "warm"
        cold = run(cold_dir, warm=False)
        warm = run(warm_dir, warm=True)
        compared, differ = differences(cold_dir, warm_dir)
    result = {
        "jobs": 21,
        "target": TARGET,
        "seconds": {"cold": cold, "warm": warm},
        "ratio_warm_to_cold": warm / cold,
        "files_compared": compared,
        "files_differing": differ,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_1m_before": load_before,
            "load_average_1m_after": os.getloadavg()[0],
        },
    }
    write_json(result, opts.out)
    print(f"cold {cold:.1f} s, warm {warm:.1f} s (server start included), ratio {warm / cold:.2f}")
    print(f"{compared} result files compared, {len(differ)} differ {differ or ''}".rstrip())
    print(f"wrote {opts.out}")
    if differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
