"""Supervised and DPO-family training through TRL, configured by TRL's own field names.

The ``args`` mappings handed to these functions are literal ``SFTConfig`` / ``DPOConfig`` fields
(``beta``, ``learning_rate``, ``lr_scheduler_type``, ``warmup_steps``, ``max_steps``, ...), so a TRL
user reads our config without a glossary, plus one key of ours: ``global_batch_size``, turned
into ``gradient_accumulation_steps`` for the run's number of processes (:mod:`dicewf.batching`)
by :func:`trl_config`, which builds every training block's TRL config. Two TRL defaults are
overridden on machines without a GPU: ``bf16`` and ``gradient_checkpointing`` are off unless the
config turns them on, and the trainer runs on the CPU.

Datasets are plain strings: ``prompt`` is the prompt already rendered with the model's chat
template (ending with the assistant header; :func:`dicewf.chat.render_prompts`) and completions are
raw text, to which TRL appends the tokenizer's ``eos_token``; TRL gets a tokenizer whose
``eos_token`` is the chat template's turn-end token (:func:`dicewf.chat.for_trl`: ``<|eot_id|>``
for Llama-3, whose own ``eos_token`` is ``<|end_of_text|>``), and TRL's tokenization adds one BOS.
Scoring (:mod:`dicewf.scoring`) tokenizes the same way, so the implicit reward of a response is
computed on exactly the tokens DPO trains on. The model folders written keep the tokenizer as it
was loaded.

Every run goes through :func:`dicewf.checkpoints.train_resumable`: with ``save_steps: N`` in
``args`` (absent, 0 or null: no checkpoints) a killed run's rerun resumes from the last complete
checkpoint in ``<out_dir>.checkpoints/`` and ends with an uninterrupted run's weights and metrics;
checkpoints of another run (:func:`dicewf.checkpoints.run_fingerprint`) are discarded. Under
``accelerate launch`` every process calls :func:`train_dpo` (DeepSpeed ZeRO-3 and FSDP need all
of them); only the main process writes files.

Ablation variants (paper Tables 3 and 7) share that code path (checkpoints, resume, fingerprint,
atomic outputs, metrics JSON); :func:`train_dpo` picks them with two arguments:

- ``trainer="kto"``: TRL's ``KTOTrainer`` on the unpaired form of the pairs (:func:`unpaired`):
  each (prompt, chosen, rejected) row gives (prompt, chosen, desirable) and (prompt, rejected,
  undesirable). ``args`` then holds ``KTOConfig`` fields (``beta``, ``desirable_weight``, ...).
  IPO and hinge are ``DPOConfig`` loss types of the default ``trainer="dpo"``.
- ``trainer="cpo"``: TRL's ``CPOTrainer`` (``trl.experimental.cpo``), whose ``args`` are
  ``CPOConfig`` fields; ``loss_type: simpo`` with ``cpo_alpha: 0`` is SimPO (Meng et al. 2024;
  SeRA's Appendix C.3): the length-normalised margin ``beta/|y| log pi(y|x)`` minus
  ``simpo_gamma``, no reference model.
- ``length_penalty=lambda > 0``: length-regularised DPO (R-DPO, Park et al. 2024, "Disentangling
  length from quality in DPO"), :class:`dicewf.rdpo.LengthRegularisedDPOTrainer`. Zero is plain
  DPO through the unchanged ``DPOTrainer``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import reflogps
from .batching import trl_batch_args
from .chat import for_trl, render_prompts
from .checkpoints import (
    check_checkpoint_steps,
    checkpoint_args,
    checkpoint_dir_for,
    frame_fingerprint,
    model_fingerprint,
    run_fingerprint,
    train_resumable,
)
from .io import check_frame
from .rdpo import check_length_penalty, length_regularised_dpo_trainer
from .secrets import check as check_secrets

log = logging.getLogger(__name__)

# preference trainers of :func:`train_dpo`: "dpo" (DPOTrainer, any DPOConfig loss_type), "kto"
# (KTOTrainer on the unpaired form of the pairs) and "cpo" (CPOTrainer, reference-free: SimPO)
TRAINERS = ("dpo", "kto", "cpo")
# trainers that train against a reference model (CPOTrainer's losses have none)
REFERENCED = ("dpo", "kto")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")
DEMO_COLUMNS = ("prompt", "completion")


def device_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """TRL fields ``args`` with our defaults for this machine: ``bf16`` on where the GPU supports
    it, ``gradient_checkpointing`` off, the CPU where there is no GPU or ACCELERATE_USE_CPU is on
    (``train_launch.py --cpu``, ``accelerate launch --cpu``), no reporting, a log every step; a
    secret is refused (:mod:`dicewf.secrets`)."""
    import torch

    # TRL pickles its config into every checkpoint and policy folder (training_args.bin): no
    # hub_token or other secret may reach it (the Hub reads HF_TOKEN from the environment)
    check_secrets(args, where="training arguments")
    out = dict(args)
    # the train rule with gpu=0 (train_launch.py --cpu, or `accelerate launch --cpu`) means the
    # CPU even where CUDA is seen
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    cuda = torch.cuda.is_available() and not forced_cpu
    out.setdefault("bf16", bool(cuda and torch.cuda.is_bf16_supported()))
    out.setdefault("gradient_checkpointing", False)
    if not cuda:
        out["use_cpu"] = True
        out["bf16"] = False
    out.setdefault("report_to", "none")
    out.setdefault("logging_steps", 1)
    out.setdefault("disable_tqdm", False)
    return out


def launched_processes() -> int:
    """Processes of this training run: WORLD_SIZE as the launchers (accelerate launch, torchrun,
    deepspeed) set it; 1 for a plain ``python`` run."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def trl_config(
    config_cls: type,
    args: Mapping[str, Any],
    *,
    where: str,
    output_dir: str | os.PathLike,
    seed: int = 0,
    processes: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """(TRL config, its fields) of training block ``args`` (``where`` names it in errors):
    ``global_batch_size`` turned into ``gradient_accumulation_steps`` for ``processes``
    (default: this run's; :mod:`dicewf.batching`), the checkpoint fields
    (:func:`dicewf.checkpoints.checkpoint_args`), this machine's defaults (:func:`device_args`),
    then ``config_cls`` built by TRL (an unknown field is a TypeError, a bad value a ValueError)
    and ``save_steps`` checked against ``logging_steps``. The fields returned are the block's
    (what the run fingerprint holds), without the machine's defaults. Creates nothing in
    ``output_dir``."""
    processes = launched_processes() if processes is None else processes
    trl_args = checkpoint_args(trl_batch_args(args, processes, where))
    cfg = config_cls(output_dir=str(output_dir), seed=seed, data_seed=seed, **device_args(trl_args))
    check_checkpoint_steps(cfg)
    return cfg, trl_args


