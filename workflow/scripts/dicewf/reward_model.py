"""Scalar reward models of paper Table 5: the internal one (IntlRM) and a published one (ERM).

The IntlRM is trained here on a preference set (``agreement.reward_model_pairs``: D_offline, or
the full UltraFeedback set the paper uses); a published sequence-classification reward model
(ERM-555k) is only scored, by :func:`external_reward_scores`.

A sequence-classification head with one output (``num_labels=1``) is put on the SFT model (a
causal-LM folder) and trained with TRL's ``RewardTrainer`` (Bradley-Terry loss
-log sigmoid(r(x, y_w) - r(x, y_l))) on those pairs only; ``args`` are literal ``RewardConfig``
fields. It is the baseline the DPO implicit reward is compared with.

One text rendering serves training and scoring (:func:`encode`): the prompt rendered with the
chat template (ending with the assistant header, as in DPO training and implicit-reward
scoring), then the response and the EOS token, tokenized once by this module. Training hands
TRL the token ids (TRL skips its own tokenisation for such a dataset), so :func:`reward_scores`
sees exactly the sequences the model was trained on. The reward is the head's output at the last
non-padding token, as ``AutoModelForSequenceClassification`` computes it.

Training shares the code path of :mod:`dicewf.training`: config built by
:func:`dicewf.training.trl_config` before any model is loaded, optional resumable checkpoints
(``save_steps``) in ``<out_dir>.checkpoints`` (:mod:`dicewf.checkpoints`), the model folder written
atomically, and the metrics JSON (``log_history`` and ``final``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .chat import render_prompts
from .checkpoints import (
    checkpoint_dir_for,
    frame_fingerprint,
    model_fingerprint,
    run_fingerprint,
    train_resumable,
)
from .io import check_frame
from .scoring import token_budget_batches
from .training import PAIR_COLUMNS, trl_config

log = logging.getLogger(__name__)


def prepare_tokenizer(model: str | os.PathLike):
    """The model's tokenizer with a padding token (the EOS token when it has none), which the
    classification head needs to find the last real token of a right-padded sequence."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode(tokenizer, prompts: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
    """Token ids of chat-rendered prompt + response + EOS, the input of the reward model.

    The tokenizer adds its special tokens (e.g. BOS) unless the rendered text already starts
    with the BOS token (chat templates that write it themselves), so there is exactly one.
    """
    rendered = render_prompts(tokenizer, list(prompts))
    eos, bos = tokenizer.eos_token, tokenizer.bos_token
    out = []
    for text, response in zip(rendered, responses, strict=True):
        full = text + response + eos
        add_special = not (bos and full.startswith(bos))
        out.append(tokenizer(full, add_special_tokens=add_special)["input_ids"])
    return out


def train_reward_model(
    model: str | os.PathLike,
    pairs: pd.DataFrame,
    out_dir: str | os.PathLike,
    args: Mapping[str, Any],
    *,
    seed: int,
    metrics_path: str | os.PathLike | None = None,
    source: str = "<pairs>",
    checkpoint_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Train a scalar reward model from the causal LM ``model`` on preference ``pairs``.

    ``pairs`` has the ``pairs`` columns (prompt_id, prompt, chosen, rejected); ``args`` are
    ``RewardConfig`` fields (and ``global_batch_size``, :mod:`dicewf.batching`). The score head
    is initialised from ``seed``. Pairs longer than
    ``max_length`` (a RewardConfig field, default 1024) are left out by TRL; their number is
    logged. Writes the model folder (weights, config, tokenizer with its padding token) to
    ``out_dir`` atomically and the metrics JSON to ``metrics_path``; returns the log history.
    """
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    check_frame(pairs, "pairs", source)
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else checkpoint_dir_for(out_dir)
    cfg, rm_args = trl_config(
        RewardConfig, args, where="agreement.reward_model", output_dir=ckpt_dir, seed=seed
    )
    fingerprint = run_fingerprint(
        rm_args,
        model=model_fingerprint(model),
        pairs=frame_fingerprint(pairs, PAIR_COLUMNS),
        seed=seed,
        world_size=cfg.world_size,
        trainer="reward",
    )

    def build():
        tokenizer = prepare_tokenizer(model)
        set_seed(seed)  # the score head is freshly initialised
        rm = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
        rm.config.pad_token_id = tokenizer.pad_token_id
        chosen = encode(tokenizer, pairs["prompt"].tolist(), pairs["chosen"].tolist())
        rejected = encode(tokenizer, pairs["prompt"].tolist(), pairs["rejected"].tolist())
        if cfg.max_length is not None:
            too_long = sum(
                max(len(c), len(r)) > cfg.max_length for c, r in zip(chosen, rejected, strict=True)
            )
            if too_long:
                log.warning(
                    "%s: %d of %d pairs are longer than max_length=%d tokens and are left out",
                    source,
                    too_long,
                    len(pairs),
                    cfg.max_length,
                )
        data = Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})
        trainer = RewardTrainer(model=rm, args=cfg, train_dataset=data, processing_class=tokenizer)
        return trainer, tokenizer

    return train_resumable(
        cfg,
        build,
        out_dir=out_dir,
        ckpt_dir=ckpt_dir,
        fingerprint=fingerprint,
        metrics_path=metrics_path,
    )


def load_reward_model(model_dir: str | os.PathLike, dtype: str = "auto", head: str | None = None):
    """A scalar reward model for scoring: eval mode, on the GPU when there is one.

    ``head`` names the checkpoint's scalar head when it is not transformers' ``score`` (OpenRLHF
    saves ``value_head``): its weights are loaded into ``score`` (``key_mapping``) and the model
    is given one output. A checkpoint without weights for the head is an error, never a head
    initialised at random.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"output_loading_info": True}
    if dtype != "auto":
        kwargs["dtype"] = getattr(torch, dtype)
    if head is not None:
        kwargs.update(num_labels=1, key_mapping={rf"^{re.escape(head)}\.": "score."})
    model, info = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs)
    if model.config.num_labels != 1:
        raise ValueError(
            f"{model_dir}: not a scalar reward model (num_labels={model.config.num_labels})"
        )
    missing = sorted(k for k in info["missing_keys"] if k.split(".")[0] == "score")
    if missing:
        raise ValueError(
            f"{model_dir}: the checkpoint has no weights for the reward head {missing} "
            f"(unexpected keys: {sorted(info['unexpected_keys'])[:5]}); name the checkpoint's "
            "head (OpenRLHF: value_head) with the reward model's `head`"
        )
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    return model


