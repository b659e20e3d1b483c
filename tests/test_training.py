import json
import math
from pathlib import Path
from types import SimpleNamespace

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


# train_resumable with test doubles: the checkpoint scheme without training a model


class FakeTrainer:
    """Stands in for a TRL trainer: ``train`` records where it resumed from (and may raise),
    ``save_model`` writes a weights file and records ``use_cache`` at that moment."""

    def __init__(self, log_history, *, error=None, fsdp=False, on_train=None):
        self.state = SimpleNamespace(log_history=log_history)
        self.model = SimpleNamespace(config=SimpleNamespace(use_cache=False))
        self.is_fsdp_enabled = fsdp
        self.state_dict_types = []
        plugin = SimpleNamespace(set_state_dict_type=self.state_dict_types.append)
        self.accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin))
        self.error, self.on_train = error, on_train
        self.resumed_from = "train() not called"
        self.saved = []

    def train(self, *, resume_from_checkpoint="not passed"):
        self.resumed_from = resume_from_checkpoint
        if self.on_train is not None:
            self.on_train()
        if self.error is not None:
            raise self.error

    def save_model(self, path):
        self.saved.append((Path(path).name, self.model.config.use_cache))
        (Path(path) / "model.safetensors").write_text("weights")


class FakeTokenizer:
    """A tokenizer's test double: the path it was loaded from (AutoTokenizer.from_pretrained's
    stand-in, for the chat helpers that training imports) and a save that writes a file."""

    def __init__(self, path="org/tokenizer"):
        self.path = path

    def save_pretrained(self, path):
        (Path(path) / "tokenizer.json").write_text("{}")


FINGERPRINT = {"policy": "p", "pairs": "abc", "seed": 0, "args": {"beta": 0.1}}


def resumable(tmp_path, trainer, *, strategy="no", process=0, metrics=True, built=None):
    """train_resumable of ``trainer`` into tmp_path/policy; ``built`` records what the
    checkpoint folder held when the models were built."""

    def build():
        if built is not None:
            ckpts = tmp_path / "policy.checkpoints"
            run_file = ckpts / checkpoints.RUN_FILE
            built.append(json.loads(run_file.read_text()) if run_file.exists() else None)
        return trainer, FakeTokenizer()

    return checkpoints.train_resumable(
        SimpleNamespace(save_strategy=strategy, process_index=process),
        build,
        out_dir=tmp_path / "policy",
        ckpt_dir=tmp_path / "policy.checkpoints",
        fingerprint=FINGERPRINT,
        metrics_path=tmp_path / "metrics.json" if metrics else None,
    )


def complete_checkpoint(ckpts, step, log_history=()):
    (ckpts / f"checkpoint-{step}").mkdir(parents=True)
    state = {"global_step": step, "log_history": list(log_history)}
    (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(state))


@pytest.fixture
def broadcasts(monkeypatch):
    """accelerate's broadcast_object_list recorded; a non-main process receives "shared"."""
    import accelerate.utils

    calls = []

    def broadcast(objects, from_process=0):
        calls.append((list(objects), from_process))
        if objects[0] is None:
            objects[0] = "shared"
        return objects

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", broadcast)
    return calls


def test_a_run_without_checkpoints_writes_the_model_the_metrics_and_nothing_else(
    tmp_path, broadcasts, caplog
):
    entries = [{"loss": 2, "step": 1}, {"loss": 1.0, "step": 2, "note": "x"}]
    # TRL creates its output_dir (the checkpoint folder) even when it saves no checkpoint
    trainer = FakeTrainer(entries, on_train=(tmp_path / "policy.checkpoints").mkdir)
    built = []
    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.checkpoints"):
        history = resumable(tmp_path, trainer, built=built)
    assert built == [None]  # no run.json: nothing to resume, nothing recorded
    assert trainer.resumed_from is None
    assert history == [{"loss": 2.0, "step": 1.0}, {"loss": 1.0, "step": 2.0, "note": "x"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "policy"]
    assert sorted(p.name for p in (tmp_path / "policy").iterdir()) == [
        "model.safetensors",
        "tokenizer.json",
    ]
    # saved into the temporary sibling, with the generation cache back on
    ((saved_in, use_cache),) = trainer.saved
    assert saved_in.startswith(".policy.tmp-") and use_cache is True
    assert broadcasts == [([str(tmp_path / saved_in)], 0)]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "log_history": history,
        "final": {"loss": 1.0, "step": 2.0, "mean_loss": 1.5},
    }
    assert trainer.state_dict_types == []
    assert caplog.messages == []