def train_sft(
    base: str | os.PathLike,
    demos: pd.DataFrame,
    out_dir: str | os.PathLike,
    args: Mapping[str, Any],
    *,
    seed: int,
    metrics_path: str | os.PathLike | None = None,
    source: str = "<demos>",
    checkpoint_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Supervised fine-tuning on (prompt, completion) demonstrations; loss on completions only.

    ``args`` are ``SFTConfig`` fields; checkpoints, resume and outputs as :func:`train_dpo`.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    check_frame(demos, {"prompt": "str", "completion": "str"}, source)
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else checkpoint_dir_for(out_dir)
    cfg, trl_args = trl_config(SFTConfig, args, where="sft", output_dir=ckpt_dir, seed=seed)
    fingerprint = run_fingerprint(
        trl_args,
        model=model_fingerprint(base),
        demos=frame_fingerprint(demos, DEMO_COLUMNS),
        seed=seed,
        world_size=cfg.world_size,
        trainer="sft",
    )

    def build():
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base)
        data = Dataset.from_dict(
            {
                "prompt": render_prompts(tokenizer, demos["prompt"].tolist()),
                "completion": demos["completion"].tolist(),
            }
        )
        built = SFTTrainer(
            model=model, args=cfg, train_dataset=data, processing_class=for_trl(tokenizer)
        )
        return built, tokenizer

    return train_resumable(
        cfg,
        build,
        out_dir=out_dir,
        ckpt_dir=ckpt_dir,
        fingerprint=fingerprint,
        metrics_path=metrics_path,
    )


