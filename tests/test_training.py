import json
import math

import pandas as pd
import pytest
from dicewf import checkpoints, training
from dicewf.io import DatasetError

PAIRS = pd.DataFrame(
    {
        "prompt_id": ["a", "b", "c", "d"],
        "prompt": [
            "What is 1 plus 2?",
            "Reverse the word kabo.",
            "What is 3 plus 3?",
            "Write zu in capital letters.",
        ],
        "chosen": ["The answer is 3.", "The answer is obak.", "6.", "ZU."],
        "rejected": ["The answer is 4.", "kaob.", "The answer is 7.", "The answer is Zu."],
    }
)
ARGS = {
    "beta": 0.1,
    "learning_rate": 1e-3,
    "max_steps": 3,
    "per_device_train_batch_size": 2,
    "logging_steps": 1,
    "loss_type": "sigmoid",
    "disable_tqdm": True,
}


@pytest.mark.slow
def test_dpo_training_saves_policy_and_metrics(tiny_model, tmp_path):
    out, metrics = tmp_path / "policy", tmp_path / "metrics.json"
    history = training.train_dpo(tiny_model, PAIRS, out, ARGS, seed=0, metrics_path=metrics)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "_trainer").exists()
    assert not list(tmp_path.glob(".policy.tmp-*"))
    saved = json.loads(metrics.read_text())
    steps = [e for e in saved["log_history"] if "loss" in e]
    assert len(steps) == 3
    assert {"rewards/accuracies", "rewards/margins"} <= set(steps[0])
    assert saved["final"]["mean_loss"] == pytest.approx(sum(e["loss"] for e in steps) / 3)
    # at step 1 the policy equals its reference (pi_theta^(t-1)): the DPO loss is log 2
    assert steps[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert history == saved["log_history"]


@pytest.mark.slow
def test_dpo_same_seed_same_losses_other_seed_other_losses(tiny_model, tmp_path):
    def losses(seed, name):
        history = training.train_dpo(tiny_model, PAIRS, tmp_path / name, ARGS, seed=seed)
        return [e["loss"] for e in history if "loss" in e]

    a, b, c = losses(1, "a"), losses(1, "b"), losses(2, "c")
    assert a == b
    assert a != c  # the seed orders the pairs into batches: steps 2 and 3 see other batches


def test_the_seed_reaches_the_trainer_and_the_resume_fingerprint(tiny_model, tmp_path, monkeypatch):
    runs = []

    def record_run(cfg, build, *, fingerprint, **kwargs):  # a test double: trains nothing
        runs.append((cfg, fingerprint))
        return []

    monkeypatch.setattr(training, "train_resumable", record_run)
    for seed in (3, 4):
        training.train_dpo(tiny_model, PAIRS, tmp_path / f"s{seed}", ARGS, seed=seed)
    (cfg3, fp3), (cfg4, fp4) = runs
    assert (cfg3.seed, cfg3.data_seed, cfg4.seed, cfg4.data_seed) == (3, 3, 4, 4)
    # a checkpoint of a run with another seed is another run's: never resumed from
    assert (fp3["seed"], fp4["seed"]) == (3, 4)
    assert {k for k in fp3 if fp3[k] != fp4[k]} == {"seed"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss, expected",
    [
        ("sigmoid", math.log(2)),  # -log sigmoid(beta * 0)
        ("hinge", 1.0),  # relu(1 - beta * 0)
        ("ipo", (1 / (2 * 0.1)) ** 2),  # (0 - 1 / (2 beta))^2 = 25
    ],
)
def test_each_loss_types_first_step_loss_is_its_formula_at_zero_margin(
    tiny_model, tmp_path, loss, expected
):
    """TRL logs step 1's loss from the forward pass before the update, where the policy is its
    own reference: every log-ratio is 0, so each loss type is its formula at a zero margin."""
    history = training.train_dpo(
        tiny_model, PAIRS, tmp_path / loss, {**ARGS, "loss_type": loss, "max_steps": 1}, seed=0
    )
    (step,) = [e for e in history if "loss" in e]
    assert step["loss"] == pytest.approx(expected, rel=1e-4)


def test_unknown_trl_key_is_named_and_nothing_is_written(tiny_model, tmp_path):
    with pytest.raises(TypeError, match="lerning_rate"):
        training.train_dpo(tiny_model, PAIRS, tmp_path / "p", {**ARGS, "lerning_rate": 1.0}, seed=0)
    assert not list(tmp_path.iterdir())


def test_bad_pairs_are_named(tiny_model, tmp_path):
    with pytest.raises(DatasetError, match="mixed.parquet.*rejected"):
        training.train_dpo(
            tiny_model,
            PAIRS.drop(columns="rejected"),
            tmp_path / "p",
            ARGS,
            seed=0,
            source="mixed.parquet",
        )


@pytest.mark.slow
def test_sft_first_loss_is_the_completion_tokens_mean_nll(tiny_model, tmp_path):
    """SFT trains on completions only: step 1's loss (logged before the update, one batch of
    all four demos) is the untrained model's mean negative log-likelihood over the completion
    tokens (the completion and the turn-end token), the prompt tokens left out."""
    import torch
    from dicewf.chat import render_prompts, turn_end_token
    from transformers import AutoModelForCausalLM, AutoTokenizer

    demos = PAIRS.rename(columns={"chosen": "completion"})[["prompt", "completion"]]
    history = training.train_sft(
        tiny_model,
        demos,
        tmp_path / "sft",
        {
            "learning_rate": 1e-3,
            "max_steps": 2,
            "per_device_train_batch_size": len(demos),
            "logging_steps": 1,
            "disable_tqdm": True,
        },
        seed=0,
    )
    assert (tmp_path / "sft" / "model.safetensors").is_file()
    steps = [e for e in history if "loss" in e]
    assert len(steps) == 2

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    end = turn_end_token(tok)
    nll, n_completion, nll_all, n_all = 0.0, 0, 0.0, 0
    for prompt, completion in zip(
        render_prompts(tok, demos["prompt"].tolist()), demos["completion"]
    ):
        start = len(tok(prompt)["input_ids"])
        ids = tok(prompt + completion + end)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        token_nll = [-logp[t - 1, ids[t]].item() for t in range(1, len(ids))]
        nll += sum(token_nll[start - 1 :])
        n_completion += len(ids) - start
        nll_all += sum(token_nll)
        n_all += len(ids) - 1
    assert steps[0]["loss"] == pytest.approx(nll / n_completion, rel=1e-4)
    assert abs(nll / n_completion - nll_all / n_all) > 1e-2  # the prompt tokens would show


@pytest.mark.slow
def test_a_crashed_sft_run_resumes_like_an_uninterrupted_one(tiny_model, tmp_path, caplog):
    """SFT goes through the same resumable path as DPO: checkpoints next to the output, a rerun
    resumes from the last complete one and ends with the uninterrupted run's metrics and weights;
    a checkpoint interval off the logging steps is refused before any model is loaded."""
    from conftest import assert_same_run
    from trl import SFTTrainer

    demos = PAIRS.rename(columns={"chosen": "completion"})[["prompt", "completion"]]
    args = {
        "learning_rate": 1e-3,
        "max_steps": 4,
        "per_device_train_batch_size": 2,
        "logging_steps": 1,
        "save_steps": 2,
        "disable_tqdm": True,
    }

    def run(name: str, **extra) -> dict:
        training.train_sft(
            tiny_model,
            demos,
            tmp_path / name / "sft",
            {**args, **extra},
            seed=0,
            metrics_path=tmp_path / name / "metrics.json",
        )
        return json.loads((tmp_path / name / "metrics.json").read_text())

    with pytest.raises(ValueError, match=r"save_steps \(3\).*logging_steps \(2\)"):
        run("refused", save_steps=3, logging_steps=2)
    assert not list(tmp_path.iterdir())
    reference = run("uninterrupted")
    original, calls = SFTTrainer.training_step, []

    def crashing_training_step(self, *a, **k):  # crashes before the fourth step
        if len(calls) == 3:
            raise RuntimeError("crash")
        calls.append(1)
        return original(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SFTTrainer, "training_step", crashing_training_step)
        with pytest.raises(RuntimeError, match="crash"):
            run("resumed")
    ckpts = checkpoints.checkpoint_dir_for(tmp_path / "resumed" / "sft")
    assert json.loads((ckpts / checkpoints.RUN_FILE).read_text())["trainer"] == "sft"
    with caplog.at_level("INFO", logger="dicewf.checkpoints"):
        resumed = run("resumed")
    assert f"resuming from checkpoint {ckpts / 'checkpoint-2'} (step 2)" in caplog.text
    assert_same_run(reference, resumed, tmp_path / "uninterrupted", tmp_path / "resumed", "sft")


def test_summarise_keeps_the_last_finite_value():
    s = checkpoints.summarise([{"loss": 1.0, "x": 2.0}, {"loss": 3.0, "x": float("nan")}])
    assert s == {"loss": 3.0, "x": 2.0, "mean_loss": 2.0}


def test_checkpoints_live_next_to_the_output():
    assert checkpoints.checkpoint_dir_for("results/dice/iter1/policy").as_posix() == (
        "results/dice/iter1/policy.checkpoints"
    )


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"save_steps": 1}, {"save_steps": 0}])
def test_no_checkpoint_folder_is_left_after_success(tiny_model, tmp_path, extra):
    out = tmp_path / "policy"
    training.train_dpo(
        tiny_model,
        PAIRS,
        out,
        {**ARGS, "max_steps": 2, **extra},
        seed=0,
        metrics_path=tmp_path / "metrics.json",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "policy"]