def test_a_run_without_metrics_path_writes_only_the_model(tmp_path, broadcasts):
    resumable(tmp_path, FakeTrainer([{"loss": 1.0, "step": 1}]), metrics=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_a_failed_run_without_checkpoints_leaves_nothing_behind(tmp_path, broadcasts):
    trainer = FakeTrainer(
        [], error=KeyboardInterrupt(), on_train=(tmp_path / "policy.checkpoints").mkdir
    )
    with pytest.raises(KeyboardInterrupt):
        resumable(tmp_path, trainer)
    assert list(tmp_path.iterdir()) == []


def test_a_run_failing_before_trl_made_its_folder_raises_its_own_error(tmp_path, broadcasts):
    with pytest.raises(RuntimeError, match="^out of memory$"):
        resumable(tmp_path, FakeTrainer([], error=RuntimeError("out of memory")))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_with_checkpoints_keeps_them_for_the_rerun(tmp_path, broadcasts, caplog):
    ckpts = tmp_path / "policy.checkpoints"
    trainer = FakeTrainer([], error=RuntimeError("crash"))
    built = []
    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.checkpoints"):
        with pytest.raises(RuntimeError, match="crash"):
            resumable(tmp_path, trainer, strategy="steps", built=built)
    assert built == [FINGERPRINT]  # the run is recorded before the models are built
    assert trainer.resumed_from is None
    assert caplog.messages == [f"no checkpoint in {ckpts}: training from the start"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.checkpoints"]
    assert json.loads((ckpts / checkpoints.RUN_FILE).read_text()) == FINGERPRINT


def test_a_rerun_resumes_from_the_last_checkpoint_and_reports_the_whole_run(
    tmp_path, broadcasts, caplog
):
    ckpts = tmp_path / "policy.checkpoints"
    checkpoints.prepare_checkpoint_dir(ckpts, FINGERPRINT)
    complete_checkpoint(ckpts, 2)
    at_4 = [{"step": 2, "num_tokens": 9.0}, {"step": 4, "loss": 2.0}, {"step": 4, "num_tokens": 17}]
    complete_checkpoint(ckpts, 4, at_4)
    # the resumed call logs steps 5-6; its train_loss (1.0) covers those two steps only
    entries = [{"loss": 3.0, "step": 2}, {"loss": 2.0, "step": 4}, {"loss": 1.0, "step": 6}]
    trainer = FakeTrainer([*entries, {"train_loss": 1.0, "step": 6}])
    trainer._total_train_tokens = 0
    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.checkpoints"):
        history = resumable(tmp_path, trainer, strategy="steps")
    assert caplog.messages == [f"resuming from checkpoint {ckpts / 'checkpoint-4'} (step 4)"]
    assert trainer.resumed_from == str(ckpts / "checkpoint-4")
    assert trainer._total_train_tokens == 17 and isinstance(trainer._total_train_tokens, int)
    assert history[-1]["train_loss"] == pytest.approx((3 * 2 + 2 * 2 + 1 * 2) / 6)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["final"]["train_loss"] == pytest.approx(2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "policy"]


def test_a_fresh_run_keeps_its_train_loss(tmp_path, broadcasts):
    entries = [{"loss": 3.0, "step": 2}, {"train_loss": 3.0, "step": 2}]
    history = resumable(tmp_path, FakeTrainer(entries), strategy="steps")
    assert history[-1] == {"train_loss": 3.0, "step": 2.0}


def test_an_fsdp_run_gathers_the_full_state_dict_for_the_final_model(tmp_path, broadcasts):
    trainer = FakeTrainer([], fsdp=True)
    resumable(tmp_path, trainer)
    assert trainer.state_dict_types == ["FULL_STATE_DICT"]


def test_another_process_trains_and_saves_but_writes_no_file_of_its_own(
    tmp_path, broadcasts, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    ckpts = tmp_path / "policy.checkpoints"
    complete_checkpoint(ckpts, 2)
    # of another run: the main process discards them, not this one
    (ckpts / checkpoints.RUN_FILE).write_text(json.dumps({"other": "run"}))
    (tmp_path / "shared").mkdir()  # the main process's temporary folder, broadcast
    trainer = FakeTrainer([{"loss": 1.0, "step": 1}])
    resumable(tmp_path, trainer, strategy="steps", process=1)
    assert broadcasts == [([None], 0)]
    assert trainer.saved == [("shared", True)]
    assert trainer.resumed_from == str(ckpts / "checkpoint-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.checkpoints", "shared"]
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "run.json"]
    assert json.loads((ckpts / checkpoints.RUN_FILE).read_text()) == {"other": "run"}


def test_the_token_count_restarts_with_a_warning_when_the_checkpoint_step_has_none(
    tmp_path, caplog
):
    complete_checkpoint(tmp_path, 4, [{"step": 4, "loss": 1.0}, {"step": 2, "num_tokens": 5}])
    trainer = SimpleNamespace(_total_train_tokens=0)
    caplog.clear()
    step = checkpoints._restore_untracked_state(trainer, tmp_path / "checkpoint-4")
    assert step == 4 and trainer._total_train_tokens == 0
    assert caplog.messages == [
        f"{tmp_path / 'checkpoint-4'} has no log at step 4: num_tokens restarts from 0"
    ]


def test_a_trainer_without_a_token_count_restores_only_the_step(tmp_path, caplog):
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3.0}')
    trainer = SimpleNamespace()
    caplog.clear()
    step = checkpoints._restore_untracked_state(trainer, tmp_path / "checkpoint-3")
    assert step == 3 and isinstance(step, int)
    assert vars(trainer) == {} and caplog.messages == []


def test_checkpoint_args_switch_step_checkpoints_on_only_for_a_positive_interval():
    for off in ({}, {"save_steps": 0}, {"save_steps": None}):
        assert checkpoints.checkpoint_args({"beta": 0.1, **off}) == {
            "beta": 0.1,
            "save_strategy": "no",
        }
    assert checkpoints.checkpoint_args({"save_steps": 0, "save_strategy": "epoch"}) == {
        "save_strategy": "epoch"
    }
    args = {"save_steps": 2}
    assert checkpoints.checkpoint_args(args) == {
        "save_steps": 2,
        "save_strategy": "steps",
        "save_total_limit": 1,
    }
    assert args == {"save_steps": 2}  # the block itself is left as it was
    kept = {"save_steps": 2, "save_strategy": "best", "save_total_limit": 3}
    assert checkpoints.checkpoint_args(kept) == kept


@pytest.mark.parametrize(
    "strategy, save, logging_steps",
    [("steps", 4, 2), ("steps", 2, 2), ("no", 3, 2), ("epoch", 3, 2), ("steps", 0.5, 2)],
)
def test_checkpoint_steps_off_the_logging_steps_are_refused_only_for_step_checkpoints(
    strategy, save, logging_steps
):
    cfg = SimpleNamespace(save_strategy=strategy, save_steps=save, logging_steps=logging_steps)
    checkpoints.check_checkpoint_steps(cfg)  # no error
    message = (
        rf"^save_steps \(5\) must be a multiple of logging_steps \({logging_steps}\): a run resumed "
        r"from a checkpoint between two logging steps cannot log the same losses as an "
        r"uninterrupted one$"
    )
    with pytest.raises(ValueError, match=message):
        checkpoints.check_checkpoint_steps(
            SimpleNamespace(save_strategy="steps", save_steps=5, logging_steps=logging_steps)
        )


def test_float_logging_steps_are_not_checked():
    cfg = SimpleNamespace(save_strategy="steps", save_steps=3, logging_steps=0.5)
    checkpoints.check_checkpoint_steps(cfg)  # a ratio of the run: TRL's own business


def test_run_fingerprint_holds_the_parts_and_the_sorted_result_changing_args():
    fp = checkpoints.run_fingerprint(
        {"save_total_limit": 1, "beta": 0.1, "report_to": "none", "alpha": 1},
        seed=3,
        trainer="dpo",
    )
    assert fp == {"seed": 3, "trainer": "dpo", "args": {"alpha": 1, "beta": 0.1}}
    assert list(fp["args"]) == ["alpha", "beta"]
    neutral = dict.fromkeys(checkpoints.RESUME_NEUTRAL_KEYS, 7)
    assert checkpoints.run_fingerprint(neutral) == {"args": {}}


def test_frame_fingerprint_reads_the_named_columns_in_row_order_not_the_index():
    a = pd.DataFrame({"x": ["u", "v"], "y": [1, 2], "z": [0, 0]})
    fp = checkpoints.frame_fingerprint(a, ["x", "y"])
    assert len(fp) == 64 and int(fp, 16) >= 0  # a sha256 hex digest
    assert checkpoints.frame_fingerprint(a.assign(z=[5, 6]), ["x", "y"]) == fp
    assert checkpoints.frame_fingerprint(a.set_axis([7, 8]), ["x", "y"]) == fp
    assert checkpoints.frame_fingerprint(a.assign(y=[1, 3]), ["x", "y"]) != fp
    assert checkpoints.frame_fingerprint(a.iloc[::-1], ["x", "y"]) != fp


def test_model_fingerprint_of_a_folder_is_its_files_names_sizes_and_times(tmp_path):
    import hashlib
    import os

    assert checkpoints.model_fingerprint("org/model") == "org/model"
    assert checkpoints.model_fingerprint(tmp_path / "absent") == str(tmp_path / "absent")
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "sub" / "w.bin").write_bytes(b"abc")
    (model / "a.json").write_bytes(b"{}")
    (model / "empty").mkdir()  # a folder is not a file: it does not count
    for f, ns in ((model / "sub" / "w.bin", 2_000_000_000), (model / "a.json", 1_000_000_000)):
        os.utime(f, ns=(ns, ns))
    text = "a.json:2:1000000000\nsub/w.bin:3:2000000000\n"
    assert checkpoints.model_fingerprint(model) == hashlib.sha256(text.encode()).hexdigest()


