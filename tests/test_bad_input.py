"""Bad input that once gave a silent wrong result now gives an early error naming the place, or a
logged fallback with a count (issue 12, faults 8-11). Unit-level: small in-memory frames and the
tiny toy model of conftest."""

from __future__ import annotations

import json
import logging
import sys
import types

import numpy as np
import pandas as pd
import pytest
from dicewf import alpha, sampling, scoring
from dicewf.io import DatasetError, check_frame, write_json
from dicewf.mixing import mix

ALPHA = {
    "method": "exact",
    "bounds": [0.0, 0.2],
    "length_unit": "chars",
    "grid_step": 0.01,
    "n_calls": 10,
    "min_responses": 2,
    "seed": 0,
    "fixed": None,
    "scale": 1.0,
}


def _scores(logratio=(1.0, 0.0, 2.0, -1.0), beta=0.5) -> pd.DataFrame:
    """Implicit-reward scores of two prompts a, b with two responses each."""
    df = pd.DataFrame(
        {
            "prompt_id": ["a", "a", "b", "b"],
            "prompt": ["What is 1 plus 2?"] * 2 + ["Reverse kabo."] * 2,
            "sample_idx": [0, 1, 0, 1],
            "response": ["3", "The answer is 3.", "obak", "kabo reversed is obak"],
            "finish_reason": ["stop"] * 4,
            "logratio": list(logratio),
            "beta": beta,
        }
    )
    df["reward"] = beta * df["logratio"]
    df["logp_policy"] = df["logratio"] - 10.0
    df["logp_ref"] = -10.0
    df["len_chars"] = df["response"].str.len()
    df["len_tokens"] = df["len_chars"] // 2 + 1
    df["seed"] = 0
    return df


# --- fault 8: one prompt_id, two prompts --------------------------------------------------------


