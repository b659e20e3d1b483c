"""Reference log-probabilities reused from scoring, so DPO training runs no reference model.

Iteration t trains against pi_ref^(t) (:func:`dicewf.config.reference_path`): pi_theta^(t-1)
for ``reference: previous``, pi_theta^(0) for ``reference: fixed``. The score stage of iteration t
has just computed log pi(y|x) of every sampled response under its policy pi_theta^(t-1) (column
``logp_policy``) and its reference pi_ref^(t-1) (``logp_ref``), so the train reference is one of
them whenever its path is one of theirs (:func:`reused_column`): previous -> ``logp_policy``;
fixed -> ``logp_policy`` at t = 1 and ``logp_ref`` from t = 2 on.

The values travel as TRL's own column names ``ref_chosen_logps`` / ``ref_rejected_logps``
(:data:`REF_COLUMNS`), with the number of completion tokens they cover (:data:`TOKEN_COLUMNS`):
search_alpha writes them into D(alpha*), mix keeps them (NaN on offline rows), and the
``ref_logps`` job (:func:`fill`) computes the rows still without them (the offline share, or
every row where nothing was reusable) under the train reference, tokenized exactly as TRL's
``DPOTrainer`` tokenizes (:func:`encode_pairs`). The train job then hands them to TRL's
``precompute_ref_log_probs`` path (:func:`precomputed_trainer`), which loads no reference model.

It trains against the live reference instead, saying why in its log (:func:`live_reason`), when
a row lacks log-probs, when TRL would not score the tokens that were scored (the completion
token counts differ: another tokenizer or prompt/completion boundary; a sequence longer than
``max_length`` or the model's context, which TRL truncates), or when the trainer needs the
reference otherwise (KTO's KL term, ``ld_alpha``, ``sync_ref_model``). Length-regularised DPO
shifts the plain reference log-probs (:mod:`dicewf.rdpo`), so it reuses them too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import config as cfg
from . import mixing
from .io import SHOWN

log = logging.getLogger(__name__)

# TRL's column names, then the completion tokens (the turn-end token included) that each
# log-prob sums over, as tokenized
COLUMNS = mixing.REF_COLUMNS
REF_COLUMNS, TOKEN_COLUMNS = COLUMNS[:2], COLUMNS[2:]


def reused_column(config: Mapping[str, Any], exp: str, t: int) -> str | None:
    """The score-stage column that holds log pi_ref^(t) of iteration ``t``'s samples:
    ``logp_policy`` where the train reference is the scoring policy pi_theta^(t-1),
    ``logp_ref`` where it is the scoring reference pi_ref^(t-1), else None (nothing to reuse;
    also with LLM-as-a-Judge scores, which have no log-probs)."""
    t = int(t)
    if cfg.experiment(config, exp)["score"]["method"] != "implicit":
        return None
    train_ref = cfg.reference_path(config, exp, t)
    if train_ref == cfg.policy_path(config, exp, t - 1):
        return "logp_policy"
    if train_ref == cfg.reference_path(config, exp, t - 1):
        return "logp_ref"
    return None


def reuse_planned(config: Mapping[str, Any], exp: str) -> bool:
    """Whether experiment ``exp`` trains on precomputed reference log-probs: the config's
    ``reuse_ref_logps`` is on and the trainer can use them (DPO; KTO needs its reference for
    the KL term)."""
    return bool(config["reuse_ref_logps"]) and cfg.experiment(config, exp)["trainer"] == "dpo"


def needs_fill(config: Mapping[str, Any], exp: str, t: int) -> bool:
    """Whether iteration ``t`` of ``exp`` needs the ``ref_logps`` job: reuse is planned and some
    rows of the mixture have no reused log-probs (offline pairs, or generated ones whose
    reference is not a scoring model)."""
    if not reuse_planned(config, exp):
        return False
    block = cfg.experiment(config, exp)
    if block.get("method") == "sera":  # sera_mix puts them on every row, offline ones too
        return reused_column(config, exp, t) is None
    return block["mix"]["gamma"] > 0 or reused_column(config, exp, t) is None


def encode_pairs(tokenizer, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]):
    """(chosen, rejected) :class:`dicewf.scoring.Encoded` sequences exactly as TRL's
    ``DPOTrainer`` builds them from our string datasets (:func:`dicewf.training.
    preference_dataset`): the prompt rendered with the chat template, the completion with the
    turn-end token appended unless it already ends with it (:func:`dicewf.chat.for_trl`), both
    tokenized with the tokenizer's special tokens, and the completion of both sequences starting
    where the tokenized prompt and the shorter common prefix of prompt+chosen and
    prompt+rejected diverge."""
    from .chat import for_trl, render_prompts
    from .scoring import Encoded, common_prefix_length

    trl_tokenizer = for_trl(tokenizer)
    eos = trl_tokenizer.eos_token
    rendered = render_prompts(tokenizer, list(prompts))
    out_chosen, out_rejected = [], []
    for text, c, r in zip(rendered, chosen, rejected, strict=True):
        c = c if c.endswith(eos) else c + eos
        r = r if r.endswith(eos) else r + eos
        p_ids = trl_tokenizer(text=text)["input_ids"]
        c_ids = trl_tokenizer(text=text + c)["input_ids"]
        r_ids = trl_tokenizer(text=text + r)["input_ids"]
        start = min(common_prefix_length(p_ids, c_ids), common_prefix_length(p_ids, r_ids))
        out_chosen.append(Encoded(c_ids, start))
        out_rejected.append(Encoded(r_ids, start))
    return out_chosen, out_rejected


def missing(pairs: pd.DataFrame) -> np.ndarray:
    """Rows without reusable reference log-probs (a column absent, or NaN)."""
    if not all(c in pairs.columns for c in COLUMNS):
        return np.ones(len(pairs), dtype=bool)
    values = pairs[list(COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return ~np.isfinite(values).all(axis=1)


def fill(
    pairs: pd.DataFrame,
    tokenizer_path: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    max_tokens_per_batch: int = 8192,
    dtype: str = "auto",
    source: str = "<pairs>",
) -> pd.DataFrame:
    """``pairs`` with :data:`COLUMNS` on every row: rows that lack them (:func:`missing`) are
    scored under ``reference`` with the tokenizer of ``tokenizer_path`` (the policy's, which
    the train job tokenizes with), tokenized as TRL does (:func:`encode_pairs`); the others
    keep theirs. NaN or infinite log-probabilities are an error naming the model."""
    out = pairs.copy()
    for column in COLUMNS:
        if column not in out.columns:
            out[column] = np.nan
    todo = np.flatnonzero(missing(out))
    log.info(
        "%s: %d of %d pairs lack reference log-probs; scoring them under %s",
        source,
        len(todo),
        len(out),
        reference,
    )
    if len(todo) == 0:
        return out
    scored = pair_logps(
        out.iloc[todo],
        tokenizer_path,
        {"ref": reference},
        max_tokens_per_batch=max_tokens_per_batch,
        dtype=dtype,
        source=source,
        desc="reference log-probs",
    )
    position = out.columns.get_loc
    out.iloc[todo, position("ref_chosen_logps")] = scored["logp_ref_chosen"].to_numpy()
    out.iloc[todo, position("ref_rejected_logps")] = scored["logp_ref_rejected"].to_numpy()
    out.iloc[todo, position("ref_chosen_tokens")] = scored["len_tokens_chosen"].to_numpy()
    out.iloc[todo, position("ref_rejected_tokens")] = scored["len_tokens_rejected"].to_numpy()
    return out.astype(dict.fromkeys(TOKEN_COLUMNS, "int64"))


def pair_logps(
    pairs: pd.DataFrame,
    tokenizer_path: str | os.PathLike,
    models: Mapping[str, str | os.PathLike],
    *,
    max_tokens_per_batch: int = 8192,
    dtype: str = "auto",
    source: str = "<pairs>",
    desc: str = "pair log-probs",
) -> pd.DataFrame:
    """log pi(chosen|prompt) and log pi(rejected|prompt) of every pair under each model, as TRL
    tokenizes them (:func:`encode_pairs`, the tokenizer of ``tokenizer_path``: the policy's, which
    the train job tokenizes with): columns ``logp_{name}_chosen`` / ``logp_{name}_rejected`` per
    entry of ``models`` (name -> model folder) and the completion token counts
    ``len_tokens_chosen`` / ``len_tokens_rejected``, indexed as ``pairs``. A folder named twice
    is loaded and scored once. NaN or infinite log-probabilities are an error naming the model
    and the pairs."""
    from transformers import AutoTokenizer

    from .scoring import check_logprobs, load_model, sequence_logprobs

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    chosen, rejected = encode_pairs(
        tokenizer, pairs["prompt"].tolist(), pairs["chosen"].tolist(), pairs["rejected"].tolist()
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n = len(pairs)
    ids = pd.DataFrame(
        {
            "prompt_id": list(pairs["prompt_id"]) * 2,
            "sample_idx": ["chosen"] * n + ["rejected"] * n,
        }
    )
    out = pd.DataFrame(index=pairs.index)
    done: dict[str, np.ndarray] = {}
    for name, path in models.items():
        key = os.path.realpath(path)
        if key not in done:
            log.info("%s: scoring %d pairs under %s (%s)", source, n, path, name)
            model = load_model(path, dtype)
            logps = sequence_logprobs(
                model,
                chosen + rejected,
                max_tokens_per_batch=max_tokens_per_batch,
                pad_token_id=pad,
                desc=desc,
            )
            del model
            check_logprobs(logps, ids, path, source=str(source))
            done[key] = logps
        out[f"logp_{name}_chosen"] = done[key][:n]
        out[f"logp_{name}_rejected"] = done[key][n:]
    out["len_tokens_chosen"] = np.array([e.n_response for e in chosen], dtype=np.int64)
    out["len_tokens_rejected"] = np.array([e.n_response for e in rejected], dtype=np.int64)
    return out


def live_reason(pairs: pd.DataFrame, tokenizer, trl_cfg, *, trainer: str, context: int | None):
    """Why training on ``pairs`` must run the live reference model (None: the precomputed log-
    probs of every row are exactly what TRL would compute). ``trl_cfg`` is the trainer's TRL
    config; ``context`` the policy's context length (None: unknown)."""
    if not all(c in pairs.columns for c in COLUMNS):
        return "the pairs carry no reference log-probs"
    if trainer != "dpo":
        return f"trainer {trainer!r} needs its reference model (KTO's KL term)"
    if getattr(trl_cfg, "ld_alpha", None) is not None:
        return f"ld_alpha={trl_cfg.ld_alpha} weighs the reference's tokens otherwise"
    if getattr(trl_cfg, "sync_ref_model", False):
        return "sync_ref_model updates the reference during training"
    lacking = missing(pairs)
    if lacking.any():
        return (
            f"{int(lacking.sum())} of {len(pairs)} pairs lack reference log-probs, e.g. prompt "
            f"ids {pairs.loc[lacking, 'prompt_id'].head(SHOWN).tolist()}"
        )
    chosen, rejected = encode_pairs(
        tokenizer, pairs["prompt"].tolist(), pairs["chosen"].tolist(), pairs["rejected"].tolist()
    )
    counted = pairs[list(TOKEN_COLUMNS)].to_numpy(dtype=np.int64)
    trl_counts = np.array([[c.n_response, r.n_response] for c, r in zip(chosen, rejected)])
    other = (counted != trl_counts).any(axis=1)
    if other.any():
        return (
            f"{int(other.sum())} of {len(pairs)} pairs were scored on other completion tokens "
            "than TRL tokenizes (another tokenizer, or the prompt/completion boundary), e.g. "
            f"prompt ids {pairs.loc[other, 'prompt_id'].head(SHOWN).tolist()}"
        )
    limits = {"max_length": trl_cfg.max_length, "the model's context": context}
    longest = max(len(e.input_ids) for e in chosen + rejected)
    for name, limit in limits.items():
        if limit is not None and longest > limit:
            return (
                f"a sequence of {longest} tokens exceeds {name} ({limit}): TRL truncates it, "
                "the log-probs cover it whole"
            )
    return None


def precomputed_trainer(trainer_cls: type) -> type:
    """``trainer_cls`` (TRL's ``DPOTrainer`` or a subclass) taking the reference log-probs from
    its dataset's ``ref_chosen_logps`` / ``ref_rejected_logps`` columns: built with
    ``precompute_ref_log_probs=True`` and no ``ref_model``, TRL loads no reference model, and
    its precompute pass (which would run one) returns the dataset as it is."""

    class PrecomputedReference(trainer_cls):
        def _precompute_ref_logps(self, dataset, name, batch_size):
            absent = [c for c in REF_COLUMNS if c not in dataset.column_names]
            if absent:
                raise ValueError(f"{name} dataset: no column(s) {absent} to take log-probs from")
            return dataset

    PrecomputedReference.__name__ = PrecomputedReference.__qualname__ = (
        f"{trainer_cls.__name__}WithPrecomputedReference"
    )
    return PrecomputedReference
