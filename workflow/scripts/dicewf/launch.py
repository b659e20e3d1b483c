"""The training entry point: command line and config file -> :func:`dicewf.training.train_dpo`.

Both DPO-family training rules run it through ``workflow/scripts/train_launch.py``: ``train``
(Algorithm 1 line 6, every DICE iteration: one ``python`` process for a job with at most one
GPU, ``accelerate launch`` with one process per GPU for more; :func:`dicewf.jobs.train_launcher`)
and ``toy_start_policy`` (pi_theta^(0) of the toy world, Snakemake's ``script:``). As in TRL's
and alignment-handbook's scripts, TRL's own ``TrlParser`` parses the arguments into two
dataclasses, ours (:class:`TrainArguments`) and the TRL config class (``DPOConfig``, or
``KTOConfig`` with ``--trainer kto``, ``CPOConfig`` with ``--trainer cpo``), from the command
line and a YAML/JSON file given with ``--config`` (the ``train`` rule passes the
``train_args.json`` that its ``train_args`` job writes, so no hyperparameter is on the recorded
command line); the command line wins over the file. A field
that neither dataclass has is an error naming the file; a secret is refused
(:mod:`dicewf.secrets`).

``--trainer`` picks the config class, so it is given on the command line. The TRL config itself
is built by :func:`dicewf.training.train_dpo` from the fields that the file and the command line
set (with the global batch, the checkpoint fields and this machine's defaults:
:func:`dicewf.training.trl_config`), so the parser reads the TRL fields into
:func:`trl_fields` of the config class: the same names, types, choices and help, every field
unset unless given. ``global_batch_size`` (ours, :mod:`dicewf.batching`) is read with them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from . import jobs, logs, model_files
from .batching import GLOBAL_BATCH_KEY
from .io import read_parquet
from .training import TRAINERS, trl_config_class

# TRL config fields that the training function sets itself (from --seed and the output folder)
SET_BY_US = ("output_dir", "seed", "data_seed")


class _Unset:
    """The default of every TRL field in :func:`trl_fields`: not given, TRL's default applies."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


@dataclasses.dataclass
class TrainArguments:
    """Our arguments of the training entry point (the TRL fields are the config class's)."""

    model: str = dataclasses.field(metadata={"help": "policy to train (folder or hub ID)"})
    pairs: str = dataclasses.field(
        metadata={"help": "preference pairs (parquet: prompt_id, prompt, chosen, rejected)"}
    )
    out: str = dataclasses.field(metadata={"help": "output model folder (written atomically)"})
    seed: int = dataclasses.field(metadata={"help": "seed of the trainer and the data order"})
    metrics: str | None = dataclasses.field(
        default=None, metadata={"help": "training metrics JSON (log history and final values)"}
    )
    ref: str | None = dataclasses.field(
        default=None, metadata={"help": "reference model (default: a frozen copy of --model)"}
    )
    trainer: str = dataclasses.field(
        default="dpo",
        metadata={
            "choices": list(TRAINERS),
            "help": "dpo: TRL DPOTrainer, any loss_type (sigmoid, ipo, hinge, ...); kto: TRL "
            "KTOTrainer on the unpaired pairs (the TRL fields are then KTOConfig's); cpo: TRL "
            "CPOTrainer, reference-free (CPOConfig's fields; loss_type simpo is SimPO)",
        },
    )
    length_penalty: float = dataclasses.field(
        default=0.0,
        metadata={
            "help": "length-regularised DPO (Park et al. 2024): lambda per response token in "
            "the DPO margin; 0 is plain DPO"
        },
    )
    checkpoint_dir: str | None = dataclasses.field(
        default=None,
        metadata={"help": "resumable checkpoints (default: <out>.checkpoints next to --out)"},
    )
    log: str | None = dataclasses.field(
        default=None, metadata={"help": "log file of the main process (default: stderr)"}
    )
    cpu: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "train on the CPU even where a GPU is seen (a train job with gpu=0), as "
            "`accelerate launch --cpu` does: ACCELERATE_USE_CPU=true"
        },
    )
    threads: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "CPU threads of the job, shared by its processes (default: as the "
            "environment's OMP_NUM_THREADS leaves torch)"
        },
    )