def train_dpo(
    policy: str | os.PathLike,
    pairs: pd.DataFrame,
    out_dir: str | os.PathLike,
    args: Mapping[str, Any],
    *,
    seed: int,
    ref: str | os.PathLike | None = None,
    metrics_path: str | os.PathLike | None = None,
    source: str = "<pairs>",
    checkpoint_dir: str | os.PathLike | None = None,
    trainer: str = "dpo",
    length_penalty: float = 0.0,
) -> list[dict[str, Any]]:
    """Preference training of ``policy`` on ``pairs``: DPO-family (any TRL ``loss_type``), KTO or
    CPO/SimPO.

    The reference model is ``ref`` when given, else a frozen copy of the initial policy
    (Algorithm 1 line 6: pi_theta^(t-1) is both the initialisation and the reference); the
    reference-free ``trainer="cpo"`` loads none and ignores ``ref``. Where
    ``pairs`` carry their reference log-probs (``ref_chosen_logps`` / ``ref_rejected_logps`` with
    the token counts they cover, :mod:`dicewf.reflogps`) and all of them are what TRL would
    compute, TRL takes them from the data and no reference model is loaded; else the reference
    model runs, and the log says why (:func:`reference_logps_usable`).

    ``trainer`` is ``"dpo"`` (``args`` are ``DPOConfig`` fields), ``"kto"`` (``KTOConfig``
    fields; the pairs are unpaired, see :func:`unpaired`) or ``"cpo"`` (``CPOConfig`` fields). ``length_penalty`` > 0 trains
    length-regularised DPO (:class:`dicewf.rdpo.LengthRegularisedDPOTrainer`; DPO with the
    sigmoid loss only).

    With ``save_steps`` in ``args``, checkpoints go to ``checkpoint_dir`` (default: the sibling
    ``<out_dir>.checkpoints``) and a rerun resumes from the last complete one
    (:mod:`dicewf.checkpoints`). Every process of an ``accelerate launch`` calls this; only the
    main one writes files.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_frame(pairs, "pairs", source)
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else checkpoint_dir_for(out_dir)
    # the config first: a bad key fails before any model is loaded, and under `accelerate launch`
    # with ZeRO-3 it must exist before from_pretrained so the weights are loaded sharded
    cfg, trl_args = preference_config(
        args, trainer=trainer, length_penalty=length_penalty, output_dir=ckpt_dir, seed=seed
    )
    trainer_cls = _trl_classes(trainer, length_penalty)[1]
    referenced = trainer in REFERENCED
    if not referenced:
        log.info("reference model: none (trainer %r is reference-free)", trainer)
        ref = None
    reuse = referenced and reference_logps_usable(
        policy, pairs, cfg, trainer=trainer, source=source
    )
    if reuse:  # TRL's precompute path, fed from the pairs: no reference model is loaded
        cfg.precompute_ref_log_probs = True
        trainer_cls = reflogps.precomputed_trainer(trainer_cls)
    fingerprint = preference_fingerprint(
        policy,
        ref,
        pairs,
        trl_args,
        seed=seed,
        world_size=cfg.world_size,
        trainer=trainer,
        length_penalty=length_penalty,
    )
    if reuse:
        fingerprint["ref_logps"] = frame_fingerprint(pairs, reflogps.REF_COLUMNS)

    def build():
        tokenizer = AutoTokenizer.from_pretrained(policy)
        model = AutoModelForCausalLM.from_pretrained(policy)
        extra: dict[str, Any] = {"length_penalty": length_penalty} if length_penalty else {}
        if referenced:  # the reference model, unless its log-probs come with the pairs
            extra["ref_model"] = (
                None
                if reuse
                else AutoModelForCausalLM.from_pretrained(ref if ref is not None else policy)
            )
        data = preference_dataset(tokenizer, pairs, trainer=trainer, seed=seed, ref_logps=reuse)
        built = trainer_cls(
            model=model,
            args=cfg,
            train_dataset=data,
            processing_class=for_trl(tokenizer),
            **extra,
        )
        return built, tokenizer

    return train_resumable(
        cfg,
        build,
        out_dir=out_dir,
        ckpt_dir=ckpt_dir,
        fingerprint=fingerprint,
        metrics_path=metrics_path,
    )


def preference_fingerprint(
    policy: str | os.PathLike,
    ref: str | os.PathLike | None,
    pairs: pd.DataFrame,
    args: Mapping[str, Any],
    *,
    seed: int,
    world_size: int,
    trainer: str = "dpo",
    length_penalty: float = 0.0,
) -> dict[str, Any]:
    """The run fingerprint of :func:`train_dpo` (:func:`dicewf.checkpoints.run_fingerprint`)."""
    return run_fingerprint(
        args,
        policy=model_fingerprint(policy),
        ref=None if ref is None else model_fingerprint(ref),
        pairs=frame_fingerprint(pairs, PAIR_COLUMNS),
        seed=seed,
        world_size=world_size,
        trainer=trainer,
        length_penalty=float(length_penalty),
    )


def preference_config(
    args: Mapping[str, Any],
    *,
    trainer: str = "dpo",
    length_penalty: float = 0.0,
    output_dir: str | os.PathLike,
    seed: int = 0,
    processes: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """(TRL config, its fields) of a preference training block, checked as :func:`train_dpo`
    checks it: :func:`trl_config` with ``DPOConfig``, ``KTOConfig`` or ``CPOConfig``, then the loss
    type and the length penalty. Creates nothing in ``output_dir``; also the start-up check of every train
    block (:mod:`dicewf.checks`).
    """
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {list(TRAINERS)}, got {trainer!r}")
    if trainer == "dpo" and isinstance(args.get("loss_type"), str):
        args = {**args, "loss_type": [args["loss_type"]]}
    cfg, trl_args = trl_config(
        trl_config_class(trainer, length_penalty),
        args,
        where="train",
        output_dir=output_dir,
        seed=seed,
        processes=processes,
    )
    if trainer == "dpo":
        _check_dpo_loss(cfg)
        check_length_penalty(cfg, length_penalty)
    else:
        _check_loss_choice(cfg, trainer)
    return cfg, trl_args


def preference_dataset(
    tokenizer,
    pairs: pd.DataFrame,
    *,
    trainer: str = "dpo",
    seed: int = 0,
    ref_logps: bool = False,
):
    """The ``datasets.Dataset`` handed to TRL: prompts rendered with the chat template
    (:func:`dicewf.chat.render_prompts`), chosen and rejected as raw text (TRL appends the
    turn-end token, see :func:`dicewf.chat.for_trl`); for ``trainer="kto"`` the unpaired form.
    With ``ref_logps`` also TRL's ``ref_chosen_logps`` / ``ref_rejected_logps`` columns."""
    from datasets import Dataset

    rendered = pairs.assign(prompt=render_prompts(tokenizer, pairs["prompt"].tolist()))
    if trainer == "kto":
        return Dataset.from_pandas(unpaired(rendered, seed=seed), preserve_index=False)
    columns = PAIR_COLUMNS + (reflogps.REF_COLUMNS if ref_logps else ())
    return Dataset.from_dict({c: rendered[c].tolist() for c in columns})


