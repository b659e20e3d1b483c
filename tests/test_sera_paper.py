"""SeRA at paper scale in config/paper.yaml: its settings and hyperparameters (Table 4 of Ko et
al., 2024), the models its evaluation answers with, and the dry run of its targets offline."""

from __future__ import annotations

import json

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
        "plain_simpo",
        "iterative_simpo",
        "sera_simpo",
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
        # Table 9 (Appendix C.3): beta 2.0 is ours (the paper gives none)
        ("tinyllama_plain_simpo", "dice", "simpo", 2.0, 1, "previous", 1.0),
        ("tinyllama_iterative_simpo", "dice", "simpo", 2.0, 2, "previous", 1.0),
        ("tinyllama_sera_simpo", "sera", "simpo", 2.0, 2, "previous", None),
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
    # SimPO: TRL's CPOTrainer without its NLL term (cpo_alpha 0), no reference model
    simpo = loss == "simpo"
    assert xp["trainer"] == ("cpo" if simpo else "dpo")
    assert (xp["train"].get("cpo_alpha"), xp["train"].get("simpo_gamma")) == (
        (0.0, 1.0) if simpo else (None, None)
    )
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


def test_an_unknown_benchmark_is_refused_by_the_schema(paper):
    import jsonschema
    import yaml

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    cfg = dict(paper, eval=dict(paper["eval"], sera=dict(paper["eval"]["sera"])))
    cfg["eval"]["sera"]["benchmarks"] = ["vicuna", "mt_bench"]
    with pytest.raises(jsonschema.ValidationError, match="'mt_bench' is not one of"):
        jsonschema.validate(cfg, schema)


@pytest.mark.slow  # starts Snakemake
def test_the_sera_targets_dry_run_offline(tmp_path, paper):
    """`snakemake -n --configfile config/paper.yaml sera_paper`, the hub offline and HTTP(S)
    at a dead proxy: every SeRA run trained, each evaluated model answering all four benchmarks
    once, judged per benchmark against its setting's SFT model."""
    dead = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    jobs = planned_jobs(tmp_path, "sera_paper", "--configfile", str(PAPER), env=dead)
    models = wfconfig.sera_eval_models(paper)
    assert jobs["sera_generate"] == len(models) == 17
    assert jobs["sera_judge"] == 4 * len(models) and jobs["sera_eval_summary"] == len(models)
    assert jobs["sera_prepare_benchmark"] == 4 and jobs["sera_fetch_benchmark"] == 2
    # SeRA's Tables 1, 2 and 9 from those metrics
    assert jobs["sera_paper_table"] == 3
    assert sum(jobs.values()) == 272  # docs/sera.md
    # every iteration of the 13 runs: 10 SeRA iterations (each selecting and mixing), 10
    # iterative ones and 3 plain ones, each plain run sharing its iteration 1 with the
    # iterative run of its loss (both train from pi_theta^(0) with pi_theta^(0) as reference;
    # SimPO has none)
    assert jobs["train"] == 10 + 10 and jobs["sera_mix"] == 10
    # D_offline's log-probs once per (models, noise): the four TinyLlama SeRA runs share their
    # iteration 1 (pi_theta^(0) against the SFT model); iteration 2 scores each run's own policy
    assert jobs["sera_offline_logps"] == 1 + 4 + 1 + 1  # tinyllama 1 + 4, zephyr 1 + 1
    assert "search_alpha" not in jobs  # the baselines mix D_offline only (gamma 1)
    # the four hub models of both settings; UltraFeedback and AlpacaEval
    assert jobs["download_model"] == 4 and jobs["download_dataset"] == 2
    assert not [rule for rule in jobs if rule.startswith(("toy_", "arena", "alpaca_eval"))]


@pytest.mark.slow  # starts Snakemake
def test_the_sft_models_answers_are_the_opponent_of_every_other_model(tmp_path):
    wd = workdir(tmp_path, load(PAPER))
    out = snakemake(
        "-n", "results/eval/zephyr_sera_dpo_mistral-iter2/sera/vicuna/metrics.json", cwd=wd
    ).stdout
    assert "results/eval/zephyr_sft/sera/vicuna/responses.parquet" in out
    assert "resources/hub/HuggingFaceH4--mistral-7b-sft-beta" in out
    assert "resources/benchmarks/vicuna.jsonl" in out


