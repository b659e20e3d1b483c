"""Memory-bounded scoring: only the response positions' target-token log-probs are computed.

The largest tensor each scoring call allocates is recorded op by op (a TorchDispatchMode); views
of the inputs are not allocations and are not counted.
"""

from __future__ import annotations

import pytest
import torch
from dicewf import scoring
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

VOCAB = 320  # the tiny toy model's tokenizer size (tests/conftest.py)


class LargestAllocation(TorchDispatchMode):
    """The bytes of the largest new tensor storage any op returns (overall, and among tensors
    whose last dimension is ``vocab``: logits)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.largest = 0
        self.largest_logits = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = tree_flatten((args, kwargs))[0]
        seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                nbytes = t.untyped_storage().nbytes()
                self.largest = max(self.largest, nbytes)
                if t.dim() and t.shape[-1] == self.vocab:
                    self.largest_logits = max(self.largest_logits, nbytes)
        return out


def _reference(logits, ids, mask):
    """The former computation, in float64: log_softmax over every position, gathered, masked."""
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    tok = logp.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (tok * mask[:, 1:]).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_response_logprobs_reads_response_rows_only_in_float32_chunks(dtype):
    gen = torch.Generator().manual_seed(0)
    batch, length, vocab = 3, 40, 3000
    logits = (4 * torch.randn(batch, length, vocab, generator=gen)).to(dtype)
    ids = torch.randint(vocab, (batch, length), generator=gen)
    mask = torch.zeros(batch, length, dtype=torch.long)
    mask[0, 30:40], mask[1, 35:38], mask[2, 20:21] = 1, 1, 1  # 14 response tokens
    want = _reference(logits, ids, mask)
    for chunk_rows, rows in ((None, 14), (4, 4)):
        with LargestAllocation(vocab) as seen:
            if chunk_rows is None:
                got = scoring.response_logprobs(logits, ids, mask)
            else:
                got = scoring.response_logprobs(logits, ids, mask, chunk_rows=chunk_rows)
        # at most `rows` positions of float32 logits at a time, never (batch, length, vocab)
        assert seen.largest <= rows * vocab * 4 < logits.numel() * 4 // 8
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4, check_dtype=False)


def _models(tiny_model):
    """{kind: model} with the toy vocabulary: the toy Llama, a tiny Mistral (both run their head
    on the response rows), and a Llama subclass outside HEAD_ON_HIDDEN (logits_to_keep)."""
    from transformers import (
        AutoModelForCausalLM,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
    )

    llama = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    torch.manual_seed(0)
    mistral = MistralForCausalLM(
        MistralConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
        )
    ).eval()
    other = type("OtherForCausalLM", (LlamaForCausalLM,), {})(llama.config).eval()
    other.load_state_dict(llama.state_dict())
    return {"llama": llama, "mistral": mistral, "logits_to_keep": other}


@pytest.mark.parametrize("kind", ["llama", "mistral", "logits_to_keep"])
def test_sequence_logprobs_computes_logits_at_response_positions_only(tiny_model, kind):
    model = _models(tiny_model)[kind]
    gen = torch.Generator().manual_seed(1)
    # long prompts, short responses: (prompt tokens, response tokens)
    shapes = [(60, 4), (70, 2), (50, 6), (66, 3)]
    encoded = [
        scoring.Encoded(torch.randint(3, VOCAB, (p + r,), generator=gen).tolist(), p)
        for p, r in shapes
    ]
    with LargestAllocation(VOCAB) as seen:
        got = scoring.sequence_logprobs(model, encoded, max_tokens_per_batch=4096, pad_token_id=0)
    width = max(p + r for p, r in shapes)
    n_response = sum(r for _, r in shapes)
    if kind == "logits_to_keep":  # from the earliest response position on, in every row
        first = min(p for p, _ in shapes)
        bound = len(shapes) * (width - first + 1) * VOCAB * 4
    else:
        bound = n_response * VOCAB * 4
    assert seen.largest_logits <= bound < len(shapes) * width * VOCAB * 4 // 2
    # and the values: one plain forward pass per unpadded sequence, log_softmax in float64
    with torch.no_grad():
        for e, value in zip(encoded, got, strict=True):
            logits = model(torch.tensor([e.input_ids])).logits
            ids = torch.tensor([e.input_ids])
            mask = torch.zeros_like(ids)
            mask[0, e.response_start :] = 1
            assert value == pytest.approx(_reference(logits, ids, mask).item(), abs=1e-4)
