"""Where a run's time went: wall time per rule and the critical path, from Snakemake's records.

Snakemake keeps one metadata record per output file (``.snakemake/metadata/``, its default file
backend: JSON named by the urlsafe base64 of the path) with the job's rule, inputs, start and end
time and a hash shared by the outputs of one job. Every job has one, local jobs too, which the
benchmark files (``results/benchmarks/**.tsv``, written only by rules with a ``benchmark:``) do
not; so the figures here come from the records. A job's time is its wall time from start to end
(Snakemake's own overhead for the job included). The critical path is the chain of jobs, each
reading an output of the one before, with the largest summed time: no number of cores makes a
run shorter than it.

Records describe the files as they are: a job rerun later overwrites its outputs' records, so
read a run's figures after a run from a clean state (``make clean``). Stdlib only (and
:mod:`dicewf.config`, which is too).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from .config import REPLICATE


@dataclasses.dataclass(frozen=True)
class Job:
    """One finished job: its rule, outputs (those with a record), inputs and start/end times."""

    rule: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    start: float
    end: float

    @property
    def seconds(self) -> float:
        # a job run inside Snakemake's own process (`run:`) can record its end a few
        # microseconds before its start
        return max(0.0, self.end - self.start)


def _decode(parts: Iterable[str]) -> str:
    """The path of a record file: Snakemake splits long names into ``@``-prefixed folders."""
    return base64.urlsafe_b64decode("".join(p.lstrip("@") for p in parts)).decode()


def read_records(metadata: str | os.PathLike) -> dict[str, dict]:
    """Output path -> its metadata record, for every readable record under ``metadata``."""
    root = Path(metadata)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no Snakemake metadata (run the workflow first; a run with "
            "--persistence-backend db keeps its records in a database instead)"
        )
    records = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        try:
            output = _decode(path.relative_to(root).parts)
            record = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a Snakemake metadata record ({err})") from None
        if record:  # an empty record is one Snakemake could not write (see its FilePersistence)
            records[output] = record
    return records


def jobs_from_records(records: Mapping[str, Mapping]) -> list[Job]:
    """The finished jobs of the records: outputs grouped by job hash; incomplete ones skipped."""
    grouped: dict[tuple, list[str]] = {}
    for output, rec in records.items():
        if rec.get("incomplete") or rec.get("starttime") is None or rec.get("endtime") is None:
            continue
        grouped.setdefault((rec.get("job_hash"), rec.get("rule")), []).append(output)
    jobs = []
    for (_, rule), outputs in grouped.items():
        recs = [records[o] for o in outputs]
        jobs.append(
            Job(
                rule=str(rule),
                outputs=tuple(sorted(outputs)),
                inputs=tuple(sorted({i for r in recs for i in (r.get("input") or [])})),
                start=min(float(r["starttime"]) for r in recs),
                end=max(float(r["endtime"]) for r in recs),
            )
        )
    return sorted(jobs, key=lambda j: (j.start, j.rule, j.outputs))


def _norm(path: str) -> str:
    return os.path.normpath(path.rstrip("/"))


def _writer(jobs: list[Job]):
    """A function: a path -> the index in ``jobs`` of the job that wrote it, or None where no
    recorded job did (a source file, a download). A path inside an output folder (a
    ``directory()`` output) is that folder's."""
    producer: dict[str, int] = {}
    for k, job in enumerate(jobs):
        for out in job.outputs:
            producer[_norm(out)] = k

    def writer(path: str) -> int | None:
        p = _norm(path)
        while p not in producer and os.path.dirname(p) not in ("", p):
            p = os.path.dirname(p)  # a file inside a directory() output
        return producer.get(p)

    return writer


def _producers_of(job: Job, writer) -> set[int]:
    return {k for k in map(writer, job.inputs) if k is not None}


def critical_path(jobs: list[Job]) -> list[Job]:
    """The chain of jobs (each reading an output of the previous one) with the largest total time.

    An input that no recorded job wrote (a source file, a download) starts a chain. Ties go to
    the job that started first.
    """
    writer = _writer(jobs)
    best: dict[int, tuple[float, int | None]] = {}  # job -> (path time ending here, previous job)
    order = sorted(range(len(jobs)), key=lambda k: jobs[k].end)
    for k in order:  # a producer ends before its consumer starts: end order is topological
        before = [
            (best[p][0], -jobs[p].start, p) for p in _producers_of(jobs[k], writer) if p in best
        ]
        if before:
            total, _, prev = max(before)
            best[k] = (total + jobs[k].seconds, prev)
        else:
            best[k] = (jobs[k].seconds, None)
    if not best:
        return []
    last = max(best, key=lambda k: (best[k][0], -jobs[k].start))
    chain = []
    node: int | None = last
    while node is not None:
        chain.append(jobs[node])
        node = best[node][1]
    return chain[::-1]


