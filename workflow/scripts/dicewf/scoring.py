"""The DPO implicit reward (Eq. 4): r(x, y) = beta * (log pi_theta(y|x) - log pi_ref(y|x)).

log pi(y|x) is the sum of the log-probabilities of the response tokens, the turn-end token
included, with the prompt masked out, under the model's chat template. Tokenization follows TRL's
DPO trainer exactly as :func:`dicewf.training.train_dpo` sets it up: the prompt is rendered with
the chat template (:func:`dicewf.chat.render_prompts`), the completion is the response text plus
the turn-end token (:func:`dicewf.chat.turn_end_token`: ``<|eot_id|>`` for Llama-3, ``</s>`` for
zephyr), both are tokenized with the tokenizer's special tokens (exactly one BOS), and the
completion starts where the tokenized prompt and the tokenized prompt+completion diverge. The
reward therefore scores the very tokens DPO trains on.

Sequences are sorted by length and packed into batches under a token budget (padded length x
batch size), rather than scored one at a time. Only the response positions' target-token
log-probabilities are computed, ``logit[target] - logsumexp(logits)`` in chunks of rows: no
float32 log-softmax over the whole (batch, length, vocabulary) logits, and for Llama and Mistral
models (:data:`HEAD_ON_HIDDEN`) no logits at prompt or padding positions at all (the language-
model head runs on the response positions' hidden states only). ``score(backend="vllm")``
scores with vLLM's prompt log-probabilities instead (:mod:`dicewf.vllm_scoring`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .chat import context_limits
from .io import SHOWN, DatasetError, check_frame
from .rewards import implicit_reward

log = logging.getLogger(__name__)

SCORE_BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + response + turn-end token, and where the response starts."""

    input_ids: list[int]
    response_start: int

    @property
    def n_response(self) -> int:
        return len(self.input_ids) - self.response_start


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode(tokenizer, prompts: Sequence[str], responses: Sequence[str]) -> list[Encoded]:
    """Tokenize (prompt, response) pairs the way TRL's DPO trainer does."""
    from .chat import render_prompts, turn_end_token

    rendered = render_prompts(tokenizer, list(prompts))
    end = turn_end_token(tokenizer)
    out = []
    for text, resp in zip(rendered, responses, strict=True):
        # TRL tokenizes a rendered (string) prompt with the tokenizer's own special tokens (a
        # BOS for Mistral/Zephyr and Llama-3; render_prompts leaves out Llama-3's templated one):
        # so do we, or the implicit reward would score other sequences
        p_ids = tokenizer(text)["input_ids"]
        full = tokenizer(text + resp + end)["input_ids"]
        start = common_prefix_length(p_ids, full)
        if start == len(full):
            raise ValueError(f"empty completion after tokenization for prompt {text!r}")
        out.append(Encoded(full, start))
    return out


# Rows of logits turned into float32 at a time: 2**26 elements (256 MiB in float32), i.e. 523 rows
# for Llama-3's 128,256-token vocabulary, 2,097 for Mistral's 32,000
CHUNK_ELEMENTS = 2**26

# Causal LMs whose logits are exactly ``lm_head(model.model(...).last_hidden_state)`` (no logit
# soft-capping or scaling), so the head can run on the response positions' hidden states only
HEAD_ON_HIDDEN = ("LlamaForCausalLM", "MistralForCausalLM")


