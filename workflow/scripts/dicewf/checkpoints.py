"""Resumable training runs: checkpoints next to the output, a run fingerprint, resume, cleanup.

:func:`train_resumable` runs any TRL trainer (DPO, KTO, R-DPO, SFT, reward model: see
:mod:`dicewf.training` and :mod:`dicewf.reward_model`) and writes its model folder and metrics.
With ``save_steps: N`` in the training block (a TRL config field; absent, 0 or null means no
checkpoints, :func:`checkpoint_args`), a Trainer checkpoint (weights, optimizer, scheduler, RNG
states, trainer state) is saved every N optimizer steps into :func:`checkpoint_dir_for`
``(out_dir)``, the sibling ``<out_dir>.checkpoints/``. It is the only thing written outside the
declared outputs, and it has to be: Snakemake deletes a job's declared outputs before it reruns
the job (and after a failure), so checkpoints kept inside the output folder would not survive to
be resumed from. A rerun after a crash or a kill resumes from the last complete checkpoint there;
on success the folder is deleted after the model and the metrics are written.

A ``run.json`` in the folder fingerprints the job (:func:`run_fingerprint`: inputs, the config
fields that change the result, seed, number of processes, trainer): checkpoints of another run
are discarded, never resumed from (:func:`prepare_checkpoint_dir`). The Trainer restores weights,
optimizer, scheduler, RNG states and the data order (it skips the batches already seen); we also
restore TRL's running token count and report ``train_loss`` over the whole run, so a resumed
run's metrics and weights equal an uninterrupted run's (tests/test_resume.py). That needs each
checkpoint on a logging step (``save_steps`` a multiple of ``logging_steps``, checked) and the
same number of processes.

Under ``accelerate launch`` every process calls :func:`train_resumable` (DeepSpeed ZeRO-3 and FSDP
need all of them to train and to gather the final weights); only the main process writes files,
and the atomic rename of the output folder happens once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_path, write_json

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".checkpoints"
RUN_FILE = "run.json"  # fingerprint of the run that wrote the checkpoints next to it
# config fields that change neither the weights nor the logged metrics: left out of the
# fingerprint, so e.g. a changed checkpoint interval still resumes.
RESUME_NEUTRAL_KEYS = frozenset(
    {"save_steps", "save_strategy", "save_total_limit", "disable_tqdm", "report_to"}
)


def train_resumable(
    cfg,
    build: Callable[[], tuple[Any, Any]],
    *,
    out_dir: Path,
    ckpt_dir: Path,
    fingerprint: dict[str, Any],
    metrics_path: str | os.PathLike | None,
) -> list[dict[str, Any]]:
    """Train the trainer that ``build()`` returns (with its tokenizer) under the checkpoint
    scheme of the module docstring, then write the model folder and the metrics atomically.

    ``cfg`` is the trainer's TRL config (``output_dir`` = ``ckpt_dir``); ``build`` loads the
    models, so it runs after the checkpoint folder is checked. Every process calls this.
    """
    checkpointing = cfg.save_strategy != "no"
    main = cfg.process_index == 0
    resume = None
    if checkpointing:
        if main:
            prepare_checkpoint_dir(ckpt_dir, fingerprint)
        _wait_for_everyone()
        resume = last_checkpoint(ckpt_dir)

    trainer, tokenizer = build()
    resumed_at = 0
    if resume is not None:
        resumed_at = _restore_untracked_state(trainer, resume)
        if main:
            log.info("resuming from checkpoint %s (step %d)", resume, resumed_at)
    elif checkpointing and main:
        log.info("no checkpoint in %s: training from the start", ckpt_dir)
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    except BaseException:
        if main and not checkpointing:  # nothing to resume from: leave nothing behind
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        raise
    history = log_history(trainer)
    if resumed_at:
        _whole_run_train_loss(history, resumed_at)

    if trainer.is_fsdp_enabled:  # checkpoints may be sharded; the final model is one folder
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    with _shared_atomic_dir(out_dir, main) as tmp:
        trainer.model.config.use_cache = True
        trainer.save_model(str(tmp))  # every process: ZeRO-3 and FSDP gather the weights
        if main:
            tokenizer.save_pretrained(str(tmp))
    if main:
        if metrics_path is not None:
            write_json({"log_history": history, "final": summarise(history)}, metrics_path)
        # last: a kill before this point still finds the checkpoints on the rerun
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    _wait_for_everyone()
    return history


def checkpoint_dir_for(out_dir: str | os.PathLike) -> Path:
    """Where :func:`train_resumable` keeps the resumable checkpoints of ``out_dir``: its sibling
    ``<name>.checkpoints`` (``results/dice/iter1/policy`` -> ``.../iter1/policy.checkpoints``).
    """
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + CHECKPOINT_SUFFIX)


def checkpoint_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` (TRL fields of a training block) with the checkpoint fields: ``save_steps`` N
    switches step checkpoints on; absent, 0 or None means none.

    We keep one checkpoint (``save_total_limit: 1``): the Trainer deletes the previous one only
    after the new one is complete, so a complete one always exists.
    """
    out = dict(args)
    if not out.get("save_steps"):
        out.pop("save_steps", None)
        out.setdefault("save_strategy", "no")
        return out
    out.setdefault("save_strategy", "steps")
    out.setdefault("save_total_limit", 1)
    return out


def check_checkpoint_steps(cfg) -> None:
    """A resumed run logs the same metrics as an uninterrupted one only when each checkpoint of
    TRL config ``cfg`` falls on a logging step (the loss accumulated between a log and a
    checkpoint is not part of the checkpoint)."""
    save, logging_steps = cfg.save_steps, cfg.logging_steps
    if (
        cfg.save_strategy == "steps"
        and isinstance(save, int)
        and isinstance(logging_steps, int)
        and save % logging_steps
    ):
        raise ValueError(
            f"save_steps ({save}) must be a multiple of logging_steps ({logging_steps}): a run "
            "resumed from a checkpoint between two logging steps cannot log the same losses as "
            "an uninterrupted one"
        )


