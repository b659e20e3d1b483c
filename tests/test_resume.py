"""Resumable DPO training through the training entry point (workflow/scripts/train_launch.py).

A toy training run is killed (SIGKILL) right after a checkpoint is complete and the same command
is run again: it must leave nothing that looks complete behind, resume from that checkpoint, and
end with the logged metrics and the weights of an uninterrupted run.

- one process: the killed run and its rerun are plain `python` (the `train` rule's path for a
  job with gpu <= 1), the uninterrupted run goes through `accelerate launch --num_processes 1
  --cpu` with the repo's single-process config: the launcher changes nothing in the numbers;
- two processes (DDP over gloo on the CPU, `accelerate launch --multi_gpu --num_processes 2`):
  each rank's RNG state is restored, only rank 0 writes, the output folder is renamed once.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dicewf import checkpoints

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow" / "scripts" / "train_launch.py"
SINGLE = REPO / "workflow" / "accelerate" / "single.yaml"
# 10 pairs, global batch 2: 5 steps an epoch, so checkpoint-4 falls inside the first epoch (the
# resumed run skips the batches it has seen) and the run goes on into a second, reshuffled epoch.
N_PAIRS = 10
ARGS = {
    "beta": 0.1,
    "learning_rate": 2e-3,
    "max_steps": 8,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 2,
    "loss_type": "sigmoid",
    "logging_steps": 1,
    "save_steps": 2,
    "disable_tqdm": True,
}
KILL_AT = "checkpoint-4"
TIMEOUT = 300
# Run before train_launch.py in the run that gets killed: every optimizer step sleeps 0.5 s, so
# the kill lands right after checkpoint-4 and well before checkpoint-6. Sleeping touches no
# random state; the rerun is the plain command.
SLOW_STEPS = """
import runpy, sys, time
from trl import DPOTrainer
step = DPOTrainer.training_step
def slow_step(self, *args, **kwargs):
    time.sleep(0.5)
    return step(self, *args, **kwargs)
DPOTrainer.training_step = slow_step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
# metrics of the run as a whole that measure the wall clock, not the training
TIMING = ("train_runtime", "train_samples_per_second", "train_steps_per_second")


def env(threads: int) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(threads),
    }


def run(cmd: list[str], log: Path, threads: int) -> str:
    with open(log, "w") as f:
        proc = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env(threads), timeout=TIMEOUT, check=False
        )
    text = log.read_text()
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{text[-5000:]}"
    return text


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (torchrun's workers are not in its process group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def kill_at_checkpoint(cmd: list[str], ckpts: Path, log: Path, threads: int) -> None:
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env(threads))
        deadline = time.monotonic() + TIMEOUT
        # trainer_state.json is the last file the Trainer writes into a checkpoint
        while not (ckpts / KILL_AT / "trainer_state.json").is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"no {KILL_AT} before the run ended:\n{log.read_text()[-5000:]}")
            time.sleep(0.02)
        for pid in descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def experiment(
    root: Path,
    model: Path,
    pairs: Path,
    launcher: list[str],
    uninterrupted: list[str],
    batch: int,
    threads: int,
) -> dict:
    """An uninterrupted run, and a run killed at KILL_AT then rerun with the same command."""
    args = root / "train_args.json"  # as the train_args rule writes it
    args.write_text(json.dumps({**ARGS, "per_device_train_batch_size": batch}))

    def cli(name: str) -> list[str]:
        return [
            str(SCRIPT),
            "--config",
            str(args),
            "--model",
            str(model),
            "--pairs",
            str(pairs),
            "--out",
            str(root / name / "policy"),
            "--metrics",
            str(root / name / "metrics.json"),
            "--seed",
            "0",
        ]

    ref_log = run([*uninterrupted, *cli("uninterrupted")], root / "uninterrupted.log", threads)
    ckpts = checkpoints.checkpoint_dir_for(root / "resumed" / "policy")
    slow = root / "slow_steps.py"
    slow.write_text(SLOW_STEPS)
    kill_at_checkpoint([*launcher, str(slow), *cli("resumed")], ckpts, root / "killed.log", threads)
    at_kill = {
        "checkpoints": sorted(p.name for p in ckpts.glob("checkpoint-*")),
        "outputs": sorted(p.name for p in (root / "resumed").iterdir() if p != ckpts),
    }
    resumed_log = run([*launcher, *cli("resumed")], root / "resumed.log", threads)
    return {
        "root": root,
        "model": model,
        "ckpts": ckpts,
        "at_kill": at_kill,
        "ref_log": ref_log,
        "resumed_log": resumed_log,
    }