def test_checkpoints_without_a_run_file_are_discarded_with_a_warning(tmp_path, caplog):
    ckpts = tmp_path / "policy.checkpoints"
    complete_checkpoint(ckpts, 2)
    caplog.clear()
    checkpoints.prepare_checkpoint_dir(ckpts, FINGERPRINT)
    assert caplog.messages == [
        f"discarding the checkpoints in {ckpts}: they are from another run (no run.json)"
    ]
    assert sorted(p.name for p in ckpts.iterdir()) == ["run.json"]


def test_the_warning_names_the_parts_that_differ(tmp_path, caplog):
    ckpts = tmp_path / "policy.checkpoints"
    checkpoints.prepare_checkpoint_dir(ckpts, FINGERPRINT)
    complete_checkpoint(ckpts, 2)
    caplog.clear()
    checkpoints.prepare_checkpoint_dir(ckpts, {**FINGERPRINT, "seed": 1, "args": {}})
    assert caplog.messages == [
        f"discarding the checkpoints in {ckpts}: they are from another run (seed, args differ)"
    ]
    assert checkpoints.last_checkpoint(ckpts) is None


def test_a_folder_of_another_run_without_checkpoints_is_reset_silently(tmp_path, caplog):
    ckpts = tmp_path / "policy.checkpoints"
    ckpts.mkdir()
    (ckpts / checkpoints.RUN_FILE).write_text("{not json")
    (ckpts / "stray.txt").write_text("x")
    caplog.clear()
    checkpoints.prepare_checkpoint_dir(ckpts, FINGERPRINT)
    assert caplog.messages == []
    assert sorted(p.name for p in ckpts.iterdir()) == ["run.json"]