def _two_prompts_under_one_id(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[1, "prompt"] = "A different prompt that reuses id a."
    return df


@pytest.mark.parametrize("schema", ["samples", "scores", "rewards", "pairs"])
def test_a_prompt_id_with_two_prompts_is_refused_naming_file_and_id(schema):
    df = _two_prompts_under_one_id(_scores())
    if schema == "pairs":
        df = df.assign(chosen=df["response"], rejected=df["response"])
    with pytest.raises(
        DatasetError,
        match=r"s\.parquet: 1 prompt_id value\(s\) carry more than "
        r"one prompt text.*'a': \[0, 1\]",
    ):
        check_frame(df, schema, "s.parquet")


def test_pairs_are_not_built_across_two_prompts_under_one_id():
    scores = _two_prompts_under_one_id(_scores())
    with pytest.raises(DatasetError, match=r"scores\.parquet: 1 prompt_id.*'a'"):
        alpha.build_pairs(scores, 0.0, source="scores.parquet")
    with pytest.raises(DatasetError, match=r"scores\.parquet: 1 prompt_id.*'a'"):
        alpha.run_search(scores, ALPHA, source="scores.parquet")


def test_mixing_refuses_an_id_that_names_two_prompts_across_the_inputs():
    generated = pd.DataFrame(
        {"prompt_id": ["a"], "prompt": ["x?"], "chosen": ["1"], "rejected": ["2"]}
    )
    offline = pd.DataFrame(
        {
            "prompt_id": ["a", "b"],
            "prompt": ["y?", "z?"],
            "chosen": ["3", "4"],
            "rejected": ["5", "6"],
        }
    )
    with pytest.raises(DatasetError, match=r"gen\.parquet and off\.parquet: 1 prompt_id.*'a'"):
        mix(
            generated,
            offline,
            gamma=0.5,
            n_pairs=2,
            seed=0,
            generated_source="gen.parquet",
            offline_source="off.parquet",
        )
    offline.loc[0, "prompt"] = "x?"  # the same prompt under the same id is fine
    assert len(mix(generated, offline, gamma=0.5, n_pairs=2, seed=0)) == 2


def test_scoring_refuses_samples_with_two_prompts_under_one_id_before_loading_models():
    samples = _two_prompts_under_one_id(_scores())[
        ["prompt_id", "prompt", "sample_idx", "response", "finish_reason", "seed"]
    ]
    with pytest.raises(DatasetError, match=r"samples\.parquet: 1 prompt_id.*'a'"):
        scoring.score(samples, "no-such-model", "no-such-model", beta=0.1, source="samples.parquet")


# --- fault 9: NaN implicit rewards ----------------------------------------------------------------


def test_nan_implicit_rewards_are_an_error_not_unparsed_ratings(caplog):
    scores = _scores()
    scores.loc[[1, 3], ["logratio", "reward"]] = np.nan
    with caplog.at_level(logging.INFO, logger="dicewf.alpha"):
        with pytest.raises(
            DatasetError,
            match=r"scores\.parquet: 2 of 4 implicit rewards .*NaN "
            r"or infinite, at rows \[1, 3\].*broken",
        ):
            alpha.run_search(scores, ALPHA, source="scores.parquet")
    assert "unparsed rating" not in caplog.text
    # an LLM judge's unparsed rating is a NaN reward without a log-ratio: dropped and counted
    judged = _scores().drop(columns=["logratio", "beta", "logp_policy", "logp_ref"])
    judged = pd.concat(
        [judged, judged.iloc[[0]].assign(sample_idx=5, reward=np.nan)], ignore_index=True
    )
    with caplog.at_level(logging.INFO, logger="dicewf.alpha"):
        out = alpha.run_search(judged, {**ALPHA, "fixed": 0.0}, source="judge.parquet")
    assert out.result["n_unrated"] == 1
    assert "judge.parquet: 1 of 5 responses have no reward (unparsed rating)" in caplog.text


@pytest.fixture(scope="module")
def nan_model(tiny_model, tmp_path_factory):
    """The tiny model with a NaN weight: every log-probability it gives is NaN."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.model.norm.weight.data[0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "model"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return path


def test_scoring_with_a_broken_model_names_the_model_and_rows(nan_model, tiny_model):
    samples = _scores()[["prompt_id", "prompt", "sample_idx", "response", "finish_reason", "seed"]]
    with pytest.raises(
        ValueError,
        match=rf"s\.parquet: model {nan_model} gives NaN or infinite "
        r"log-probabilities for 4 of 4 .*\('a', 0\)",
    ):
        scoring.score(samples, nan_model, tiny_model, beta=0.1, source="s.parquet")


# --- fault 10: every reward ties -----------------------------------------------------------------


def test_all_tied_rewards_are_an_error_at_the_alpha_search():
    tied = _scores(logratio=(0.0, 0.0, 0.0, 0.0))
    with pytest.raises(
        ValueError,
        match=r"scores\.parquet: no preference pair at alpha = 0: the "
        r"responses of all 2 prompt\(s\).* tie",
    ):
        alpha.run_search(tied, ALPHA, source="scores.parquet")


def test_alpha_json_is_valid_json_when_d0_is_empty(tmp_path):
    # every reward ties, so D(0) is empty; a fixed alpha > 0 still prefers the shorter response
    out = alpha.run_search(
        _scores(logratio=(0.0, 0.0, 0.0, 0.0)), {**ALPHA, "fixed": 0.1}, source="scores.parquet"
    )
    assert out.result["n_pairs"] == 2 and out.result["mean_len_diff_alpha0"] is None
    write_json(out.result, tmp_path / "alpha.json", allow_nan=False)
    text = (tmp_path / "alpha.json").read_text()
    assert "NaN" not in text and json.loads(text)["mean_len_diff_alpha0"] is None
    with pytest.raises(ValueError, match=r"bad\.json: .*NaN and infinity are not JSON"):
        write_json({"x": float("nan")}, tmp_path / "bad.json", allow_nan=False)
    assert not (tmp_path / "bad.json").exists()


# --- fault 11: prompts and responses longer than the model's context -----------------------------


def _context(model) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model).max_position_embeddings


def _prompt_of(tokenizer, at_least: int, below: int) -> str:
    """A prompt whose chat-templated token count n has at_least <= n < below."""
    for k in range(1, 1000):
        text = "What is 1 plus 2? " * k
        n = len(sampling.prompt_token_ids(tokenizer, [text])[0])
        if at_least <= n < below:
            return text
        if n >= below:
            break
    raise AssertionError(f"no prompt with {at_least} <= tokens < {below}")


def test_the_toy_tokenizer_states_the_models_context(tiny_model):
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tiny_model).model_max_length == _context(tiny_model)


@pytest.fixture(scope="module")
def weightless_model(tiny_model, tmp_path_factory):
    """The tiny model's config and tokenizer without weights: loading the model fails, so a check
    that must come first has to raise before it."""
    from transformers import AutoConfig, AutoTokenizer

    path = tmp_path_factory.mktemp("weightless") / "model"
    AutoConfig.from_pretrained(tiny_model).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return path


def _too_long(tiny_model) -> pd.DataFrame:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    context = _context(tiny_model)
    return pd.DataFrame(
        {
            "prompt_id": ["ok", "long"],
            "prompt": ["What is 1 plus 2?", _prompt_of(tok, context, 4 * context)],
        }
    )


def test_a_prompt_beyond_the_context_is_named_before_the_model_loads(tiny_model, weightless_model):
    with pytest.raises(
        DatasetError,
        match=r"prompts\.parquet: 1 of 2 prompt\(s\) do not fit the "
        r"model's context of 128 tokens.*\{'long': \d+\}",
    ):
        sampling.sample(
            weightless_model,
            _too_long(tiny_model),
            {"n": 2, "max_tokens": 4},
            backend="transformers",
            source="prompts.parquet",
        )


def test_vllm_gets_the_same_check_before_its_engine_starts(
    tiny_model, weightless_model, monkeypatch
):
    def engine(*args, **kwargs):
        raise AssertionError("the vLLM engine was started before the prompts were checked")

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = engine, engine
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    with pytest.raises(
        DatasetError,
        match=r"p\.parquet: 1 of 2 prompt\(s\) do not fit the "
        r"model's context of 100 tokens.*vllm max_model_len",
    ):
        sampling.sample(
            weightless_model,
            _too_long(tiny_model),
            {"n": 2, "max_tokens": 4},
            backend="vllm",
            engine={"max_model_len": 100},
            source="p.parquet",
        )


def test_a_prompt_near_the_context_gets_the_tokens_left_with_a_warning(tiny_model, caplog):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    context = _context(tiny_model)
    prompt = _prompt_of(tok, context - 12, context - 2)
    left = context - len(sampling.prompt_token_ids(tok, [prompt])[0])
    prompts = pd.DataFrame({"prompt_id": ["near"], "prompt": [prompt]})
    with caplog.at_level(logging.WARNING, logger="dicewf.sampling"):
        out = sampling.sample(
            tiny_model,
            prompts,
            {"n": 1, "temperature": 0.0, "max_tokens": left + 20},
            backend="transformers",
            source="prompts.parquet",
        )
    assert "prompts.parquet: 1 of 1 prompts leave fewer than max_tokens" in caplog.text
    generated = tok(out["response"].iloc[0], add_special_tokens=False)["input_ids"]
    assert len(generated) <= left


def test_a_response_beyond_the_context_is_scored_truncated_with_a_warning(tiny_model, caplog):
    samples = _scores()[["prompt_id", "prompt", "sample_idx", "response", "finish_reason", "seed"]]
    samples.loc[3, "response"] = "The answer is obak. " * 100
    with caplog.at_level(logging.WARNING, logger="dicewf.scoring"):
        out = scoring.score(samples, tiny_model, tiny_model, beta=0.1, source="s.parquet")
    assert (
        "s.parquet: 1 of 4 sequences (prompt + response) are longer than the model's "
        "context of 128 tokens"
    ) in caplog.text
    assert np.isfinite(out["logratio"]).all()
    assert out.loc[3, "len_tokens"] > _context(tiny_model)  # the whole response's length
