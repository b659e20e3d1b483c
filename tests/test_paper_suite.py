"""The paper's evaluation suite (``eval.suite: paper``) run for real on the reduced toy world.

One Snakemake run on CPU of .test/config.yaml with DICE's first iteration alone and the paper
suite: the benchmarks' hub snapshots (test doubles from tests/test_datasets.py) and the LC data's
Hugging Face cache (tests/fakes_alpacaeval.py) are put where the download rules would write them,
so nothing is downloaded; the base model and DICE iteration 1 answer both benchmarks (vLLM, or
transformers where vLLM does not import), the real ``alpaca-eval`` package annotates the
AlpacaEval answers and dicewf.arena judges the Arena-Hard ones, both judges being one
FakeChatServer that answers with planted preferences, and Table 1 is made from the merged metrics.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("alpaca_eval")
# the package's GLM uses scikit-learn arguments that scikit-learn 1.8+ deprecates
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.e2e(seconds=190)]

from dicewf.io import check_frame
from fake_chat_server import FakeChatServer
from fakes_alpacaeval import write_fake_lc_cache
from test_datasets import FakeAlpacaEval, FakeArenaHard
from test_workflow import REPO, load, snakemake, workdir

ALPACA_EVAL = "hf://datasets/tatsu-lab/alpaca_eval"
ARENA_HARD = "hf://datasets/lmarena-ai/arena-hard-auto"
BASELINE = "gpt-4-0314"
N_ALPACA = 10  # instructions of the AlpacaEval double (and of its LC data)
N_ARENA = 6  # questions of the Arena-Hard double
ALPACA_JUDGE = "fake/alpaca-judge"
ARENA_JUDGE = "fake/arena-judge"
API_KEY = "sk-test-should-never-appear"
MODELS = ("base", "dice-iter1")
TARGETS = ["results/tables/table1.md", *(f"results/eval/{model}/metrics.json" for model in MODELS)]
# the rules of the paper suite and how many jobs each runs for the two models
PAPER_RULES = {
    "prepare_alpaca_eval": 1,
    "prepare_arena_hard": 1,
    "generate_benchmarks": 2,
    "alpaca_eval_annotate": 2,
    "arena_hard_judge": 2,
    "eval_summary": 2,
    "table": 1,
}


# --------------------------------------------------------------------------- the fake judges
# AlpacaEval: P(the model's output is better) by instruction number, even 0.9, odd 0.3, so the
# raw win rate is 100 * mean = 60 and the model wins (P > 0.5) half of the instructions.
def p_model_better(instruction_number: int) -> float:
    return 0.9 if instruction_number % 2 == 0 else 0.3


PLANTED_WIN_RATE = 100 * sum(map(p_model_better, range(N_ALPACA))) / N_ALPACA

# Arena-Hard: the model's answer is much better on questions 0-1, better on 2-3, worse on 4-5
# (in both games), so the score is (2*2*3 + 2*2*1) / (2*2*3 + 2*2*1 + 2*2*1) = 16 / 20 = 80.
ARENA_PLAN = {0: "much better", 1: "much better", 2: "better", 3: "better", 4: "worse", 5: "worse"}
PLANTED_ARENA_SCORE = 80.0

_AE_INSTRUCTION = re.compile(r'"instruction": """Instruction (\d+):')
_AE_OUTPUT = re.compile(r'"model_identifier": "(m|M)",\s*"output": """(.*?)"""\s*\}', re.DOTALL)
_AH_QUESTION = re.compile(r"<user_prompt>\s*Hard question (\d+)\s*</user_prompt>")
_AH_ANSWER_A = re.compile(r"<answer_of_assistant_A>\n(.*?)\n</answer_of_assistant_A>", re.DOTALL)


def alpaca_annotator_reply(body: dict) -> dict:
    """Like the weighted GPT-4-Turbo annotator: one token, 'm' or 'M', with the top
    log-probabilities of both; the reference (FakeAlpacaEval's "Turbo reference i") is told
    apart from the model's output by its text."""
    user = body["messages"][-1]["content"]
    number = int(_AE_INSTRUCTION.search(user).group(1))
    outputs = dict(_AE_OUTPUT.findall(user))
    model_label = "M" if outputs["m"].startswith("Turbo reference") else "m"
    p = p_model_better(number)
    p_m = p if model_label == "m" else 1 - p
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
                    "logprob": math.log(max(p_m, 1 - p_m)),
                    "bytes": None,
                    "top_logprobs": top,
                }
            ]
        },
    }


def arena_judge_reply(body: dict) -> str:
    """A judgment ending in the planned verdict; the baseline (FakeArenaHard's "gpt-4-0314 on
    ...") is told apart from the model's answer by its text."""
    user = body["messages"][1]["content"]
    number = int(_AH_QUESTION.search(user).group(1))
    baseline_is_a = _AH_ANSWER_A.search(user).group(1).startswith(f"{BASELINE} on ")
    model, other = ("B", "A") if baseline_is_a else ("A", "B")
    label = {
        "much better": f"{model}>>{other}",
        "better": f"{model}>{other}",
        "worse": f"{other}>{model}",
    }[ARENA_PLAN[number]]
    return f"Both answers read.\n\nFinal verdict: [[{label}]]"