def test_a_fingerprint_with_paths_matches_its_own_run_file(tmp_path, caplog):
    ckpts = tmp_path / "deep" / "policy.checkpoints"  # parents are created
    fingerprint = {"policy": tmp_path / "p", "seed": 0}
    checkpoints.prepare_checkpoint_dir(ckpts, fingerprint)
    complete_checkpoint(ckpts, 2)
    (ckpts / "checkpoint-3").write_text("a file, not a checkpoint folder")
    caplog.clear()
    checkpoints.prepare_checkpoint_dir(ckpts, fingerprint)
    assert caplog.messages == []
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "checkpoint-3", "run.json"]
    assert json.loads((ckpts / "run.json").read_text()) == {
        "policy": str(tmp_path / "p"),
        "seed": 0,
    }


def test_an_incomplete_checkpoint_is_removed_with_a_warning(tmp_path, caplog):
    ckpts = tmp_path / "policy.checkpoints"
    checkpoints.prepare_checkpoint_dir(ckpts, FINGERPRINT)
    (ckpts / "checkpoint-2").mkdir()
    caplog.clear()
    checkpoints.prepare_checkpoint_dir(ckpts, FINGERPRINT)
    assert caplog.messages == [f"removing incomplete checkpoint {ckpts / 'checkpoint-2'}"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["run.json"]


def test_there_is_no_last_checkpoint_without_a_folder_or_when_the_last_is_incomplete(tmp_path):
    assert checkpoints.last_checkpoint(tmp_path / "absent") is None
    complete_checkpoint(tmp_path, 2)
    (tmp_path / "checkpoint-4").mkdir()
    assert checkpoints.last_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint-4" / "trainer_state.json").mkdir()  # a folder, not the file
    assert checkpoints.last_checkpoint(tmp_path) is None


def test_train_loss_is_left_alone_without_a_final_entry():
    history = [{"loss": 3.0, "step": 2.0}]
    checkpoints._whole_run_train_loss(history, resumed_at=2)
    assert history == [{"loss": 3.0, "step": 2.0}]


def test_the_whole_run_train_loss_takes_the_last_final_entry_and_skips_stepless_logs():
    history = [
        {"train_loss": 9.0, "step": 2.0},
        {"loss": 4.0},  # no step: not counted
        {"loss": 3.0, "step": 2.0},
        {"eval": 1.0, "step": 3.0},
        {"loss": 1.0, "step": 4.0},
        {"train_loss": 2.0, "step": 4.0},
    ]
    checkpoints._whole_run_train_loss(history, resumed_at=2)
    assert history[0]["train_loss"] == 9.0
    assert history[-1]["train_loss"] == pytest.approx((3.0 * 2 + 2.0 * 2) / 4)


def test_a_zero_step_run_has_its_train_loss_over_one_step():
    history = [{"loss": 3.0, "step": 0.0}, {"train_loss": 5.0, "step": 0.0}]
    checkpoints._whole_run_train_loss(history, resumed_at=0)
    assert history[-1]["train_loss"] == 0.0


def test_a_one_step_run_resumed_at_zero_keeps_its_train_loss():
    history = [{"loss": 3.0, "step": 1.0}, {"train_loss": 2.0, "step": 1.0}]
    checkpoints._whole_run_train_loss(history, resumed_at=0)
    assert history[-1]["train_loss"] == 2.0


def test_log_history_turns_numbers_into_floats_and_keeps_the_rest():
    trainer = SimpleNamespace(
        state=SimpleNamespace(log_history=[{"step": 2, "loss": 1.5, "s": "a"}])
    )
    rows = checkpoints.log_history(trainer)
    assert rows == [{"step": 2.0, "loss": 1.5, "s": "a"}]
    assert isinstance(rows[0]["step"], float)


def test_summarise_without_losses_has_no_mean_loss_and_skips_non_numbers():
    s = checkpoints.summarise([{"x": float("inf"), "y": 1.0, "s": "a", "n": 3}, {"y": 2.0}])
    assert s == {"y": 2.0}


# training's helpers: the machine's defaults, the TRL configs, the runs handed to train_resumable


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)


# what device_args adds to an empty block on a machine without a GPU
CPU_DEFAULTS = {
    "bf16": False,
    "gradient_checkpointing": False,
    "use_cpu": True,
    "report_to": "none",
    "logging_steps": 1,
    "disable_tqdm": False,
}


def test_device_args_on_a_cpu_machine_turn_bf16_off_and_fill_the_defaults(no_cuda):
    args = {"beta": 0.1, "bf16": True}
    assert training.device_args(args) == {"beta": 0.1, **CPU_DEFAULTS}
    assert args == {"beta": 0.1, "bf16": True}
    mine = {"gradient_checkpointing": True, "report_to": "wandb", "logging_steps": 5}
    mine["disable_tqdm"] = True
    assert training.device_args(mine) == {**mine, "bf16": False, "use_cpu": True}


@pytest.mark.parametrize("bf16", [True, False])
def test_device_args_on_a_gpu_turn_bf16_on_where_it_is_supported(monkeypatch, bf16):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "false")
    out = training.device_args({})
    assert out["bf16"] is bf16 and "use_cpu" not in out
    assert training.device_args({"bf16": not bf16})["bf16"] is (not bf16)