def _chunk_rows(vocab: int, chunk_rows: int | None) -> int:
    return chunk_rows or max(1, CHUNK_ELEMENTS // vocab)


def _sum_target_logprobs(row_logits, rows, cols, targets, n_seqs: int, chunk_rows: int):
    """Per sequence, the sum of log p(target) over the positions (``rows``, ``cols``).

    ``row_logits(rows, cols)`` gives the (n, V) logits at those positions (in any dtype); they
    are made float32 ``chunk_rows`` rows at a time, and ``logit[target] - logsumexp(logits)`` is
    summed into float64 per sequence.
    """
    import torch

    out = torch.zeros(n_seqs, dtype=torch.float64, device=targets.device)
    for lo in range(0, len(rows), chunk_rows):
        r, c, t = (
            rows[lo : lo + chunk_rows],
            cols[lo : lo + chunk_rows],
            targets[lo : lo + chunk_rows],
        )
        x = row_logits(r, c).float()
        tok = x.gather(1, t.unsqueeze(1)).squeeze(1) - torch.logsumexp(x, dim=-1)
        out.index_add_(0, r, tok.double())
    return out


def response_logprobs(logits, input_ids, response_mask, *, chunk_rows: int | None = None):
    """Sum over response positions of log p(token_t | tokens_<t), as float64 per sequence.

    ``logits`` is (B, T, V), ``input_ids`` and ``response_mask`` are (B, T); the mask is 1 on the
    tokens being scored (the response and its EOS) and 0 on prompt and padding. Only the logits
    that predict a masked token are read, ``chunk_rows`` positions at a time (default
    :data:`CHUNK_ELEMENTS` / V) made float32: no float32 copy of the whole tensor. Equal to the
    former ``log_softmax(logits.float())`` gathered and summed to float32 rounding: within 1e-4
    per sequence of a float64 log-softmax (tests/test_scoring_memory.py); 5e-5 at most from the
    former path on the toy model (benchmarks/scoring_throughput.py).
    """
    rows, cols = response_mask[:, 1:].nonzero(as_tuple=True)
    targets = input_ids[:, 1:][rows, cols]
    return _sum_target_logprobs(
        lambda r, c: logits[r, c],
        rows,
        cols,
        targets,
        logits.shape[0],
        _chunk_rows(logits.shape[-1], chunk_rows),
    )


def _split_head(model):
    """(body, head) of a :data:`HEAD_ON_HIDDEN` model, else None."""
    if type(model).__name__ not in HEAD_ON_HIDDEN:
        return None
    body, head = getattr(model, "model", None), model.get_output_embeddings()
    return None if body is None or head is None else (body, head)


def _batch_logprobs(model, ids, attn, mask, *, right_padded: bool | None = None):
    """Summed response log-probs of one padded batch, with the fewest logits the model allows.

    A :data:`HEAD_ON_HIDDEN` model runs its body (without the attention mask when the batch is
    right-padded: causal attention keeps pads out of every real position's view; ``None``
    reads that from ``attn``, on its device), then its head on the hidden states of the
    positions that predict a response token, in chunks. Another causal LM computes logits only
    from the first column where any response token is predicted (``logits_to_keep``) when its
    ``forward`` takes that argument, else at every position. No KV cache is kept (8 GiB for
    Llama-3-8B at 65,536 tokens).
    """
    import inspect

    split = _split_head(model)
    if split is not None:
        body, head = split
        # right padding under causal attention: no real token sees a pad, so the body runs
        # without the padding mask, and sdpa takes its causal kernel, which skips the masked
        # half of the score matrix (the padded mask made it compute all of it: on an H200 about
        # a fifth of scoring's GPU time at DICE's lengths, benchmarks/scoring_profile.py)
        if right_padded is None:
            right_padded = bool((attn[:, 1:] <= attn[:, :-1]).all())
        hidden = body(
            input_ids=ids, attention_mask=None if right_padded else attn, use_cache=False
        ).last_hidden_state
        rows, cols = mask[:, 1:].nonzero(as_tuple=True)
        targets = ids[:, 1:][rows, cols]
        return _sum_target_logprobs(
            lambda r, c: head(hidden[r, c]),
            rows,
            cols,
            targets,
            ids.shape[0],
            _chunk_rows(head.out_features, None),
        )
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        first = int(mask.any(dim=0).nonzero()[0])  # the earliest response token in the batch
        offset = max(first - 1, 0)  # the position that predicts it
        logits = model(
            input_ids=ids,
            attention_mask=attn,
            use_cache=False,
            logits_to_keep=ids.shape[1] - offset,
        ).logits
        return response_logprobs(logits, ids[:, offset:], mask[:, offset:])
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
    return response_logprobs(logits, ids, mask)


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with padded size <= ``max_tokens``.

    A single sequence longer than the budget gets a batch of its own.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens_per_batch must be >= 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        new_width = max(width, lengths[i])
        if current and new_width * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, width = [], 0
            new_width = lengths[i]
        current.append(i)
        width = new_width
    if current:
        batches.append(current)
    return batches


def fit_context(
    encoded: Sequence[Encoded],
    prompt_ids: Sequence[str],
    context: int | None,
    source: str = "<samples>",
) -> list[Encoded]:
    """``encoded`` cut to the model's ``context`` tokens, for scoring.

    A sequence longer than the context keeps its prompt and the first response tokens that fit:
    its log-probability covers only those (a model cannot score tokens past its positions). How
    many sequences were cut is logged as a warning with the first prompt ids. A prompt that
    leaves no room for a response token is an error naming ``source`` and the prompt ids.
    """
    if context is None:
        return list(encoded)
    no_room = [
        (pid, e.response_start)
        for pid, e in zip(prompt_ids, encoded, strict=True)
        if e.response_start >= context
    ]
    if no_room:
        raise DatasetError(
            f"{source}: {len(no_room)} of {len(encoded)} prompt(s) leave no room for a response "
            f"token in the model's context of {context} tokens; prompt ids and prompt token "
            f"counts: {dict(no_room[:SHOWN])}"
        )
    over = [i for i, e in enumerate(encoded) if len(e.input_ids) > context]
    if over:
        log.warning(
            "%s: %d of %d sequences (prompt + response) are longer than the model's "
            "context of %d tokens (longest %d); their responses are scored on the first "
            "tokens that fit (truncated), e.g. prompt ids %s",
            source,
            len(over),
            len(encoded),
            context,
            max(len(encoded[i].input_ids) for i in over),
            sorted({prompt_ids[i] for i in over})[:SHOWN],
        )
    return [Encoded(e.input_ids[:context], e.response_start) for e in encoded]


def check_logprobs(
    logps: np.ndarray, frame: pd.DataFrame, model: str | os.PathLike, source: str = "<samples>"
) -> None:
    """Refuse NaN or infinite log-probabilities of ``model`` (rows of ``frame``): they come from
    a broken model (NaN weights, an overflow in its dtype), never from a response."""
    bad = ~np.isfinite(logps)
    if bad.any():
        rows = frame.loc[bad, ["prompt_id", "sample_idx"]].head(SHOWN)
        raise ValueError(
            f"{source}: model {model} gives NaN or infinite log-probabilities for "
            f"{int(bad.sum())} of {len(logps)} responses, e.g. (prompt_id, sample_idx) "
            f"{list(rows.itertuples(index=False, name=None))}: the model is broken (NaN weights, "
            "or an overflow: try score.dtype float32)"
        )


def sequence_logprobs(
    model,
    encoded: Sequence[Encoded],
    *,
    max_tokens_per_batch: int,
    pad_token_id: int,
    desc: str = "scoring",
) -> np.ndarray:
    """log pi(response | prompt) for each encoded sequence, batched under a token budget."""
    import torch

    device = next(model.parameters()).device
    lengths = [len(e.input_ids) for e in encoded]
    result = np.zeros(len(encoded), dtype=np.float64)
    batches = token_budget_batches(lengths, max_tokens_per_batch)
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, mininterval=5):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                e = encoded[i]
                n = len(e.input_ids)
                ids[row, :n] = torch.tensor(e.input_ids)
                attn[row, :n] = 1
                mask[row, e.response_start : n] = 1
            ids, attn, mask = ids.to(device), attn.to(device), mask.to(device)
            logps = _batch_logprobs(model, ids, attn, mask, right_padded=True)
            result[batch] = logps.cpu().numpy()
    return result


