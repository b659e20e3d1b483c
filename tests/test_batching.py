"""The global training batch: gradient accumulation derived from the job's processes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from dicewf import batching, training
from dicewf import config as cfg

ROOT = Path(__file__).resolve().parents[1]
PAPER_TRAIN = {"global_batch_size": 32, "per_device_train_batch_size": 4, "beta": 0.01}


@pytest.mark.parametrize("processes, steps", [(1, 8), (2, 4), (8, 1)])
def test_accumulation_keeps_the_global_batch_over_any_number_of_processes(processes, steps):
    args = batching.trl_batch_args(PAPER_TRAIN, processes)
    assert args["gradient_accumulation_steps"] == steps
    assert args["per_device_train_batch_size"] * processes * steps == 32
    assert "global_batch_size" not in args and args["beta"] == 0.01  # a TRL-only mapping
    assert "gradient_accumulation_steps" not in PAPER_TRAIN  # the block is not mutated


def test_an_indivisible_global_batch_names_the_keys_and_the_processes():
    with pytest.raises(
        ValueError,
        match=r"train\.global_batch_size \(32\).*"
        r"train\.per_device_train_batch_size \(4\) x 3",
    ):
        batching.gradient_accumulation(PAPER_TRAIN, 3)
    with pytest.raises(ValueError, match="global_batch_size"):
        batching.gradient_accumulation({**PAPER_TRAIN, "per_device_train_batch_size": 5}, 1)


def test_a_global_batch_beside_an_explicit_accumulation_is_refused_naming_both():
    block = {**PAPER_TRAIN, "gradient_accumulation_steps": 1}
    for processes in (1, 8):  # also where the two would agree
        with pytest.raises(
            ValueError, match="train: set global_batch_size.*gradient_accumulation_steps.*not both"
        ):
            batching.trl_batch_args(block, processes)


def test_without_a_global_batch_the_block_is_used_as_it_is():
    block = {"per_device_train_batch_size": 32, "gradient_accumulation_steps": 1}
    for processes in (1, 8):
        assert batching.gradient_accumulation(block, processes) is None
        assert batching.trl_batch_args(block, processes) == block
    assert batching.trl_batch_args({**block, "global_batch_size": None}, 4) == block


@pytest.mark.parametrize("gpu, processes", [(0, 1), (None, 1), (1, 1), (8, 8), ("2", 2)])
def test_a_job_without_a_gpu_trains_in_one_process(gpu, processes):
    assert batching.processes_of(gpu) == processes


def test_the_toy_configs_keep_their_effective_batch():
    """The toy runs (gpu=0, one CPU process) train with exactly the batch their block states."""
    for path in (ROOT / "config.yaml", ROOT / ".test" / "config.yaml"):
        config = yaml.safe_load(path.read_text())
        for name in cfg.expanded(config):
            train = cfg.experiment(config, name)["train"]
            assert batching.trl_batch_args(train, 1) == {
                k: v for k, v in train.items() if k != "global_batch_size"
            }


def test_the_paper_config_trains_with_global_batch_32_on_8_gpus_or_1():
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    for name in cfg.expanded(paper):
        train = cfg.experiment(paper, name)["train"]
        # DICE's 32 (its official recipes); SeRA's runs and their baselines (the tinyllama
        # setting, the Mistral-7B runs) SeRA's effective batch of 16 (its Table 4)
        sera = name.startswith("tinyllama_") or name.endswith("_mistral")
        batch = 16 if sera else 32
        assert train["global_batch_size"] == batch, name
        for processes in (1, 8):
            steps = batching.gradient_accumulation(train, processes)
            assert train["per_device_train_batch_size"] * processes * steps == batch
    rm = paper["agreement"]["reward_model"]
    assert batching.gradient_accumulation(rm, 1) * rm["per_device_train_batch_size"] == 128


def test_train_dpo_fails_before_loading_a_model_when_the_batch_does_not_divide(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("WORLD_SIZE", "3")  # as `accelerate launch --num_processes 3` sets it
    pairs = pd.DataFrame({"prompt_id": ["a"], "prompt": ["p"], "chosen": ["c"], "rejected": ["r"]})
    with pytest.raises(ValueError, match=r"global_batch_size \(32\).* x 3 training process"):
        training.train_dpo(
            tmp_path / "no-model-here", pairs, tmp_path / "policy", PAPER_TRAIN, seed=0
        )
    assert not list(tmp_path.iterdir())


def test_train_dpo_hands_trl_the_derived_accumulation(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # one process
    built = []  # test double of the training loop: records the TRL config, trains nothing

    def record(cfg, build, **kwargs):
        built.append(cfg)
        return []

    monkeypatch.setattr(training, "train_resumable", record)
    pairs = pd.DataFrame({"prompt_id": ["a"], "prompt": ["p"], "chosen": ["c"], "rejected": ["r"]})
    args = {"global_batch_size": 8, "per_device_train_batch_size": 2, "max_steps": 1}
    training.train_dpo("unused-model", pairs, tmp_path / "policy", args, seed=0)
    (cfg,) = built
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (2, 4)
    assert not hasattr(cfg, "global_batch_size")
