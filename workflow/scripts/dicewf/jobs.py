"""What a job runs on: the command that starts a training job, and the CPU threads of a job.

Light on purpose (the standard library only; torch is imported where threads are set): the
workflow imports it at start-up (``common.smk``) to build the ``train`` rule's command.

- :func:`train_launcher`: a job with at most one GPU trains in one Python process, ``python``
  (no ``accelerate launch`` hop: the launcher is a second Python process that imports torch,
  transformers and TRL only to start the first); a job with several GPUs runs one process per
  GPU under ``accelerate launch`` with the configured accelerate config.
- :func:`set_threads`: a job uses exactly its Snakemake ``threads``. Snakemake 9 already exports
  ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and friends set to the job's threads for ``script:``
  and ``shell:`` jobs (snakemake/shell.py), which torch reads when it starts; this sets torch's
  intra-op pool explicitly (also where a job is run by hand or by another launcher), the
  variables that libraries started later read (tokenizers' Rust pool included), and logs it.
- :func:`exit_now`: a model job's last line, ending its process without the interpreter's
  teardown of torch, transformers and vLLM once the outputs are written.
- :func:`deterministic`: a training job uses torch's deterministic algorithms where torch has
  them, so that a rerun on the same GPU repeats its weights (on a CPU our ops are deterministic
  already: a test checks that a DPO run's weights are the same bits either way), without
  torch's NaN fill of new tensors.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

log = logging.getLogger(__name__)

# thread-count variables of the BLAS/OpenMP libraries (the ones Snakemake sets) and of the
# Rust thread pool of HF tokenizers (rayon)
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "RAYON_NUM_THREADS",
)


def _count(value: object, name: str) -> int:
    """``value`` as a whole number >= 1, else a ValueError naming ``name``."""
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name}: a whole number >= 1, got {value!r}")
    return number


def train_launcher(gpu: object, *, accelerate_config: str | os.PathLike, processes: int) -> str:
    """The command that runs ``train_launch.py`` in a ``train`` job with ``gpu`` GPUs.

    ``gpu`` <= 1 (0 is a CPU job): ``python``, one process. More: ``accelerate launch`` with
    ``accelerate_config`` and ``processes`` processes (one per GPU). The path is shell-quoted.
    """
    import shlex

    if int(gpu or 0) <= 1:
        return "python"
    return (
        f"accelerate launch --config_file {shlex.quote(os.fspath(accelerate_config))}"
        f" --num_processes {_count(processes, 'processes')}"
    )


def accelerate_config_path(basedir: str | os.PathLike, name: str) -> str:
    """``workflow/accelerate/<name>.yaml`` under the workflow's ``basedir``."""
    return str(Path(basedir) / "workflow" / "accelerate" / f"{name}.yaml")


def set_threads(threads: object, *, processes: int = 1) -> int:
    """Make this process use ``threads // processes`` CPU threads (at least 1): the job's
    ``threads`` shared by the ``processes`` processes of a launch. Sets torch's intra-op pool
    (when torch is installed) and :data:`THREAD_VARS` for what starts later; logs the count and
    returns it. A ``threads`` that is no whole number >= 1 is a ValueError naming it."""
    per_process = max(_count(threads, "threads") // _count(processes, "processes"), 1)
    for var in THREAD_VARS:
        os.environ[var] = str(per_process)
    try:
        import torch
    except ImportError:  # a job without torch (the analysis env): the variables are all
        log.info("threads: %d (no torch here)", per_process)
        return per_process
    torch.set_num_threads(per_process)
    log.info(
        "threads: %d (torch intra-op %d, inter-op %d; job threads %s over %d process(es))",
        per_process,
        torch.get_num_threads(),
        torch.get_num_interop_threads(),
        threads,
        processes,
    )
    return per_process


# cuBLAS picks among reduction orders by the free workspace unless this is set; ":4096:8" is one of
# the two values torch's reproducibility notes give (CUDA >= 10.2). Read when CUDA starts.
CUBLAS_WORKSPACE = ":4096:8"


def deterministic() -> None:
    """Turn on torch's deterministic algorithms in this process, before CUDA starts.

    ``torch.use_deterministic_algorithms(True, warn_only=True)``: an op that has a deterministic
    implementation uses it, and an op without one warns instead of failing the job. Also sets
    ``CUBLAS_WORKSPACE_CONFIG`` (:data:`CUBLAS_WORKSPACE`) unless the environment already sets
    it, and turns off ``torch.utils.deterministic.fill_uninitialized_memory``: with it on (torch's
    default under deterministic algorithms) every ``torch.empty`` writes NaN over its memory,
    which torch's notes call detrimental to performance and needless for a program that reads no
    memory it has not written. TRL's fused log-prob head allocates a 4,096 x 32,768 buffer on
    every forward and backward pass whatever the vocabulary: the fill was half of a toy DPO step
    on a CPU core (``benchmarks/deterministic_fill.py``), and the weights are the same bits
    either way. Logs what it set."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    log.info(
        "deterministic algorithms: on (ops without one warn; new tensors not filled);"
        " CUBLAS_WORKSPACE_CONFIG=%s",
        os.environ["CUBLAS_WORKSPACE_CONFIG"],
    )


def exit_now() -> NoReturn:
    """End this job's process with status 0 now, without the interpreter's teardown.

    The last line of a model job's adapter, once its outputs are written. Python's normal exit
    finalises every module it imported: after vLLM (torch, its compiler stack, transformers)
    that took 1.8-2.7 s of a toy evaluation job's 12-15 s on a CPU core, about 1 s after TRL
    (``benchmarks/job_exit.py``). This flushes the ``logging`` handlers and the standard streams
    (the job's log file, :func:`dicewf.logs.to_file`) and ends the process (``os._exit``). A
    process with live child processes (vLLM with ``VLLM_ENABLE_V1_MULTIPROCESSING=1``, a
    multiprocessing pool) exits normally instead, so that their shutdown runs."""
    import multiprocessing

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    if multiprocessing.active_children():
        sys.exit(0)
    os._exit(0)
