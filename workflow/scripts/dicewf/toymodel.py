"""A tokenizer and a tiny Llama built locally, saved and reloaded by path like a hub model."""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"

# One user turn, then the assistant's turn. The assistant turn ends with <|end|>, which is also
# the EOS token, so generation stops at the end of a turn and scoring counts it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "\n{{ message['content'] }}" + END + "\n"
    "{% elif message['role'] == 'assistant' %}"
    + ASSISTANT
    + "\n{{ message['content'] }}"
    + END
    + "\n{% elif message['role'] == 'system' %}{{ message['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "\n{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | os.PathLike,
    *,
    model_max_length: int | None = None,
):
    """Train a byte-level BPE on ``texts`` and save it as a transformers tokenizer in ``out_dir``.

    ``model_max_length`` None leaves it unset (no limit): :func:`init_model` sets it to the
    model's ``max_position_embeddings``, so tokenizer and model agree on the context."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, USER, ASSISTANT, END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END,
        pad_token=PAD,
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        **({} if model_max_length is None else {"model_max_length": model_max_length}),
    )
    fast.save_pretrained(out_dir)
    return fast


def init_model(
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    seed: int,
):
    """Randomly initialise a Llama for the tokenizer in ``tokenizer_dir``; save model + tokenizer.

    The saved tokenizer's ``model_max_length`` is ``max_position_embeddings``: both state the
    same context (the weights do not depend on it)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.model_max_length = max_position_embeddings
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return model