def reward_scores(
    model_dir: str | os.PathLike,
    frame: pd.DataFrame,
    *,
    max_tokens_per_batch: int = 8192,
    dtype: str = "auto",
    source: str = "<frame>",
) -> np.ndarray:
    """The reward of each (prompt, response) row of ``frame`` under the reward model in
    ``model_dir`` (the IntlRM), in row order (float64).

    Sequences are rendered as in training (:func:`encode`), sorted by length and scored in
    right-padded batches of at most ``max_tokens_per_batch`` tokens (padded length x rows; a
    longer sequence is scored alone). The reward is the model's own pooled output, as TRL's
    RewardTrainer trained it. Scores do not depend on the batching beyond float noise.
    """
    check_frame(frame, {"prompt": "str", "response": "str"}, source)  # before loading a model
    model = load_reward_model(model_dir, dtype)

    def pooled(ids, attn):
        return model(input_ids=ids, attention_mask=attn).logits[:, 0]

    return _score(model, model_dir, frame, pooled, max_tokens_per_batch)


def external_reward_scores(
    model_dir: str | os.PathLike,
    frame: pd.DataFrame,
    *,
    head: str | None = None,
    max_tokens_per_batch: int = 8192,
    dtype: str = "auto",
    source: str = "<frame>",
) -> np.ndarray:
    """Rewards of ``frame``'s (prompt, response) rows under a published sequence-classification
    reward model (Table 5's ERM-555k, OpenRLHF/Llama-3-8b-rm-mixture), loaded by path with
    plain transformers; ``head`` as in :func:`load_reward_model` (``value_head`` for OpenRLHF).

    The text is the model's chat template with the prompt, then the response and EOS
    (:func:`encode`), and the reward is the head's value at the last token of the sequence (the
    last attended position), as OpenRLHF's reward model computes it, whatever the padding token.
    """
    check_frame(frame, {"prompt": "str", "response": "str"}, source)  # before loading a model
    model = load_reward_model(model_dir, dtype, head=head)
    backbone = getattr(model, model.base_model_prefix)

    def pooled(ids, attn):
        hidden = backbone(input_ids=ids, attention_mask=attn).last_hidden_state
        values = model.score(hidden)[..., 0]
        last = attn.sum(dim=1, keepdim=True) - 1  # right padding
        return values.gather(1, last)[:, 0]

    return _score(model, model_dir, frame, pooled, max_tokens_per_batch)


def _score(model, model_dir, frame: pd.DataFrame, pooled, max_tokens_per_batch: int) -> np.ndarray:
    """Encode ``frame`` with the model's tokenizer and apply ``pooled(ids, attention_mask)`` in
    right-padded, length-sorted batches of at most ``max_tokens_per_batch`` tokens."""
    import torch

    tokenizer = prepare_tokenizer(model_dir)
    encoded = encode(tokenizer, frame["prompt"].tolist(), frame["response"].tolist())
    pad = model.config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in encoded]
    scores = np.zeros(len(encoded), dtype=np.float64)
    with torch.inference_mode():
        for batch in token_budget_batches(lengths, max_tokens_per_batch):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : lengths[i]] = torch.tensor(encoded[i])
                attn[row, : lengths[i]] = 1
            scores[batch] = pooled(ids.to(device), attn.to(device)).double().cpu().numpy()
    return scores
