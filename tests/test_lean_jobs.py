"""Lean jobs (issue 10 point 3): a train job with at most one GPU is one `python` process,
several GPUs go through `accelerate launch`; every job that runs torch uses exactly its threads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from dicewf import jobs, launch, model_files, training

REPO = Path(__file__).resolve().parents[1]
ZERO3 = REPO / "workflow" / "accelerate" / "deepspeed_zero3.yaml"


@pytest.fixture
def restore_threads(monkeypatch):
    """set_threads changes torch's pool and the environment: undo both afterwards."""
    import torch

    before = torch.get_num_threads()
    for var in jobs.THREAD_VARS:  # monkeypatch restores (or removes) each variable
        monkeypatch.setenv(var, os.environ.get(var, "unset"))
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ the launcher
@pytest.mark.parametrize("gpu", [0, 1, None, "1"])
def test_a_job_with_at_most_one_gpu_trains_in_one_python_process(gpu):
    assert jobs.train_launcher(gpu, accelerate_config=ZERO3, processes=1) == "python"


@pytest.mark.parametrize("gpu", [2, 8, "4"])
def test_a_multi_gpu_job_runs_under_accelerate_launch_with_its_config(gpu):
    cmd = jobs.train_launcher(gpu, accelerate_config=ZERO3, processes=int(gpu))
    assert cmd == f"accelerate launch --config_file {ZERO3} --num_processes {gpu}"


def test_the_accelerate_config_path_is_quoted_for_the_shell(tmp_path):
    config = tmp_path / "my configs" / "fsdp.yaml"
    cmd = jobs.train_launcher(2, accelerate_config=config, processes=2)
    assert f"--config_file '{config}' --num_processes 2" in cmd


def test_the_accelerate_config_of_a_name(tmp_path):
    assert jobs.accelerate_config_path(REPO, "deepspeed_zero3") == str(ZERO3)


# ------------------------------------------------------------------------------- threads
@pytest.mark.parametrize("threads, processes, each", [(1, 1, 1), (2, 1, 2), (4, 2, 2), (1, 8, 1)])
def test_set_threads_gives_torch_the_jobs_threads(
    threads, processes, each, restore_threads, caplog
):
    import torch

    torch.set_num_threads(3)  # neither 1 nor 2: the call below must set it
    with caplog.at_level(logging.INFO, logger="dicewf.jobs"):
        assert jobs.set_threads(threads, processes=processes) == each
    assert torch.get_num_threads() == each
    for var in jobs.THREAD_VARS:
        assert os.environ[var] == str(each), var
    assert f"threads: {each} (torch intra-op {each}" in caplog.text


@pytest.mark.parametrize("bad", [0, -2, "two", "1.5", None])
def test_set_threads_names_a_bad_count(bad, restore_threads):
    with pytest.raises(ValueError, match=rf"threads: a whole number >= 1, got {bad!r}"):
        jobs.set_threads(bad)


# ------------------------------------------------------------------ deterministic algorithms
@pytest.mark.parametrize("preset", [None, ":16:8"])
def test_deterministic_turns_on_torchs_deterministic_algorithms(preset, monkeypatch, caplog):
    import torch

    if preset is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    else:
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", preset)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory  # torch's default, until now
    with caplog.at_level(logging.INFO, logger="dicewf.jobs"):
        jobs.deterministic()
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # an op without one warns
    assert not torch.utils.deterministic.fill_uninitialized_memory  # torch.empty writes no NaN
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == (preset or ":4096:8")  # a user's value kept
    assert (
        "deterministic algorithms: on (ops without one warn; new tensors not filled);"
        f" CUBLAS_WORKSPACE_CONFIG={preset or ':4096:8'}" in caplog.text
    )


