"""Chat-template rendering and the special tokens around it, shared by sampling, scoring and
training.

One rule for every backbone: a rendered text is tokenized with the tokenizer's own special tokens
(``tokenizer(text)``, which is what TRL's trainers do with string datasets), and the rendering
leaves out a leading BOS that the chat template writes when the tokenizer adds one itself
(Llama-3's template starts with ``<|begin_of_text|>`` and so does its tokenizer; zephyr's
template writes none and its tokenizer adds ``<s>``). Every sequence so gets exactly one BOS.

A response ends with the chat template's turn-end token (:func:`turn_end_token`):
``<|eot_id|>`` for Llama-3 (whose ``eos_token`` may be ``<|end_of_text|>``), ``</s>`` for zephyr.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

# a response text no tokenizer splits into special tokens, to find what the template writes after
_SENTINEL = "dicewf-sentinel-response"


def adds_bos(tokenizer) -> bool:
    """Whether ``tokenizer(text)`` puts the BOS token in front by itself."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("")["input_ids"][:1] == [bos]


def strip_templated_bos(tokenizer, text: str) -> str:
    """``text`` without a leading BOS when the tokenizer adds one itself (one BOS, not two)."""
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and adds_bos(tokenizer):
        return text[len(bos) :]
    return text


def render_prompts(tokenizer, prompts: list[str]) -> list[str]:
    """Each user prompt rendered with the chat template, ending with the assistant header, as the
    text to tokenize with ``tokenizer(text)`` (see the module docstring about the BOS)."""
    return [
        strip_templated_bos(
            tokenizer,
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            ),
        )
        for p in prompts
    ]


def render_conversation(tokenizer, messages: list[dict[str, str]]) -> str:
    """A whole conversation rendered as the text to tokenize with ``tokenizer(text)``."""
    return strip_templated_bos(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False))


def _is_special(tokenizer, token_id: int) -> bool:
    added = tokenizer.added_tokens_decoder.get(token_id)
    return token_id in tokenizer.all_special_ids or (added is not None and added.special)


def turn_end_token(tokenizer) -> str:
    """The token that ends an assistant turn: the first special token the chat template writes
    after an assistant message's content; the EOS token for a tokenizer without a template."""
    if not tokenizer.chat_template:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"tokenizer {tokenizer.name_or_path!r} has neither a chat template "
                "nor an EOS token: no way to end a response"
            )
        return tokenizer.eos_token
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}],
        tokenize=False,
    )
    tail = text[text.index(_SENTINEL) + len(_SENTINEL) :]
    for token_id in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if _is_special(tokenizer, token_id):
            return tokenizer.convert_ids_to_tokens(token_id)
    raise ValueError(
        f"the chat template of {tokenizer.name_or_path!r} writes no special token "
        f"after an assistant message (it writes {tail!r})"
    )


def for_trl(tokenizer):
    """The tokenizer to hand TRL's trainers: TRL appends ``eos_token`` to string completions, so
    this is a copy whose ``eos_token`` is the turn-end token when the two differ (as the DICE
    code's LLaMA-Factory does for Llama-3); ``tokenizer`` itself is left as it is."""
    import copy

    end = turn_end_token(tokenizer)
    if end == tokenizer.eos_token:
        return tokenizer
    trl_tokenizer = copy.deepcopy(tokenizer)
    trl_tokenizer.eos_token = end
    return trl_tokenizer


def turn_end_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids(turn_end_token(tokenizer))


def stop_token_ids(
    tokenizer, generation_eos: int | Iterable[int] | None = None, extra: Iterable[int] = ()
) -> list[int]:
    """Token ids that end a sampled response: the turn-end token, the model's
    ``generation_config.eos_token_id`` (one id or several), the tokenizer's EOS and ``extra``
    (the sampling block's ``stop_token_ids``), without repeats, in that order."""
    if generation_eos is None:
        generation_eos = []
    elif isinstance(generation_eos, int):
        generation_eos = [generation_eos]
    ids = [turn_end_id(tokenizer), *generation_eos, tokenizer.eos_token_id, *extra]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


# what a tokenizer without a known limit reports as model_max_length (transformers' 1e30)
_NO_LIMIT = int(1e29)
# config fields that hold a model's context length, by model family
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_limits(
    model: str | os.PathLike, tokenizer, engine: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """The limits on prompt + response tokens of the model folder ``model``, by name: its
    config's context length (``max_position_embeddings`` or the family's equivalent), the
    tokenizer's ``model_max_length`` when it is set, and vLLM's ``max_model_len`` in
    ``engine`` when given. The context is the smallest of them."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model).get_text_config(decoder=True)
    limits = {}
    for field in CONTEXT_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            limits[field] = value
            break
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < _NO_LIMIT:
        limits["tokenizer model_max_length"] = value
    value = (engine or {}).get("max_model_len")
    if value is not None:
        limits["vllm max_model_len"] = int(value)
    return limits
