"""LLM-as-a-Judge: templates, score parsing, and the policy judging its own responses."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest
from dicewf import llm_judge, sampling, scoring
from dicewf.io import DatasetError, check_frame

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "workflow" / "prompts"
TOY_TEMPLATE = llm_judge.load_template(PROMPTS_DIR / "llm_as_judge_toy.txt")

SAMPLES = pd.DataFrame(
    {
        "prompt_id": ["p0", "p0", "p1", "p1", "p2", "p2"],
        "prompt": ["What is 1 plus 2?"] * 2
        + ["Reverse the word kabo."] * 2
        + ["Write zu in capital letters."] * 2,
        "sample_idx": [0, 1, 0, 1, 0, 1],
        "response": ["3", "The answer is 3.", "obak", "It is obak {response}", "ZU", "zu"],
        "finish_reason": ["stop"] * 6,
        "seed": [1] * 6,
    }
)


def test_the_paper_template_is_figure_6():
    text = llm_judge.load_template(PROMPTS_DIR / "llm_as_judge.txt")
    assert text.startswith(
        "Review the user's question and the corresponding response using the "
        "additive 5-point scoring system described below."
    )
    for criterion in (
        "- Add 1 point if",
        "- Add another point if",
        "- Award a third point if",
        "- Grant a fourth point if",
        "- Bestow a fifth point for",
    ):
        assert text.count(criterion) == 1
    assert "User: {instruction}\nResponse: {response}\n" in text
    assert "conclude with a score between 0 to 5" in text
    assert text.rstrip().endswith("Evaluation: <evaluation> Score: <score>")


def test_the_toy_template_fits_the_toy_context(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    bare = llm_judge.render(TOY_TEMPLATE, "", "")
    assert len(tok(bare, add_special_tokens=False)["input_ids"]) <= 25


def test_a_template_without_placeholders_is_refused_naming_both():
    with pytest.raises(ValueError) as err:
        llm_judge.check_template("Rate this answer.")
    assert str(err.value) == (
        "<template>: judge template lacks the placeholder(s) {instruction}, {response}; it "
        "needs both {instruction} and {response}"
    )


def test_templates_need_both_placeholders(tmp_path):
    bad = tmp_path / "judge.txt"
    bad.write_text("Rate this: {response}\nScore:")
    with pytest.raises(ValueError, match=rf"{bad}: .*placeholder\(s\) \{{instruction\}}"):
        llm_judge.load_template(bad)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        llm_judge.load_template(tmp_path / "missing.txt")


def test_the_judge_scores_contract_is_registered():
    from dicewf.io import SCHEMAS

    assert SCHEMAS["judge_scores"] == llm_judge.JUDGE_SCORES


def test_render_fills_placeholders_once_and_keeps_other_braces():
    out = llm_judge.render(
        'U: {instruction}\nR: {response}\n{"json": 1}', "say {response}", "a {instruction} b"
    )
    assert out == 'U: say {response}\nR: a {instruction} b\n{"json": 1}'


PARSE_CASES = [
    # the format the template asks for
    ("Evaluation: The response is relevant and answers the question. Score: 4", 4.0),
    ("Evaluation: Off topic.\nScore: 0", 0.0),
    ("Score: 5", 5.0),
    # markdown and variants
    ("**Evaluation:** thorough.\n\n**Score:** 4", 4.0),
    ("**Score**: 3", 3.0),
    ("Score: **2**", 2.0),
    ("### Score: 1", 1.0),
    ("SCORE: 3", 3.0),
    ("Final score = 2", 2.0),
    ("Score - 4", 4.0),
    ("Score: <3>", 3.0),
    ("Score: [4]", 4.0),
    ("Score: 4.5", 4.5),
    ("score: 3.5/5.", 3.5),
    ("Score: 4/5", 4.0),
    ("Score: 4 out of 5", 4.0),
    ("Score: 3 (out of 5)", 3.0),
    ("Score:\n\n5 points", 5.0),
    ("Thus the response earns a score of 2.", 2.0),
    ("The total score is 3 points.", 3.0),
    ("Score: 4.", 4.0),
    # the template echoed before the real score: the last score wins
    ("Evaluation: <evaluation> Score: <score>\nEvaluation: Helpful. Score: 3", 3.0),
    ("Score: 2\nOn reflection, Score: 3", 3.0),
    # out-of-range or off-scale scores do not count
    ("Score: 7\nThe response earns 4 points.", 4.0),
    ("Score: 3/10", math.nan),
    ("Score: 10", math.nan),
    ("Score: -1", math.nan),
    # scales are not scores
    ("provide a score between 0 to 5", math.nan),
    ("a score between 0 and 5 is required", math.nan),
    ("Rated on a 0-5 scale: 3", 3.0),
    ("This earns 2 on the additive 5-point scale.", 2.0),
    # no "Score:": N/5, else the last standalone number
    ("I would rate this 4/5 overall.", 4.0),
    ("It deserves 3 out of 5; a 5/5 needs more depth", 5.0),
    ("The response earns 3 points.", 3.0),
    ("Points: 1 + 1 + 1 = 3", 3.0),
    ("50% of the answer is right", math.nan),
    # nothing
    ("I cannot evaluate this response.", math.nan),
    # a "Score:" on another scale is skipped, not the end of the search: the last good one wins
    ("Score: 3/6", math.nan),
    ("Score: 2/10, corrected Score: 4 after 1 more look", 4.0),
    # a scale run into a number ("0-4.5" then "4.5"): the number after it still stands alone
    ("0-4.54.5", 4.5),
    (math.nan, math.nan),  # a missing judgement read back from parquet
    ("Score: N/A", math.nan),
    ("", math.nan),
    (None, math.nan),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_score(text, expected):
    got = llm_judge.parse_score(text)
    if math.isnan(expected):
        assert math.isnan(got), got
    else:
        assert got == expected


class FakeJudgeSampler:
    """Test double for dicewf.sampling.sample: records the judge requests and answers each with
    a fixed judgement, as a model following the template would."""

    def __init__(self, judgements):
        self.judgements, self.calls = judgements, []

    def __call__(self, model, prompts, spec, backend="auto", engine=None, source="<prompts>"):
        self.calls.append(
            {
                "model": model,
                "prompts": prompts.copy(),
                "spec": dict(spec),
                "backend": backend,
                "engine": engine,
                "source": source,
            }
        )
        return pd.DataFrame(
            {
                "prompt_id": prompts["prompt_id"].tolist(),
                "prompt": prompts["prompt"].tolist(),
                "sample_idx": 0,
                "response": [self.judgements[i] for i in prompts["prompt_id"]],
                "finish_reason": "stop",
                "seed": 0,
            }
        )


def test_judge_renders_one_request_per_response_and_parses_the_scores(tiny_model, monkeypatch):
    samples = SAMPLES.copy()
    samples.loc[5, "finish_reason"] = "length"  # truncated: not judged
    fake = FakeJudgeSampler(
        {
            "p0#0": "Evaluation: correct. Score: 5",
            "p0#1": "**Score:** 4",
            "p1#0": "Score: 3/5",
            "p1#1": "I cannot judge this.",
            "p2#0": "Evaluation: fine\nScore: 2",
            "p2#1": "Score: 1",
        }
    )
    monkeypatch.setattr(sampling, "sample", fake)
    params = {"temperature": 0.0, "max_tokens": 32, "seed": 7}
    out = llm_judge.judge(
        tiny_model,
        samples,
        TOY_TEMPLATE,
        params,
        backend="transformers",
        engine={"dtype": "float32"},
    )
    (call,) = fake.calls
    assert call["spec"] == {**params, "n": 1}
    assert call["backend"] == "transformers" and call["engine"] == {"dtype": "float32"}
    assert call["prompts"]["prompt_id"].tolist() == ["p0#0", "p0#1", "p1#0", "p1#1", "p2#0"]
    assert (
        call["prompts"]["prompt"].iloc[3]
        == "Score the answer 0-5.\nReverse the word kabo.\nIt is obak {response}\nScore:"
    )
    check_frame(out, llm_judge.JUDGE_SCORES)
    assert out["prompt_id"].tolist() == ["p0", "p0", "p1", "p1", "p2"]
    assert out["reward"].tolist()[:3] == [5.0, 4.0, 3.0] and out["reward"].iloc[4] == 2.0
    assert math.isnan(out["reward"].iloc[3])
    assert out["judgement"].iloc[1] == "**Score:** 4"
    assert out["len_chars"].tolist() == samples["response"].str.len().tolist()[:5]
    from transformers import AutoTokenizer

    encoded = scoring.encode(
        AutoTokenizer.from_pretrained(tiny_model),
        samples["prompt"].tolist()[:5],
        samples["response"].tolist()[:5],
    )
    assert out["len_tokens"].tolist() == [e.n_response for e in encoded]
    kept = llm_judge.parsed(out)
    assert kept["prompt_id"].tolist() == ["p0", "p0", "p1", "p2"]
    with_truncated = llm_judge.judge(
        tiny_model, samples, TOY_TEMPLATE, params, drop_truncated=False
    )
    assert with_truncated["finish_reason"].tolist()[-2:] == ["stop", "length"]
    assert with_truncated["reward"].iloc[-1] == 1.0


def test_judge_checks_its_inputs():
    with pytest.raises(ValueError, match=r"min_ratings must lie in \[1, n=2\], got 3"):
        llm_judge.judge("unused", SAMPLES, TOY_TEMPLATE, {"n": 2}, min_ratings=3)
    with pytest.raises(ValueError, match="min_ratings"):
        llm_judge.judge("unused", SAMPLES, TOY_TEMPLATE, {"n": 2}, min_ratings=0)
    with pytest.raises(ValueError, match="greedy decoding .* set n to 1, not 7"):
        llm_judge.judge("unused", SAMPLES, TOY_TEMPLATE, {"n": 7, "temperature": 0.0})
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        llm_judge.judge("unused", SAMPLES, TOY_TEMPLATE, {"n": 0})
    with pytest.raises(DatasetError, match="samples.parquet"):
        llm_judge.judge(
            "unused", SAMPLES.drop(columns="response"), TOY_TEMPLATE, {}, source="samples.parquet"
        )
    with pytest.raises(ValueError, match="placeholder"):
        llm_judge.judge("unused", SAMPLES, "Score: {response}", {})
    truncated = SAMPLES.assign(finish_reason="length")
    with pytest.raises(ValueError, match="no response left"):
        llm_judge.judge("unused", truncated, TOY_TEMPLATE, {})
    repeated = pd.concat([SAMPLES, SAMPLES.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match=r"repeated \(prompt_id, sample_idx\) at rows \[6\]"):
        llm_judge.judge("unused", repeated, TOY_TEMPLATE, {})


def test_the_policy_judges_with_transformers_seeded_per_response(tiny_model):
    params = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 6, "seed": 3}
    out = llm_judge.judge(tiny_model, SAMPLES, TOY_TEMPLATE, params, backend="transformers")
    check_frame(out, llm_judge.JUDGE_SCORES, allow_empty=False)
    assert len(out) == len(SAMPLES)
    assert set(out["judge_finish_reason"]) <= {"stop", "length"}
    # the judgements are what the policy generates for the rendered judge prompts
    requests = pd.DataFrame(
        {
            "prompt_id": [f"{p}#{k}" for p, k in zip(SAMPLES["prompt_id"], SAMPLES["sample_idx"])],
            "prompt": [
                llm_judge.render(TOY_TEMPLATE, p, r)
                for p, r in zip(SAMPLES["prompt"], SAMPLES["response"])
            ],
        }
    )
    direct = sampling.sample(tiny_model, requests, {**params, "n": 1}, backend="transformers")
    assert out["judgement"].tolist() == direct["response"].tolist()
    for reward, text in zip(out["reward"], out["judgement"]):
        expected = llm_judge.parse_score(text)
        assert (math.isnan(reward) and math.isnan(expected)) or reward == expected
    # a response's judgement depends on its own id and the seed, not on the rest of the batch
    part = llm_judge.judge(
        tiny_model, SAMPLES.iloc[[5, 2]], TOY_TEMPLATE, params, backend="transformers"
    )
    assert part["judgement"].tolist() == out["judgement"].iloc[[5, 2]].tolist()
    again = llm_judge.judge(tiny_model, SAMPLES, TOY_TEMPLATE, params, backend="transformers")
    pd.testing.assert_frame_equal(out, again)
    other = llm_judge.judge(
        tiny_model, SAMPLES, TOY_TEMPLATE, {**params, "seed": 4}, backend="transformers"
    )
    assert other["judgement"].tolist() != out["judgement"].tolist()


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_the_policy_judges_with_vllm_on_cpu(tiny_model):
    engine = {
        "dtype": "float32",
        "max_model_len": 128,
        "kv_cache_memory_bytes": 2**28,
        "enforce_eager": True,
    }
    params = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 6, "seed": 3}
    out = llm_judge.judge(tiny_model, SAMPLES, TOY_TEMPLATE, params, backend="vllm", engine=engine)
    check_frame(out, llm_judge.JUDGE_SCORES)
    assert len(out) == len(SAMPLES)
    part = llm_judge.judge(
        tiny_model, SAMPLES.iloc[[5, 2]], TOY_TEMPLATE, params, backend="vllm", engine=engine
    )
    assert part["judgement"].tolist() == out["judgement"].iloc[[5, 2]].tolist()


# --- several ratings per response (the DICE code: 7 at temperature 0.2, mean of >= 3 parsed) ----


@pytest.mark.parametrize(
    ("ratings", "min_ratings", "expected"),
    [
        ([4.0, 5.0, 3.0, math.nan, 2.0, math.nan, 1.0], 3, 3.0),  # 5 of 7 parsed
        ([4.0, math.nan, 5.0, math.nan, 3.0, math.nan, math.nan], 3, 4.0),  # exactly 3
        ([4.0, math.nan, 5.0, math.nan, math.nan, math.nan, math.nan], 3, math.nan),  # 2: too few
        ([math.nan] * 7, 1, math.nan),
        ([2.5], 1, 2.5),  # one rating: that rating
        ([math.nan], 1, math.nan),
        ([0.0, 0.0, math.nan], 2, 0.0),  # zero is a rating
        ([4.0, None, 2.0], 2, 3.0),  # None (a null read back) is no rating
    ],
)
def test_the_reward_is_the_mean_of_at_least_min_ratings_parsed(ratings, min_ratings, expected):
    got = llm_judge.aggregate(ratings, min_ratings)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_aggregate_needs_a_positive_minimum():
    with pytest.raises(ValueError, match="min_ratings must be at least 1, got 0"):
        llm_judge.aggregate([1.0], 0)


def test_each_rating_is_its_own_request_and_the_mean_of_enough_parsed_is_the_reward(
    tiny_model, monkeypatch, caplog
):
    samples = SAMPLES.iloc[:3]  # p0#0, p0#1, p1#0
    fake = FakeJudgeSampler(
        {
            "p0#0": "Score: 5",
            "p0#0#1": "Score: 4",
            "p0#0#2": "no idea",
            "p0#1": "Score: 1",
            "p0#1#1": "hmm",
            "p0#1#2": "nothing",
            "p1#0": "Score: 2",
            "p1#0#1": "Score: 3",
            "p1#0#2": "Score: 4",
        }
    )
    monkeypatch.setattr(sampling, "sample", fake)
    params = {"n": 3, "temperature": 0.2, "top_p": 0.9, "max_tokens": 16, "seed": 5}
    with caplog.at_level("INFO", logger="dicewf.llm_judge"):
        out = llm_judge.judge(tiny_model, samples, TOY_TEMPLATE, params, min_ratings=2)
    (call,) = fake.calls
    assert call["spec"] == {**params, "n": 1}  # n requests of one judgement each
    assert call["prompts"]["prompt_id"].tolist() == [
        "p0#0",
        "p0#0#1",
        "p0#0#2",
        "p0#1",
        "p0#1#1",
        "p0#1#2",
        "p1#0",
        "p1#0#1",
        "p1#0#2",
    ]
    rendered = call["prompts"]["prompt"].tolist()
    assert rendered[0] == rendered[1] == rendered[2] != rendered[3]
    check_frame(out, llm_judge.JUDGE_SCORES)
    assert out["reward"].iloc[0] == 4.5 and out["reward"].iloc[2] == 3.0
    assert math.isnan(out["reward"].iloc[1])  # one parsed rating of the two needed: unrated
    assert out["n_rated"].tolist() == [2, 1, 3]
    assert out["judgements"].iloc[1] == ["Score: 1", "hmm", "nothing"]
    assert out["judgement"].tolist() == ["Score: 5", "Score: 1", "Score: 2"]
    assert out["ratings"].iloc[2] == [2.0, 3.0, 4.0]
    assert math.isnan(out["ratings"].iloc[0][2])
    assert llm_judge.parsed(out)["sample_idx"].tolist() == [0, 0]
    assert "parsed a rating from 6 of 9 judgements" in caplog.text
    assert "rated 2 of 3 responses (at least 2 parsed ratings); 1 unrated drop out" in caplog.text


def test_the_judge_applies_the_response_filters(tiny_model, monkeypatch):
    fake = FakeJudgeSampler({f"{p}#{k}": "Score: 3" for p in ("p0", "p1", "p2") for k in (0, 1)})
    monkeypatch.setattr(sampling, "sample", fake)
    samples = SAMPLES.assign(response=["3", " The answer is 3. ", "obak", "It is obak", "ZU", "zu"])
    out = llm_judge.judge(
        tiny_model,
        samples,
        TOY_TEMPLATE,
        {"temperature": 0.0},
        strip_whitespace=True,
        min_chars=4,
        max_chars=9,
    )
    assert out["response"].tolist() == ["obak"]  # "3", "ZU", "zu" short; 2 more than 9 chars
    out = llm_judge.judge(
        tiny_model, samples, TOY_TEMPLATE, {"temperature": 0.0}, strip_whitespace=True, min_chars=4
    )
    assert out["response"].tolist() == ["The answer is 3.", "obak", "It is obak"]


def test_judge_prompts_over_max_prompt_tokens_are_dropped(tiny_model, monkeypatch, caplog):
    from transformers import AutoTokenizer

    fake = FakeJudgeSampler({f"{p}#{k}": "Score: 3" for p in ("p0", "p1", "p2") for k in (0, 1)})
    monkeypatch.setattr(sampling, "sample", fake)
    rendered = [
        llm_judge.render(TOY_TEMPLATE, x, y) for x, y in zip(SAMPLES["prompt"], SAMPLES["response"])
    ]
    lengths = [
        len(t)
        for t in sampling.prompt_token_ids(AutoTokenizer.from_pretrained(tiny_model), rendered)
    ]
    limit = min(lengths)
    with caplog.at_level("INFO", logger="dicewf.llm_judge"):
        out = llm_judge.judge(
            tiny_model, SAMPLES, TOY_TEMPLATE, {"temperature": 0.0}, max_prompt_tokens=limit
        )
    expected = [i for i, n in enumerate(lengths) if n <= limit]
    assert 0 < len(expected) < len(SAMPLES) - len(expected)  # the dropped ones outnumber
    assert out["response"].tolist() == SAMPLES["response"].iloc[expected].tolist()
    assert out.index.tolist() == list(range(len(expected)))
    assert fake.calls[0]["prompts"]["prompt"].tolist() == [rendered[i] for i in expected]
    assert (
        f"dropping {len(SAMPLES) - len(expected)} responses whose judge prompt has more "
        f"than {limit} tokens, of 6"
    ) in caplog.messages
    # columns a pandas reset_index() left in the samples ("index", then "level_0") pass by
    stray = SAMPLES.assign(index=range(6), level_0=range(6))
    out = llm_judge.judge(
        tiny_model, stray, TOY_TEMPLATE, {"temperature": 0.0}, max_prompt_tokens=limit
    )
    assert out["response"].tolist() == SAMPLES["response"].iloc[expected].tolist()
    with pytest.raises(ValueError, match="every judge prompt has more than 1 tokens"):
        llm_judge.judge(
            tiny_model, SAMPLES, TOY_TEMPLATE, {"temperature": 0.0}, max_prompt_tokens=1
        )


@pytest.mark.slow
def test_each_rating_has_its_own_reproducible_seed_and_one_rating_is_the_old_judgement(tiny_model):
    params = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 6, "seed": 3}
    three = llm_judge.judge(
        tiny_model, SAMPLES, TOY_TEMPLATE, {**params, "n": 3}, backend="transformers"
    )
    # the ratings are what the sampler gives each rating's own request, with its own seed
    ids = [
        llm_judge.request_id(p, k, r)
        for p, k in zip(SAMPLES["prompt_id"], SAMPLES["sample_idx"])
        for r in range(3)
    ]
    requests = pd.DataFrame(
        {
            "prompt_id": ids,
            "prompt": [
                llm_judge.render(TOY_TEMPLATE, x, y)
                for x, y in zip(SAMPLES["prompt"], SAMPLES["response"])
                for _ in range(3)
            ],
        }
    )
    direct = sampling.sample(tiny_model, requests, {**params, "n": 1}, backend="transformers")
    assert direct["seed"].nunique() == len(ids)  # a distinct seed per rating
    assert [j for row in three["judgements"] for j in row] == direct["response"].tolist()
    assert len({tuple(row) for row in three["judgements"]}) > 1
    assert any(len(set(row)) > 1 for row in three["judgements"])  # ratings differ
    again = llm_judge.judge(
        tiny_model, SAMPLES, TOY_TEMPLATE, {**params, "n": 3}, backend="transformers"
    )
    pd.testing.assert_frame_equal(three, again)
    # one rating per response (the old behaviour): rating 0 keeps the request id and seed
    one = llm_judge.judge(tiny_model, SAMPLES, TOY_TEMPLATE, params, backend="transformers")
    assert one["judgement"].tolist() == [row[0] for row in three["judgements"]]
    assert one["judgements"].map(len).eq(1).all()
    for reward, text in zip(one["reward"], one["judgement"]):
        expected = llm_judge.parse_score(text)
        assert (math.isnan(reward) and math.isnan(expected)) or reward == expected


JUDGE_SCORES_FRAME = pd.DataFrame(
    {
        "prompt_id": ["p0", "p0", "p1", "p1"],
        "prompt": ["What is 1 plus 2?"] * 2 + ["Reverse the word kabo."] * 2,
        "sample_idx": [0, 1, 0, 1],
        "response": ["3", "4", "obak", "kabo"],
        "finish_reason": ["stop"] * 4,
        "reward": [4.0, math.nan, 2.5, math.nan],
        "len_chars": [1, 1, 4, 4],
        "len_tokens": [2, 2, 3, 3],
        "judgement": ["Score: 4", "no idea", "Score: 2.5", "hmm"],
    }
)


def test_parsed_keeps_the_rated_rows_numbered_afresh_and_logs_how_many(caplog):
    with caplog.at_level("INFO", logger="dicewf.llm_judge"):
        kept = llm_judge.parsed(JUDGE_SCORES_FRAME, "judge.parquet")
    expected = JUDGE_SCORES_FRAME.iloc[[0, 2]].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, expected)  # same columns, index 0, 1
    assert "judge.parquet: 2 of 4 responses are rated" in caplog.messages
    with caplog.at_level("INFO", logger="dicewf.llm_judge"):
        llm_judge.parsed(JUDGE_SCORES_FRAME)
    assert caplog.messages[-1] == "<judge_scores>: 2 of 4 responses are rated"


def test_parsed_names_the_source_of_a_bad_frame():
    with pytest.raises(DatasetError, match=r"^judge\.parquet: missing column\(s\) \['judgement'\]"):
        llm_judge.parsed(JUDGE_SCORES_FRAME.drop(columns="judgement"), "judge.parquet")


def test_request_ids_carry_the_rating_after_the_first():
    assert llm_judge.request_id("p0", 3) == "p0#3"  # one rating: the id it always was
    assert llm_judge.request_id("p0", 3, 0) == "p0#3"
    assert llm_judge.request_id("p0", 3, 2) == "p0#3#2"


def test_by_default_the_judge_uses_auto_and_judges_responses_as_written(tiny_model, monkeypatch):
    fake = FakeJudgeSampler({f"{p}#{k}": "Score: 3" for p in ("p0", "p1", "p2") for k in (0, 1)})
    monkeypatch.setattr(sampling, "sample", fake)
    samples = SAMPLES.assign(response=["", " The answer is 3. ", "obak", "It is obak", "ZU", "zu"])
    out = llm_judge.judge(tiny_model, samples, TOY_TEMPLATE, {"temperature": 0.0})
    (call,) = fake.calls
    assert call["backend"] == "auto" and call["source"] == "<samples>"
    # no whitespace stripped, no minimum length: the empty response is judged too
    assert out["response"].tolist() == samples["response"].tolist()
    llm_judge.judge(tiny_model, samples, TOY_TEMPLATE, {"temperature": 0.0}, source="s.parquet")
    assert fake.calls[1]["source"] == "s.parquet"
    with pytest.raises(DatasetError, match=r"^<samples>: missing column"):
        llm_judge.judge("unused", SAMPLES.drop(columns="response"), TOY_TEMPLATE, {})


def test_judge_errors_name_the_source_and_the_repeated_rows():
    with pytest.raises(ValueError, match="greedy decoding .* set n to 1, not 2"):
        llm_judge.judge("unused", SAMPLES, TOY_TEMPLATE, {"n": 2, "temperature": 0.0})
    truncated = SAMPLES.assign(finish_reason="length")
    with pytest.raises(ValueError, match=r"^s\.parquet: no response left to judge "):
        llm_judge.judge("unused", truncated, TOY_TEMPLATE, {}, source="s.parquet")
    # the same (prompt_id, sample_idx) with another response is a repeat too
    other = SAMPLES.iloc[:1].assign(response="another answer")
    repeated = pd.concat([SAMPLES, other], ignore_index=True)
    with pytest.raises(ValueError, match=r"repeated \(prompt_id, sample_idx\) at rows \[6\]"):
        llm_judge.judge("unused", repeated, TOY_TEMPLATE, {})
    many = pd.concat([SAMPLES, SAMPLES], ignore_index=True)  # rows 6-11 repeat 0-5
    with pytest.raises(ValueError, match=r"at rows \[6, 7, 8, 9, 10\]$"):
        llm_judge.judge("unused", many, TOY_TEMPLATE, {})


def test_judgements_out_of_request_order_are_an_error(tiny_model, monkeypatch):
    fake = FakeJudgeSampler({f"{p}#{k}": "Score: 3" for p in ("p0", "p1", "p2") for k in (0, 1)})

    def shuffled(*args, **kwargs):
        return fake(*args, **kwargs).iloc[::-1].reset_index(drop=True)

    monkeypatch.setattr(sampling, "sample", shuffled)
    with pytest.raises(RuntimeError) as err:
        llm_judge.judge(tiny_model, SAMPLES, TOY_TEMPLATE, {"temperature": 0.0})
    assert str(err.value) == "the sampler returned judgements out of request order"


def test_judgements_are_kept_verbatim_even_with_trailing_nul_characters(tiny_model, monkeypatch):
    judgements = {f"{p}#{k}": "Score: 3" for p in ("p0", "p1", "p2") for k in (0, 1)}
    judgements["p0#0"] = "Score: 4\x00\x00"
    monkeypatch.setattr(sampling, "sample", FakeJudgeSampler(judgements))
    out = llm_judge.judge(tiny_model, SAMPLES, TOY_TEMPLATE, {"temperature": 0.0})
    assert out["judgement"].iloc[0] == "Score: 4\x00\x00"
    assert out["judgements"].iloc[0] == ["Score: 4\x00\x00"]
    assert out["reward"].iloc[0] == 4.0


def test_the_judge_logs_exact_rating_and_reward_counts(tiny_model, monkeypatch, caplog):
    fake = FakeJudgeSampler(
        {
            "p0#0": "Score: 4",
            "p0#0#1": "Score: 5",
            "p0#0#2": "Score: 5",  # mean 4.666...: 4.67 at two decimals
            "p0#1": "hmm",
            "p0#1#1": "no idea",
            "p0#1#2": "nothing",
            "p1#0": "Score: 2",
            "p1#0#1": "Score: 2",
            "p1#0#2": "pass",
        }
    )
    monkeypatch.setattr(sampling, "sample", fake)
    params = {"n": 3, "temperature": 0.2}
    with caplog.at_level("INFO", logger="dicewf.llm_judge"):
        out = llm_judge.judge(tiny_model, SAMPLES.iloc[:3], TOY_TEMPLATE, params, min_ratings=2)
    assert out["n_rated"].tolist() == [3, 0, 2] and out["n_rated"].dtype == "int64"
    # 5 of 9 parsed: 55.6%; one response each with 0, 2 and 3 parsed ratings
    assert caplog.messages[-3:] == [
        "parsed a rating from 5 of 9 judgements (55.6%); ratings parsed per response (of 3): "
        "{0: 1, 2: 1, 3: 1}",
        "rated 2 of 3 responses (at least 2 parsed ratings); 1 unrated drop out",
        "reward counts: {2.0: 1, 4.67: 1, nan: 1}",
    ]
