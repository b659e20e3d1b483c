"""The global training batch: gradient accumulation derived from the number of processes.

A training block (``train``, ``start_policy``, ``sft``, ``agreement.reward_model``) holds literal
TRL config fields plus one key of ours, :data:`GLOBAL_BATCH_KEY` (``global_batch_size``): the
number of pairs per optimizer step over all processes, as the paper states it ("the global
training batch size is set to 32", on 8 GPUs). TRL's batch is ``per_device_train_batch_size x
gradient_accumulation_steps x processes``, so for a job with ``processes`` training processes
(``max(gpu, 1)``: a job without a GPU trains in one CPU process)

    gradient_accumulation_steps = global_batch_size / (per_device_train_batch_size x processes)

and the same config gives the same batch on 8 GPUs (accumulation 1) or on one (accumulation 8).
A ``gradient_accumulation_steps`` in the same block is refused (the one would silently override
the other). Without ``global_batch_size`` (or with
null) the block's own ``gradient_accumulation_steps`` is used as it is, so the global batch then
grows with the GPU count.

Imports nothing heavy: the Snakefile checks a job's batch with it when the job is scheduled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GLOBAL_BATCH_KEY = "global_batch_size"
PER_DEVICE_KEY = "per_device_train_batch_size"
ACCUMULATION_KEY = "gradient_accumulation_steps"


def processes_of(gpu: float | str | None) -> int:
    """Training processes of a job with ``gpu`` GPUs: one per GPU, one CPU process for none."""
    return max(int(gpu or 0), 1)


def gradient_accumulation(
    args: Mapping[str, Any], processes: int, where: str = "train"
) -> int | None:
    """``gradient_accumulation_steps`` that makes the global batch ``args['global_batch_size']``
    with ``processes`` processes; None when the block sets no global batch.

    Raises ValueError, naming the keys of block ``where``, when the global batch is not a
    multiple of ``per_device_train_batch_size x processes``.
    """
    total = args.get(GLOBAL_BATCH_KEY)
    if total is None:
        return None
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if args.get(ACCUMULATION_KEY) is not None:
        raise ValueError(
            f"{where}: set {GLOBAL_BATCH_KEY} ({total}) or {ACCUMULATION_KEY} "
            f"({args[ACCUMULATION_KEY]}), not both: the accumulation is derived "
            f"from the global batch and the job's processes"
        )
    if PER_DEVICE_KEY not in args:
        raise ValueError(f"{where}.{GLOBAL_BATCH_KEY} ({total}) needs {where}.{PER_DEVICE_KEY}")
    per_device = int(args[PER_DEVICE_KEY])
    if not isinstance(total, int) or total < 1 or per_device < 1:
        raise ValueError(
            f"{where}.{GLOBAL_BATCH_KEY} ({total!r}) and {where}.{PER_DEVICE_KEY} "
            f"({per_device}) must be positive integers"
        )
    per_step = per_device * processes
    if total % per_step:
        raise ValueError(
            f"{where}.{GLOBAL_BATCH_KEY} ({total}) is not a multiple of {where}.{PER_DEVICE_KEY} "
            f"({per_device}) x {processes} training process(es) (the job's gpu resource, at "
            f"least 1) = {per_step}: change one of them"
        )
    return total // per_step


def trl_batch_args(args: Mapping[str, Any], processes: int, where: str = "train") -> dict[str, Any]:
    """The TRL config fields of a training block for ``processes`` processes: the global batch
    turned into ``gradient_accumulation_steps`` and the non-TRL key removed."""
    out = dict(args)
    steps = gradient_accumulation(out, processes, where)
    out.pop(GLOBAL_BATCH_KEY, None)
    if steps is not None:
        out[ACCUMULATION_KEY] = steps
    return out