def load_model(
    path: str | os.PathLike, dtype: str = "auto", attn_implementation: str | None = None
):
    """A causal LM for scoring: eval mode, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {}
    if dtype != "auto":
        kwargs["dtype"] = getattr(torch, dtype)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.eval()
    if torch.cuda.is_available():
        model.to("cuda")
    return model


def finished(
    samples: pd.DataFrame,
    drop_truncated: bool,
    source: str,
    what: str,
    *,
    strip_whitespace: bool = False,
    min_chars: int = 0,
    max_chars: int | None = None,
) -> pd.DataFrame:
    """The responses to ``what`` (score, judge), filtered as the DICE code filters its samples.

    In order: responses are stripped of surrounding whitespace when ``strip_whitespace`` (the
    DICE code stores them stripped); those that hit the token limit (``finish_reason ==
    "length"``) are dropped when ``drop_truncated``; those with fewer than ``min_chars`` or more
    than ``max_chars`` characters (None: no upper limit) are dropped; the DICE code keeps
    3 < len < 6,700, i.e. ``min_chars`` 4 and ``max_chars`` 6,699. Every drop is counted in the
    log. Re-indexed; an error naming ``source`` when none is left.
    """
    if min_chars < 0 or (max_chars is not None and max_chars < min_chars):
        raise ValueError(
            f"response filter: need 0 <= min_chars <= max_chars, got min_chars="
            f"{min_chars}, max_chars={max_chars}"
        )
    df = samples
    n = len(df)
    if strip_whitespace:
        stripped = df["response"].str.strip()
        log.info(
            "stripped surrounding whitespace from %d of %d responses",
            int((stripped != df["response"]).sum()),
            n,
        )
        df = df.assign(response=stripped)
    if drop_truncated:
        keep = df["finish_reason"] != "length"
        log.info("dropping %d truncated responses of %d", int((~keep).sum()), n)
        df = df[keep]
    length = df["response"].str.len()
    short = length < min_chars
    long = length > (np.inf if max_chars is None else max_chars)
    log.info(
        "dropping %d responses shorter than %d characters and %d longer than %s of %d",
        int(short.sum()),
        min_chars,
        int(long.sum()),
        max_chars,
        n,
    )
    df = df[~(short | long)].reset_index(drop=True)
    log.info("%d of %d responses left to %s", len(df), n, what)
    if len(df) == 0:
        raise ValueError(
            f"{source}: no response left to {what} (all truncated or filtered out "
            f"by min_chars={min_chars}, max_chars={max_chars}?)"
        )
    return df


def score(
    samples: pd.DataFrame,
    policy: str | os.PathLike,
    ref: str | os.PathLike,
    *,
    beta: float,
    max_tokens_per_batch: int = 8192,
    drop_truncated: bool = True,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    source: str = "<samples>",
    strip_whitespace: bool = False,
    min_chars: int = 0,
    max_chars: int | None = None,
    backend: str = "transformers",
    engine: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Implicit rewards of sampled responses under ``policy`` against ``ref``.

    Adds logp_policy, logp_ref, logratio (their difference), beta, reward (beta * logratio),
    len_chars and len_tokens (response tokens including the turn-end token, all of them, also
    where a sequence longer than the models' context is scored on the tokens that fit, see
    :func:`fit_context`). NaN or infinite log-probabilities are an error naming the model and
    the rows (:func:`check_logprobs`). Responses that hit
    the token limit (``finish_reason == "length"``) are dropped when ``drop_truncated`` (as the
    DICE code does), and the other filters of :func:`finished` (whitespace, character bounds)
    apply.

    ``backend`` transformers scores with :func:`sequence_logprobs` (``max_tokens_per_batch``,
    ``dtype`` and ``attn_implementation`` apply); vllm with vLLM's prompt log-probs
    (:func:`dicewf.vllm_scoring.sequence_logprobs`, ``engine`` holds the ``vllm.LLM(...)``
    arguments, the config's ``sampler.vllm``). vLLM needs a slot for the one token it generates,
    so its context is ``max_model_len`` - 1 tokens; a sequence that long is scored on one token
    fewer than with transformers (and is a response cut at the context, which
    ``drop_truncated`` drops).
    """
    from transformers import AutoTokenizer

    if backend not in SCORE_BACKENDS:
        raise ValueError(f"score.backend must be one of {SCORE_BACKENDS}, got {backend!r}")
    check_frame(samples, "samples", source)
    df = finished(
        samples,
        drop_truncated,
        source,
        "score",
        strip_whitespace=strip_whitespace,
        min_chars=min_chars,
        max_chars=max_chars,
    )
    tokenizer = AutoTokenizer.from_pretrained(policy)
    encoded = encode(tokenizer, df["prompt"].tolist(), df["response"].tolist())
    limits = [
        *context_limits(policy, tokenizer, engine if backend == "vllm" else None).values(),
        *context_limits(ref, tokenizer, engine if backend == "vllm" else None).values(),
    ]
    context = min(limits, default=None)
    if backend == "vllm" and context is not None:
        context -= 1  # the one token vLLM generates needs a slot
    scored = fit_context(encoded, df["prompt_id"].tolist(), context, source=str(source))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    logps = {}
    for name, path in (("policy", policy), ("ref", ref)):
        if backend == "vllm":
            from . import vllm_scoring

            logps[name] = vllm_scoring.sequence_logprobs(
                path, scored, engine, desc=f"scoring ({name})"
            )
        else:
            model = load_model(path, dtype, attn_implementation)
            logps[name] = sequence_logprobs(
                model,
                scored,
                max_tokens_per_batch=max_tokens_per_batch,
                pad_token_id=pad,
                desc=f"scoring ({name})",
            )
            del model
        check_logprobs(logps[name], df, path, source=str(source))
    out = df.copy()
    out["logp_policy"] = logps["policy"]
    out["logp_ref"] = logps["ref"]
    out["logratio"] = out["logp_policy"] - out["logp_ref"]
    out["beta"] = float(beta)
    out["reward"] = implicit_reward(out["logp_policy"], out["logp_ref"], out["beta"])
    out["len_chars"] = out["response"].str.len().astype("int64")
    out["len_tokens"] = np.array([e.n_response for e in encoded], dtype=np.int64)
    return out