def reference_logps_usable(
    policy: str | os.PathLike, pairs: pd.DataFrame, cfg, *, trainer: str, source: str
) -> bool:
    """Whether training on ``pairs`` takes the reference log-probs from their
    ``ref_chosen_logps`` / ``ref_rejected_logps`` columns (:mod:`dicewf.reflogps`); logs the
    choice, and why the live reference model runs instead."""
    from transformers import AutoTokenizer

    from .chat import context_limits

    if getattr(cfg, "precompute_ref_log_probs", False):
        log.info("reference log-probs: precomputed by TRL (precompute_ref_log_probs in the config)")
        return False
    if not all(c in pairs.columns for c in reflogps.COLUMNS):
        log.info("reference log-probs: the live reference model computes them (none given)")
        return False
    tokenizer = AutoTokenizer.from_pretrained(policy)
    context = min(context_limits(policy, tokenizer).values(), default=None)
    reason = reflogps.live_reason(pairs, tokenizer, cfg, trainer=trainer, context=context)
    if reason is None:
        log.info(
            "reference log-probs: reused from %s for all %d pairs; no reference model is loaded",
            source,
            len(pairs),
        )
        return True
    log.warning(
        "reference log-probs of %s not used, the live reference model computes them: %s",
        source,
        reason,
    )
    return False


