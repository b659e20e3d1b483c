"""The Slurm profile for real: the reduced toy workflow through sbatch on a one-node cluster.

tests/slurm/start.sh starts munged, slurmctld and slurmd on this machine (stop.sh stops them).
The workflow runs with `--profile profiles/slurm --profile tests/slurm/profile` (the overlay
points at the test partition and shrinks the jobs to the node), and, beside it, locally in a
second folder. While the Slurm run goes, the test cancels one running `train` job from outside
(`scancel`), as a node failure or preemption would; the profile's `retries` must resubmit it.
Needs root and Slurm (`apt-get install slurm-wlm munge`, done by .ci/run); skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_workflow import WARM

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "tests" / "slurm"
PROFILES = ["--profile", str(REPO / "profiles" / "slurm"), "--profile", str(SLURM_DIR / "profile")]
RUN_TIMEOUT = 2400  # seconds; a healthy run takes a few minutes (longer beside other tests)
CANCELLED_RULE = "train"
# the local twin builds DICE's two iterations and the last one's evaluation (the toy models,
# sampling, scoring, reference log-probs, training, evaluation), down the chain where a
# difference between the executors would grow (iteration 2 trains against iteration 1's
# policy), and nothing else
LOCAL_TARGETS = ("results/eval/dice-iter2/metrics.json",)


def _why_not() -> str | None:
    missing = [
        c
        for c in ("sbatch", "squeue", "scancel", "slurmctld", "slurmd", "munged")
        if shutil.which(c) is None
    ]
    if missing:
        return (
            f"Slurm is not installed ({', '.join(missing)} missing): "
            "apt-get install slurm-wlm munge"
        )
    if os.geteuid() != 0:
        return "starting a Slurm cluster (tests/slurm/start.sh) needs root"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (make env)"
    return None


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.e2e(seconds=620),
    pytest.mark.skipif(_why_not() is not None, reason=_why_not() or ""),
]


def _env() -> dict[str, str]:
    # The train rule's shell command calls `accelerate` from this interpreter's environment;
    # sbatch --export=ALL hands PATH on to the jobs.
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": path}


def _snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        *args,
    ]


def _workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    # the loop and one baseline, once each: what Slurm must run is the same for the rest of the
    # matrix and for a replicate (another experiment's name and seed)
    config["experiments"] = {k: config["experiments"][k] for k in ("dice", "offline_dpo")}
    config["experiments"]["offline_dpo"].pop("replicates", None)
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _start(workdir: Path, *args: str, warm: bool = False) -> tuple[subprocess.Popen, Path]:
    """Snakemake in ``workdir``, in a session of its own; ``warm``: under the fork server
    (dicewf.forkserver), as `make run` starts it."""
    log = workdir / "snakemake.out"
    proc = subprocess.Popen(
        [*(WARM if warm else []), *_snakemake_cmd(workdir, *args)],
        cwd=workdir,
        env=_env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log


def _squeue(*args: str) -> list[list[str]]:
    out = subprocess.run(
        ["squeue", "--noheader", *args], capture_output=True, text=True, check=True
    ).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def _rule_of(comment: str) -> str:
    """The plugin puts `rule_<rule>[_wildcards_<values>]` into each job's --comment."""
    return re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment)[1]


