"""The workflow itself: dry runs, and the whole reduced toy pipeline run for real on CPU."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dicewf import config as wfconfig
from dicewf import reflogps, sera
from dicewf.io import check_frame
from dicewf.paper import claims as cl

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# make run's runner: the command after `--` runs with the fork server (dicewf.forkserver)
WARM = [sys.executable, str(REPO / "workflow" / "scripts" / "forkserver.py"), "--"]
# every test here starts Snakemake (dry runs too)
pytestmark = [pytest.mark.slow, pytest.mark.e2e(seconds=1000)]


def snakemake(
    *args: str,
    cwd: Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    warm: bool = False,
) -> subprocess.CompletedProcess:
    """Snakemake with this repo's Snakefile in ``cwd``; ``warm``: under the fork server
    (dicewf.forkserver), as `make run` starts it."""
    # the train rule's shell command calls `accelerate` from this interpreter's environment
    # (conftest's no_slurm_controller is first on PATH: no run here uses Slurm)
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PATH": path,
        **(env or {}),
    }
    runner = [sys.executable, str(REPO / "workflow" / "scripts" / "forkserver.py"), "--"]
    proc = subprocess.run(
        [
            *(runner if warm else []),
            *SNAKEMAKE,
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(cwd),
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(cwd: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """Rule -> job count that a dry run plans."""
    out = snakemake(*args, "-n", "--quiet", "rules", cwd=cwd, env=env).stdout
    jobs = {}
    for line in out.splitlines():
        m = re.fullmatch(r"\s*([a-z_0-9]+)\s+(\d+)\s*", line)
        if m and m[1] != "total":
            jobs[m[1]] = int(m[2])
    return jobs


def workdir(tmp: Path, config: dict) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def dice_only(path: Path = REPO / "config.yaml") -> dict:
    """The default config with DICE alone (two iterations): the loop without the paper matrix."""
    cfg = load(path)
    cfg["experiments"] = {"dice": {"description": "DICE", "iterations": 2}}
    return cfg


def expected_jobs(cfg: dict) -> dict[str, int]:
    """What the dry run must plan, counted from the config with dicewf.config: each piece of
    work once, under the first experiment whose iteration has its key (dicewf.config.owners)."""
    from snakemake.utils import validate

    cfg = copy.deepcopy(cfg)  # the schema's defaults filled in, as the workflow sees it
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    owners = wfconfig.owners(cfg)
    runs = {(o.run, t) for (_, t), o in owners.items()}  # the iterations trained
    samplers, scorers, judges, searches, seras = set(), set(), set(), 0, 0
    prev2 = set()  # SeRA's samples scored under pi_theta^(t-2) for Eq. 7, shared as scores are
    offline = set()  # SeRA's D_offline log-probs, once per data, models and scoring settings
    for exp, t in runs:
        xp = wfconfig.experiment(cfg, exp)
        if not wfconfig.generates_pairs(xp):
            continue  # offline pairs only: nothing sampled, scored or searched
        if xp["method"] == "sera":
            seras += 1  # SeRA: offline pairs scored and selected, no alpha search
            searches += xp["sera"]["bootstrap"] == "dice_alpha"  # but its pairs at DICE's alpha*
            if wfconfig.sera_ensembles(xp, t):
                prev2.add((owners[exp, t].scores, t))
            offline.add((owners[exp, t].offline, t))
        else:
            searches += 1
        samplers.add((owners[exp, t].samples, t))
        scored = (owners[exp, t].scores, t)
        (judges if xp["score"]["method"] == "judge" else scorers).add(scored)
    shards = cfg["sharding"]["shards"]
    bases = len(wfconfig.settings(cfg))
    # runs on noisy D_offline: one pi_theta^(0) per setting and noise level, trained and evaluated
    starts = {
        wfconfig.start_owner(cfg, e)
        for e in wfconfig.expanded(cfg)
        if wfconfig.trains_own_start(wfconfig.experiment(cfg, e))
    }
    return {
        "noisy_start_policy": len(starts),
        "noisy_offline": len(starts),  # one noisy copy per setting and noise level
        "train": len(runs),
        "mix": len(runs) - seras,
        "sera_offline_logps": len(offline),
        "sera_mix": seras,
        "sera_scores_prev2": len(prev2),
        "eval": len(runs) + bases + len(starts),
        "search_alpha": searches,
        "sample": shards * len(samplers),
        "score": shards * len(scorers),
        "judge": shards * len(judges),
        "gather_shards": len(scorers) + len(judges),
    }


def test_dry_run_of_the_default_config_plans_the_whole_paper_matrix(tmp_path):
    cfg = load(REPO / "config.yaml")
    jobs = planned_jobs(workdir(tmp_path, cfg))
    want = expected_jobs(cfg)
    assert {rule: jobs.get(rule, 0) for rule in want} == want
    # iteration 1 is sampled once for every experiment with the default sampling settings
    assert want["sample"] < want["search_alpha"]
    # Tables 1-7, 9, 10, replicates, SeRA's Tables 1, 2, 9, noise and DICE vs SeRA, paper vs ours
    assert jobs["table"] == 16 and jobs["figure"] == 5
    for rule in (
        "toy_world",
        "toy_init_model",
        "toy_sft",
        "toy_start_policy",
        "reward_agreement",
        "train_reward_model",
        "agreement",
        "all",
    ):
        assert jobs[rule] == 1, (rule, jobs)


def test_the_paper_config_plans_the_whole_matrix_offline(tmp_path):
    """The whole matrix, with the hub offline and HTTP(S) at a dead proxy (its time is
    benchmarks/dry_run.py's)."""
    paper = REPO / "config" / "paper.yaml"
    cfg = load(paper)
    wd = workdir(tmp_path, cfg)
    # no network: the hub is offline and any HTTP(S) request goes to a dead proxy
    dead = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    jobs = planned_jobs(wd, env=dead)
    want = expected_jobs(cfg)
    models = want.pop("eval")  # the paper suite evaluates through other rules
    assert {rule: jobs.get(rule, 0) for rule in want} == want
    runs = wfconfig.iterations(cfg)
    # both settings, every method, iteration and ablation, evaluated on both benchmarks (and
    # SeRA's TinyLlama setting, docs/sera.md#paper-scale)
    assert {s for e, _ in runs for s in [wfconfig.locate(cfg, e)[0]]} == {
        "zephyr",
        "llama3",
        "tinyllama",
    }
    assert jobs["generate_benchmarks"] == models
    assert jobs["alpaca_eval_annotate"] == jobs["arena_hard_judge"] == models
    # six base models (TinyLlama's two: SeRA) and Table 5's published reward model (ERM-555k)
    assert jobs["download_model"] == 7 and jobs["download_dataset"] == 3
    # D_offline, and the full preference set of Table 5's IntlRM
    assert jobs["prepare_ultrafeedback"] == jobs["prepare_ultrafeedback_all"] == 1
    # DICE's tables (and replicates: none here) and figures; SeRA's toy tables and figures read
    # the toy suite's gold labels
    assert jobs["table"] == 11 and jobs["figure"] == 5 and "sera_figure" not in jobs
    assert "toy_world" not in jobs


def test_the_mini_paper_overlay_plans_the_paper_matrix_with_no_toy_rule(tmp_path):
    """.test/paper-mini.yaml (tests/test_paper_mini.py) only resizes config/paper.yaml: the same
    matrix, one shard per iteration, no toy rule, from the command line's files alone."""
    paper = REPO / "config" / "paper.yaml"
    mini = REPO / ".test" / "paper-mini.yaml"
    jobs = planned_jobs(tmp_path, "--configfile", str(paper), str(mini))
    cfg = load(paper)
    cfg["sharding"]["shards"] = 1
    want = expected_jobs(cfg)
    models = want.pop("eval")  # the paper suite evaluates through other rules
    assert {rule: jobs.get(rule, 0) for rule in want} == want
    assert jobs["generate_benchmarks"] == jobs["eval_summary"] == models
    assert not [rule for rule in jobs if rule.startswith("toy_")], jobs
    assert "eval" not in jobs, jobs  # the toy suite's rule
    assert not (tmp_path / "config.yaml").exists()


def test_asking_for_one_table_builds_only_its_own_dependencies(tmp_path):
    cfg = load(REPO / "config.yaml")
    wd = workdir(tmp_path, cfg)
    jobs = planned_jobs(wd, "results/tables/table7.md")
    # Table 7: no mitigation (D(0), gamma 0), regularised DPO (two lambdas) and ours (D(alpha*),
    # gamma 0), each at iteration 1, and the iteration-1 samples and scores they share
    assert jobs.pop("train") == jobs.pop("train_args") == jobs.pop("mix") == jobs.pop("eval") == 4
    assert jobs.pop("search_alpha") == 4
    assert jobs == {
        "sample": 1,
        "score": 1,
        "gather_shards": 1,
        "table": 1,
        "toy_world": 1,
        "toy_init_model": 1,
        "toy_sft": 1,
        "toy_start_policy": 1,
    }, jobs
    out = snakemake("-n", "results/tables/table7.md", cwd=wd).stdout
    trained = set(re.findall(r"output: results/(\w+)/iter1/policy", out))
    assert trained == {"dice_gamma0_alpha0", "rdpo_lambda002", "rdpo_lambda005", "dice_gamma0"}
    # a figure likewise: Figure 4 reads two landscapes and nothing trained
    jobs = planned_jobs(wd, "results/figures/figure4.png")
    assert "train" not in jobs and jobs["figure"] == 1 and jobs["judge"] == 1, jobs


def touched_tree(tmp: Path, cfg: dict) -> Path:
    """A working directory where every output of ``cfg`` exists and is up to date, with the
    params each job ran with recorded, made without running anything: every planned output is
    created (a folder for a name without a suffix) and then `--touch`ed."""
    cwd = workdir(tmp, cfg)
    summary = snakemake("--summary", cwd=cwd).stdout.splitlines()
    for line in summary[
        summary.index(next(x for x in summary if x.startswith("output_file"))) + 1 :
    ]:
        path = cwd / line.split("\t")[0]
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")  # non-empty: ensure(non_empty=True) outputs are checked
        else:
            path.mkdir(parents=True, exist_ok=True)
    snakemake("--touch", "--cores", "1", cwd=cwd)
    assert "Nothing to be done" in snakemake("-n", cwd=cwd).stdout
    return cwd


# Each report setting changed (two scenarios: Figure 2/4's iteration needs an experiment with
# two iterations, which the other experiment of the reduced config has not). `setting` needs a
# config with settings: it only picks one of them, as `experiment` does.
REPORT_CHANGES = [
    {
        "label": "changed",
        "sweep_iteration": 1,
        "figure1": {"iteration": 1},
        "iteration": 2,
        "figure2": {"bins": 17},
        "figure4": {"points": 23},
    },
    {"experiment": "dice_gamma0"},
]
PLOT_JOBS = {"table", "figure", "sera_figure", "alpha_landscape", "claims", "all"}


def test_changing_a_report_setting_reruns_no_compute_job(tmp_path):
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    changed = {key for change in REPORT_CHANGES for key in change}
    assert changed | {"setting"} == set(schema["properties"]["report"]["properties"])
    cfg = load(REPO / ".test" / "config.yaml")
    cwd = touched_tree(tmp_path, cfg)
    for change in REPORT_CHANGES:
        new = {**cfg, "report": {**cfg["report"], **change}}
        (cwd / "config.yaml").write_text(yaml.safe_dump(new, sort_keys=False))
        jobs = planned_jobs(cwd)
        assert set(jobs) <= PLOT_JOBS and jobs.get("figure"), (change, jobs)


def test_each_experiment_writes_every_value_it_runs_with(tmp_path):
    cfg = load(REPO / ".test" / "config.yaml")
    cwd = workdir(tmp_path, cfg)
    # one file per experiment run: offline_dpo's second replicate (replicates: 2) has its own
    assert planned_jobs(cwd).get("experiment_config") == len(cfg["experiments"]) + 1
    snakemake("--cores", "1", "results/dice_kto/config.yaml", cwd=cwd)
    written = load(cwd / "results" / "dice_kto" / "config.yaml")
    assert written["experiment"] == "dice_kto" and written["seed"] == cfg["seed"]
    # the experiment's own keys, the defaults it did not set, and the schema's defaults
    assert written["trainer"] == "kto" and written["train"]["loss_type"] == "kto"
    assert written["train"]["beta"] == cfg["defaults"]["train"]["beta"]
    assert written["length_penalty"] == 0.0 and written["base"] == cfg["base"]


def test_shards_are_configuration(tmp_path):
    cfg = dice_only()
    cfg["sharding"]["shards"] = 3
    jobs = planned_jobs(workdir(tmp_path, cfg))
    n_iter = cfg["experiments"]["dice"]["iterations"]
    assert jobs["sample"] == jobs["score"] == 3 * n_iter
    assert jobs["gather_shards"] == n_iter


def test_adding_an_experiment_is_configuration(tmp_path):
    cfg = dice_only()
    n_iter = cfg["experiments"]["dice"]["iterations"]
    cfg["experiments"]["dice_gamma0"] = {"iterations": 1, "mix": {"gamma": 0.0}}
    jobs = planned_jobs(workdir(tmp_path, cfg))
    assert jobs["train"] == jobs["search_alpha"] == n_iter + 1
    assert jobs["eval"] == 1 + n_iter + 1
    # iteration 1 starts from the same models with the same sampling: its samples are shared
    assert jobs["sample"] == jobs["score"] == n_iter
    cfg["experiments"]["dice_k2"] = {"iterations": 1, "sampling": {"n": 2}}
    assert planned_jobs(workdir(tmp_path, cfg))["sample"] == n_iter + 1


def test_offline_baselines_sample_nothing_and_keep_their_reference(tmp_path):
    cfg = dice_only()
    cfg["experiments"].update(
        {
            "offline_dpo": {"reference": "fixed", "mix": {"gamma": 1.0}},
            "offline_dpo_new_ref": {"mix": {"gamma": 1.0}},
        }
    )
    wd = workdir(tmp_path, cfg)
    jobs = planned_jobs(wd)
    n_iter = cfg["defaults"]["iterations"]
    for rule in ("sample", "score", "gather_shards", "search_alpha"):
        assert jobs[rule] == n_iter, (rule, jobs)  # DICE's only
    # offline_dpo_new_ref's iteration 1 (start reference, same pairs) is offline_dpo's, trained once
    assert jobs["train"] == jobs["mix"] == 3 * n_iter - 1
    out = snakemake(
        "-n",
        "-p",
        "results/offline_dpo/iter2/policy",
        "results/offline_dpo_new_ref/iter2/policy",
        cwd=wd,
    ).stdout
    # iteration 2 of each: offline_dpo_new_ref continues from the shared iteration-1 policy
    fixed = re.search(r"--ref (\S+) --out \S*offline_dpo/iter2/policy", out)
    new = re.search(
        r"--model (\S+) --pairs \S+ --ref (\S+) --out \S*offline_dpo_new_ref/iter2/", out
    )
    assert fixed and fixed[1].strip("'").endswith("results/toy/models/start_policy"), out
    assert new and new[1] == new[2] and new[2].strip("'").endswith("offline_dpo/iter1/policy"), out


def test_a_bad_config_key_stops_the_run_and_names_it(tmp_path):
    cfg = load(REPO / "config.yaml")
    cfg["defaults"]["alpha"]["methd"] = "exact"
    proc = snakemake("-n", cwd=workdir(tmp_path, cfg), check=False)
    assert proc.returncode != 0
    assert "methd" in proc.stdout + proc.stderr


def planned_paths(cwd: Path, *args: str) -> set[str]:
    """Every output, log and benchmark path of every job a forced dry run plans."""
    out = snakemake(*args, "-n", "--forceall", cwd=cwd).stdout
    paths = set()
    for line in out.splitlines():
        m = re.fullmatch(r"\s+(?:output|log|benchmark): (.+)", line)
        if m:
            paths.update(p.strip() for p in m[1].split(","))
    return paths


def test_the_toy_and_the_paper_config_share_no_output_path(tmp_path):
    """One clone holds the toy run and the paper's: no output, log or benchmark of either is
    the other's (so neither reuses nor overwrites the other's files); the paper's tables,
    figures and agreement run are under results/paper/ (its name)."""
    toy = planned_paths(workdir(tmp_path / "toy", load(REPO / "config.yaml")))
    paper = planned_paths(workdir(tmp_path / "paper", load(REPO / "config" / "paper.yaml")))
    assert len(toy) > 1000 and len(paper) > 1000
    assert {"results/tables/table1.md", "results/agreement/tuples.parquet"} <= toy
    assert {
        "results/paper/tables/table1.md",
        "results/paper/figures/figure1.png",
        "results/paper/agreement/tuples.parquet",
        "logs/paper/report/table1.log",
        "results/benchmarks/paper/agreement/train_reward_model.tsv",
    } <= paper
    assert toy & paper == set()


def test_a_named_toy_configuration_reads_and_writes_its_own_folder(tmp_path):
    """A named copy of the reduced toy config: its tables, figures, agreement run and claims
    table (which reads the agreement tuples) are under results/<name>/, none under results/."""
    cfg = load(REPO / ".test" / "config.yaml")
    cfg["name"] = "mytoy"
    wd = workdir(tmp_path, cfg)
    paths = planned_paths(wd)
    own = {p for p in paths if p.startswith(("results/mytoy/", "logs/mytoy/"))}
    assert {
        "results/mytoy/tables/claims.md",
        "results/mytoy/figures/figure1.png",
        "results/mytoy/agreement/tuples.parquet",
        "logs/mytoy/report/claims.log",
    } <= own
    assert not [p for p in paths if p.startswith(("results/tables/", "results/agreement/"))]
    out = snakemake("-n", "--forceall", "results/mytoy/tables/claims.md", cwd=wd).stdout
    job = out.split("rule claims:")[1].split("rule ")[0]
    assert "results/mytoy/agreement/tuples.parquet" in job, job


def test_a_configuration_named_as_an_experiment_is_refused(tmp_path):
    cfg = load(REPO / "config.yaml")
    cfg["name"] = "dice"
    proc = snakemake("-n", cwd=workdir(tmp_path, cfg), check=False)
    assert proc.returncode != 0
    assert "name: 'dice' is a reserved result folder, an experiment's" in proc.stdout + proc.stderr


def test_a_reserved_experiment_name_is_refused(tmp_path):
    cfg = load(REPO / "config.yaml")
    cfg["experiments"]["toy"] = {}
    proc = snakemake("-n", cwd=workdir(tmp_path, cfg), check=False)
    assert proc.returncode != 0
    assert "reserved" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """The reduced toy pipeline (.test/config.yaml), run once for real on CPU, as `make run`
    runs: under the fork server."""
    cwd = workdir(tmp_path_factory.mktemp("e2e"), load(REPO / ".test" / "config.yaml"))
    snakemake("--cores", "2", cwd=cwd, warm=True)
    return cwd


@pytest.mark.slow
def test_every_output_exists_with_its_schema(e2e):
    cfg = load(e2e / "config.yaml")
    r = e2e / "results"
    for t in (1, 2):
        d = r / "dice" / f"iter{t}"
        check_frame(pd.read_parquet(d / "samples.parquet"), "samples", d)
        scores = pd.read_parquet(d / "scores.parquet")
        check_frame(scores, "scores", d, finite=("reward", "logp_policy", "logp_ref"))
        assert scores["beta"].eq(cfg["defaults"]["train"]["beta"]).all()
        pairs = pd.read_parquet(d / "pairs.parquet")
        check_frame(pairs, "pairs", d)
        assert (pairs["chosen"] != pairs["rejected"]).any()
        mixed = pd.read_parquet(d / "mixed.parquet")
        check_frame(mixed, "mixed", d)
        n_offline = round(cfg["defaults"]["mix"]["gamma"] * cfg["defaults"]["mix"]["n_pairs"])
        assert len(mixed) == cfg["defaults"]["mix"]["n_pairs"]
        assert (mixed["source"] == "offline").sum() == n_offline
        alpha = json.loads((d / "alpha.json").read_text())
        lo, hi = cfg["defaults"]["alpha"]["bounds"]
        assert lo <= alpha["alpha"] <= hi
        assert alpha["objective"] <= alpha["objective_alpha0"]
        # Figure 4's landscape is a plot job's output: built only for the runs Figure 4 draws
        if (d / "landscape.parquet").exists():
            landscape = pd.read_parquet(d / "landscape.parquet")
            assert len(landscape) == cfg["report"]["figure4"]["points"]
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            assert (d / "policy" / f).is_file()
        assert not list((d / "policy").glob("_trainer")), "trainer scratch left in the output"
        metrics = json.loads((d / "train_metrics.json").read_text())
        assert "rewards/accuracies" in metrics["final"]
        assert len(metrics["log_history"]) >= 1
    models = [
        "base",
        "dice-iter1",
        "dice-iter2",
        "offline_dpo-iter1",
        "offline_dpo_rep2-iter1",  # its second replicate (replicates: 2)
        "judge-iter1",
        "dice_kto-iter1",
        "dice_gamma0-iter1",
        "rdpo_lambda002-iter1",
        "sera_dpo-iter0",  # its own pi_theta^(0) on the noisy D_offline (noise_fraction 0.2)
        "sera_dpo-iter1",  # SeRA (test_the_sera_runs_end_to_end checks its files)
        "sera_dpo-iter2",
        "robust_dpo-iter1",  # on sera_dpo's noisy D_offline, from its pi_theta^(0)
        "sera_simpo-iter1",
        "sera_dice_alpha-iter1",
    ]
    assert sorted(p.name for p in (r / "eval").iterdir()) == sorted(models)
    for model in models:
        m = json.loads((r / "eval" / model / "metrics.json").read_text())
        for key in ("win_rate", "lc_win_rate", "mean_len_model", "gold_quality", "arena_score"):
            assert 0 <= m[key] <= (100 if "rate" in key or "arena" in key else 1e6), (model, key)
        assert m["arena_ci_low"] <= m["arena_score"] <= m["arena_ci_high"], model
        for key in ("win_rate", "lc_win_rate", "mean_len_model", "gold_quality"):  # issue 13
            assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], (model, key)
    table = pd.read_csv(r / "tables" / "table1.csv")
    assert table.iloc[:, 0].tolist() == [
        "Base",
        "Offline DPO Iter 1",
        "LLM-as-a-Judge Iter 1",
        "DICE Iter 1",
        "DICE Iter 2",
    ]
    # the offline baseline trained on D_offline alone and sampled nothing
    offline = pd.read_parquet(r / "offline_dpo" / "iter1" / "mixed.parquet")
    assert (offline["source"] == "offline").all()
    assert len(offline) == cfg["defaults"]["mix"]["n_pairs"]
    assert not (r / "offline_dpo" / "iter1" / "shards").exists()
    # LLM-as-a-Judge: the policy's own 0-5 ratings of dice's shared iteration-1 samples
    judged = pd.read_parquet(r / "judge" / "iter1" / "scores.parquet")
    check_frame(judged, "judge_scores", "judge scores")
    rated = judged["reward"].dropna()
    assert ((rated >= 0) & (rated <= 5)).all() and len(rated) > 0
    assert not (r / "judge" / "iter1" / "shards" / "1-of-1" / "samples.parquet").exists()
    assert json.loads((r / "judge" / "iter1" / "alpha.json").read_text())["alpha"] == 0.0
    # KTO and length-regularised DPO trained through their own trainers on shared samples
    kto = json.loads((r / "dice_kto" / "iter1" / "train_metrics.json").read_text())
    assert any("kl" in k for k in kto["final"]), kto["final"]
    for exp in ("dice_kto", "dice_gamma0", "rdpo_lambda002"):
        assert not (r / exp / "iter1" / "shards").exists(), exp  # dice's samples and scores
    # every table and figure of the paper, and Table 5 from the iteration-1 tuples
    for name in (
        "table1",
        "table2",
        "table3",
        "table4",
        "table5",
        "table6",
        "table7",
        "table9",
        "table10",
        "paper_vs_reproduced",
    ):
        assert (r / "tables" / f"{name}.csv").is_file(), name
        assert "|" in (r / "tables" / f"{name}.md").read_text(), name
        assert r"\begin{tabular}" in (r / "tables" / f"{name}.tex").read_text(), name
    # the paper's claims, each with its verdict
    claims = pd.read_csv(r / "tables" / "claims.csv")
    assert len(claims) > 0 and set(claims["Verdict"]) <= {"holds", "reversed", "inconclusive"}
    # two seed sets (offline_dpo runs twice): no claim holds under one and is reversed under
    # the other (issue 13: the verdicts must not depend on the seed set)
    replicated = claims.dropna(subset=["Verdicts per replicate"])
    assert "DICE Iter 1 > Offline DPO Iter 1 on LC" in set(replicated["Claim"])
    for claim, verdicts in zip(replicated["Claim"], replicated["Verdicts per replicate"]):
        assert len(verdicts.split(", ")) == 2, (claim, verdicts)
        assert not cl.seed_dependent(verdicts), (claim, verdicts)
    agreement = json.loads((r / "agreement" / "agreement.json").read_text())
    assert set(agreement["rates"]) == {"IntlRM", "DPO Implicit Reward"}
    assert all(0 <= v <= 1 for v in agreement["rates"].values())
    # at most one tuple per prompt, from prompts with two different untruncated responses
    assert (
        0
        < agreement["n_tuples"]
        <= min(cfg["agreement"]["tuples"], cfg["world"]["n_train_prompts"])
    )
    tuples = pd.read_parquet(r / "agreement" / "tuples.parquet")
    assert len(tuples) == agreement["n_tuples"] and tuples["prompt_id"].is_unique
    assert (tuples["response_1"] != tuples["response_2"]).all()
    versus = pd.read_csv(r / "tables" / "paper_vs_reproduced.csv")
    assert {"paper", "reproduced"} <= set(versus.columns) and len(versus) > 0
    calibration = json.loads((r / "toy" / "agreement.json").read_text())
    assert 0 <= calibration["agreement"] <= 1
    for fig in ("figure1", "figure2", "figure3", "figure4", "figure5"):
        assert (r / "figures" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
        assert (r / "figures" / f"{fig}.pdf").read_bytes()[:4] == b"%PDF"
    assert (e2e / "logs" / "dice" / "iter1" / "train.log").stat().st_size > 0
    assert not list(r.rglob(".*.tmp-*")), "temporary files left behind"


@pytest.mark.slow
def test_the_sera_runs_end_to_end(e2e):
    """.test/config.yaml's SeRA runs on noisy D_offline (sera_dpo, robust_dpo, sera_simpo,
    sera_dice_alpha), from the one reduced run the fixture made."""
    config = load(e2e / "config.yaml")
    r = e2e / "results"
    offline = pd.read_parquet(r / "toy" / "data" / "offline.parquet")
    # the noisy copy: exactly round(0.2 N) labels swapped, as swap_labels draws them from the seed
    noisy = pd.read_parquet(r / "sera_dpo" / "data" / "offline_noisy.parquet")
    assert noisy["label_swapped"].sum() == round(0.2 * len(offline))
    pd.testing.assert_frame_equal(noisy, sera.swap_labels(offline, 0.2, config["seed"]))
    # pi_theta^(0) of the noisy run: DPO of the SFT model on the noisy pairs
    start = json.loads((r / "sera_dpo" / "iter0" / "train_metrics.json").read_text())
    assert "rewards/accuracies" in start["final"]
    assert (r / "sera_dpo" / "iter0" / "policy" / "model.safetensors").is_file()
    for t in (1, 2):
        d = r / "sera_dpo" / f"iter{t}"
        report = json.loads((d / "selection.json").read_text())
        n_off = round(0.7 * len(offline))
        assert (report["n_pairs"], report["n_selected"]) == (len(offline), n_off)
        assert report["ensemble"] is (t == 2)  # Eq. 7 once pi_theta^(t-2) exists
        assert report["label_swapped"]["n_bad"] == noisy["label_swapped"].sum()
        assert 0 <= report["label_swapped"]["recall"] <= 1
        selection = pd.read_parquet(d / "offline_selection.parquet")
        assert selection["selected"].sum() == n_off
        mixed = pd.read_parquet(d / "mixed.parquet")
        assert mixed["source"].value_counts().to_dict() == {
            "offline": n_off,
            "generated": len(offline) - n_off,
        }
        assert not reflogps.missing(mixed).any()  # trained with no ref_logps job
        # Eq. 7 for the bootstrapped pairs at iteration 2: the samples scored under
        # pi_theta^(0) against the SFT model too, each prompt paired by lambda-mixed rewards
        assert report["bootstrap_ensemble"] is (t == 2)
        assert (d / "scores_prev2.parquet").exists() is (t == 2)
        if t == 2:
            scores = pd.read_parquet(d / "scores.parquet")
            ensemble = sera.ensemble_rewards(
                scores, pd.read_parquet(d / "scores_prev2.parquet"), 0.3
            )
            boot = sera.bootstrap_pairs(
                ensemble, count=len(offline) - n_off, score="ensemble_reward"
            )
            generated = mixed[mixed["source"] == "generated"]
            assert set(zip(generated["prompt_id"], generated["chosen"], strict=True)) == set(
                zip(boot["prompt_id"], boot["chosen"], strict=True)
            )
        assert not (d / "train_pairs.parquet").exists()
        log = (e2e / "logs" / "sera_dpo" / f"iter{t}" / "train.log").read_text()
        assert "no reference model is loaded" in log
        metrics = json.loads((r / "eval" / f"sera_dpo-iter{t}" / "metrics.json").read_text())
        # evaluated like DICE's models, on the trained policy of this iteration
        assert 0 <= metrics["gold_quality"] <= 1 and metrics["policy"].endswith(f"iter{t}/policy")
    # the baseline: every row from the noisy copy, from the shared noisy pi_theta^(0), against it
    mixed = pd.read_parquet(r / "robust_dpo" / "iter1" / "mixed.parquet")
    assert (mixed["source"] == "offline").all()
    swapped = set(zip(noisy["prompt_id"], noisy["chosen"], strict=True))
    assert set(zip(mixed["prompt_id"], mixed["chosen"], strict=True)) <= swapped
    args = json.loads((r / "robust_dpo" / "iter1" / "train_args.json").read_text())
    assert (args["loss_type"], args["label_smoothing"]) == ("robust", 0.2)

    # SeRA-SimPO: D_offline selected and the samples paired by SimPO's reward (beta 2.0, no
    # reference), trained by CPOTrainer with no reference model
    d = r / "sera_simpo" / "iter1"
    report = json.loads((d / "selection.json").read_text())
    assert (report["reward"], report["bootstrap_reward"], report["beta"]) == ("simpo", "simpo", 2.0)
    # D_offline under the same noisy pi_theta^(0) and SFT model: sera_dpo's one scoring job
    assert not (d / "offline_logps.parquet").exists()
    assert not (r / "sera_dice_alpha" / "iter1" / "offline_logps.parquet").exists()
    assert not (r / "sera_simpo" / "data").exists()  # and its one noisy copy
    by_hand, _ = sera.select_offline(
        pd.read_parquet(r / "sera_dpo" / "iter1" / "offline_logps.parquet"),
        2.0,
        0.7,
        reward="simpo",
    )
    selection = pd.read_parquet(d / "offline_selection.parquet")
    assert selection["selected"].tolist() == by_hand["selected"].tolist()
    scores = sera.response_rewards(pd.read_parquet(d / "scores.parquet"), "simpo", 2.0)
    boot = sera.bootstrap_pairs(scores, count=report["n_generated"])
    mixed = pd.read_parquet(d / "mixed.parquet")
    generated = mixed[mixed["source"] == "generated"]
    assert set(zip(generated["prompt_id"], generated["chosen"], generated["rejected"])) == set(
        zip(boot["prompt_id"], boot["chosen"], boot["rejected"])
    )
    args = json.loads((d / "train_args.json").read_text())
    assert (args["loss_type"], args["cpo_alpha"], args["beta"]) == ("simpo", 0.0, 2.0)
    log = (e2e / "logs" / "sera_simpo" / "iter1" / "train.log").read_text()
    assert "reference model: none" in log
    assert "rewards/accuracies" in json.loads((d / "train_metrics.json").read_text())["final"]

    # SeRA at DICE's alpha*: its bootstrapped pairs are pairs of search_alpha's D(alpha*)
    d = r / "sera_dice_alpha" / "iter1"
    assert json.loads((d / "selection.json").read_text())["bootstrap"] == "dice_alpha"
    dice_pairs = pd.read_parquet(d / "pairs.parquet")
    mixed = pd.read_parquet(d / "mixed.parquet")
    generated = mixed[mixed["source"] == "generated"]
    assert len(generated) == len(offline) - round(0.7 * len(offline))
    assert set(zip(generated["prompt_id"], generated["chosen"], generated["rejected"])) <= set(
        zip(dice_pairs["prompt_id"], dice_pairs["chosen"], dice_pairs["rejected"])
    )
    assert not (r / "robust_dpo" / "iter0").exists()  # sera_dpo's start policy, trained once
    start = json.loads((r / "eval" / "sera_dpo-iter0" / "metrics.json").read_text())
    assert start["policy"].endswith("sera_dpo/iter0/policy")
    # the noise table: pi_theta^(0) and SeRA-DPO at 20% noise, its selection as selection.json
    table = pd.read_csv(r / "tables" / "sera_table_noise.csv").set_index("Method")
    first = json.loads((r / "sera_dpo" / "iter1" / "selection.json").read_text())
    row = table.loc["SeRA-DPO Iter 1"]
    assert (row["Noise (%)"], row["Swapped"]) == (20, noisy["label_swapped"].sum())
    assert row["Swap recall"] == pytest.approx(first["label_swapped"]["recall"], abs=1e-4)
    assert row["Gold-worse precision"] == pytest.approx(
        first["gold_worse_chosen"]["precision"], abs=1e-4
    )
    assert "[" in (r / "tables" / "sera_table_noise.md").read_text()  # value [low, high]
    rows = pd.read_csv(r / "tables" / "sera_table1.csv")["Method"].tolist()
    assert rows == ["DPO (pi_theta^(0))", "SeRA-DPO Iter 1", "SeRA-DPO Iter 2"]


@pytest.mark.slow
def test_an_immediate_rerun_has_nothing_to_do(e2e):
    proc = snakemake("-n", cwd=e2e)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_changing_a_plot_parameter_reruns_only_that_plot(e2e):
    cfg = load(e2e / "config.yaml")
    cfg["report"]["figure2"]["bins"] += 7
    (e2e / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert planned_jobs(e2e) == {"figure": 1, "all": 1}
    fig4 = (e2e / "results" / "figures" / "figure4.png").stat().st_mtime_ns
    snakemake("--cores", "1", cwd=e2e)
    assert (e2e / "results" / "figures" / "figure4.png").stat().st_mtime_ns == fig4
    assert "Nothing to be done" in snakemake("-n", cwd=e2e).stdout


@pytest.mark.slow
def test_the_report_is_one_html_page_of_the_paper(e2e, tmp_path):
    report = tmp_path / "report.html"
    proc = snakemake("--report", str(report), cwd=e2e)
    assert "ERROR/" not in proc.stdout + proc.stderr  # captions are valid reStructuredText
    html = report.read_text(errors="replace")
    for name in ("table1.md", "table9.md", "paper_vs_reproduced.md", "figure3.png"):
        assert name in html, name


@pytest.mark.slow
def test_a_deleted_figure_or_table_is_rebuilt_by_its_own_job_alone(e2e):
    for path in (
        "results/figures/figure3.png",
        "results/figures/figure3.pdf",
        "results/tables/table4.md",
    ):
        (e2e / path).unlink()
    assert planned_jobs(e2e) == {"figure": 1, "table": 1, "all": 1}
    snakemake("--cores", "1", cwd=e2e)
    assert (e2e / "results/figures/figure3.png").is_file()
    assert "Nothing to be done" in snakemake("-n", cwd=e2e).stdout


@pytest.mark.slow
def test_the_same_config_gives_the_same_files_with_and_without_the_warm_start(e2e):
    """The fixture's run went through the fork server; these reruns start each job afresh."""
    d = e2e / "results" / "dice" / "iter1"
    before = {
        f: pd.read_parquet(d / f)
        for f in ("samples.parquet", "scores.parquet", "pairs.parquet", "mixed.parquet")
    }
    rel = d.relative_to(e2e)
    snakemake(
        "--cores",
        "2",
        "--forcerun",
        "sample",
        "--",
        str(rel / "mixed.parquet"),
        str(rel / "samples.parquet"),
        cwd=e2e,
    )
    for f, df in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(d / f), df, check_exact=True, obj=f)
    metrics = json.loads((d / "train_metrics.json").read_text())
    snakemake("--cores", "2", "--forcerun", "train", "--", str(rel / "train_metrics.json"), cwd=e2e)
    again = json.loads((d / "train_metrics.json").read_text())
    losses = [e["loss"] for e in metrics["log_history"] if "loss" in e]
    assert losses == [e["loss"] for e in again["log_history"] if "loss" in e]
    shutil.rmtree(e2e / ".snakemake", ignore_errors=True)


@pytest.mark.slow
def test_three_shards_give_the_same_samples_and_scores_as_one(e2e, tmp_path):
    sharded = tmp_path / "sharded"
    shutil.copytree(e2e, sharded, symlinks=True)
    cfg = load(sharded / "config.yaml")
    assert cfg["sharding"]["shards"] == 1
    cfg["sharding"]["shards"] = 3
    (sharded / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # the gathered files do not depend on the shard count, so Snakemake keeps them: remove them
    # and what search_alpha made from them
    for f in (
        "samples.parquet",
        "scores.parquet",
        "shards",
        "pairs.parquet",
        "alpha.json",
        "landscape.parquet",
        "length_diffs.parquet",
    ):
        path = sharded / "results/dice/iter1" / f
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    targets = ["results/dice/iter1/pairs.parquet", "results/dice/iter1/samples.parquet"]
    jobs = planned_jobs(sharded, *targets)
    assert jobs == {
        "sample": 3,
        "score": 3,
        "gather_shards": 1,
        "gather_samples": 1,
        "search_alpha": 1,
    }, jobs
    snakemake("--cores", "2", *targets, cwd=sharded, warm=True)

    def both(f):
        return (
            pd.read_parquet(sharded / "results/dice/iter1" / f),
            pd.read_parquet(e2e / "results/dice/iter1" / f),
        )

    # samples are bit-identical (per-prompt seeds); log-probs agree to float rounding, since a
    # shard's token-budget batches pad to other widths (the matmuls' summation order changes)
    pd.testing.assert_frame_equal(*both("samples.parquet"), check_exact=True)
    pd.testing.assert_frame_equal(*both("scores.parquet"), check_exact=False, rtol=1e-5, atol=1e-4)
    # and the preference pairs D(alpha*) built from them are the same pairs
    three, one = both("pairs.parquet")
    text = ["prompt_id", "chosen", "rejected", "chosen_sample_idx", "rejected_sample_idx"]
    pd.testing.assert_frame_equal(three[text], one[text], check_exact=True)
    assert abs(three["alpha"].iloc[0] - one["alpha"].iloc[0]) < 1e-6
    assert len(list((sharded / "results/dice/iter1/shards").iterdir())) == 3


def test_hub_models_are_downloaded_by_their_own_rule_and_the_dry_run_is_offline(tmp_path):
    cfg = load(REPO / "config.yaml")
    cfg["base"]["policy"] = "hf://HuggingFaceH4/zephyr-7b-beta"
    cfg["base"]["reference"] = "hf://HuggingFaceH4/mistral-7b-sft-beta"
    jobs = planned_jobs(workdir(tmp_path, cfg))
    assert jobs["download_model"] == 2
    assert "toy_start_policy" not in jobs and "toy_sft" not in jobs


@pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="the Slurm executor plugin is not installed",
)
def test_the_slurm_profile_is_found_by_its_short_name_from_the_repo_root(tmp_path):
    """`snakemake --profile slurm` typed in the repo root loads profiles/slurm (a dry run:
    nothing is submitted; tests/test_slurm.py submits for real)."""
    cfg = load(REPO / "config.yaml")
    wd = workdir(tmp_path, cfg)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [*SNAKEMAKE, "--profile", "slurm", "-s", "Snakefile", "-d", str(wd), "-n"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "rule train:" in out
    assert "slurm_partition=gpu" in out and "slurm_account=my_account" in out  # the profile's