@pytest.mark.slow
def test_deterministic_algorithms_leave_a_cpu_dpo_run_the_same_bits(tiny_model, tmp_path):
    """On a CPU the ops of a DPO run are deterministic already: turning torch's deterministic
    algorithms on changes no loss and no weight (on a GPU it is what makes a rerun repeat)."""
    import torch
    from safetensors.torch import load_file
    from test_ref_reuse import ARGS, PAIRS

    runs = {}
    for name in ("plain", "deterministic"):
        if name == "deterministic":
            jobs.deterministic()
        assert torch.are_deterministic_algorithms_enabled() == (name == "deterministic")
        history = training.train_dpo(tiny_model, PAIRS, tmp_path / name, ARGS, seed=0)
        losses = [e["loss"] for e in history if "loss" in e]
        runs[name] = losses, load_file(tmp_path / name / "model.safetensors")
    (plain_losses, plain), (det_losses, det) = runs["plain"], runs["deterministic"]
    assert len(plain_losses) == ARGS["max_steps"] and det_losses == plain_losses
    assert plain.keys() == det.keys()
    assert all(torch.equal(plain[k], det[k]) for k in plain)


# ---------------------------------------------------------------------------- the fast exit
SCRIPTS = Path(jobs.__file__).resolve().parents[1]


def _exit_job(tmp_path, *, child: bool) -> tuple[subprocess.CompletedProcess, Path]:
    """A job process that logs to its log file, registers an atexit handler (the teardown that
    exit_now skips), optionally starts a multiprocessing child, and calls exit_now."""
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import atexit, logging, multiprocessing, sys, time
            from pathlib import Path
            from dicewf import jobs, logs

            logs.to_file({str(tmp_path / "job.log")!r})
            atexit.register(lambda: Path({str(tmp_path / "teardown")!r}).touch())
            if {child}:
                multiprocessing.Process(target=time.sleep, args=(60,), daemon=True).start()
            logging.getLogger("job").info("outputs written")
            print("no newline yet", end="")
            jobs.exit_now()
            print("after exit_now")
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, timeout=120)
    return done, tmp_path / "job.log"


def test_exit_now_ends_the_job_with_status_0_its_log_flushed_and_no_teardown(tmp_path):
    done, log = _exit_job(tmp_path, child=False)
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    assert "INFO job: outputs written" in text
    assert text.endswith("no newline yet")  # the line-buffered log's last, unfinished line
    assert "after exit_now" not in text
    assert not (tmp_path / "teardown").exists()  # the interpreter's teardown did not run


def test_exit_now_exits_normally_while_a_child_process_lives(tmp_path):
    """A child (vLLM's engine core with multiprocessing on) needs the normal exit, which stops
    it; the process still ends there with status 0."""
    done, log = _exit_job(tmp_path, child=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "teardown").exists()
    text = log.read_text()
    assert "INFO job: outputs written" in text and "after exit_now" not in text


def test_no_rule_has_a_run_block():
    """Snakemake's local executor runs a `run:` block in a new Snakemake process that parses the
    whole workflow again (about 11 s a job here); local jobs are `script:` jobs instead
    (benchmarks/local_rules.py)."""
    import re

    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.fullmatch(r"\s+run:\s*(#.*)?", line)
    ]
    assert files[1:] and not found, found


# ------------------------------------------------------------------- the entry point's flags
def _main(tmp_path, monkeypatch, *extra: str, world_size: int | None = None) -> dict:
    """train_launch's main (``world_size`` processes) with train_dpo recording the device and
    the threads it would train with."""
    import torch

    seen = {}

    def record(*args, **kwargs):
        seen["cpu"] = os.environ.get("ACCELERATE_USE_CPU")
        seen["threads"] = torch.get_num_threads()
        seen["deterministic"] = torch.are_deterministic_algorithms_enabled()

    monkeypatch.setattr(training, "train_dpo", record)
    monkeypatch.setattr(model_files, "model_dir", lambda path, role: path)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "")  # recorded, so main's setting is undone
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", str(world_size))  # as a launch of that many sets it
    pairs = tmp_path / "pairs.parquet"
    frame = {"prompt_id": ["a"], "prompt": ["p"], "chosen": ["c"], "rejected": ["r"]}
    pd.DataFrame(frame).to_parquet(pairs)
    argv = ["--model", "m", "--pairs", str(pairs), "--out", str(tmp_path / "o"), "--seed", "0"]
    torch.set_num_threads(3)  # neither 1 nor 2: --threads must set it
    launch.main([*argv, *extra])
    return seen