def _planned(workdir: Path) -> tuple[Counter, dict[str, str]]:
    """Jobs per rule of a dry run with the same profiles, and each rule's resources line."""
    out = subprocess.run(
        _snakemake_cmd(workdir, *PROFILES, "-n"),
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    jobs, resources, rule = Counter(), {}, None
    for line in (out.stdout + out.stderr).splitlines():
        if m := re.fullmatch(r"(?:local)?rule (\w+):", line.strip()):
            rule = m[1]
            jobs[rule] += 1
        elif rule and line.strip().startswith("resources:"):
            resources[rule] = line.strip()
    return jobs, resources


class Injector(threading.Thread):
    """Cancel one running CANCELLED_RULE job of the Slurm run with scancel, from outside.

    It waits until the job is RUNNING and Snakemake inside it has started the rule (its Slurm
    log says `rule train:`), so that the job dies in the middle of its work.
    """

    def __init__(self, workdir: Path, log: Path, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.workdir, self.log, self.proc = workdir, log, proc
        self.run_id: str | None = None
        self.cancelled: str | None = None

    def _rule_started(self, job_id: str) -> bool:
        logs = self.workdir.glob(f".snakemake/slurm_logs/rule_{CANCELLED_RULE}/**/{job_id}.log")
        return any(f"rule {CANCELLED_RULE}:" in f.read_text() for f in logs)

    def run(self) -> None:
        while self.proc.poll() is None and self.cancelled is None:
            time.sleep(0.5)
            if self.run_id is None:
                m = re.search(r"SLURM run ID: (\S+)", self.log.read_text())
                self.run_id = m[1] if m else None
                continue
            try:
                running = _squeue("--name", self.run_id, "--states=RUNNING", "--format=%i|%k")
            except subprocess.CalledProcessError:  # slurmctld busy: ask again
                continue
            for job_id, comment in running:
                if _rule_of(comment) == CANCELLED_RULE and self._rule_started(job_id):
                    time.sleep(2)  # into the script's imports and training
                    # scancel fails (and nothing is recorded) if the job finished meanwhile.
                    cancel = subprocess.run(["scancel", "--state=RUNNING", job_id], check=False)
                    if cancel.returncode == 0:
                        self.cancelled = job_id
                    break


def _wait(proc: subprocess.Popen, log: Path, deadline: float) -> None:
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        pytest.fail(f"snakemake ran over {RUN_TIMEOUT} s:\n{log.read_text()[-5000:]}")
    assert proc.returncode == 0, f"snakemake failed:\n{log.read_text()[-8000:]}"


@pytest.fixture(scope="module", autouse=True)
def real_scontrol(no_slurm_controller):
    """This module talks to the real cluster: conftest's `scontrol` double off PATH."""
    path = os.environ["PATH"].split(os.pathsep)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", os.pathsep.join(p for p in path if p != str(no_slurm_controller)))
        yield


@pytest.fixture(scope="module")
def cluster(request):
    subprocess.run([str(SLURM_DIR / "start.sh")], check=True, timeout=120)
    request.addfinalizer(
        lambda: subprocess.run([str(SLURM_DIR / "stop.sh")], timeout=120, check=False)
    )
    hw = subprocess.run(
        ["scontrol", "show", "node"], capture_output=True, text=True, check=True
    ).stdout
    return {
        "cpus": int(re.search(r"CPUTot=(\d+)", hw)[1]),
        "mem_mb": int(re.search(r"RealMemory=(\d+)", hw)[1]),
    }


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The Slurm run (with one job cancelled) and a local run of the same config (LOCAL_TARGETS),
    side by side."""
    slurm_dir = _workdir(tmp_path_factory.mktemp("slurm"))
    local_dir = _workdir(tmp_path_factory.mktemp("local"))
    planned, resources = _planned(slurm_dir)
    for rule, line in resources.items():  # fail fast instead of jobs sbatch refuses
        res = dict(re.findall(r"(\w+)=(\d+)\b", line))
        assert int(res.get("cpus_per_task", 1)) <= cluster["cpus"], (rule, line)
        assert int(res.get("mem_mb", 0)) <= cluster["mem_mb"], (rule, line)
    t0 = time.monotonic()
    deadline = t0 + RUN_TIMEOUT
    slurm_proc, slurm_log = _start(slurm_dir, *PROFILES)
    # the local twin under the fork server: Slurm's jobs run without it, so the comparison below
    # also holds the warm start to what a job computes alone
    local_proc, local_log = _start(local_dir, "--cores", "2", *LOCAL_TARGETS, warm=True)
    injector = Injector(slurm_dir, slurm_log, slurm_proc)
    injector.start()
    try:
        _wait(slurm_proc, slurm_log, deadline)
        _wait(local_proc, local_log, deadline)
    finally:
        for proc in (slurm_proc, local_proc):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        injector.join(timeout=10)
    print(f"Slurm and local runs took {time.monotonic() - t0:.0f} s")
    jobs = {}  # Slurm's record of the run, read now (squeue keeps it for MinJobAge)
    if injector.run_id:
        for job_id, state, comment in _squeue(
            "--name", injector.run_id, "--states=all", "--format=%i|%T|%k"
        ):
            show = subprocess.run(
                ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
            ).stdout
            jobs[int(job_id)] = {
                "rule": _rule_of(comment),
                "state": state,
                "comment": comment,
                "gpu": "TresPerJob=gres:gpu:1" in show,
            }
    return {
        "slurm": slurm_dir,
        "local": local_dir,
        "log": slurm_log.read_text(),
        "planned": planned,
        "resources": resources,
        "injector": injector,
        "jobs": jobs,
    }


def test_this_module_calls_the_real_scontrol(no_slurm_controller):
    found = shutil.which("scontrol")
    assert found is not None and Path(found).parent != no_slurm_controller


def test_every_remote_job_went_through_sbatch(runs):
    log, planned, jobs = runs["log"], runs["planned"], runs["jobs"]
    assert runs["injector"].run_id, "no 'SLURM run ID' in the log: the slurm executor was not used"
    local = set(re.findall(r"^localrule (\w+):", log, re.MULTILINE))
    remote = set(planned) - local
    assert {"toy_world", "table", "figure", "all"} <= local, local
    assert {"toy_sft", "sample", "score", "train", "eval"} <= remote, remote
    # Slurm's own record of the run: every job of a non-local rule completed as a Slurm job
    # (the dry run's count per rule), and local rules never reached Slurm.
    completed = Counter(j["rule"] for j in jobs.values() if j["state"] == "COMPLETED")
    assert completed == Counter({rule: planned[rule] for rule in remote}), (completed, planned)
    assert all(j["state"] in ("COMPLETED", "CANCELLED") for j in jobs.values()), jobs
    # ... and Snakemake submitted each of them with sbatch (plus the one resubmission).
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert sorted(map(int, submitted)) == sorted(jobs)
    assert len(submitted) == sum(planned[rule] for rule in remote) + 1
    # Rules that declare gpu=1 asked Slurm for a GPU (sbatch --gpus=1), the others did not.
    gpu_rules = {rule for rule, line in runs["resources"].items() if "gpu=1" in line}
    assert {"train", "sample"} <= gpu_rules
    for job in jobs.values():
        assert job["gpu"] == (job["rule"] in gpu_rules), job


def test_a_cancelled_job_is_resubmitted_and_the_run_completes(runs):
    cancelled = runs["injector"].cancelled
    assert cancelled, f"no running '{CANCELLED_RULE}' job was seen to cancel"
    jobs, log = runs["jobs"], runs["log"]
    job = jobs[int(cancelled)]
    assert (job["rule"], job["state"]) == (CANCELLED_RULE, "CANCELLED")
    assert [j for j, v in jobs.items() if v["state"] == "CANCELLED"] == [int(cancelled)]
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in log
    assert len(re.findall(r"Trying to restart job \d+\.", log)) == 1
    # The same job (rule and wildcards) went to Slurm again, later, and completed.
    again = [
        v["state"] for j, v in jobs.items() if v["comment"] == job["comment"] and j > int(cancelled)
    ]
    assert again == ["COMPLETED"], jobs


def test_results_equal_a_local_run(runs):
    slurm, local = runs["slurm"] / "results", runs["local"] / "results"
    iterations = sorted(p.name for p in (local / "dice").glob("iter*"))
    assert iterations == ["iter1", "iter2"]
    for it in iterations:
        for name in ("pairs.parquet", "mixed.parquet"):
            pd.testing.assert_frame_equal(
                pd.read_parquet(slurm / "dice" / it / name),
                pd.read_parquet(local / "dice" / it / name),
                check_exact=True,
                obj=f"{it}/{name}",
            )
        metrics = [
            json.loads((r / "dice" / it / "train_metrics.json").read_text()) for r in (slurm, local)
        ]
        losses = [[e["loss"] for e in m["log_history"] if "loss" in e] for m in metrics]
        assert losses[0] == losses[1], it
    models = sorted(p.name for p in (local / "eval").iterdir())
    assert models == ["dice-iter2"], models
    for model in models:
        assert json.loads((slurm / "eval" / model / "metrics.json").read_text()) == json.loads(
            (local / "eval" / model / "metrics.json").read_text()
        ), model