@pytest.fixture(scope="module")
def pairs(world, tmp_path_factory) -> Path:
    _, data = world
    path = tmp_path_factory.mktemp("pairs") / "pairs.parquet"
    data["offline"].head(N_PAIRS)[["prompt_id", "prompt", "chosen", "rejected"]].to_parquet(path)
    return path


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


@pytest.fixture(scope="module", params=["one_process", "two_processes"])
def runs(request, tiny_model, pairs, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "one_process":
        single = [*ACCELERATE, "--config_file", str(SINGLE), "--num_processes", "1", "--cpu"]
        return experiment(
            root,
            tiny_model,
            pairs,
            launcher=[sys.executable],
            uninterrupted=single,
            batch=2,
            threads=2,
        )
    ddp = [
        *ACCELERATE,
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
    ]
    return experiment(root, tiny_model, pairs, launcher=ddp, uninterrupted=ddp, batch=1, threads=1)


def test_a_killed_run_leaves_no_output_and_a_complete_checkpoint(runs):
    at_kill = runs["at_kill"]
    # no model, no metrics, not even a temporary folder: the output is made after training
    assert at_kill["outputs"] == [], at_kill
    assert KILL_AT in at_kill["checkpoints"] and "checkpoint-6" not in at_kill["checkpoints"]


def test_the_rerun_resumes_from_the_last_checkpoint(runs):
    assert f"resuming from checkpoint {runs['ckpts'] / KILL_AT} (step 4)" in runs["resumed_log"]
    assert "training from the start" in runs["ref_log"]


def test_the_resumed_run_ends_like_an_uninterrupted_one(runs):
    import torch
    from safetensors.torch import load_file

    root = runs["root"]
    ref = json.loads((root / "uninterrupted" / "metrics.json").read_text())
    res = json.loads((root / "resumed" / "metrics.json").read_text())
    assert [e["step"] for e in ref["log_history"] if "loss" in e] == list(range(1, 9))
    # every logged step (the four after the resume point included) and the run's summary
    # (train_loss over all 8 steps, total_flos, num_tokens, the last rewards/*, mean_loss)
    assert len(res["log_history"]) == len(ref["log_history"])
    for a, b in zip(ref["log_history"], res["log_history"], strict=True):
        assert a.keys() == b.keys()
        for k in a.keys() - set(TIMING):
            assert math.isclose(a[k], b[k], rel_tol=1e-6, abs_tol=1e-9), (a["step"], k, a[k], b[k])
    assert ref["final"].keys() == res["final"].keys()
    for k in ref["final"].keys() - set(TIMING):
        assert math.isclose(ref["final"][k], res["final"][k], rel_tol=1e-6, abs_tol=1e-9), k
    # the weights (bitwise equal on this CPU; the tolerance only allows for other kernels)
    wa = load_file(root / "uninterrupted" / "policy" / "model.safetensors")
    wb = load_file(root / "resumed" / "policy" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], rtol=1e-6, atol=1e-8), name
    # and training moved them, so the comparison is not trivially true
    w0 = load_file(runs["model"] / "model.safetensors")
    assert any(not torch.allclose(w0[name], wa[name]) for name in wa)


def test_checkpoints_are_removed_once_the_model_is_written(runs):
    root = runs["root"]
    for name in ("uninterrupted", "resumed"):
        assert (root / name / "policy" / "model.safetensors").is_file()
        assert (root / name / "policy" / "tokenizer.json").is_file()
        assert sorted(p.name for p in (root / name).iterdir()) == ["metrics.json", "policy"]