def implicit_reward_agreement(
    pairs: pd.DataFrame,
    policy: str | os.PathLike,
    ref: str | os.PathLike,
    *,
    beta: float,
    max_tokens_per_batch: int = 8192,
    source: str = "<pairs>",
) -> dict[str, float]:
    """How often the implicit reward orders held-out (x, y_a, y_b) as the judge's ``label`` does.

    ``label`` is 1 when the judge prefers ``response_a``. Exact reward ties count as half.
    """
    check_frame(
        pairs, {"prompt": "str", "response_a": "str", "response_b": "str", "label": "int"}, source
    )
    n = len(pairs)
    long = pd.DataFrame(
        {
            "prompt_id": list(pairs.get("prompt_id", pd.Series(range(n)).astype(str))) * 2,
            "prompt": pairs["prompt"].tolist() * 2,
            "sample_idx": [0] * n + [1] * n,
            "response": pairs["response_a"].tolist() + pairs["response_b"].tolist(),
            "finish_reason": ["stop"] * (2 * n),
            "seed": [0] * (2 * n),
        }
    )
    scored = score(
        long,
        policy,
        ref,
        beta=beta,
        max_tokens_per_batch=max_tokens_per_batch,
        drop_truncated=False,
        source=str(source),
    )
    ra = scored["reward"].to_numpy()[:n]
    rb = scored["reward"].to_numpy()[n:]
    label = pairs["label"].to_numpy()
    hit = np.where(ra == rb, 0.5, ((ra > rb).astype(int) == label).astype(float))
    longer_a = pairs["response_a"].str.len().to_numpy() > pairs["response_b"].str.len().to_numpy()
    return {
        "agreement": float(hit.mean()),
        "n_pairs": int(n),
        "reward_prefers_longer": float(((ra > rb) == longer_a).mean()),
        "judge_prefers_longer": float((label.astype(bool) == longer_a).mean()),
    }
