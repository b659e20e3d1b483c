"""Supervised and DPO-family training through TRL, configured by TRL's own field names.

The ``args`` mappings handed to these functions are literal ``SFTConfig`` / ``DPOConfig`` fields
(``beta``, ``learning_rate``, ``lr_scheduler_type``, ``warmup_steps``, ``max_steps``, ...), so a TRL
user reads our config without a glossary, plus one key of ours: ``global_batch_size``, turned
into ``gradient_accumulation_steps`` for the run's number of processes (:mod:`dicewf.batching`)
by :func:`train_dpo` (and the reward-model trainer). Two TRL defaults are overridden on machines
without a GPU: ``bf16`` and ``gradient_checkpointing`` are off unless the config turns them on,
and the trainer runs on the CPU.

Datasets are plain strings: ``prompt`` is the prompt already rendered with the model's chat
template (ending with the assistant header; :func:`dicewf.chat.render_prompts`) and completions are
raw text, to which TRL appends the tokenizer's ``eos_token``; TRL gets a tokenizer whose
``eos_token`` is the chat template's turn-end token (:func:`dicewf.chat.for_trl`: ``<|eot_id|>``
for Llama-3, whose own ``eos_token`` is ``<|end_of_text|>``), and TRL's tokenization adds one BOS.
Scoring (:mod:`dicewf.scoring`) tokenizes the same way, so the implicit reward of a response is
computed on exactly the tokens DPO trains on. The model folders written keep the tokenizer as it
was loaded.

Resumable DPO training. With ``save_steps: N`` in ``args`` (a ``DPOConfig`` field; absent, 0 or
null means no checkpoints), :func:`train_dpo` saves a Trainer checkpoint (weights, optimizer,
scheduler, RNG states, trainer state) every N optimizer steps into
:func:`checkpoint_dir_for` ``(out_dir)``, the sibling ``<out_dir>.checkpoints/``. It is the only
thing written outside the declared outputs, and it has to be: Snakemake deletes a job's declared
outputs before it reruns the job (and after a failure), so checkpoints kept inside the output
folder would not survive to be resumed from. A rerun after a crash or a kill resumes from the
last complete checkpoint there; on success the folder is deleted after the model and the metrics
are written. A ``run.json`` in the folder fingerprints the job (inputs, DPOConfig fields that
change the result, seed, number of processes): checkpoints of another run are discarded, never
resumed from. The Trainer restores weights, optimizer, scheduler, RNG states and the data order
(it skips the batches already seen); we also restore TRL's running token count and report
``train_loss`` over the whole run, so a resumed run's metrics and weights equal an uninterrupted
run's (tests/test_resume.py). That needs each checkpoint on a logging step (``save_steps`` a
multiple of ``logging_steps``, checked) and the same number of processes.

Under ``accelerate launch`` every process calls :func:`train_dpo` (DeepSpeed ZeRO-3 and FSDP need
all of them to train and to gather the final weights); only the main process writes files, and
the atomic rename of the output folder happens once.

Ablation variants (paper Tables 3 and 7) share that code path (checkpoints, resume, fingerprint,
atomic outputs, metrics JSON); :func:`train_dpo` picks them with two arguments:

- ``trainer="kto"``: TRL's ``KTOTrainer`` on the unpaired form of the pairs (:func:`unpaired`):
  each (prompt, chosen, rejected) row gives (prompt, chosen, desirable) and (prompt, rejected,
  undesirable). ``args`` then holds ``KTOConfig`` fields (``beta``, ``desirable_weight``, ...).
  IPO and hinge are ``DPOConfig`` loss types of the default ``trainer="dpo"``.
- ``length_penalty=lambda > 0``: length-regularised DPO (R-DPO, Park et al. 2024, "Disentangling
  length from quality in DPO"), :class:`LengthRegularisedDPOTrainer`. Zero is plain DPO through
  the unchanged ``DPOTrainer``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .batching import GLOBAL_BATCH_KEY, trl_batch_args
from .chat import for_trl, render_prompts
from .io import atomic_path, check_frame, write_json
from .secrets import check as check_secrets

log = logging.getLogger(__name__)

# Keys of the training blocks that are ours, not TRL's (global_batch_size: see batching.py).
NON_TRL_KEYS = ("trainer", GLOBAL_BATCH_KEY)

CHECKPOINT_SUFFIX = ".checkpoints"
RUN_FILE = "run.json"  # fingerprint of the run that wrote the checkpoints next to it
# DPOConfig fields that change neither the weights nor the logged metrics: left out of the
# fingerprint, so e.g. a changed checkpoint interval still resumes.
RESUME_NEUTRAL_KEYS = frozenset(
    {"save_steps", "save_strategy", "save_total_limit", "disable_tqdm", "report_to"}
)
# preference trainers of :func:`train_dpo`: "dpo" (DPOTrainer, any DPOConfig loss_type) and
# "kto" (KTOTrainer on the unpaired form of the pairs)
TRAINERS = ("dpo", "kto")


def _device_defaults(args: dict[str, Any]) -> dict[str, Any]:
    import torch

    # TRL pickles its config into every checkpoint and policy folder (training_args.bin): no
    # hub_token or other secret may reach it (the Hub reads HF_TOKEN from the environment)
    check_secrets(args, where="training arguments")
    out = dict(args)
    # `accelerate launch --cpu` (the train rule with gpu=0) means the CPU even where CUDA is seen
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    cuda = torch.cuda.is_available() and not forced_cpu
    out.setdefault("bf16", bool(cuda and torch.cuda.is_bf16_supported()))
    out.setdefault("gradient_checkpointing", False)
    if not cuda:
        out["use_cpu"] = True
        out["bf16"] = False
    out.setdefault("report_to", "none")
    out.setdefault("save_strategy", "no")
    out.setdefault("logging_steps", 1)
    out.setdefault("disable_tqdm", False)
    return out


def launched_processes() -> int:
    """Processes of this training run: WORLD_SIZE as the launchers (accelerate launch, torchrun,
    deepspeed) set it; 1 for a plain ``python`` run."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def _log_history(trainer) -> list[dict[str, Any]]:
    rows = []
    for entry in trainer.state.log_history:
        rows.append({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in entry.items()})
    return rows


