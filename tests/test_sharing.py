"""Whole iterations shared between experiments: equal inputs and settings, one trained policy
and one evaluation (dicewf.config.owners), read under both names by the DAG and the tables."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from dicewf import config as cfg
from dicewf import paper
from dicewf.io import write_json
from test_paper import fake_metrics, validated
from test_workflow import REPO, snakemake, workdir

RAW = yaml.safe_load((REPO / "config.yaml").read_text())
# as the Snakefile hands them to the library: the schema's defaults filled in
TOY = validated(RAW)
PAPER = validated(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
TEST = validated(yaml.safe_load((REPO / ".test" / "config.yaml").read_text()))
# config.yaml's SeRA lambda sweep (Figure 6): iteration 1 is sera_dpo's
LAMBDA_SWEEP = ("sera_lambda0", "sera_lambda07")


def toy(**change) -> dict:
    """The validated toy config with ``change`` merged over it."""
    return validated(cfg.deep_merge(RAW, change))


def runs(config: dict) -> dict[tuple[str, int], str]:
    """(experiment, iteration) -> the experiment that trains and evaluates it."""
    return {key: o.run for key, o in cfg.owners(config).items()}


# --- which iterations share -------------------------------------------------------------------


def test_offline_dpo_with_and_without_a_new_reference_share_iteration_1_only():
    # same start pi_theta^(0), the reference at t = 1 is pi_theta^(0) either way, gamma = 1 (the
    # same offline draw), the same train block; from t = 2 the references differ
    run = runs(toy())
    assert run["offline_dpo_newref", 1] == "offline_dpo"
    assert run["offline_dpo_newref", 2] == "offline_dpo_newref"
    assert run["offline_dpo", 1] == run["offline_dpo", 2] == "offline_dpo"


@pytest.mark.parametrize("config", [TOY, TEST, PAPER], ids=["toy", "test", "paper"])
def test_the_shipped_configs_share_only_offline_dpo_newref_at_iteration_1(config):
    shared = {key: owner for key, owner in runs(config).items() if key[0] != owner}
    # each replicate's (replicates: 3 in config.yaml) with the same replicate's Offline DPO
    replicates = cfg.replicates(config)
    newref = [e for e in replicates if replicates[e][0].endswith("offline_dpo_newref")]
    # and SeRA's lambda sweep (Figure 6), whose iteration 1 does not read lambda
    lambdas = {(e, 1): "sera_dpo" for e in LAMBDA_SWEEP} if config is TOY else {}
    # and, at paper scale, SeRA's iterative IPO, SLiC and SimPO baselines, whose iteration 1 is
    # the plain run's (the same start, reference, data and loss)
    plain = {
        (f"tinyllama_iterative_{loss}", 1): f"tinyllama_plain_{loss}"
        for loss in ("ipo", "hinge", "simpo")
    }
    baselines = plain if config is PAPER else {}
    assert shared == {(e, 1): e.replace("_newref", "") for e in newref} | lambdas | baselines
    assert len(newref) == {id(TOY): 3, id(TEST): 0, id(PAPER): 2}[id(config)]


def test_the_policy_reference_and_evaluation_of_a_shared_iteration_are_the_owners():
    config = toy()
    table = cfg.owners(config)
    assert cfg.policy_path(config, "offline_dpo_newref", 1) == "results/offline_dpo/iter1/policy"
    assert cfg.policy_path(config, "offline_dpo_newref", 2, table).startswith(
        "results/offline_dpo_newref/iter2"
    )
    # iteration 2 of the new-reference run trains against (and starts from) the shared policy
    assert cfg.reference_path(config, "offline_dpo_newref", 2) == "results/offline_dpo/iter1/policy"
    assert cfg.reference_path(config, "offline_dpo", 2) == TOY["base"]["policy"]
    owners = cfg.model_owners(config, table)
    assert owners["offline_dpo_newref-iter1"] == "offline_dpo-iter1"
    assert owners["offline_dpo_newref-iter2"] == "offline_dpo_newref-iter2"
    evaluated = cfg.evaluated_models(config, table)
    assert "offline_dpo_newref-iter1" not in evaluated and "offline_dpo-iter1" in evaluated
    # one shared iteration, the lambda sweep's first iteration, and the noisy runs' pi_theta^(0):
    # one per noise level
    baselines = ("cdpo", "robust_dpo", "sera_none")
    newref = {"offline_dpo_newref-iter1"} | {f"offline_dpo_newref_rep{r}-iter1" for r in (2, 3)}
    assert set(cfg.model_names(config)) - set(evaluated) == newref | {
        f"{b}_noise{k}-iter0" for b in baselines for k in (20, 40)
    } | {f"{e}-iter1" for e in LAMBDA_SWEEP}


def test_runs_with_equal_noise_share_one_start_policy_trained_on_the_noisy_pairs():
    config = toy()
    table = cfg.owners(config)
    # the first noisy run of each level in config order trains it (noisy_start_policy)
    for k in (20, 40):
        own = f"results/sera_dpo_noise{k}/iter0/policy"
        for exp in (f"sera_dpo_noise{k}", f"cdpo_noise{k}", f"robust_dpo_noise{k}"):
            assert cfg.start_owner(config, exp) == f"sera_dpo_noise{k}"
            assert cfg.policy_path(config, exp, 0) == own
            assert cfg.reference_path(config, exp, 1) == own  # reference: previous
    # a clean run starts from the setting's start policy; levels never share
    assert cfg.policy_path(config, "dice", 0) == TOY["base"]["policy"]
    assert table["cdpo_noise20", 1].run == "cdpo_noise20"
    assert table["sera_none_noise20", 1].run != table["sera_none_noise40", 1].run
    owners = cfg.model_owners(config, table)
    assert owners["robust_dpo_noise40-iter0"] == "sera_dpo_noise40-iter0"
    assert cfg.model_policy(config, "sera_dpo_noise40-iter0") == (
        "results/sera_dpo_noise40/iter0/policy"
    )


def test_an_iteration_that_is_not_run_is_named():
    with pytest.raises(ValueError, match=r"experiments.offline_dpo: iteration 3 is not run"):
        cfg.policy_path(toy(), "offline_dpo", 3)
    with pytest.raises(KeyError, match="no experiment named 'nodice'"):
        cfg.owners_of(toy(), "nodice", 1)


def twins(**change) -> dict:
    """The toy config with DICE and ``twin``, a copy of DICE with ``change`` merged over it."""
    config = copy.deepcopy(RAW)
    config["experiments"] = {
        "dice": {"iterations": 3},
        "twin": cfg.deep_merge({"iterations": 3, "description": "a copy"}, change),
    }
    return validated(config)


def test_a_copy_of_an_experiment_shares_every_iteration_whatever_its_description():
    assert runs(twins()) == {(e, t): "dice" for e in ("dice", "twin") for t in (1, 2, 3)}
    # a shorter copy shares the iterations it runs
    assert runs(twins(iterations=1))["twin", 1] == "dice"


@pytest.mark.parametrize(
    "change",
    [
        {"train": {"learning_rate": 1.0e-4}},
        {"train": {"beta": 0.2}},
        {"mix": {"gamma": 0.25}},
        {"mix": {"n_pairs": 256}},
        {"alpha": {"fixed": 0.0}},
        {"length_penalty": 0.02},
        {"trainer": "kto"},
    ],
    ids=lambda c: repr(c),
)
def test_any_changed_setting_of_iteration_1_breaks_sharing_from_there_on(change):
    run = runs(twins(**change))
    assert [run["twin", t] for t in (1, 2, 3)] == ["twin"] * 3


def test_a_changed_sampling_or_scoring_setting_breaks_sharing_of_generated_pairs_only():
    # D(alpha*) comes from the samples and their scores: a change there is a new run
    assert runs(twins(sampling={"temperature": 0.7}))["twin", 1] == "twin"
    assert runs(twins(score={"max_chars": 100}))["twin", 1] == "twin"
    # with gamma = 1 nothing is sampled or scored: those settings do not matter
    offline = {"mix": {"gamma": 1.0}, "reference": "fixed"}
    config = copy.deepcopy(RAW)
    config["experiments"] = {
        "offline": {"iterations": 3, **offline},
        "twin": {"iterations": 3, **offline, "sampling": {"n": 2}, "score": {"max_chars": 100}},
    }
    assert runs(validated(config))["twin", 3] == "offline"


def test_the_reference_from_iteration_2_on_breaks_sharing():
    run = runs(twins(reference="fixed"))
    assert [run["twin", t] for t in (1, 2, 3)] == ["dice", "twin", "twin"]
    # the scores of iteration 2 are the reference's too (pi_ref^(1) = pi_theta^(0) either way):
    # samples and scores of iteration 2 are shared, the training is not
    owners = cfg.owners(twins(reference="fixed"))["twin", 2]
    assert (owners.samples, owners.scores, owners.run) == ("dice", "dice", "twin")


def test_a_changed_setting_at_one_iteration_is_not_shared_by_later_ones():
    # iteration 2 starts from a policy trained otherwise: nothing after it is shared either
    config = twins(train={"max_steps": 61})
    assert runs(config)["twin", 2] == "twin"
    assert cfg.owners(config)["twin", 2].samples == "twin"


def test_the_seed_and_the_iteration_are_in_every_key_the_description_in_none():
    base = cfg.keys(toy())
    reseeded = toy(seed=1)
    described = toy(experiments={"dice": {"description": "another text"}})
    for key, parts in cfg.keys(reseeded).items():
        assert all(a != b for a, b in zip(parts, base[key], strict=True)), key
    assert cfg.keys(described) == base
    # two iterations never share, even where everything else is equal (a copy of DICE that
    # starts from pi_theta^(1) is not DICE's iteration 2)
    # offline_dpo_newref-iter1 (in each of its 3 replicates) and the lambda sweep's iteration 1
    # (sera_dpo's)
    assert len({parts[2] for parts in base.values()}) == len(base) - 3 - len(LAMBDA_SWEEP)


def test_experiments_of_two_settings_never_share():
    config = copy.deepcopy(PAPER)
    config["settings"]["llama3"] = copy.deepcopy(config["settings"]["zephyr"])
    run = runs(validated(config))
    assert all(owner.split("_")[0] == exp.split("_")[0] for (exp, _), owner in run.items())


def test_the_experiment_config_file_says_what_is_shared():
    config = toy()
    assert cfg.resolved(config, "offline_dpo_newref")["shared"] == {"iter1": {"run": "offline_dpo"}}
    assert cfg.resolved(config, "dice_ipo")["shared"] == {
        "iter1": {"samples": "dice", "scores": "dice"}
    }
    assert cfg.resolved(config, "dice")["shared"] == {}


# --- tables read the owner's evaluation under the shared name -----------------------------------


def test_a_table_reads_a_shared_models_metrics_from_its_owners_file(tmp_path):
    layout = paper.Layout.from_config(toy())
    # besides: noisy runs' pi_theta^(0) (test_runs_with_equal_noise_share_one_start_policy...)
    assert {m: o for m, o in layout.shared.items() if not m.endswith("-iter0")} == {
        f"offline_dpo_newref{r}-iter1": f"offline_dpo{r}-iter1" for r in ("", "_rep2", "_rep3")
    } | {f"{e}-iter1": "sera_dpo-iter1" for e in LAMBDA_SWEEP}
    paths = paper.input_paths("table1", layout)
    need = paper.needs("table1", layout)
    assert "results/eval/offline_dpo_newref-iter1/metrics.json" not in paths["metrics"]
    assert paths["metrics"].count("results/eval/offline_dpo-iter1/metrics.json") == 2
    # only the evaluated models' files exist, as after a run
    metrics = fake_metrics(need["models"], arena=False, gold=True)
    for model in dict.fromkeys(layout.evaluated(m) for m in need["models"]):
        write_json(metrics[model], tmp_path / paper.metrics_path(model))
    inputs = {k: [str(tmp_path / p) for p in v] for k, v in paths.items()}
    data = paper.read_inputs("table1", layout, inputs)
    assert data["metrics"]["offline_dpo_newref-iter1"] == metrics["offline_dpo-iter1"]
    df = paper.build_table("table1", layout, data["metrics"]).set_index("Method")
    same = df.loc["Offline DPO (w/ new ref) Iter 1"] == df.loc["Offline DPO Iter 1"]
    assert same.all()
    assert df.loc["Offline DPO (w/ new ref) Iter 2", "LC"] != df.loc["Offline DPO Iter 2", "LC"]


def test_alpha_files_of_a_shared_iteration_are_the_owners(tmp_path):
    # Figures 2 and 4 from a copy of DICE
    config = toy(
        experiments={"dice_twin": {"iterations": 3, "description": "DICE again"}},
        report={"experiment": "dice_twin"},
    )
    layout = paper.Layout.from_config(config)
    assert paper.input_paths("figure4", layout)["alphas"] == ["results/dice/iter1/alpha.json"]


# --- the DAG ----------------------------------------------------------------------------------


def planned(out: str, rule: str) -> list[str]:
    """The `output:` lines of every planned job of ``rule`` in a dry run's printout."""
    return re.findall(rf"rule {rule}:\n(?:    .*\n)*?    output: (.*)\n", out)