def trl_config_class(trainer: str, length_penalty: float) -> type:
    """The TRL config class of a preference trainer (without importing the trainer)."""
    if trainer != "dpo" and length_penalty:
        raise ValueError(
            f"length_penalty ({length_penalty}) is a term of the DPO loss (length-regularised "
            f"DPO); it does not apply to trainer={trainer!r}"
        )
    if trainer == "kto":
        from trl import KTOConfig

        return KTOConfig
    if trainer == "cpo":
        from trl.experimental.cpo import CPOConfig

        return CPOConfig
    from trl import DPOConfig

    return DPOConfig


def _dpo_loss_types() -> list[str]:
    """The loss types DPOConfig documents (its ``loss_type`` help lists them as `'name'`);
    empty if a TRL version words it otherwise (then DPOTrainer alone checks)."""
    import dataclasses
    import re

    from trl import DPOConfig

    field = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type")
    return re.findall(r"`'([a-z_0-9]+)'`", field.metadata.get("help", ""))


def _check_dpo_loss(cfg) -> None:
    """DPOConfig does not check ``loss_type``; DPOTrainer fails only at its first step."""
    known = _dpo_loss_types()
    loss_types = [cfg.loss_type] if isinstance(cfg.loss_type, str) else list(cfg.loss_type)
    unknown = [t for t in loss_types if t not in known]
    if known and unknown:
        raise ValueError(
            f"loss_type: unknown DPO loss type(s) {unknown}; DPOConfig takes "
            f"{', '.join(known)} (trainer kto: loss_type kto)"
        )


def _trl_classes(trainer: str, length_penalty: float) -> tuple[type, type]:
    """(config class, trainer class) of a preference trainer; plain DPOTrainer when lambda=0."""
    config_cls = trl_config_class(trainer, length_penalty)
    if trainer == "kto":
        from trl import KTOTrainer

        return config_cls, KTOTrainer
    if trainer == "cpo":
        from trl.experimental.cpo import CPOTrainer

        return config_cls, CPOTrainer
    from trl import DPOTrainer

    return config_cls, (length_regularised_dpo_trainer() if length_penalty else DPOTrainer)


def _check_loss_choice(cfg, trainer: str) -> None:
    """KTOConfig and CPOConfig do not check ``loss_type`` themselves (their field lists the
    choices), and their trainers fail only at the first step on another trainer's loss type
    (e.g. ``robust`` inherited from a shared train block)."""
    import dataclasses

    choices = next(f for f in dataclasses.fields(cfg) if f.name == "loss_type").metadata["choices"]
    if cfg.loss_type not in choices:
        raise ValueError(
            f"trainer={trainer!r} takes a {type(cfg).__name__} loss_type ({', '.join(choices)}), "
            f"got {cfg.loss_type!r}: set loss_type in the train block"
        )


def unpaired(pairs: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """The unpaired (KTO) form of preference pairs, in a seeded random order.

    Each (prompt, chosen, rejected) row gives (prompt, chosen, label True) and (prompt,
    rejected, label False): columns ``prompt``, ``completion``, ``label``. KTOTrainer reads its
    data in order (``train_sampling_strategy: sequential``, since it estimates the KL term from
    the other completions of the same batch) so the rows are shuffled here, once, with ``seed``:
    a batch then mixes prompts and labels instead of holding the two halves of one pair.
    """
    n = len(pairs)
    rows = pd.DataFrame(
        {
            "prompt": pairs["prompt"].tolist() * 2,
            "completion": pairs["chosen"].tolist() + pairs["rejected"].tolist(),
            "label": [True] * n + [False] * n,
        }
    )
    order = np.random.default_rng(seed).permutation(2 * n)
    return rows.iloc[order].reset_index(drop=True)