def run_fingerprint(args: Mapping[str, Any], **parts: Any) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed from: ``parts`` (the inputs, e.g.
    :func:`model_fingerprint` and :func:`frame_fingerprint` values, the seed, the number of
    processes, the trainer) and the config fields ``args`` that change the result (all but
    :data:`RESUME_NEUTRAL_KEYS`)."""
    return {
        **parts,
        "args": {k: v for k, v in sorted(args.items()) if k not in RESUME_NEUTRAL_KEYS},
    }


def frame_fingerprint(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """A training set by the content of its ``columns`` (in row order)."""
    data = pd.util.hash_pandas_object(frame[list(columns)], index=False).to_numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def model_fingerprint(model: str | os.PathLike) -> str:
    """A local folder by its files' names, sizes and modification times (cheap for 7B weights:
    a regenerated upstream model changes them); a hub ID by itself."""
    path = Path(model)
    if not path.is_dir():
        return str(model)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def prepare_checkpoint_dir(ckpt_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Main process: keep only complete checkpoints of this very run, and record the run."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    run_file = ckpt_dir / RUN_FILE
    fingerprint = json.loads(json.dumps(fingerprint, default=str))  # as read back from run.json
    if ckpt_dir.exists():
        try:
            previous = json.loads(run_file.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != fingerprint:
            if any(ckpt_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")):
                why = (
                    "no run.json"
                    if previous is None
                    else ", ".join(k for k in fingerprint if previous.get(k) != fingerprint[k])
                    + " differ"
                )
                log.warning(
                    "discarding the checkpoints in %s: they are from another run (%s)",
                    ckpt_dir,
                    why,
                )
            shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for sub in ckpt_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        if sub.is_dir() and not _is_complete(sub):  # killed while it was being written
            log.warning("removing incomplete checkpoint %s", sub)
            shutil.rmtree(sub)
    write_json(fingerprint, run_file)


def _is_complete(checkpoint: Path) -> bool:
    # the Trainer writes trainer_state.json after the weights, optimizer, scheduler and RNG states
    from transformers.trainer import TRAINER_STATE_NAME

    return (checkpoint / TRAINER_STATE_NAME).is_file()


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not ckpt_dir.is_dir():
        return None
    last = get_last_checkpoint(str(ckpt_dir))
    return Path(last) if last is not None and _is_complete(Path(last)) else None


def _restore_untracked_state(trainer, checkpoint: Path) -> int:
    """Restore what the Trainer's checkpoint holds but does not reload; return its step.

    TRL keeps the running token count (logged as ``num_tokens``) on the trainer, outside
    ``TrainerState``; the checkpoint's log at its own step holds the value to continue from.
    """
    from transformers.trainer import TRAINER_STATE_NAME

    state = json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    step = int(state["global_step"])
    at_step = [
        e for e in state.get("log_history", []) if e.get("step") == step and "num_tokens" in e
    ]
    if hasattr(trainer, "_total_train_tokens"):
        if at_step:
            trainer._total_train_tokens = int(at_step[-1]["num_tokens"])
        else:
            log.warning("%s has no log at step %d: num_tokens restarts from 0", checkpoint, step)
    return step


def _whole_run_train_loss(history: list[dict[str, Any]], resumed_at: int) -> None:
    """Make the final ``train_loss`` the mean over the whole run, as without the interruption.

    The Trainer reports it over the steps of the last ``train()`` call only. The logged
    ``loss`` of each entry is the mean since the previous log, so the steps up to the resume
    point contribute ``loss * steps``; the last call contributes ``train_loss * its steps``.
    """
    final = next((e for e in reversed(history) if "train_loss" in e), None)
    if final is None:
        return
    total_steps = int(final["step"])
    before, last = 0.0, 0
    for entry in history:
        if "loss" in entry and entry.get("step", math.inf) <= resumed_at:
            before += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
    after = final["train_loss"] * (total_steps - resumed_at)
    final["train_loss"] = (before + after) / max(total_steps, 1)


@contextlib.contextmanager
def _shared_atomic_dir(out_dir: Path, main: bool) -> Iterator[Path]:
    """:func:`atomic_path` on the main process; every process gets the same temporary folder
    (``save_model`` is collective under ZeRO-3/FSDP), and the rename happens once, after all
    processes have written their part."""
    from accelerate.utils import broadcast_object_list

    if main:
        with atomic_path(out_dir, is_dir=True) as tmp:
            broadcast_object_list([str(tmp)], from_process=0)
            yield tmp
            _wait_for_everyone()
    else:
        shared = [None]
        broadcast_object_list(shared, from_process=0)
        yield Path(shared[0])
        _wait_for_everyone()


def _wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def log_history(trainer) -> list[dict[str, Any]]:
    """The trainer's logged entries, numbers as floats (JSON-ready)."""
    rows = []
    for entry in trainer.state.log_history:
        rows.append({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in entry.items()})
    return rows


def summarise(history: list[dict[str, Any]]) -> dict[str, float]:
    """Last logged value of each numeric metric, plus the mean loss over the run."""
    final: dict[str, float] = {}
    losses = []
    for entry in history:
        for k, v in entry.items():
            if isinstance(v, float) and math.isfinite(v):
                final[k] = v
        if "loss" in entry:
            losses.append(entry["loss"])
    if losses:
        final["mean_loss"] = float(sum(losses) / len(losses))
    return final