@functools.cache
def trl_fields(config_cls: type) -> type:
    """A dataclass with the init fields of TRL config class ``config_cls`` (names, types, help,
    choices) less :data:`SET_BY_US`, plus ``global_batch_size``, each defaulting to
    :data:`UNSET`: what ``TrlParser`` reads the TRL fields into without building the config
    (which sets TRL's defaults for every field and, on a machine without a GPU, refuses its own
    ``bf16`` default)."""
    hints = typing.get_type_hints(config_cls)
    fields = [
        (f.name, hints[f.name], dataclasses.field(default=UNSET, metadata=f.metadata))
        for f in dataclasses.fields(config_cls)
        if f.init and f.name not in SET_BY_US
    ]
    fields.append(
        (
            GLOBAL_BATCH_KEY,
            int | None,
            dataclasses.field(
                default=UNSET,
                metadata={"help": "pairs per optimizer step over all processes (dicewf.batching)"},
            ),
        )
    )
    return dataclasses.make_dataclass(f"{config_cls.__name__}Fields", fields)


def _flag(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def parse(
    argv: Sequence[str] | None = None, *, config: Mapping[str, Any] | None = None
) -> tuple[TrainArguments, dict[str, Any]]:
    """(our arguments, the TRL fields given) from ``argv`` (default: ``sys.argv[1:]``) and its
    ``--config`` file; ``config`` is a mapping read as that file would be (Snakemake's
    ``script:`` hands the rule's training block over this way)."""
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    trainer = _flag(argv, "--trainer") or TrainArguments.trainer
    if trainer not in TRAINERS:
        raise SystemExit(f"--trainer: one of {list(TRAINERS)}, got {trainer!r}")
    fields_cls = trl_fields(trl_config_class(trainer, 0.0))
    parser = TrlParser((TrainArguments, fields_cls), description=__doc__.split("\n", 1)[0])
    # every TRL field unset unless given (HfArgumentParser leaves list fields at None)
    parser.set_defaults(**{f.name: UNSET for f in dataclasses.fields(fields_cls)})
    where = _flag(argv, "--config") or (
        "the training block" if config is not None else "the command line"
    )
    try:
        if config is not None:
            unknown = parser.set_defaults_with_config(**config)
            if unknown:
                raise ValueError(f"Unknown arguments from config file: {unknown}")
        script, trl = parser.parse_args_and_config(argv)
    except ValueError as e:  # TrlParser: not a mapping, or fields neither dataclass has
        raise SystemExit(
            f"{where}: {e} ({trl_config_class(trainer, 0.0).__name__} with --trainer {trainer})"
        ) from None
    if script.trainer != trainer:
        raise SystemExit(
            f"{where}: trainer {script.trainer!r}: give --trainer on the command "
            "line (it picks the TRL config class)"
        )
    given = {f.name: getattr(trl, f.name) for f in dataclasses.fields(trl)}
    return script, {k: v for k, v in given.items() if v is not UNSET}


def main(argv: Sequence[str] | None = None, *, config: Mapping[str, Any] | None = None) -> None:
    """Parse (:func:`parse`), set up logging, check the model folders, read the pairs, train."""
    script, fields = parse(argv, config=config)
    # the launchers (torchrun, deepspeed) set RANK; a plain `python` run is rank 0
    main_process = os.environ.get("RANK", "0") == "0"
    if script.log and main_process:
        logs.to_file(script.log)
    else:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO if main_process else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    if script.cpu:  # what `accelerate launch --cpu` sets; dicewf.training and accelerate read it
        os.environ["ACCELERATE_USE_CPU"] = "true"
    from .training import launched_processes, train_dpo

    if script.threads is not None:
        jobs.set_threads(script.threads, processes=launched_processes())
    jobs.deterministic()
    for role, path in (("--model", script.model), ("--ref", script.ref)):  # a model in each
        model_files.model_dir(path, f"{role} of train_launch.py")
    pairs = read_parquet(script.pairs, "pairs")
    train_dpo(
        script.model,
        pairs,
        script.out,
        fields,
        seed=script.seed,
        ref=script.ref,
        metrics_path=script.metrics,
        source=script.pairs,
        checkpoint_dir=script.checkpoint_dir,
        trainer=script.trainer,
        length_penalty=script.length_penalty,
    )