@pytest.mark.parametrize("flag, cpu", [("1", True), ("TRUE", True), ("yes", True), ("0", False)])
def test_accelerate_use_cpu_forces_the_cpu_where_a_gpu_is_seen(monkeypatch, flag, cpu):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setenv("ACCELERATE_USE_CPU", flag)
    out = training.device_args({})
    assert (out.get("use_cpu", False), out["bf16"]) == (cpu, not cpu)


def test_device_args_refuse_a_secret(no_cuda):
    with pytest.raises(Exception, match=r"^training arguments: refusing 1 secret\(s\)"):
        training.device_args({"hub_token": "hf_" + "a" * 34})


@pytest.mark.parametrize("value, n", [(None, 1), ("", 1), ("4", 4)])
def test_launched_processes_reads_world_size(monkeypatch, value, n):
    if value is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", value)
    assert training.launched_processes() == n


def test_trl_config_builds_the_class_with_the_blocks_fields_and_the_machines(
    no_cuda, monkeypatch, tmp_path
):
    monkeypatch.setenv("WORLD_SIZE", "2")
    block = {"global_batch_size": 8, "per_device_train_batch_size": 2, "save_steps": 2}
    cfg, fields = training.trl_config(
        SimpleNamespace, block, where="sft", output_dir=tmp_path / "c", seed=5
    )
    # 8 = 2 per device x 2 processes x 2 accumulation steps
    assert fields == {
        "per_device_train_batch_size": 2,
        "save_steps": 2,
        "gradient_accumulation_steps": 2,
        "save_strategy": "steps",
        "save_total_limit": 1,
    }
    assert vars(cfg) == {
        **fields,
        "output_dir": str(tmp_path / "c"),
        "seed": 5,
        "data_seed": 5,
        **CPU_DEFAULTS,
    }
    assert not (tmp_path / "c").exists()
    cfg, fields = training.trl_config(
        SimpleNamespace, block, where="sft", output_dir=tmp_path, processes=4
    )
    assert fields["gradient_accumulation_steps"] == 1 and (cfg.seed, cfg.data_seed) == (0, 0)
    with pytest.raises(ValueError, match=r"^sft\.global_batch_size \(8\) needs"):
        training.trl_config(SimpleNamespace, {"global_batch_size": 8}, where="sft", output_dir="o")
    with pytest.raises(ValueError, match=r"save_steps \(3\).*logging_steps \(2\)"):
        training.trl_config(
            SimpleNamespace, {"save_steps": 3, "logging_steps": 2}, where="sft", output_dir="o"
        )


def test_preference_config_names_an_unknown_trainer_and_lists_a_single_loss_type(no_cuda, tmp_path):
    with pytest.raises(
        ValueError, match=r"^trainer must be one of \['dpo', 'kto', 'cpo'\], got 'orpo'$"
    ):
        training.preference_config(ARGS, trainer="orpo", output_dir=tmp_path)
    cfg, fields = training.preference_config(
        {**ARGS, "global_batch_size": 8}, output_dir=tmp_path / "c", seed=2, processes=2
    )
    assert type(cfg).__name__ == "DPOConfig" and cfg.loss_type == ["sigmoid"]
    assert (cfg.seed, cfg.output_dir, cfg.gradient_accumulation_steps) == (
        2,
        str(tmp_path / "c"),
        2,
    )
    assert fields["loss_type"] == ["sigmoid"] and "use_cpu" not in fields
    kto, _ = training.preference_config(
        {"beta": 0.1, "loss_type": "kto"}, trainer="kto", output_dir=tmp_path
    )
    assert type(kto).__name__ == "KTOConfig" and kto.loss_type == "kto"
    with pytest.raises(ValueError, match=r"sigmoid loss only"):
        training.preference_config(
            {**ARGS, "loss_type": "ipo"}, length_penalty=0.1, output_dir=tmp_path
        )


def test_preference_config_defaults_to_plain_dpo_seed_0_and_names_the_train_block(
    no_cuda, tmp_path, monkeypatch
):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    # no length penalty by default: a loss type other than sigmoid is allowed
    cfg, _ = training.preference_config({"loss_type": "ipo"}, output_dir=tmp_path)
    assert type(cfg).__name__ == "DPOConfig" and cfg.loss_type == ["ipo"] and cfg.seed == 0
    with pytest.raises(ValueError, match=r"^train\.global_batch_size \(8\) needs train\."):
        training.preference_config({"global_batch_size": 8}, output_dir=tmp_path)
    with pytest.raises(ValueError, match="does not apply to trainer='kto'"):
        training.preference_config({"beta": 0.1}, trainer="kto", length_penalty=0.1, output_dir="o")
    with pytest.raises(ValueError, match="does not apply to trainer='cpo'"):
        training._trl_classes("cpo", 0.1)


def test_an_unknown_dpo_loss_type_is_named_with_the_known_ones(no_cuda, tmp_path):
    known = training._dpo_loss_types()
    assert {"sigmoid", "hinge", "ipo", "robust"} <= set(known)
    message = (
        r"^loss_type: unknown DPO loss type\(s\) \['sigmod'\]; DPOConfig takes sigmoid, .*hinge"
        r".* \(trainer kto: loss_type kto\)$"
    )
    with pytest.raises(ValueError, match=message):
        training.preference_config(
            {**ARGS, "loss_type": ["sigmoid", "sigmod"]}, output_dir=tmp_path
        )
    training._check_dpo_loss(SimpleNamespace(loss_type="hinge"))  # a string is one type
    with pytest.raises(ValueError, match=r"\['hing'\]"):
        training._check_dpo_loss(SimpleNamespace(loss_type="hing"))