@pytest.mark.slow  # a real Snakemake run (about 50 s here)
def test_the_evaluation_rules_run_on_fake_benchmarks_and_a_fake_judge(tmp_path):
    """The paper configuration's SeRA evaluation rules for real (fetch, prepare, judge,
    summary), on the benchmarks' test doubles in their hub and GitHub layouts and an
    OpenAI-compatible FakeChatServer: every grade [[7]], every verdict [[A]] (so each prompt
    is a win in one order and a loss in the other: a tie). The answers of the two models are
    given (generation needs a GPU model: not run here)."""
    from dicewf import sera_eval
    from fake_chat_server import FakeChatServer
    from test_datasets import FakeAlpacaEval, FakeUltraFeedback
    from test_sera_eval import fake_evol, fake_vicuna

    hubdir = tmp_path / "resources" / "hub" / "datasets"
    sources = {
        "alpaca_eval": FakeAlpacaEval(hubdir / "tatsu-lab--alpaca_eval", n=3).root,
        "ultrafeedback": FakeUltraFeedback(
            hubdir / "HuggingFaceH4--ultrafeedback_binarized", n_good=2
        ).root,
        "vicuna": fake_vicuna(tmp_path / "github", n=2),
        "evol_instruct": fake_evol(tmp_path / "github", n=2),
    }
    for model in ("zephyr_sft", "zephyr_base"):
        for bench, source in sources.items():
            prompts = sera_eval.prepare_benchmark(bench, source)
            out = tmp_path / "results" / "eval" / model / "sera" / bench / "responses.parquet"
            out.parent.mkdir(parents=True)
            prompts[["prompt_id", "prompt"]].assign(
                sample_idx=0, response=f"{model} says", finish_reason="stop", seed=0
            ).to_parquet(out, index=False)

    def judge(body):
        single = body["messages"][0]["content"] == sera_eval.SINGLE_SYSTEM
        return "Fine. Rating: [[7]]" if single else "A is better. [[A]]"

    with FakeChatServer(judge) as server:
        cfg = load(PAPER)
        cfg["eval"]["sera"] |= {
            "experiments": ["sera_dpo_mistral"],
            "vicuna_url": sources["vicuna"].as_uri(),
            "evol_instruct_url": sources["evol_instruct"].as_uri(),
            "judge": {"model": "judge", "base_url": server.base_url, "api_key_env": None},
        }
        wd = workdir(tmp_path, cfg)
        targets = [f"results/eval/{m}/sera/metrics.json" for m in ("zephyr_sft", "zephyr_base")]
        env = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        allowed = ["sera_fetch_benchmark", "sera_prepare_benchmark", "sera_judge"]
        snakemake(
            "--cores",
            "2",
            "--allowed-rules",
            *allowed,
            "sera_eval_summary",
            "--",
            *targets,
            cwd=wd,
            env=env,
        )
        asked = len(server.requests)
    base = json.loads((wd / targets[1]).read_text())
    sft = json.loads((wd / targets[0]).read_text())
    assert set(base) == set(sft) == set(sera_eval.BENCHMARKS)
    # 3 + 2 + 2 + 1 prompts; the base model: a grade, both orders against the SFT model and,
    # on AlpacaEval, against both references; the SFT model: a grade and the references
    assert asked == 8 * 3 + 3 * 4 + 8 + 3 * 4
    for bench, metrics in base.items():
        assert metrics["single"] == {"score": 7.0, "n": metrics["single"]["n"], "unparsable": 0}
        assert metrics["vs_sft"]["win_rate"] == 50.0 and metrics["vs_sft"]["ties"] > 0
        assert "vs_sft" not in sft[bench]
    assert set(base["alpaca_eval"]) >= {"vs_gpt4_turbo", "vs_text_davinci_003"}
    assert (wd / "results/data/sera/vicuna.parquet").is_file()