def test_checkpoints_must_fall_on_logging_steps(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"save_steps \(3\).*logging_steps \(2\)"):
        training.train_dpo(
            tiny_model, PAIRS, tmp_path / "p", {**ARGS, "save_steps": 3, "logging_steps": 2}, seed=0
        )
    assert not list(tmp_path.iterdir())


def test_checkpoints_of_another_run_are_discarded_and_incomplete_ones_removed(tmp_path):
    ckpts = tmp_path / "policy.checkpoints"
    run = {
        "policy": "p",
        "ref": None,
        "pairs": "abc",
        "args": {"beta": 0.1},
        "seed": 0,
        "world_size": 1,
    }
    checkpoints.prepare_checkpoint_dir(ckpts, run)
    for step, complete in ((2, True), (4, True), (6, False)):  # killed while writing 6
        (ckpts / f"checkpoint-{step}").mkdir()
        if complete:
            (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    checkpoints.prepare_checkpoint_dir(ckpts, run)  # the same run: resume from 4
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert checkpoints.last_checkpoint(ckpts) == ckpts / "checkpoint-4"
    # a changed hyperparameter (or input, seed, process count): start over
    checkpoints.prepare_checkpoint_dir(ckpts, {**run, "args": {"beta": 0.2}})
    assert checkpoints.last_checkpoint(ckpts) is None
    assert json.loads((ckpts / "run.json").read_text())["args"] == {"beta": 0.2}


def test_resume_neutral_settings_keep_the_fingerprint(tiny_model):
    def fingerprint(pairs, args):
        return training.preference_fingerprint(tiny_model, None, pairs, args, seed=0, world_size=1)

    a = fingerprint(PAIRS, {**ARGS, "save_steps": 2})
    b = fingerprint(PAIRS, {**ARGS, "save_steps": 4})
    c = fingerprint(PAIRS.iloc[::-1], ARGS)
    assert a == b and a["pairs"] != c["pairs"]


def test_train_loss_covers_the_whole_run_after_a_resume():
    # steps 1-4 logged before the checkpoint at 4; the resumed call saw steps 5-6 (mean 1.0)
    history = [
        {"loss": 3.0, "step": 2.0},
        {"loss": 2.0, "step": 4.0},
        {"loss": 1.0, "step": 6.0},
        {"train_loss": 1.0, "step": 6.0},
    ]
    checkpoints._whole_run_train_loss(history, resumed_at=4)
    assert history[-1]["train_loss"] == pytest.approx((3 * 2 + 2 * 2 + 1 * 2) / 6)