def test_the_loss_choice_of_kto_and_cpo_is_checked_against_their_configs(no_cuda, tmp_path):
    message = (
        r"^trainer='kto' takes a KTOConfig loss_type \(kto, apo_zero_unpaired\), got 'sigmoid': "
        r"set loss_type in the train block$"
    )
    with pytest.raises(ValueError, match=message):
        training.preference_config(
            {"beta": 0.1, "loss_type": "sigmoid"}, trainer="kto", output_dir=tmp_path
        )
    cfg, _ = training.preference_config(
        {"loss_type": "simpo", "cpo_alpha": 0.0}, trainer="cpo", output_dir=tmp_path
    )
    assert type(cfg).__name__ == "CPOConfig"


def test_trl_classes_of_each_trainer(no_cuda):
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    assert training._trl_classes("dpo", 0.0) == (DPOConfig, DPOTrainer)
    assert training._trl_classes("kto", 0.0) == (KTOConfig, KTOTrainer)
    assert training._trl_classes("cpo", 0.0) == (CPOConfig, CPOTrainer)
    config_cls, trainer_cls = training._trl_classes("dpo", 0.1)
    assert config_cls is DPOConfig and trainer_cls.__name__ == "LengthRegularisedDPOTrainer"
    message = (
        r"^length_penalty \(0\.1\) is a term of the DPO loss \(length-regularised DPO\); it does "
        r"not apply to trainer='kto'$"
    )
    with pytest.raises(ValueError, match=message):
        training.trl_config_class("kto", 0.1)


def fake_render(tok, prompts):
    """render_prompts' test double: each prompt marked with the tokenizer's path."""
    return [f"{tok.path}<{p}>" for p in prompts]


class RecordingTrainer:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_run(monkeypatch, no_cuda):
    """train_dpo / train_sft with test doubles for the models, TRL's trainers and
    train_resumable: returns the list of recorded runs (kwargs, with "built" the trainer)."""
    import transformers
    import trl

    runs = []

    def record_run(cfg, build, **kwargs):
        trainer, tokenizer = build()
        runs.append({"cfg": cfg, "trainer": trainer, "tokenizer": tokenizer, **kwargs})
        return ["history"]

    monkeypatch.setattr(training, "train_resumable", record_run)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", FakeTokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda p: ("m", p))
    monkeypatch.setattr(training, "render_prompts", fake_render)
    monkeypatch.setattr(training, "for_trl", lambda tok: ("for_trl", tok.path))
    # the trainer class records the (trainer, length_penalty) it was asked for
    monkeypatch.setattr(
        training,
        "_trl_classes",
        lambda t, lam: (None, type("RecordingTrainer", (RecordingTrainer,), {"asked": (t, lam)})),
    )
    monkeypatch.setattr(trl, "SFTTrainer", RecordingTrainer, raising=False)
    return runs


def test_train_dpo_hands_the_run_to_train_resumable(fake_run, tmp_path, caplog):
    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.training"):
        history = training.train_dpo(
            "org/policy", PAIRS, str(tmp_path / "p"), ARGS, seed=7, metrics_path="m.json"
        )
    assert history == ["history"]
    (run,) = fake_run
    ckpts = tmp_path / "p.checkpoints"
    assert (run["out_dir"], run["ckpt_dir"], run["metrics_path"]) == (
        tmp_path / "p",
        ckpts,
        "m.json",
    )
    assert run["cfg"].output_dir == str(ckpts) and run["cfg"].seed == 7
    assert not getattr(run["cfg"], "precompute_ref_log_probs", False)
    assert run["fingerprint"] == training.preference_fingerprint(
        "org/policy",
        None,
        PAIRS,
        {**ARGS, "loss_type": ["sigmoid"], "save_strategy": "no"},
        seed=7,
        world_size=1,
    )
    kwargs = run["trainer"].kwargs
    assert set(kwargs) == {"model", "args", "train_dataset", "processing_class", "ref_model"}
    assert kwargs["model"] == ("m", "org/policy") and kwargs["ref_model"] == ("m", "org/policy")
    assert kwargs["args"] is run["cfg"] and kwargs["processing_class"] == ("for_trl", "org/policy")
    assert kwargs["train_dataset"].to_dict() == {
        "prompt": fake_render(FakeTokenizer("org/policy"), PAIRS["prompt"]),
        "chosen": PAIRS["chosen"].tolist(),
        "rejected": PAIRS["rejected"].tolist(),
    }
    assert run["tokenizer"].path == "org/policy" and run["trainer"].asked == ("dpo", 0.0)
    assert caplog.messages == [
        "reference log-probs: the live reference model computes them (none given)"
    ]
    with pytest.raises(DatasetError, match=r"^<pairs>: missing column\(s\) \['rejected'\]"):
        training.train_dpo("org/policy", PAIRS.drop(columns="rejected"), "p", ARGS, seed=0)


def test_train_dpo_loads_the_given_reference_and_passes_the_length_penalty(fake_run, tmp_path):
    training.train_dpo(
        "org/policy",
        PAIRS,
        tmp_path / "p",
        ARGS,
        seed=0,
        ref="org/ref",
        length_penalty=0.1,
        checkpoint_dir=tmp_path / "elsewhere",
    )
    (run,) = fake_run
    assert run["ckpt_dir"] == tmp_path / "elsewhere" and run["metrics_path"] is None
    assert run["trainer"].kwargs["ref_model"] == ("m", "org/ref")
    assert run["trainer"].kwargs["length_penalty"] == 0.1 and run["trainer"].asked == ("dpo", 0.1)
    assert (run["fingerprint"]["ref"], run["fingerprint"]["length_penalty"]) == ("org/ref", 0.1)