def _finalise(trainer, tokenizer, tmp: Path, scratch: Path) -> None:
    trainer.model.config.use_cache = True
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(scratch, ignore_errors=True)


def train_sft(
    base: str | os.PathLike,
    demos: pd.DataFrame,
    out_dir: str | os.PathLike,
    args: Mapping[str, Any],
    *,
    seed: int,
    metrics_path: str | os.PathLike | None = None,
    source: str = "<demos>",
) -> list[dict[str, Any]]:
    """Supervised fine-tuning on (prompt, completion) demonstrations; loss on completions only."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    check_frame(demos, {"prompt": "str", "completion": "str"}, source)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    data = Dataset.from_dict(
        {"prompt": render_prompts(tokenizer, demos["prompt"].tolist()),
         "completion": demos["completion"].tolist()}
    )
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        scratch = tmp / "_trainer"
        cfg = SFTConfig(output_dir=str(scratch), seed=seed, data_seed=seed,
                        **_device_defaults(trl_batch_args(args, launched_processes(), "sft")))
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=data,
                             processing_class=for_trl(tokenizer))
        trainer.train()
        history = _log_history(trainer)
        _finalise(trainer, tokenizer, tmp, scratch)
    if metrics_path is not None:
        write_json({"log_history": history, "final": summarise(history)}, metrics_path)
    return history


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
    """Preference training of ``policy`` on ``pairs``: DPO-family (any TRL ``loss_type``) or KTO.

    The reference model is ``ref`` when given, else a frozen copy of the initial policy
    (Algorithm 1 line 6: pi_theta^(t-1) is both the initialisation and the reference).

    ``trainer`` is ``"dpo"`` (``args`` are ``DPOConfig`` fields) or ``"kto"`` (``KTOConfig``
    fields; the pairs are unpaired, see :func:`unpaired`). ``length_penalty`` > 0 trains
    length-regularised DPO (:class:`LengthRegularisedDPOTrainer`; DPO with the sigmoid loss only).

    With ``save_steps`` in ``args``, checkpoints go to ``checkpoint_dir`` (default: the sibling
    ``<out_dir>.checkpoints``) and a rerun resumes from the last complete one (module docstring).
    Every process of an ``accelerate launch`` calls this; only the main one writes files.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_frame(pairs, "pairs", source)
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else checkpoint_dir_for(out_dir)
    # the config first: a bad key fails before any model is loaded, and under `accelerate launch`
    # with ZeRO-3 it must exist before from_pretrained so the weights are loaded sharded
    cfg, trl_args = preference_config(args, trainer=trainer, length_penalty=length_penalty,
                                      output_dir=ckpt_dir, seed=seed)
    trainer_cls = _trl_classes(trainer, length_penalty)[1]
    fingerprint = _fingerprint(policy, ref, pairs, trl_args, seed, cfg.world_size,
                               trainer=trainer, length_penalty=length_penalty)

    def build():
        tokenizer = AutoTokenizer.from_pretrained(policy)
        model = AutoModelForCausalLM.from_pretrained(policy)
        ref_model = AutoModelForCausalLM.from_pretrained(ref if ref is not None else policy)
        data = preference_dataset(tokenizer, pairs, trainer=trainer, seed=seed)
        extra = {"length_penalty": length_penalty} if length_penalty else {}
        built = trainer_cls(model=model, ref_model=ref_model, args=cfg, train_dataset=data,
                            processing_class=for_trl(tokenizer), **extra)
        return built, tokenizer

    return _train_resumable(cfg, build, out_dir=out_dir, ckpt_dir=ckpt_dir,
                            fingerprint=fingerprint, metrics_path=metrics_path)