def upstream(jobs: list[Job], targets: Iterable[str]) -> list[Job]:
    """The jobs that building ``targets`` from a clean state runs: the jobs that wrote them and,
    transitively, every job that wrote one of their inputs; in the order of ``jobs``. A target
    that no recorded job wrote is refused, naming it."""
    writer = _writer(jobs)
    todo = []
    for target in targets:
        if (k := writer(target)) is None:
            raise ValueError(f"{target}: no finished job in the metadata records wrote it")
        todo.append(k)
    needed: set[int] = set()
    while todo:
        k = todo.pop()
        if k not in needed:
            needed.add(k)
            todo.extend(_producers_of(jobs[k], writer))
    return [job for k, job in enumerate(jobs) if k in needed]


def target_cost(jobs: list[Job], targets: Iterable[str], cores: int) -> dict:
    """What building ``targets`` alone from a clean state took in this run: its jobs, their
    summed time, its critical path and the least wall time that ``cores`` cores allow (the
    larger of the critical path and the job time spread over the cores)."""
    if cores < 1:
        raise ValueError(f"cores must be at least 1, not {cores}")
    needed = upstream(jobs, targets)
    busy = sum(j.seconds for j in needed)
    path = sum(j.seconds for j in critical_path(needed))
    return {
        "jobs": len(needed),
        "job_time_s": busy,
        "critical_path_s": path,
        "least_wall_s": max(path, busy / cores),
        "cores": cores,
    }


@dataclasses.dataclass(frozen=True)
class RuleTime:
    rule: str
    jobs: int
    total: float
    mean: float
    max: float


def per_rule(jobs: list[Job]) -> list[RuleTime]:
    """Time per rule (jobs, sum, mean, max in seconds), the largest sum first."""
    by_rule: dict[str, list[float]] = {}
    for job in jobs:
        by_rule.setdefault(job.rule, []).append(job.seconds)
    rows = [RuleTime(rule, len(t), sum(t), sum(t) / len(t), max(t)) for rule, t in by_rule.items()]
    return sorted(rows, key=lambda r: (-r.total, r.rule))


# a replicate's files: results/{name}_rep{r}/..., results/eval/{name}_rep{r}-iter{t}/...,
# results/benchmarks/{name}_rep{r}/...
_REPLICATE = re.compile(re.escape(REPLICATE) + r"(\d+)(?:/|-iter\d+/)")


def replicate_of(job: Job) -> int:
    """The replicate number of a job's experiment run, from its first output's path: r for a
    replicate's files (``{name}_rep{r}``), 1 for every other job (replicate 1 and what all
    replicates share: the world, the start models, the tables)."""
    m = _REPLICATE.search(job.outputs[0]) if job.outputs else None
    return int(m[1]) if m else 1


def replicate_cost(jobs: list[Job]) -> dict:
    """What a run's replicates r >= 2 took: their jobs and job time, and its share of all."""
    extra = [j for j in jobs if replicate_of(j) > 1]
    busy = sum(j.seconds for j in jobs)
    time = sum(j.seconds for j in extra)
    return {
        "jobs": len(extra),
        "job_time_s": time,
        "share": time / busy if busy > 0 else float("nan"),
        "replicates": sorted({replicate_of(j) for j in extra}),
    }


def summary(jobs: list[Job]) -> dict:
    """The figures of a run: wall time, summed job time, per rule and the critical path."""
    if not jobs:
        raise ValueError("no finished job in the metadata records")
    wall = max(j.end for j in jobs) - min(j.start for j in jobs)
    busy = sum(j.seconds for j in jobs)
    path = critical_path(jobs)
    return {
        "jobs": len(jobs),
        "wall_s": wall,
        "job_time_s": busy,
        "parallelism": busy / wall if wall > 0 else float("nan"),
        "per_rule": [dataclasses.asdict(r) for r in per_rule(jobs)],
        "replicates": replicate_cost(jobs),
        "critical_path_s": sum(j.seconds for j in path),
        "critical_path": [
            {"rule": j.rule, "output": j.outputs[0], "seconds": j.seconds} for j in path
        ],
    }