def fake_judges(body: dict) -> str | dict:
    """One server for both benchmarks: the request's model says which judge is asked."""
    if body["model"] == ALPACA_JUDGE:
        return alpaca_annotator_reply(body)
    if body["model"] == ARENA_JUDGE:
        return arena_judge_reply(body)
    return {"status": 404, "error": {"message": f"no judge {body['model']!r} here"}}


# --------------------------------------------------------------------------- the run
@dataclass
class PaperRun:
    wd: Path
    output: str  # Snakemake's stdout and stderr
    requests: list[dict]  # what the fake judges received
    alpaca: FakeAlpacaEval
    arena: FakeArenaHard
    seconds: float


def paper_config(base_url: str) -> dict:
    cfg = load(REPO / ".test" / "config.yaml")
    cfg["experiments"] = {"dice": {"description": "DICE", "iterations": 1}}
    cfg["data"] = {
        "alpaca_eval": {"dataset": ALPACA_EVAL},
        "arena_hard": {"dataset": ARENA_HARD, "baseline": BASELINE},
    }
    cfg["eval"]["suite"] = "paper"
    cfg["eval"]["alpaca_eval"] = {
        "annotators_config": "weighted_alpaca_eval_gpt4_turbo",
        "base_url": base_url,
        "model": ALPACA_JUDGE,
        "api_key_env": None,
    }
    cfg["eval"]["arena_hard"] = {
        "judge": {"model": ARENA_JUDGE, "base_url": base_url, "api_key_env": None}
    }
    return cfg


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory) -> PaperRun:
    wd = tmp_path_factory.mktemp("paper_suite")
    # where download_dataset and download_alpaca_eval_lc would put them (ancient inputs)
    datasets = wd / "resources" / "hub" / "datasets"
    alpaca = FakeAlpacaEval(datasets / "tatsu-lab--alpaca_eval", n=N_ALPACA)
    arena = FakeArenaHard(datasets / "lmarena-ai--arena-hard-auto", "hub", n=N_ARENA)
    write_fake_lc_cache(wd / "resources" / "hub" / "alpaca_eval_lc", N_ALPACA)
    with FakeChatServer(fake_judges) as server:
        workdir(wd, paper_config(server.base_url))
        env = {
            "OPENAI_API_KEY": API_KEY,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        t0 = time.monotonic()
        proc = snakemake("--cores", "2", "--", *TARGETS, cwd=wd, env=env, warm=True)
        seconds = time.monotonic() - t0
        requests = list(server.requests)
    print(f"paper-suite run: {seconds:.0f} s")
    return PaperRun(wd, proc.stdout + proc.stderr, requests, alpaca, arena, seconds)


def jobs_run(output: str) -> Counter:
    """Rule -> number of jobs Snakemake started, from its log."""
    return Counter(re.findall(r"^\s*(?:local)?rule (\w+):\s*$", output, re.MULTILINE))


def metrics_of(run: PaperRun, model: str) -> dict:
    return json.loads((run.wd / "results" / "eval" / model / "metrics.json").read_text())


# --------------------------------------------------------------------------- the tests
@pytest.mark.slow
def test_every_paper_suite_rule_ran_and_nothing_was_downloaded(paper_run):
    jobs = jobs_run(paper_run.output)
    assert {rule: jobs[rule] for rule in PAPER_RULES} == PAPER_RULES, jobs
    assert jobs["train"] == 1, jobs  # DICE iteration 1 was trained for its evaluation
    # the snapshots and the LC cache were there: the download rules had nothing to do
    assert "download_dataset" not in jobs and "download_alpaca_eval_lc" not in jobs, jobs
    assert "eval" not in jobs, jobs  # the toy suite's rule is not part of this run
    for model in MODELS:
        for bench in ("alpaca_eval", "arena_hard"):
            assert (paper_run.wd / "results" / "eval" / model / bench / "metrics.json").is_file()


@pytest.mark.slow
def test_each_benchmark_is_prepared_from_its_snapshot_and_answered_once_per_prompt(paper_run):
    data = paper_run.wd / "results" / "data"
    alpaca = pd.read_parquet(data / "alpaca_eval.parquet")
    arena = pd.read_parquet(data / "arena_hard.parquet")
    assert alpaca["prompt"].tolist() == [r["instruction"] for r in paper_run.alpaca.records]
    assert set(alpaca["reference_generator"]) == {"gpt4_turbo"}
    assert arena["prompt"].tolist() == [text for _, text, _ in paper_run.arena.questions]
    assert arena["reference"].tolist() == [
        f"{BASELINE} on {qid}" for qid, _, _ in paper_run.arena.questions
    ]
    for model in MODELS:
        for bench, prompts in (("alpaca_eval", alpaca), ("arena_hard", arena)):
            path = paper_run.wd / "results" / "eval" / model / bench / "responses.parquet"
            responses = pd.read_parquet(path)
            check_frame(responses, "samples", path)
            assert len(responses) == len(prompts), (model, bench)
            assert sorted(responses["prompt_id"]) == sorted(prompts["prompt_id"]), (model, bench)
            merged = prompts.merge(responses, on="prompt_id", suffixes=("", "_asked"))
            assert (merged["prompt"] == merged["prompt_asked"]).all(), (model, bench)


@pytest.mark.slow
def test_the_metrics_are_what_the_fake_judges_answered(paper_run):
    alpaca_requests = [r for r in paper_run.requests if r["body"]["model"] == ALPACA_JUDGE]
    arena_requests = [r for r in paper_run.requests if r["body"]["model"] == ARENA_JUDGE]
    # one annotation per instruction; two games per question and no follow-up (all had a verdict)
    assert len(alpaca_requests) == len(MODELS) * N_ALPACA
    assert len(arena_requests) == len(MODELS) * N_ARENA * 2
    assert len(paper_run.requests) == len(alpaca_requests) + len(arena_requests)
    alpaca = pd.read_parquet(paper_run.wd / "results" / "data" / "alpaca_eval.parquet")
    for model in MODELS:
        m = metrics_of(paper_run, model)
        # AlpacaEval 2 through alpaca-eval: 100 * mean P(model better), wins where P > 0.5
        assert m["win_rate"] == pytest.approx(PLANTED_WIN_RATE, abs=1e-6), model
        assert (m["n"], m["n_wins"], m["n_wins_base"]) == (
            N_ALPACA,
            N_ALPACA // 2,
            N_ALPACA // 2,
        ), model
        answers = pd.read_parquet(
            paper_run.wd / "results" / "eval" / model / "alpaca_eval" / "responses.parquet"
        )
        # every answer is longer than its reference ("Turbo reference i") and the LC data's
        # judge likes length (fakes_alpacaeval): the length correction lowers the rate
        references = alpaca.set_index("prompt_id")["reference"].str.len()
        assert (
            answers["response"].str.len().to_numpy() > references[answers["prompt_id"]].to_numpy()
        ).all(), model
        assert 0 < m["lc_win_rate"] < m["win_rate"], model
        assert m["mean_len_model"] == pytest.approx(answers["response"].str.len().mean())
        assert m["judge_model"] == ALPACA_JUDGE
        assert (
            paper_run.wd
            / "results"
            / "eval"
            / model
            / "alpaca_eval"
            / "annotations"
            / "annotations.json"
        ).is_file()
        # Arena-Hard through dicewf.arena: the planted verdicts' score, every question counted
        assert m["arena_score"] == pytest.approx(PLANTED_ARENA_SCORE), model
        assert m["arena_n"] == N_ARENA and m["arena_n_invalid"] == 0, model
        assert m["arena_ci_low"] < m["arena_score"] < m["arena_ci_high"], model
        assert 0 <= m["arena_ci_low"] and m["arena_ci_high"] <= 100, model
        assert m["arena_judge_model"] == ARENA_JUDGE


@pytest.mark.slow
def test_table1_shows_the_benchmark_cells_of_both_rows(paper_run):
    lines = (paper_run.wd / "results" / "tables" / "table1.md").read_text().splitlines()
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in lines
        if line.startswith("|") and not set(line) <= set("|-: ")
    ]
    header, body = rows[0], {row[0]: dict(zip(rows[0], row)) for row in rows[1:]}
    assert {"LC", "WR", "AH WR"} <= set(header), header
    assert set(body) == {"Base", "DICE Iter 1"}, body
    for label, model in (("Base", "base"), ("DICE Iter 1", "dice-iter1")):
        m = metrics_of(paper_run, model)
        assert float(body[label]["LC"]) == pytest.approx(m["lc_win_rate"], abs=0.006), label
        assert float(body[label]["WR"]) == pytest.approx(PLANTED_WIN_RATE, abs=0.006), label
        # "score [low, high]": Arena-Hard's interval beside its score
        assert float(body[label]["AH WR"].split()[0]) == pytest.approx(
            PLANTED_ARENA_SCORE, abs=0.06
        )


@pytest.mark.slow
def test_judge_replies_are_cached_and_no_api_key_is_sent_or_written(paper_run):
    for model in MODELS:
        cache = paper_run.wd / "results" / "eval" / model / "arena_hard" / "judge_cache.jsonl"
        assert cache.is_file(), cache
        records = [json.loads(line) for line in cache.read_text().splitlines()]
        assert len(records) == N_ARENA * 2, model  # one reply per game
    # api_key_env: null sends a placeholder; the key in OPENAI_API_KEY is never used
    assert {r["headers"].get("authorization") for r in paper_run.requests} == {"Bearer EMPTY"}
    leaked = [
        str(p.relative_to(paper_run.wd))
        for p in paper_run.wd.rglob("*")
        if p.is_file() and API_KEY.encode() in p.read_bytes()
    ]
    assert leaked == []
