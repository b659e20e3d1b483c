"""SeRA at paper scale in config/paper.yaml: its settings and hyperparameters (Table 4 of Ko et
al., 2024), the models its evaluation answers with, and the dry run of its targets offline."""

from __future__ import annotations

import pytest
from dicewf import config as wfconfig
from dicewf import hub
from test_workflow import REPO, load, planned_jobs, snakemake, workdir

PAPER = REPO / "config" / "paper.yaml"
SERA_EXPERIMENTS = {
    "tinyllama": [
        "sera_dpo",
        "iterative_dpo",
        "plain_ipo",
        "iterative_ipo",
        "sera_ipo",
        "plain_hinge",
        "iterative_hinge",
        "sera_hinge",
    ],
    "zephyr": ["sera_dpo_mistral", "iterative_dpo_mistral"],
}


@pytest.fixture(scope="module")
def paper():
    from snakemake.utils import validate

    cfg = load(PAPER)
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return cfg


def test_the_sera_settings_name_the_papers_models_by_hub_id(paper):
    tiny = wfconfig.base(paper, "tinyllama")
    assert tiny["policy"] == "hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert hub.is_hub(tiny["reference"]) and "TinyLlama-1.1B" in tiny["reference"]
    # Mistral-7B runs in the zephyr setting: the paper's SFT and its DPO model
    zephyr = wfconfig.base(paper, "zephyr")
    assert zephyr["reference"] == "hf://HuggingFaceH4/mistral-7b-sft-beta"
    assert zephyr["policy"] == "hf://HuggingFaceH4/zephyr-7b-beta"
    runs = wfconfig.expanded(paper)
    assert [e for e, (s, _) in runs.items() if s == "tinyllama"] == [
        f"tinyllama_{e}" for e in SERA_EXPERIMENTS["tinyllama"]
    ]  # no DICE experiment runs in the SeRA-only setting


@pytest.mark.parametrize(
    "run, method, loss, beta, iterations, reference, gamma",
    [
        ("tinyllama_sera_dpo", "sera", "sigmoid", 0.2, 2, "previous", None),
        ("tinyllama_iterative_dpo", "dice", "sigmoid", 0.2, 2, "previous", 1.0),
        ("tinyllama_plain_ipo", "dice", "ipo", 1.0, 1, "fixed", 1.0),
        ("tinyllama_iterative_ipo", "dice", "ipo", 1.0, 2, "previous", 1.0),
        ("tinyllama_sera_ipo", "sera", "ipo", 1.0, 2, "previous", None),
        ("tinyllama_plain_hinge", "dice", "hinge", 0.2, 1, "fixed", 1.0),
        ("tinyllama_iterative_hinge", "dice", "hinge", 0.2, 2, "previous", 1.0),
        ("tinyllama_sera_hinge", "sera", "hinge", 0.2, 2, "previous", None),
        ("zephyr_sera_dpo_mistral", "sera", "sigmoid", 0.01, 2, "previous", None),
        ("zephyr_iterative_dpo_mistral", "dice", "sigmoid", 0.01, 2, "previous", 1.0),
    ],
)
def test_table4_hyperparameters(paper, run, method, loss, beta, iterations, reference, gamma):
    xp = wfconfig.experiment(paper, run)
    assert (xp["method"], xp["train"]["loss_type"], xp["train"]["beta"]) == (method, loss, beta)
    assert (xp["iterations"], xp["reference"]) == (iterations, reference)
    # one epoch per iteration, an effective batch of 16 (8 x 2 on TinyLlama, 4 x 4 on Mistral)
    assert xp["train"]["num_train_epochs"] == 1 and xp["train"]["max_steps"] == -1
    assert xp["train"]["global_batch_size"] == 16
    if method == "sera":  # K = 4 at T 0.7, top_p 0.95 (Appendix B.2); selection 0.7
        assert {k: xp["sampling"][k] for k in ("n", "temperature", "top_p")} == {
            "n": 4,
            "temperature": 0.7,
            "top_p": 0.95,
        }
        assert xp["sera"]["selection_proportion"] == 0.7
    else:
        assert xp["mix"]["gamma"] == gamma