@pytest.mark.slow
def test_the_toy_dag_trains_and_evaluates_a_shared_iteration_once(tmp_path):
    out = snakemake("-n", cwd=workdir(tmp_path, RAW)).stdout
    trained = planned(out, "train")
    evaluated = planned(out, "eval")
    assert not [o for o in trained if "offline_dpo_newref/iter1/" in o]
    assert len([o for o in trained if "offline_dpo/iter1/policy" in o]) == 1
    assert not [o for o in evaluated if "offline_dpo_newref-iter1" in o]
    assert len([o for o in evaluated if "eval/offline_dpo-iter1/" in o]) == 1
    # iteration 2 with a new reference starts from, and trains against, the shared policy
    newref2 = re.search(r"input: (.*)\n    output: results/offline_dpo_newref/iter2/policy", out)
    assert newref2[1].startswith("results/offline_dpo/iter1/policy, results/offline_dpo/iter1/")
    # Table 1 names the owner's metrics for both rows
    table1 = re.search(r"input: (.*)\n    output: results/tables/table1.csv", out)[1]
    assert table1.count("results/eval/offline_dpo-iter1/metrics.json") == 2
    assert "offline_dpo_newref-iter1" not in table1
    # the shared run's config says so: one file per experiment run, each replicate's too
    runs = sum(block.get("replicates", 1) for block in RAW["experiments"].values())
    assert runs > len(RAW["experiments"])
    assert len(planned(out, "experiment_config")) == runs


@pytest.mark.slow
def test_the_paper_dag_trains_and_evaluates_each_shared_iteration_once(tmp_path):
    paper_yaml = REPO / "config" / "paper.yaml"
    dead = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    out = snakemake("-n", "--configfile", str(paper_yaml), cwd=Path(tmp_path), env=dead).stdout
    trained = " ".join(planned(out, "train"))
    generated = " ".join(planned(out, "generate_benchmarks"))
    for setting in ("zephyr", "llama3"):
        assert f"results/{setting}_offline_dpo_newref/iter1/" not in trained
        assert f"results/{setting}_offline_dpo/iter1/policy" in trained
        assert f"eval/{setting}_offline_dpo_newref-iter1/" not in generated
        assert f"eval/{setting}_offline_dpo_newref-iter2/" in generated
    table1 = re.search(r"input: (.*)\n    output: results/paper/tables/table1.csv", out)[1]
    for setting in ("zephyr", "llama3"):
        assert table1.count(f"results/eval/{setting}_offline_dpo-iter1/metrics.json") == 2