def preference_config(args: Mapping[str, Any], *, trainer: str = "dpo", length_penalty: float = 0.0,
                      output_dir: str | os.PathLike, seed: int = 0,
                      processes: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(TRL config, its fields) of a preference training block, checked as :func:`train_dpo`
    checks it: ``global_batch_size`` turned into ``gradient_accumulation_steps`` for
    ``processes`` (default: this run's), the checkpoint fields (``save_steps`` a multiple of
    ``logging_steps``), ``DPOConfig`` or ``KTOConfig`` built by TRL (an unknown field is a
    TypeError, a bad value a ValueError), the loss type and the length penalty. Creates nothing
    in ``output_dir``; also the start-up check of every train block (:mod:`dicewf.checks`).
    """
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {list(TRAINERS)}, got {trainer!r}")
    processes = launched_processes() if processes is None else processes
    # global_batch_size -> gradient_accumulation_steps for this run's processes (batching.py)
    trl_args = _checkpoint_defaults(trl_batch_args(args, processes, "train"))
    if trainer == "dpo" and isinstance(trl_args.get("loss_type"), str):
        trl_args["loss_type"] = [trl_args["loss_type"]]
    config_cls = _trl_config_class(trainer, length_penalty)
    cfg = config_cls(output_dir=str(output_dir), seed=seed, data_seed=seed,
                     **_device_defaults(trl_args))
    if trainer == "dpo":
        _check_dpo_loss(cfg)
        check_length_penalty(cfg, length_penalty)
    else:
        _check_kto_loss(cfg)
    return cfg, trl_args


def preference_dataset(tokenizer, pairs: pd.DataFrame, *, trainer: str = "dpo", seed: int = 0):
    """The ``datasets.Dataset`` handed to TRL: prompts rendered with the chat template
    (:func:`dicewf.chat.render_prompts`), chosen and rejected as raw text (TRL appends the
    turn-end token, see :func:`dicewf.chat.for_trl`); for ``trainer="kto"`` the unpaired form."""
    from datasets import Dataset

    rendered = pairs.assign(prompt=render_prompts(tokenizer, pairs["prompt"].tolist()))
    if trainer == "kto":
        return Dataset.from_pandas(unpaired(rendered, seed=seed), preserve_index=False)
    return Dataset.from_dict({c: rendered[c].tolist() for c in ("prompt", "chosen", "rejected")})


def _trl_config_class(trainer: str, length_penalty: float) -> type:
    """The TRL config class of a preference trainer (without importing the trainer)."""
    if trainer == "kto":
        if length_penalty:
            raise ValueError(
                f"length_penalty ({length_penalty}) is a term of the DPO loss (length-regularised "
                "DPO); it does not apply to trainer='kto'"
            )
        from trl import KTOConfig

        return KTOConfig
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
        raise ValueError(f"loss_type: unknown DPO loss type(s) {unknown}; DPOConfig takes "
                         f"{', '.join(known)} (trainer kto: loss_type kto)")


def _trl_classes(trainer: str, length_penalty: float) -> tuple[type, type]:
    """(config class, trainer class) of a preference trainer; plain DPOTrainer when lambda=0."""
    config_cls = _trl_config_class(trainer, length_penalty)
    if trainer == "kto":
        from trl import KTOTrainer

        return config_cls, KTOTrainer
    from trl import DPOTrainer

    return config_cls, (_length_regularised_dpo_trainer() if length_penalty else DPOTrainer)


def _check_kto_loss(cfg) -> None:
    """KTOConfig does not check ``loss_type`` itself, and KTOTrainer fails only at its first
    step on a DPO loss type (e.g. ``sigmoid`` inherited from a shared train block)."""
    import dataclasses

    choices = next(f for f in dataclasses.fields(cfg) if f.name == "loss_type").metadata["choices"]
    if cfg.loss_type not in choices:
        raise ValueError(
            f"trainer='kto' takes a KTOConfig loss_type ({', '.join(choices)}), got "
            f"{cfg.loss_type!r}: set loss_type: kto in the train block"
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
    rows = pd.DataFrame({
        "prompt": pairs["prompt"].tolist() * 2,
        "completion": pairs["chosen"].tolist() + pairs["rejected"].tolist(),
        "label": [True] * n + [False] * n,
    })
    order = np.random.default_rng(seed).permutation(2 * n)
    return rows.iloc[order].reset_index(drop=True)


def check_length_penalty(cfg, length_penalty: float) -> None:
    """Length-regularised DPO is defined for the sigmoid (Bradley-Terry) DPO loss: refuse a
    penalty with any other loss type or with TRL options that change what the margin is."""
    if not math.isfinite(length_penalty) or length_penalty < 0:
        raise ValueError(f"length_penalty must be a finite number >= 0, got {length_penalty}")
    if not length_penalty:
        return
    loss_types = [cfg.loss_type] if isinstance(cfg.loss_type, str) else list(cfg.loss_type)
    if loss_types != ["sigmoid"]:
        raise ValueError(
            f"length_penalty ({length_penalty}) is defined for DPO's sigmoid loss only "
            f"(length-regularised DPO); got loss_type {loss_types}. Use loss_type: sigmoid, "
            "or length_penalty 0"
        )
    if cfg.f_divergence_type != "reverse_kl" or cfg.ld_alpha is not None:
        raise ValueError(
            f"length_penalty ({length_penalty}) needs the plain DPO margin: f_divergence_type "
            f"must be reverse_kl (got {cfg.f_divergence_type!r}) and ld_alpha unset "
            f"(got {cfg.ld_alpha!r})"
        )


def __getattr__(name: str) -> Any:
    # the trainer subclass is built on first use, so importing this module does not import TRL
    if name == "LengthRegularisedDPOTrainer":
        return _length_regularised_dpo_trainer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _length_regularised_dpo_trainer() -> type:
    """:class:`LengthRegularisedDPOTrainer` (defined here, on first use, to import TRL lazily)."""
    from trl import DPOTrainer

    class LengthRegularisedDPOTrainer(DPOTrainer):
        """DPO with the length regularisation of Park et al. (2024), "Disentangling length from
        quality in direct preference optimization" (R-DPO):

            loss = -log sigmoid(beta * (logratio_w - logratio_l) + lambda * (|y_w| - |y_l|))

        with logratio = log pi_theta(y|x) - log pi_ref(y|x) summed over the response tokens and
        |y| the number of response tokens (EOS included, after TRL's truncation). lambda > 0
        penalises length. The loss is the Bradley-Terry likelihood of the preferences under the
        reward r = beta * logratio + lambda * |y|, so the length term takes up the part of a
        preference that length explains: a pair whose winner is longer needs a smaller log-ratio
        margin, one whose winner is shorter a larger one, and the policy's implicit reward
        beta * logratio = r - lambda * |y| learns less of a length bias in the data.

        The term is exactly DPO against a reference whose log-probability of each response is
        lowered by (lambda / beta) per token, and that is how it is implemented: the reference
        log-probs of the batch are computed with TRL's own ``compute_ref_log_probs``, shifted,
        and handed to TRL's loss as precomputed reference log-probs, so everything else
        (tokenisation, truncation, logging, distributed gathering) is TRL's. The logged
        ``rewards/*`` are therefore the length-regularised rewards beta * logratio + lambda *
        |y| (what the loss compares); ``rewards/length_margins`` logs the mean lambda * (|y_w| -
        |y_l|), so the plain implicit-reward margin is ``rewards/margins`` minus it.

        Only ``loss_type`` sigmoid (see :func:`check_length_penalty`).
        """

        def __init__(self, *args: Any, length_penalty: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            check_length_penalty(self.args, length_penalty)
            self.length_penalty = float(length_penalty)

        def _compute_loss(self, model, inputs, return_outputs):
            mode = "train" if self.model.training else "eval"
            # response tokens of each sequence: those the (summed) log-probs run over
            lengths = inputs["completion_mask"][:, 1:].sum(dim=1)
            len_chosen, len_rejected = lengths.chunk(2, dim=0)  # the batch is [chosen, rejected]
            if self.precompute_ref_logps:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                reference = self.ref_model if self.ref_model is not None else self.model
                ref_chosen, ref_rejected = self.compute_ref_log_probs(reference, inputs)
            shift = self.length_penalty / self.beta
            shifted = dict(inputs)
            shifted["ref_chosen_logps"] = ref_chosen - shift * len_chosen.to(ref_chosen.dtype)
            shifted["ref_rejected_logps"] = (ref_rejected
                                             - shift * len_rejected.to(ref_rejected.dtype))
            length_margins = self.length_penalty * (len_chosen - len_rejected).float()
            self._metrics[mode]["rewards/length_margins"].append(
                self.accelerator.gather_for_metrics(length_margins).mean().item()
            )
            precompute = self.precompute_ref_logps
            self.precompute_ref_logps = True  # TRL reads the reference log-probs off the batch
            try:
                return super()._compute_loss(model, shifted, return_outputs)
            finally:
                self.precompute_ref_logps = precompute

    LengthRegularisedDPOTrainer.__module__ = __name__
    LengthRegularisedDPOTrainer.__qualname__ = "LengthRegularisedDPOTrainer"
    return LengthRegularisedDPOTrainer


def _train_resumable(cfg, build: Callable[[], tuple[Any, Any]], *, out_dir: Path, ckpt_dir: Path,
                     fingerprint: dict[str, Any],
                     metrics_path: str | os.PathLike | None) -> list[dict[str, Any]]:
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
            _prepare_checkpoint_dir(ckpt_dir, fingerprint)
        _wait_for_everyone()
        resume = _last_checkpoint(ckpt_dir)

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
    history = _log_history(trainer)
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
    """Where :func:`train_dpo` keeps the resumable checkpoints of ``out_dir``: its sibling
    ``<name>.checkpoints`` (``results/dice/iter1/policy`` -> ``.../iter1/policy.checkpoints``).
    """
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + CHECKPOINT_SUFFIX)


def _checkpoint_defaults(args: dict[str, Any]) -> dict[str, Any]:
    """``save_steps`` N switches step checkpoints on; absent, 0 or None means none.

    We keep one checkpoint (``save_total_limit: 1``): the Trainer deletes the previous one only
    after the new one is complete, so a complete one always exists. A resumed run logs the same
    metrics as an uninterrupted one only when each checkpoint falls on a logging step (the loss
    accumulated between a log and a checkpoint is not part of the checkpoint), hence the check.
    """
    out = dict(args)
    if not out.get("save_steps"):
        out.pop("save_steps", None)
        out.setdefault("save_strategy", "no")
        return out
    out.setdefault("save_strategy", "steps")
    out.setdefault("save_total_limit", 1)
    save, logging_steps = out["save_steps"], out.get("logging_steps", 1)
    if (out["save_strategy"] == "steps" and isinstance(save, int) and isinstance(logging_steps, int)
            and save % logging_steps):
        raise ValueError(
            f"save_steps ({save}) must be a multiple of logging_steps ({logging_steps}): a run "
            "resumed from a checkpoint between two logging steps cannot log the same losses as "
            "an uninterrupted one"
        )
    return out


def _wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def _fingerprint(policy, ref, pairs: pd.DataFrame, args: Mapping[str, Any], seed: int,
                 world_size: int, *, trainer: str = "dpo",
                 length_penalty: float = 0.0) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed from: inputs, settings, processes."""
    return {
        "policy": _model_fingerprint(policy),
        "ref": None if ref is None else _model_fingerprint(ref),
        "pairs": _pairs_fingerprint(pairs),
        "args": {k: v for k, v in sorted(args.items()) if k not in RESUME_NEUTRAL_KEYS},
        "seed": seed,
        "world_size": world_size,
        "trainer": trainer,
        "length_penalty": float(length_penalty),
    }


def _pairs_fingerprint(pairs: pd.DataFrame) -> str:
    cols = ["prompt", "chosen", "rejected"]
    data = pd.util.hash_pandas_object(pairs[cols], index=False).to_numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def _model_fingerprint(model: str | os.PathLike) -> str:
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


def _prepare_checkpoint_dir(ckpt_dir: Path, fingerprint: dict[str, Any]) -> None:
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
                why = ("no run.json" if previous is None else
                       ", ".join(k for k in fingerprint if previous.get(k) != fingerprint[k])
                       + " differ")
                log.warning("discarding the checkpoints in %s: they are from another run (%s)",
                            ckpt_dir, why)
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


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
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
    at_step = [e for e in state.get("log_history", [])
               if e.get("step") == step and "num_tokens" in e]
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