def test_the_evaluated_models(paper):
    models = wfconfig.sera_eval_models(paper)
    want = ["tinyllama_sft", "tinyllama_base", "zephyr_sft", "zephyr_base"]
    want += [f"tinyllama_{e}-iter{1 if 'plain' in e else 2}" for e in SERA_EXPERIMENTS["tinyllama"]]
    want += [f"zephyr_{e}-iter2" for e in SERA_EXPERIMENTS["zephyr"]]
    assert sorted(models) == sorted(want)
    assert wfconfig.model_setting(paper, "zephyr_sft") == "zephyr"
    assert wfconfig.model_setting(paper, "tinyllama_sera_dpo-iter2") == "tinyllama"
    # Appendix B.3: answers at temperature 1.0, at most 512 new tokens; judge at 0.7
    assert paper["eval"]["sera"]["sampling"]["temperature"] == 1.0
    assert paper["eval"]["sera"]["sampling"]["max_tokens"] == 512
    assert paper["eval"]["sera"]["judge"]["temperature"] == 0.7


def test_an_unknown_evaluated_experiment_is_named(paper):
    cfg = dict(paper, eval=dict(paper["eval"], sera=dict(paper["eval"]["sera"])))
    cfg["eval"]["sera"]["experiments"] = ["sera_dpo", "sera_nope"]
    with pytest.raises(
        KeyError, match=r"eval.sera.experiments: unknown experiment\(s\) \['sera_nope'\]"
    ):
        wfconfig.sera_eval_models(cfg)


def test_the_sera_targets_dry_run_offline(tmp_path, paper):
    """`snakemake -n --configfile config/paper.yaml sera_paper`, the hub offline and HTTP(S)
    at a dead proxy: every SeRA run trained, each evaluated model answering all four benchmarks
    once, judged per benchmark against its setting's SFT model."""
    dead = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    jobs = planned_jobs(tmp_path, "sera_paper", "--configfile", str(PAPER), env=dead)
    models = wfconfig.sera_eval_models(paper)
    assert jobs["sera_generate"] == len(models) == 14
    assert jobs["sera_judge"] == 4 * len(models) and jobs["sera_eval_summary"] == len(models)
    assert jobs["sera_prepare_benchmark"] == 4 and jobs["sera_fetch_benchmark"] == 2
    # every iteration of the ten runs: 8 SeRA iterations (each selecting and mixing), 8
    # iterative ones and 2 plain ones, each plain run sharing its iteration 1 with the
    # iterative run of its loss (both train from pi_theta^(0) with pi_theta^(0) as reference)
    assert jobs["train"] == 8 + 8 and jobs["sera_mix"] == jobs["sera_offline_logps"] == 8
    assert "search_alpha" not in jobs  # the baselines mix D_offline only (gamma 1)
    # the four hub models of both settings; UltraFeedback and AlpacaEval
    assert jobs["download_model"] == 4 and jobs["download_dataset"] == 2
    assert not [rule for rule in jobs if rule.startswith(("toy_", "arena", "alpaca_eval"))]


def test_the_sft_models_answers_are_the_opponent_of_every_other_model(tmp_path):
    wd = workdir(tmp_path, load(PAPER))
    out = snakemake(
        "-n", "results/eval/zephyr_sera_dpo_mistral-iter2/sera/vicuna/metrics.json", cwd=wd
    ).stdout
    assert "results/eval/zephyr_sft/sera/vicuna/responses.parquet" in out
    assert "resources/hub/HuggingFaceH4--mistral-7b-sft-beta" in out
    assert "resources/benchmarks/vicuna.jsonl" in out
