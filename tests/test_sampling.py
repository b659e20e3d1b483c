import importlib.util

import pandas as pd
import pytest
from dicewf import sampling
from dicewf.io import DatasetError

PROMPTS = pd.DataFrame(
    {
        "prompt_id": [f"p{i}" for i in range(6)],
        "prompt": [
            "What is 1 plus 2?",
            "Reverse the word kabo.",
            "Write zu in capital letters.",
            "How many letters are in tiko?",
            "What is the last letter of mad?",
            "What is 9 plus 9?",
        ],
    }
)


def test_derive_seed_is_stable_and_distinct():
    assert sampling.derive_seed(0, "p1", 3) == sampling.derive_seed(0, "p1", 3)
    seeds = {sampling.derive_seed(0, f"p{i}", k) for i in range(50) for k in range(8)}
    assert len(seeds) == 400
    assert sampling.derive_seed(1, "p1", 3) != sampling.derive_seed(0, "p1", 3)
    assert 0 <= sampling.derive_seed("x") < 2**31


def test_sampling_spec_validation():
    with pytest.raises(ValueError, match="greedy"):
        sampling.SamplingSpec(n=2, temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        sampling.SamplingSpec(top_p=0)
    with pytest.raises(ValueError, match="unknown sampling key"):
        sampling.SamplingSpec.from_dict({"n": 2, "temprature": 1.0})
    with pytest.raises(ValueError, match="backend"):
        sampling.resolve_backend("tgi")


def test_stop_token_ids_from_config():
    spec = sampling.SamplingSpec.from_dict({"n": 2, "stop_token_ids": [128009, 13]})
    assert spec.stop_token_ids == (128009, 13)
    assert sampling.SamplingSpec.from_dict({"n": 2}).stop_token_ids == ()
    with pytest.raises(ValueError, match="stop_token_ids"):
        sampling.SamplingSpec.from_dict({"stop_token_ids": [-1]})


def test_bad_prompts_are_named():
    with pytest.raises(DatasetError, match="prompts.parquet"):
        sampling.sample(
            "unused",
            PROMPTS.drop(columns="prompt"),
            {"n": 1},
            backend="transformers",
            source="prompts.parquet",
        )
    dup = pd.concat([PROMPTS, PROMPTS.iloc[:1]])
    with pytest.raises(ValueError, match="duplicate prompt_id"):
        sampling.sample("unused", dup, {"n": 1}, backend="transformers")


def _check(df, n):
    assert len(df) == len(PROMPTS) * n
    assert list(df.columns) == [
        "prompt_id",
        "prompt",
        "sample_idx",
        "response",
        "finish_reason",
        "seed",
    ]
    assert set(df["finish_reason"]) <= {"stop", "length"}
    assert (
        df.groupby("prompt_id")["sample_idx"].apply(sorted).map(list)
        == pd.Series({p: list(range(n)) for p in PROMPTS["prompt_id"]})
    ).all()


@pytest.mark.slow
def test_transformers_backend_is_shard_invariant_and_seeded(tiny_model):
    spec = {"n": 3, "temperature": 1.0, "top_p": 0.9, "max_tokens": 12, "seed": 5}
    full = sampling.sample(tiny_model, PROMPTS, spec, backend="transformers")
    _check(full, 3)
    part = sampling.sample(tiny_model, PROMPTS.iloc[[4, 1]], spec, backend="transformers")
    merged = full.set_index(["prompt_id", "sample_idx"]).loc[
        part.set_index(["prompt_id", "sample_idx"]).index
    ]
    assert merged["response"].tolist() == part["response"].tolist()
    again = sampling.sample(tiny_model, PROMPTS, spec, backend="transformers")
    pd.testing.assert_frame_equal(full, again)
    other = sampling.sample(tiny_model, PROMPTS, {**spec, "seed": 6}, backend="transformers")
    assert other["response"].tolist() != full["response"].tolist()
    # a random model rarely stops: the token limit is recorded as the finish reason
    assert (full["finish_reason"] == "length").any()


def test_transformers_greedy_is_deterministic(tiny_model):
    spec = {"n": 1, "temperature": 0.0, "max_tokens": 8}
    a = sampling.sample(tiny_model, PROMPTS, spec, backend="transformers")
    b = sampling.sample(tiny_model, PROMPTS.iloc[::-1], spec, backend="transformers")
    assert (
        a.set_index("prompt_id")["response"].to_dict()
        == b.set_index("prompt_id")["response"].to_dict()
    )


def test_several_prompt_sets_in_one_run_come_back_per_set_with_their_ids(tiny_model):
    spec = {"n": 1, "temperature": 0.0, "max_tokens": 8}
    # two benchmarks whose prompt ids collide; greedy answers depend on the prompt alone
    other = PROMPTS.iloc[[2, 0]].assign(prompt_id=["q1", "q2"])
    first = PROMPTS.assign(prompt_id=[f"q{i}" for i in range(1, len(PROMPTS) + 1)])
    out = sampling.sample_sets(
        tiny_model, {"alpaca_eval": first, "arena_hard": other}, spec, backend="transformers"
    )
    assert list(out) == ["alpaca_eval", "arena_hard"]
    assert out["alpaca_eval"]["prompt_id"].tolist() == first["prompt_id"].tolist()
    assert out["arena_hard"]["prompt_id"].tolist() == ["q1", "q2"]
    alone = sampling.sample(tiny_model, first, spec, backend="transformers")
    assert out["alpaca_eval"]["response"].tolist() == alone["response"].tolist()
    assert out["arena_hard"]["prompt"].tolist() == other["prompt"].tolist()
    assert (
        out["arena_hard"]["response"].tolist()
        == alone.set_index("prompt")["response"].loc[other["prompt"]].tolist()
    )
    with pytest.raises(ValueError, match="must not contain"):
        sampling.sample_sets(tiny_model, {"a/b": first}, spec, backend="transformers")


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_backend_for_real_on_cpu(tiny_model):
    engine = {
        "dtype": "float32",
        "max_model_len": 128,
        "kv_cache_memory_bytes": 2**28,
        "enforce_eager": True,
    }
    spec = {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_tokens": 10, "seed": 3}
    full = sampling.sample(tiny_model, PROMPTS, spec, backend="vllm", engine=engine)
    _check(full, 4)
    # every (prompt, sample) has its own seed: prompts do not share a random stream
    assert full["seed"].is_unique
    by_prompt = full.groupby("prompt_id")["response"].apply(tuple)
    assert by_prompt.nunique() == len(PROMPTS)
    part = sampling.sample(tiny_model, PROMPTS.iloc[[5, 2]], spec, backend="vllm", engine=engine)
    merged = full.set_index(["prompt_id", "sample_idx"]).loc[
        part.set_index(["prompt_id", "sample_idx"]).index
    ]
    assert merged["response"].tolist() == part["response"].tolist()
