"""The internal reward model (IntlRM, Table 5): TRL RewardTrainer from the SFT model's folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_run
from dicewf import agreement, checkpoints, reward_model
from dicewf.chat import render_prompts
from dicewf.io import DatasetError

WORDS = [
    "the",
    "answer",
    "is",
    "a",
    "word",
    "with",
    "letters",
    "spelled",
    "so",
    "and",
    "then",
    "it",
    "was",
    "one",
    "two",
    "three",
    "four",
    "five",
]
MARKER = "kabo"
ARGS = {
    "learning_rate": 3e-3,
    "max_steps": 20,
    "per_device_train_batch_size": 8,
    "logging_steps": 5,
    "disable_tqdm": True,
}


def planted(n: int, seed: int) -> pd.DataFrame:
    """Pairs of 7-word responses of equal length; only the chosen one holds the marker word."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        chosen, rejected = list(rng.choice(WORDS, size=7)), list(rng.choice(WORDS, size=7))
        chosen[rng.integers(7)] = MARKER
        rows.append(
            {
                "prompt_id": f"p{i}",
                "prompt": f"Say something about {rng.choice(WORDS)}.",
                "chosen": " ".join(chosen),
                "rejected": " ".join(rejected),
            }
        )
    return pd.DataFrame(rows)


def as_frame(pairs: pd.DataFrame) -> pd.DataFrame:
    """(prompt, response) rows: all chosen responses, then all rejected ones."""
    return pd.DataFrame(
        {
            "prompt": pairs["prompt"].tolist() * 2,
            "response": pairs["chosen"].tolist() + pairs["rejected"].tolist(),
        }
    )


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("intlrm")
    history = reward_model.train_reward_model(
        tiny_model, planted(64, 0), root / "rm", ARGS, seed=0, metrics_path=root / "metrics.json"
    )
    return root, history


@pytest.mark.slow
def test_planted_preference_is_learned_and_generalises(trained):
    root, _ = trained
    held_out = planted(40, 1)
    n = len(held_out)
    # the order of the two responses mixed, as in Table 5's tuples
    flip = np.arange(n) % 2 == 1
    first = np.where(flip, held_out["rejected"], held_out["chosen"])
    second = np.where(flip, held_out["chosen"], held_out["rejected"])
    labels = (~flip).astype(int)  # 1: the first response is preferred
    scores = [
        reward_model.reward_scores(root / "rm", held_out[["prompt"]].assign(response=r))
        for r in (first, second)
    ]
    assert agreement.rate(scores[0], scores[1], labels) >= 0.85  # chance is 0.5
    assert agreement.rate(scores[1], scores[0], labels) <= 0.15


@pytest.mark.slow
def test_model_folder_and_metrics(trained, tiny_model):
    from transformers import AutoConfig, AutoTokenizer

    root, history = trained
    assert sorted(p.name for p in root.iterdir()) == ["metrics.json", "rm"]  # no temporaries
    config = AutoConfig.from_pretrained(root / "rm")
    tok = AutoTokenizer.from_pretrained(root / "rm")
    assert config.num_labels == 1 and config.architectures == ["LlamaForSequenceClassification"]
    assert tok.pad_token is not None and config.pad_token_id == tok.pad_token_id
    assert tok.chat_template == AutoTokenizer.from_pretrained(tiny_model).chat_template
    saved = json.loads((root / "metrics.json").read_text())
    assert saved["log_history"] == history
    steps = [e for e in history if "loss" in e]
    assert [e["step"] for e in steps] == [5, 10, 15, 20]
    assert steps[-1]["accuracy"] >= 0.9  # on its training batches
    assert saved["final"]["mean_loss"] == pytest.approx(np.mean([e["loss"] for e in steps]))