def test_cpu_flag_trains_on_the_cpu_as_accelerate_launch_cpu_did(
    tmp_path, monkeypatch, restore_logging, restore_threads
):
    without = _main(tmp_path, monkeypatch)  # no --cpu: the machine decides; no --threads: as is
    # torch's deterministic algorithms are on before training (dicewf.jobs.deterministic)
    assert without == {"cpu": None, "threads": 3, "deterministic": True}
    assert _main(tmp_path, monkeypatch, "--cpu")["cpu"] == "true"
    # and device_args then puts the run on the CPU even where CUDA is seen
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda: True)
    assert training.device_args({})["use_cpu"] is True
    assert training.device_args({})["bf16"] is False


@pytest.mark.parametrize("threads, world_size, each", [(1, None, 1), (2, None, 2), (4, 2, 2)])
def test_threads_flag_sets_the_training_processs_threads(
    threads, world_size, each, tmp_path, monkeypatch, restore_logging, restore_threads
):
    """A job's threads are shared by the processes of its launch."""
    seen = _main(tmp_path, monkeypatch, "--threads", str(threads), world_size=world_size)
    assert seen["threads"] == each


# ------------------------------------------------------------------------ the train rule
@pytest.mark.slow  # starts Snakemake (two dry runs)
def test_the_train_rule_launches_python_for_one_gpu_and_accelerate_for_eight(tmp_path):
    from test_workflow import snakemake

    def train_command(*args: str) -> str:
        out = snakemake("-n", "-p", *args, cwd=tmp_path).stdout
        (line,) = [ln for ln in out.splitlines() if "train_launch.py --config" in ln]
        return line

    one = train_command(
        "results/dice/iter1/policy", "--configfile", str(REPO / ".test/config.yaml")
    )
    assert "accelerate launch" not in one and " python " in one, one
    # one thread a model job (MODEL_THREADS): two jobs side by side on 2 cores, not two
    # two-thread jobs taking turns (or oversubscribing the cores)
    assert "--threads 1 " in one and "--cpu" not in one, one
    cpu = train_command(
        "results/dice/iter1/policy",
        "--configfile",
        str(REPO / ".test/config.yaml"),
        "--set-resources",
        "train:gpu=0",
    )
    assert "accelerate launch" not in cpu and " python " in cpu and " --cpu " in cpu, cpu
    eight = train_command(
        "results/zephyr_dice/iter1/policy",
        "--configfile",
        str(REPO / "config" / "paper.yaml"),
        "--set-resources",
        "train:gpu=8",
    )
    assert f"accelerate launch --config_file {ZERO3} --num_processes 8 " in eight, eight


@pytest.mark.parametrize(
    "script, module, function, data",
    [
        ("toy_sft.py", "dicewf.training", "train_sft", "demos"),
        ("train_reward_model.py", "dicewf.reward_model", "train_reward_model", "pairs"),
    ],
)
def test_the_other_training_scripts_train_with_deterministic_algorithms(
    script, module, function, data, tmp_path, monkeypatch, restore_logging, restore_threads
):
    """toy_sft.py (pi_ref^(0)) and train_reward_model.py (the IntlRM) turn torch's deterministic
    algorithms on before they train, as train_launch.py does."""
    import importlib
    import runpy
    from types import SimpleNamespace

    import torch

    seen = []
    monkeypatch.setattr(
        importlib.import_module(module),
        function,
        lambda *a, **k: seen.append(torch.are_deterministic_algorithms_enabled()),
    )
    frame = tmp_path / f"{data}.parquet"
    pd.DataFrame(
        {"prompt_id": ["a"], "prompt": ["p"], "chosen": ["c"], "rejected": ["r"], "response": ["c"]}
    ).to_parquet(frame)
    smk = SimpleNamespace(
        input=SimpleNamespace(model="m", **{data: str(frame)}),
        output=SimpleNamespace(model=str(tmp_path / "model"), metrics=str(tmp_path / "m.json")),
        params=SimpleNamespace(args={}, seed=0),
        log=[str(tmp_path / "job.log")],
        threads=1,
    )
    runpy.run_path(str(REPO / "workflow" / "scripts" / script), init_globals={"snakemake": smk})
    assert seen == [True]