def test_train_dpo_of_a_reference_free_trainer_loads_no_reference(fake_run, tmp_path, caplog):
    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.training"):
        training.train_dpo(
            "org/policy",
            PAIRS,
            tmp_path / "p",
            {"loss_type": "simpo", "cpo_alpha": 0.0},
            seed=0,
            ref="org/ref",
            trainer="cpo",
        )
    (run,) = fake_run
    assert (
        "ref_model" not in run["trainer"].kwargs and "length_penalty" not in run["trainer"].kwargs
    )
    assert run["fingerprint"]["ref"] is None and run["fingerprint"]["trainer"] == "cpo"
    assert run["trainer"].asked == ("cpo", 0.0)
    assert caplog.messages == ["reference model: none (trainer 'cpo' is reference-free)"]


def test_train_dpo_of_kto_trains_on_the_unpaired_pairs(fake_run, tmp_path):
    training.train_dpo("org/policy", PAIRS, tmp_path / "p", {"beta": 0.1}, seed=3, trainer="kto")
    (run,) = fake_run
    data = run["trainer"].kwargs["train_dataset"].to_pandas()
    rendered = PAIRS.assign(prompt=fake_render(FakeTokenizer("org/policy"), PAIRS["prompt"]))
    pd.testing.assert_frame_equal(data, training.unpaired(rendered, seed=3))
    assert run["trainer"].kwargs["ref_model"] == ("m", "org/policy")


def test_train_dpo_takes_usable_reference_log_probs_from_the_pairs(fake_run, tmp_path, monkeypatch):
    from dicewf import reflogps

    seen = []

    def usable(policy, pairs, cfg, *, trainer, source):
        seen.append((policy, len(pairs), cfg, trainer, source))
        return True

    monkeypatch.setattr(training, "reference_logps_usable", usable)
    pairs = PAIRS.assign(**{c: [float(i) for i in range(4)] for c in reflogps.COLUMNS})
    training.train_dpo("org/policy", pairs, tmp_path / "p", ARGS, seed=0, source="x.parquet")
    (run,) = fake_run
    assert seen == [("org/policy", 4, run["cfg"], "dpo", "x.parquet")]
    assert run["cfg"].precompute_ref_log_probs is True
    kwargs = run["trainer"].kwargs
    assert kwargs["ref_model"] is None
    assert type(run["trainer"]).__name__ == "RecordingTrainerWithPrecomputedReference"
    assert list(kwargs["train_dataset"].column_names) == [
        *training.PAIR_COLUMNS,
        *reflogps.REF_COLUMNS,
    ]
    assert run["fingerprint"]["ref_logps"] == checkpoints.frame_fingerprint(
        pairs, reflogps.REF_COLUMNS
    )


def test_train_sft_hands_the_run_to_train_resumable(fake_run, tmp_path):
    demos = PAIRS.rename(columns={"chosen": "completion"})[["prompt", "completion"]]
    args = {"learning_rate": 1e-3, "max_steps": 2}
    assert training.train_sft("org/base", demos, str(tmp_path / "s"), args, seed=4) == ["history"]
    (run,) = fake_run
    assert (run["out_dir"], run["ckpt_dir"]) == (tmp_path / "s", tmp_path / "s.checkpoints")
    assert run["metrics_path"] is None and type(run["cfg"]).__name__ == "SFTConfig"
    assert (run["cfg"].output_dir, run["cfg"].seed) == (str(tmp_path / "s.checkpoints"), 4)
    assert run["fingerprint"] == {
        "model": "org/base",
        "demos": checkpoints.frame_fingerprint(demos, ["prompt", "completion"]),
        "seed": 4,
        "world_size": 1,
        "trainer": "sft",
        "args": args,  # save_strategy, added, is resume-neutral
    }
    kwargs = run["trainer"].kwargs
    assert set(kwargs) == {"model", "args", "train_dataset", "processing_class"}
    assert kwargs["model"] == ("m", "org/base") and kwargs["args"] is run["cfg"]
    assert kwargs["processing_class"] == ("for_trl", "org/base")
    assert kwargs["train_dataset"].to_dict() == {
        "prompt": fake_render(FakeTokenizer("org/base"), demos["prompt"]),
        "completion": demos["completion"].tolist(),
    }
    assert run["tokenizer"].path == "org/base"
    training.train_sft(
        "org/base",
        demos,
        tmp_path / "s",
        args,
        seed=4,
        metrics_path="m.json",
        checkpoint_dir=tmp_path / "c",
    )
    assert (fake_run[1]["ckpt_dir"], fake_run[1]["metrics_path"]) == (tmp_path / "c", "m.json")
    with pytest.raises(ValueError, match=r"^sft\.global_batch_size \(8\) needs sft\."):
        training.train_sft("org/base", demos, tmp_path / "s", {"global_batch_size": 8}, seed=4)
    with pytest.raises(DatasetError, match=r"^<demos>: missing column\(s\) \['completion'\]"):
        training.train_sft("org/base", demos[["prompt"]], tmp_path / "s", args, seed=4)
    with pytest.raises(DatasetError, match="demos.parquet.*completion"):
        training.train_sft(
            "org/base", demos[["prompt"]], tmp_path / "s", args, seed=4, source="demos.parquet"
        )


