"""AlpacaEval 2 through the alpaca-eval package, its annotator pointed at FakeChatServer.

The fake judge answers the weighted annotator's question ("which output, m or M, is better?")
with log-probabilities for the tokens 'm' and 'M' computed from a planted preference, so the win
rates the package reports can be checked against the planted ones. The length-controlled GLM
needs the hub file df_gamed.csv; a test double of it (same columns, made-up rows) is put into a
Hugging Face cache folder so that nothing is downloaded.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("alpaca_eval")
# the package's GLM uses scikit-learn arguments that scikit-learn 1.8+ deprecates
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

from dicewf import alpacaeval
from dicewf.io import DatasetError

N = 20
JUDGE_MODEL = "fake/alpaca-judge"


from fake_chat_server import FakeChatServer
from fakes_alpacaeval import write_fake_lc_cache


@pytest.fixture(scope="module")
def fake_lc_cache(tmp_path_factory):
    """A Hugging Face cache holding a test double of df_gamed.csv for N instructions."""
    return write_fake_lc_cache(tmp_path_factory.mktemp("hf_cache"), N)


def _eval_set(n=N):
    return pd.DataFrame(
        {
            "prompt_id": [f"ae{i:03d}" for i in range(n)],
            "prompt": [f"Instruction {i}: describe item {i}." for i in range(n)],
            "reference": [f"REF {i} " + "r" * 100 for i in range(n)],
            "reference_generator": "gpt4_1106_preview",
            "dataset": "helpful_base",
        }
    )


def _responses(eval_set):
    # the model's answer is longer than the reference for 3 instructions in 4
    lengths = [200 if i % 4 else 40 for i in range(len(eval_set))]
    return pd.DataFrame(
        {
            "prompt_id": eval_set["prompt_id"][::-1].to_numpy(),  # any order
            "prompt": eval_set["prompt"][::-1].to_numpy(),
            "sample_idx": 0,
            "response": [f"MODEL {i} " + "x" * lengths[i] for i in range(len(eval_set))][::-1],
            "finish_reason": "stop",
            "seed": 0,
        }
    )


_OUTPUT = re.compile(r'"model_identifier": "(m|M)",\s*"output": """(.*?)"""', re.DOTALL)


def make_fake_annotator(p_model_better):
    """A reply function for FakeChatServer answering like the weighted GPT-4-Turbo annotator:
    one token, 'm' or 'M', with top log-probabilities for both, where
    P('m') = P(the output labelled m is better) from ``p_model_better(model_out, reference)``."""

    def reply(body):
        user = body["messages"][-1]["content"]
        outputs = dict(_OUTPUT.findall(user))
        model_is_m = outputs["m"].startswith("MODEL")
        model_out, ref = (
            (outputs["m"], outputs["M"]) if model_is_m else (outputs["M"], outputs["m"])
        )
        p = p_model_better(model_out, ref)
        p_m = p if model_is_m else 1 - p
        top = [
            {"token": "m", "logprob": math.log(p_m), "bytes": None},
            {"token": "M", "logprob": math.log(1 - p_m), "bytes": None},
        ]
        best = "m" if p_m >= 0.5 else "M"
        return {
            "message": {"content": best},
            "logprobs": {
                "content": [
                    {
                        "token": best,
                        "logprob": max(t["logprob"] for t in top),
                        "bytes": None,
                        "top_logprobs": top,
                    }
                ]
            },
        }

    return reply


def prefers_longer(model_out, ref):
    return 0.9 if len(model_out) > len(ref) else 0.1


def prefers_model(model_out, ref):
    return 0.8


def _annotator(server, cache, **extra):
    return {
        "base_url": server.base_url,
        "model": JUDGE_MODEL,
        "api_key_env": "DICE_TEST_AE_KEY",
        "hf_cache_dir": str(cache),
        "concurrency": 4,
        **extra,
    }


@pytest.fixture
def ae_key(monkeypatch):
    monkeypatch.setenv("DICE_TEST_AE_KEY", "sk-ae-test-0123456789abcdef")
    return "sk-ae-test-0123456789abcdef"


def test_win_rates_from_the_fake_judges_preferences(tmp_path, fake_lc_cache, ae_key):
    eval_set = _eval_set()
    results = {}
    for name, judge in (("length", prefers_longer), ("quality", prefers_model)):
        with FakeChatServer(make_fake_annotator(judge)) as server:
            results[name] = alpacaeval.annotate(
                _responses(eval_set),
                eval_set,
                "dice-model",
                _annotator(server, fake_lc_cache),
                tmp_path / name,
            )
            requests = server.requests
        assert len(requests) == N
        body = requests[0]["body"]
        assert body["model"] == JUDGE_MODEL and body["max_tokens"] == 1 and body["logprobs"]
        assert requests[0]["headers"]["authorization"] == f"Bearer {ae_key}"
        assert (tmp_path / name / "annotations.json").is_file()
        assert (tmp_path / name / "leaderboard.csv").is_file()
        for path in (tmp_path / name).iterdir():
            assert ae_key not in path.read_text()

    length, quality = results["length"], results["quality"]
    # raw win rate = 100 * mean P(model better): 15 longer (0.9) and 5 shorter (0.1) answers
    assert length["win_rate"] == pytest.approx(100 * (15 * 0.9 + 5 * 0.1) / N, abs=1e-6)
    assert quality["win_rate"] == pytest.approx(80.0, abs=1e-6)
    assert (length["n"], length["n_wins"], length["n_wins_base"]) == (N, 15, 5)
    assert length["discrete_win_rate"] == pytest.approx(75.0)
    # the length-controlled rate removes what length explains: a judge that only rewards length
    # leaves the model near a coin flip, while real preference survives the correction
    assert abs(length["lc_win_rate"] - 50) < 10
    assert quality["lc_win_rate"] > length["lc_win_rate"] + 15
    lengths = [len(f"MODEL {i} ") + (200 if i % 4 else 40) for i in range(N)]
    assert length["mean_len_model"] == pytest.approx(np.mean(lengths))
    assert length["annotator"] == alpacaeval.DEFAULT_ANNOTATOR
    assert length["judge_model"] == JUDGE_MODEL


def test_annotator_config_points_at_the_endpoint_without_the_key(tmp_path, ae_key):
    path = alpacaeval._write_annotator_config(
        tmp_path,
        {
            "base_url": "http://judge.local:8000/v1",
            "model": "mistralai/Mistral-Large-Instruct-2407",
            "api_key_env": "DICE_TEST_AE_KEY",
            "concurrency": 3,
        },
    )
    assert path.parent.name == alpacaeval.DEFAULT_ANNOTATOR  # annotations keep the name
    (cfg,) = yaml.safe_load(path.read_text()).values()
    kwargs = cfg["completions_kwargs"]
    assert kwargs["model_name"] == "mistralai/Mistral-Large-Instruct-2407"
    assert kwargs["requires_chatml"] is True  # "Instruct" in the name would pick completions
    assert kwargs["num_procs"] == 3
    assert Path(cfg["prompt_template"]).is_file()
    client = yaml.safe_load(Path(kwargs["client_config_path"]).read_text())
    assert client == {
        "default": [
            {
                "client_class": "dicewf.alpacaeval.EnvKeyOpenAI",
                "api_key_env": "DICE_TEST_AE_KEY",
                "base_url": "http://judge.local:8000/v1",
            }
        ]
    }
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert ae_key not in file.read_text()

    local = alpacaeval._write_annotator_config(
        tmp_path / "local", {"base_url": "http://127.0.0.1:8000/v1", "api_key_env": None}
    )
    (cfg,) = yaml.safe_load(local.read_text()).values()
    assert cfg["completions_kwargs"]["model_name"] == "gpt-4-1106-preview"  # the config's judge
    (client,) = yaml.safe_load(Path(cfg["completions_kwargs"]["client_config_path"]).read_text())[
        "default"
    ]
    assert client["api_key_env"] is None
    assert alpacaeval.EnvKeyOpenAI(api_key_env=None, base_url=client["base_url"]).api_key == "EMPTY"


def test_missing_key_is_named(tmp_path, fake_lc_cache, monkeypatch):
    monkeypatch.delenv("DICE_TEST_AE_KEY", raising=False)
    eval_set = _eval_set(5)
    with FakeChatServer(make_fake_annotator(prefers_model)) as server:
        with pytest.raises(Exception, match="DICE_TEST_AE_KEY"):
            alpacaeval.annotate(
                _responses(eval_set),
                eval_set,
                "m",
                _annotator(server, fake_lc_cache),
                tmp_path / "out",
            )
        assert server.requests == []
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_more_instructions_than_the_lc_data_knows_is_refused(tmp_path, fake_lc_cache, ae_key):
    eval_set = _eval_set(N + 1)
    with FakeChatServer(make_fake_annotator(prefers_model)) as server:
        with pytest.raises(ValueError, match=f"{N + 1} instructions.*difficulty of {N}"):
            alpacaeval.annotate(
                _responses(eval_set),
                eval_set,
                "m",
                _annotator(server, fake_lc_cache),
                tmp_path / "out",
            )
        assert server.requests == []


def test_missing_lc_data_fails_before_any_annotation(tmp_path, ae_key):
    eval_set = _eval_set(5)
    with FakeChatServer(make_fake_annotator(prefers_model)) as server:
        with pytest.raises(FileNotFoundError, match="df_gamed.csv.*prefetch_lc_data"):
            alpacaeval.annotate(
                _responses(eval_set),
                eval_set,
                "m",
                _annotator(server, tmp_path / "empty_cache"),
                tmp_path / "out",
            )
        assert server.requests == []


def test_inputs_are_checked(tmp_path, fake_lc_cache):
    eval_set = _eval_set(5)
    responses = _responses(eval_set)
    annotator = {"hf_cache_dir": str(fake_lc_cache)}
    with pytest.raises(DatasetError, match=r"no response for prompt_id \['ae004'\]"):
        alpacaeval.annotate(
            responses[responses["prompt_id"] != "ae004"], eval_set, "m", annotator, tmp_path / "o"
        )
    other = responses.assign(
        prompt=responses["prompt"].where(responses["prompt_id"] != "ae001", "something else")
    )
    with pytest.raises(DatasetError, match=r"prompt text differs.*ae001"):
        alpacaeval.annotate(other, eval_set, "m", annotator, tmp_path / "o")
    with pytest.raises(DatasetError, match="reference_generator"):
        alpacaeval.annotate(
            responses, eval_set.drop(columns="reference_generator"), "m", annotator, tmp_path / "o"
        )
    with pytest.raises(ValueError, match="not read from configuration"):
        alpacaeval.annotate(responses, eval_set, "m", {"api_key": "sk-nope"}, tmp_path / "o")


def test_snakemake_adapter_writes_metrics_and_annotations(
    tmp_path, fake_lc_cache, ae_key, restore_logging
):
    import runpy
    import types

    from dicewf.io import read_json
    from snakemake.iocontainers import Namedlist

    eval_set = _eval_set()
    eval_set.to_parquet(tmp_path / "eval_set.parquet", index=False)
    _responses(eval_set).to_parquet(tmp_path / "responses.parquet", index=False)
    script = Path(__file__).parents[1] / "workflow" / "scripts" / "alpaca_eval_annotate.py"
    with FakeChatServer(make_fake_annotator(prefers_model)) as server:
        snakemake = types.SimpleNamespace(
            input=Namedlist(
                fromdict={
                    "responses": str(tmp_path / "responses.parquet"),
                    "eval_set": str(tmp_path / "eval_set.parquet"),
                }
            ),
            output=Namedlist(
                fromdict={
                    "annotations": str(tmp_path / "out" / "annotations"),
                    "metrics": str(tmp_path / "out" / "metrics.json"),
                }
            ),
            params=Namedlist(
                fromdict={
                    "annotator": _annotator(server, fake_lc_cache),
                    "model_name": "dice-model",
                }
            ),
            log=[str(tmp_path / "log" / "alpaca_eval.log")],
        )
        runpy.run_path(str(script), init_globals={"snakemake": snakemake})
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["win_rate"] == pytest.approx(80.0)
    assert metrics["n"] == N and metrics["lc_win_rate"] is not None
    assert sorted(p.name for p in (tmp_path / "out" / "annotations").iterdir()) == [
        "annotations.json",
        "leaderboard.csv",
    ]
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".log"):
            assert ae_key not in path.read_text()


def test_the_annotators_defaults_are_the_schemas():
    """A partial annotator block (a caller other than the workflow) gets what the schema fills
    into eval.alpaca_eval; the workflow's block always holds them."""
    schema = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text()
    )
    block = schema["properties"]["eval"]["properties"]["alpaca_eval"]["properties"]
    assert block["annotators_config"]["default"] == alpacaeval.DEFAULT_ANNOTATOR
    assert block["api_key_env"]["default"] == alpacaeval.DEFAULT_API_KEY_ENV == "OPENAI_API_KEY"
