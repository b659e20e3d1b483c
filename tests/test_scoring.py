import math

import numpy as np
import pandas as pd
import pytest
import torch

from dicewf import scoring
from dicewf.io import DatasetError


def test_response_logprobs_hand_computed():
    # Sequence [0, 1, 2, 1]: the prompt is tokens 0-1, the response tokens 2-3 (EOS = 1).
    logits = torch.zeros(1, 4, 3)
    logits[0, 2] = torch.tensor([0.0, math.log(3.0), 0.0])
    logits[0, 0] = torch.tensor([5.0, -5.0, 9.0])  # predicts the prompt token 1: masked
    ids = torch.tensor([[0, 1, 2, 1]])
    mask = torch.tensor([[0, 0, 1, 1]])
    # log p(2 | 0 1) = log(1/3) (uniform logits), log p(1 | 0 1 2) = log(3/5)
    got = scoring.response_logprobs(logits, ids, mask)
    assert got.item() == pytest.approx(math.log(1 / 3) + math.log(3 / 5), abs=1e-6)
    # the masked prompt position does not count
    logits[0, 0] = torch.tensor([-50.0, 0.0, 0.0])
    assert scoring.response_logprobs(logits, ids, mask).item() == pytest.approx(got.item())


def test_token_budget_batches_cover_every_index_once_within_budget():
    lengths = [5, 17, 3, 17, 9, 40, 1, 8]
    batches = scoring.token_budget_batches(lengths, 40)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 40
    assert [5] in batches  # the 40-token sequence fills a batch alone
    assert len(scoring.token_budget_batches(lengths, 10_000)) == 1
    assert len(scoring.token_budget_batches([50, 60], 10)) == 2  # oversize: one each
    with pytest.raises(ValueError):
        scoring.token_budget_batches(lengths, 0)


def test_encode_masks_the_prompt_and_ends_with_eos(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    (enc,) = scoring.encode(tok, ["What is 2 plus 3?"], ["The answer is 5."])
    assert enc.input_ids[-1] == tok.eos_token_id
    assert tok.decode(enc.input_ids[enc.response_start:]) == "The answer is 5.<|end|>"
    assert tok.decode(enc.input_ids[:enc.response_start]).endswith("<|assistant|>\n")


def test_encode_adds_the_tokenizers_special_tokens_as_trl_does(tiny_model):
    """A tokenizer with a BOS (Mistral, Zephyr): TRL's DPO tokenizes a rendered prompt with the
    tokenizer's special tokens, so the implicit reward must score the same sequence."""
    from tokenizers import processors
    from transformers import AutoTokenizer
    from trl.data_utils import _tokenize

    from dicewf.chat import render_prompts

    tok = AutoTokenizer.from_pretrained(tiny_model)
    bos = tok.eos_token  # any special token serves as this tokenizer's BOS
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))])
    prompt, response = "What is 2 plus 3?", "The answer is 5."
    (enc,) = scoring.encode(tok, [prompt], [response])
    rendered = render_prompts(tok, [prompt])[0]
    trl_prompt = _tokenize(tok, rendered)["input_ids"]
    trl_full = _tokenize(tok, rendered + response + tok.eos_token)["input_ids"]
    assert trl_full[0] == tok.convert_tokens_to_ids(bos)  # the post-processor is in effect
    assert enc.input_ids == trl_full
    assert enc.response_start == len(trl_prompt)


def test_batched_scoring_equals_one_sequence_at_a_time(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    prompts = ["Reverse the word kabo.", "What is 12 plus 9?", "How many letters are in zu?"]
    responses = ["obak.", "Adding 12 and 9 gives 21. The answer is 21.", "2"]
    enc = scoring.encode(tok, prompts, responses)
    batched = scoring.sequence_logprobs(model, enc, max_tokens_per_batch=4096,
                                        pad_token_id=tok.pad_token_id)
    single = scoring.sequence_logprobs(model, enc, max_tokens_per_batch=1,
                                       pad_token_id=tok.pad_token_id)
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-4)
    # and by hand, with a plain forward pass over the unpadded sequence
    e = enc[1]
    with torch.no_grad():
        logits = model(torch.tensor([e.input_ids])).logits[0]
    logp = torch.log_softmax(logits, -1)
    manual = sum(logp[t - 1, e.input_ids[t]].item() for t in range(e.response_start,
                                                                     len(e.input_ids)))
    assert batched[1] == pytest.approx(manual, abs=1e-4)


def _samples(n_prompts=3, k=2):
    rows = []
    for p in range(n_prompts):
        for s in range(k):
            rows.append((f"p{p}", f"What is {p} plus {s}?", s, f"The answer is {p + s}.",
                         "length" if (p, s) == (0, 1) else "stop", 0))
    return pd.DataFrame(rows, columns=["prompt_id", "prompt", "sample_idx", "response",
                                       "finish_reason", "seed"])


def test_score_columns_reward_and_truncation(tiny_model):
    df = _samples()
    out = scoring.score(df, tiny_model, tiny_model, beta=0.1)
    assert len(out) == len(df) - 1  # the truncated response is dropped
    assert not ((out["prompt_id"] == "p0") & (out["sample_idx"] == 1)).any()
    assert (out["logratio"] == 0).all()  # policy == reference
    assert (out["logp_policy"] < 0).all()
    assert (out["len_chars"] == out["response"].str.len()).all()
    assert (out["len_tokens"] >= 2).all()
    kept = scoring.score(df, tiny_model, tiny_model, beta=0.1, drop_truncated=False)
    assert len(kept) == len(df)


def test_score_reward_is_beta_times_logratio(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    other.save_pretrained(tmp_path / "other")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "other")
    out = scoring.score(_samples(), tmp_path / "other", tiny_model, beta=0.25)
    np.testing.assert_allclose(out["logratio"], out["logp_policy"] - out["logp_ref"])
    np.testing.assert_allclose(out["reward"], 0.25 * out["logratio"])
    assert (out["logratio"] != 0).any()


def test_score_rejects_bad_samples(tiny_model):
    with pytest.raises(DatasetError, match="finish_reason"):
        scoring.score(_samples().drop(columns="finish_reason"), tiny_model, tiny_model, beta=0.1,
                      source="s.parquet")
    all_cut = _samples().assign(finish_reason="length")
    with pytest.raises(ValueError, match="no response left"):
        scoring.score(all_cut, tiny_model, tiny_model, beta=0.1)