def test_reference_log_probs_are_not_reused_when_trl_precomputes_or_none_are_given(caplog):
    from dicewf import reflogps

    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.training"):
        cfg = SimpleNamespace(precompute_ref_log_probs=True)
        with_logps = PAIRS.assign(**dict.fromkeys(reflogps.COLUMNS, 1.0))
        assert not training.reference_logps_usable("p", with_logps, cfg, trainer="dpo", source="s")
        partial = PAIRS.assign(**dict.fromkeys(reflogps.COLUMNS[:-1], 1.0))
        cfg = SimpleNamespace(precompute_ref_log_probs=False)
        assert not training.reference_logps_usable("p", partial, cfg, trainer="dpo", source="s")
    assert caplog.messages == [
        "reference log-probs: precomputed by TRL (precompute_ref_log_probs in the config)",
        "reference log-probs: the live reference model computes them (none given)",
    ]


@pytest.mark.parametrize("reason", [None, "3 pairs were scored by another model"])
def test_reference_log_probs_are_reused_unless_a_reason_says_otherwise(monkeypatch, caplog, reason):
    import transformers
    from dicewf import chat, reflogps

    calls = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", FakeTokenizer)
    limits = {("pol", "pol"): {"a": 512, "b": 128, "c": 256}}
    monkeypatch.setattr(chat, "context_limits", lambda p, tok: limits[p, tok.path])

    def live_reason(pairs, tokenizer, cfg, *, trainer, context):
        calls.append((len(pairs), tokenizer.path, cfg, trainer, context))
        return reason

    monkeypatch.setattr(reflogps, "live_reason", live_reason)
    pairs = PAIRS.assign(**dict.fromkeys(reflogps.COLUMNS, 1.0))
    cfg = SimpleNamespace()  # no precompute_ref_log_probs field (KTOConfig has none)
    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.training"):
        used = training.reference_logps_usable("pol", pairs, cfg, trainer="kto", source="x.parquet")
    assert used is (reason is None)
    assert calls == [(4, "pol", cfg, "kto", 128)]
    assert caplog.messages == [
        "reference log-probs: reused from x.parquet for all 4 pairs; no reference model is loaded"
        if reason is None
        else "reference log-probs of x.parquet not used, the live reference model computes them: "
        + reason
    ]
    assert caplog.records[0].levelname == ("INFO" if reason is None else "WARNING")


def test_without_a_context_limit_the_reuse_check_gets_none(monkeypatch):
    import transformers
    from dicewf import chat, reflogps

    contexts = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", FakeTokenizer)
    monkeypatch.setattr(chat, "context_limits", lambda p, tok: {})
    monkeypatch.setattr(reflogps, "live_reason", lambda *a, context, **k: contexts.append(context))
    pairs = PAIRS.assign(**dict.fromkeys(reflogps.COLUMNS, 1.0))
    assert training.reference_logps_usable("p", pairs, SimpleNamespace(), trainer="dpo", source="s")
    assert contexts == [None]


def test_the_preference_dataset_renders_prompts_and_adds_the_reference_columns(monkeypatch):
    from dicewf import reflogps

    monkeypatch.setattr(training, "render_prompts", fake_render)
    tok = FakeTokenizer("t")
    pairs = PAIRS.assign(extra=1, **{c: [float(i) for i in range(4)] for c in reflogps.COLUMNS})
    plain = training.preference_dataset(tok, pairs)
    assert plain.column_names == ["prompt", "chosen", "rejected"]
    assert plain["prompt"] == fake_render(tok, PAIRS["prompt"])
    with_ref = training.preference_dataset(tok, pairs, ref_logps=True)
    assert with_ref.column_names == ["prompt", "chosen", "rejected", *reflogps.REF_COLUMNS]
    assert with_ref[reflogps.REF_COLUMNS[0]] == [0.0, 1.0, 2.0, 3.0]
    rendered = PAIRS.assign(prompt=fake_render(tok, PAIRS["prompt"]))
    for seed in (0, 1):
        kto = training.preference_dataset(tok, PAIRS, trainer="kto", seed=seed).to_pandas()
        pd.testing.assert_frame_equal(kto, training.unpaired(rendered, seed=seed))
    kto = training.preference_dataset(tok, PAIRS, trainer="kto").to_pandas()  # seed 0
    pd.testing.assert_frame_equal(kto, training.unpaired(rendered, seed=0))


def test_preference_fingerprint_holds_each_part_of_the_run(tmp_path):
    fp = training.preference_fingerprint(
        "org/policy", "org/ref", PAIRS, {"beta": 0.1, "save_steps": 2}, seed=3, world_size=2
    )
    assert fp == {
        "policy": "org/policy",
        "ref": "org/ref",
        "pairs": checkpoints.frame_fingerprint(PAIRS, ["prompt", "chosen", "rejected"]),
        "seed": 3,
        "world_size": 2,
        "trainer": "dpo",
        "length_penalty": 0.0,
        "args": {"beta": 0.1},
    }
    (tmp_path / "w.bin").write_text("w")
    assert training.preference_fingerprint(tmp_path, None, PAIRS, {}, seed=0, world_size=1)[
        "policy"
    ] == checkpoints.model_fingerprint(tmp_path)