def test_encode_is_the_chat_rendered_prompt_then_response_then_eos(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompts, responses = ["What is 1 plus 2?", "Hi"], ["The answer is 3.", "kabo"]
    ids = reward_model.encode(tok, prompts, responses)
    rendered = render_prompts(tok, prompts)
    assert [tok.decode(x) for x in ids] == [
        p + r + tok.eos_token for p, r in zip(rendered, responses)
    ]
    assert all(x[-1] == tok.eos_token_id for x in ids)


@pytest.mark.slow
def test_scores_do_not_depend_on_batching_or_row_order(trained):
    root, _ = trained
    frame = as_frame(planted(12, 2))
    frame.loc[0, "response"] = "a much longer response than the others, " * 3  # mixed lengths
    alone = reward_model.reward_scores(root / "rm", frame, max_tokens_per_batch=1)
    one_batch = reward_model.reward_scores(root / "rm", frame, max_tokens_per_batch=10**6)
    default = reward_model.reward_scores(root / "rm", frame)
    assert np.abs(alone - one_batch).max() < 1e-5 and np.abs(alone - default).max() < 1e-5
    assert np.array_equal(default, reward_model.reward_scores(root / "rm", frame))
    order = np.random.default_rng(0).permutation(len(frame))
    shuffled = reward_model.reward_scores(root / "rm", frame.iloc[order].reset_index(drop=True))
    assert np.abs(shuffled - default[order]).max() < 1e-5
    assert np.ptp(default) > 1e-3  # not a constant


def test_bad_inputs_are_named_and_nothing_is_written(tiny_model, tmp_path):
    pairs = planted(4, 0)
    with pytest.raises(DatasetError, match="offline.parquet.*rejected"):
        reward_model.train_reward_model(
            tiny_model,
            pairs.drop(columns="rejected"),
            tmp_path / "rm",
            ARGS,
            seed=0,
            source="offline.parquet",
        )
    with pytest.raises(TypeError, match="lerning_rate"):
        reward_model.train_reward_model(
            tiny_model, pairs, tmp_path / "rm", {**ARGS, "lerning_rate": 1.0}, seed=0
        )
    with pytest.raises(DatasetError, match="samples.parquet.*response"):
        reward_model.reward_scores(tiny_model, pairs, source="samples.parquet")
    assert not list(tmp_path.iterdir())


class Crash(Exception):
    """Raised by the test double below in place of a killed job."""


@pytest.mark.slow
def test_a_crashed_run_resumes_like_an_uninterrupted_one(tiny_model, tmp_path, caplog):
    from trl import RewardTrainer

    pairs = planted(16, 3)
    args = {
        **ARGS,
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "save_steps": 2,
    }

    def run(name: str) -> dict:
        reward_model.train_reward_model(
            tiny_model,
            pairs,
            tmp_path / name / "rm",
            args,
            seed=0,
            metrics_path=tmp_path / name / "metrics.json",
        )
        return json.loads((tmp_path / name / "metrics.json").read_text())

    reference = run("uninterrupted")
    original, calls = RewardTrainer.training_step, []

    def fake_training_step(self, *a, **k):  # crashes before the fourth step
        if len(calls) == 3:
            raise Crash
        calls.append(1)
        return original(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RewardTrainer, "training_step", fake_training_step)
        with pytest.raises(Crash):
            run("resumed")
    ckpts = checkpoints.checkpoint_dir_for(tmp_path / "resumed" / "rm")
    with caplog.at_level("INFO", logger="dicewf.checkpoints"):
        resumed = run("resumed")
    assert f"resuming from checkpoint {ckpts / 'checkpoint-2'} (step 2)" in caplog.text
    assert_same_run(reference, resumed, tmp_path / "uninterrupted", tmp_path / "resumed", "rm")


# --- a published reward model (Table 5's ERM), scored by path -----------------------------------


@pytest.fixture(scope="module")
def openrlhf_style_rm(tiny_model, tmp_path_factory):
    """Test double of an OpenRLHF reward-model checkpoint: a tiny Llama backbone whose scalar
    head is saved as ``value_head.weight`` (OpenRLHF's name) instead of transformers' ``score``;
    returns the folder and the reference model it was saved from."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("erm") / "rm"
    torch.manual_seed(0)
    ref = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).eval()
    ref.save_pretrained(root)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(root)
    weights = load_file(root / "model.safetensors")
    weights["value_head.weight"] = weights.pop("score.weight")
    save_file(weights, root / "model.safetensors", metadata={"format": "pt"})
    return root, ref


def test_external_reward_is_the_heads_value_at_the_last_token(openrlhf_style_rm):
    import torch

    root, ref = openrlhf_style_rm
    frame = as_frame(planted(6, 2))
    scores = reward_model.external_reward_scores(
        root, frame, head="value_head", max_tokens_per_batch=64
    )
    # the same sequences one at a time, unpadded, through the model the checkpoint came from
    tokenizer = reward_model.prepare_tokenizer(root)
    ids = reward_model.encode(tokenizer, frame["prompt"], frame["response"])
    with torch.inference_mode():
        expected = [
            ref.score(ref.model(torch.tensor([x])).last_hidden_state)[0, -1, 0].item() for x in ids
        ]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert np.ptp(scores) > 0
    batched = reward_model.external_reward_scores(
        root, frame, head="value_head", max_tokens_per_batch=10_000
    )
    np.testing.assert_allclose(batched, scores, rtol=1e-4, atol=1e-5)


def test_a_reward_head_missing_from_the_checkpoint_is_an_error(openrlhf_style_rm):
    root, _ = openrlhf_style_rm
    frame = as_frame(planted(2, 3))
    with pytest.raises(ValueError, match=r"no weights for the reward head.*value_head"):
        reward_model.external_reward_scores(root, frame)  # head not named: score is missing
