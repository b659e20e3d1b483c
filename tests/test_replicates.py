"""Replicates (issue 13): ``replicates: R`` runs an experiment R times with the world and the
start models fixed and the run seeds varied; the replicates table and the claims table set
the runs side by side with an interval across them."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from dicewf import config as cfg
from dicewf import paper, report
from dicewf import uncertainty as u
from dicewf.paper import claims as cl
from dicewf.seeds import derive_seed
from scipy.stats import t as student
from test_uncertainty import judgements, toy_layout, validated
from test_workflow import planned_jobs, snakemake, workdir

REPO = Path(__file__).resolve().parents[1]
TOY = yaml.safe_load((REPO / "config.yaml").read_text())
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())

EXPERIMENTS = {
    "offline_dpo": {"reference": "fixed", "mix": {"gamma": 1.0}, "replicates": 3},
    "offline_dpo_newref": {"mix": {"gamma": 1.0}, "replicates": 3},
    "dice": {"replicates": 2},
    "judge": {"score": {"method": "judge"}, "iterations": 1},
}


def toy(experiments=EXPERIMENTS, **top) -> dict:
    return validated(TOY | {"experiments": copy.deepcopy(experiments)} | top)


# --- configuration: names, seeds, sharing --------------------------------------------------------


def test_replicates_run_under_their_own_names_after_the_first():
    config = toy()
    assert list(cfg.expanded(config)) == [
        "offline_dpo",
        "offline_dpo_rep2",
        "offline_dpo_rep3",
        "offline_dpo_newref",
        "offline_dpo_newref_rep2",
        "offline_dpo_newref_rep3",
        "dice",
        "dice_rep2",
        "judge",
    ]
    assert cfg.replicates(config)["dice_rep2"] == ("dice", 2)
    assert cfg.replicates(config)["judge"] == ("judge", 1)
    assert cfg.experiment(config, "dice_rep2") == cfg.experiment(config, "dice")
    assert "replicates" not in cfg.experiment(config, "dice")


def test_each_replicate_has_a_distinct_seed_recorded_in_its_config():
    config = toy()
    seeds = {name: cfg.run_seed(config, name) for name in cfg.expanded(config)}
    assert seeds["offline_dpo"] == seeds["dice"] == seeds["judge"] == config["seed"]
    assert seeds["offline_dpo_rep2"] == seeds["dice_rep2"] == derive_seed(0, "replicate", 2)
    assert len({seeds["dice"], seeds["dice_rep2"], seeds["offline_dpo_rep3"]}) == 3
    got = cfg.resolved(config, "offline_dpo_rep3")
    assert got["seed"] == derive_seed(0, "replicate", 3)
    assert got["replicate"] == {"of": "offline_dpo", "number": 3}
    assert cfg.resolved(config, "dice")["replicate"] == {"of": "dice", "number": 1}
    with pytest.raises(KeyError, match="no experiment named 'dice_rep9'"):
        cfg.run_seed(config, "dice_rep9")


def test_the_first_replicate_is_the_run_without_replicates():
    """Adding replicates reruns nothing that exists: every key of the first replicate is the
    key of the same experiment configured once."""
    once = toy(
        {k: {x: v for x, v in b.items() if x != "replicates"} for k, b in EXPERIMENTS.items()}
    )
    keys, keys_once = cfg.keys(toy()), cfg.keys(once)
    assert {k: v for k, v in keys.items() if k in keys_once} == keys_once


def test_replicates_sample_anew_and_share_only_what_equal_seeds_make_equal():
    owners = cfg.owners(toy())
    # each DICE replicate samples its own responses from the same start policy
    # (the first experiment of equal start policy, sampling and seed)
    assert owners["dice_rep2", 1].samples == "offline_dpo_rep2"
    assert owners["dice", 1].samples == owners["judge", 1].samples == "offline_dpo"
    assert owners["dice_rep2", 1].scores != owners["dice", 1].scores
    # Offline DPO and Offline DPO (w/ new ref) Iter 1 are one run per replicate seed
    for r in ("", "_rep2", "_rep3"):
        assert owners[f"offline_dpo_newref{r}", 1].run == f"offline_dpo{r}"
        assert owners[f"offline_dpo_newref{r}", 2].run == f"offline_dpo_newref{r}"
    assert owners["offline_dpo_rep2", 1].run != owners["offline_dpo", 1].run


def test_replicates_come_from_defaults_a_setting_or_the_experiment():
    config = toy(
        {"dice": {}, "judge": {"replicates": 1}}, defaults=TOY["defaults"] | {"replicates": 2}
    )
    assert list(cfg.expanded(config)) == ["dice", "dice_rep2", "judge"]
    paper_cfg = copy.deepcopy(PAPER)
    paper_cfg["settings"]["llama3"].setdefault("defaults", {})["replicates"] = 2
    paper_cfg["experiments"] = {"dice": {}}
    want = [f"{s}_dice" for s in PAPER["settings"]]
    want.insert(want.index("llama3_dice") + 1, "llama3_dice_rep2")
    assert list(cfg.expanded(validated(paper_cfg))) == want


def test_a_replicate_name_taken_by_another_experiment_is_refused():
    for experiments in (
        {"dice": {"replicates": 2}, "dice_rep2": {}},
        {"dice_rep2": {}, "dice": {"replicates": 2}},
    ):
        with pytest.raises(
            ValueError, match="experiments.dice.replicates: replicate 2 would run as 'dice_rep2'"
        ):
            cfg.expanded(toy(experiments))


def test_the_schema_refuses_zero_replicates():
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError, match="replicates"):
        toy({"dice": {"replicates": 0}})


@pytest.mark.slow  # starts Snakemake (two dry runs)
def test_the_dag_runs_each_replicate_with_its_seed(tmp_path):
    """Dry run: each replicate samples, scores, mixes, trains and is evaluated once, and its
    train job gets its own seed; the replicates table is a target."""
    config = copy.deepcopy(TOY)
    config["experiments"] = {"dice": {"iterations": 1, "replicates": 2}}
    cwd = workdir(tmp_path, config)
    jobs = planned_jobs(cwd)
    for rule in ("sample", "score", "search_alpha", "mix", "train"):
        assert jobs[rule] == 2, (rule, jobs)
    assert jobs["eval"] == 3  # base, dice-iter1, dice_rep2-iter1
    out = snakemake("-n", "-p", "results/tables/replicates.md", cwd=cwd).stdout
    seeds = sorted(int(s) for s in re.findall(r"train_launch\.py .* --seed (\d+)", out))
    assert seeds == sorted([config["seed"], derive_seed(config["seed"], "replicate", 2)])
    assert "results/dice_rep2/iter1/policy" in out


# --- the interval across replicates ------------------------------------------------------------


def test_the_interval_across_replicates_is_students_t():
    mean, low, high = u.across_replicates([1.0, 2.0, 3.0], 0.95)
    half = student.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert u.across_replicates([5.0, 5.0], 0.9) == (5.0, 5.0, 5.0)
    assert all(math.isnan(x) for x in u.across_replicates([4.0], 0.95)[1:])
    assert math.isnan(u.across_replicates([1.0, math.nan], 0.95)[1])
    with pytest.raises(ValueError, match="no replicates"):
        u.across_replicates([], 0.95)
    with pytest.raises(ValueError, match="level must be in"):
        u.across_replicates([1.0, 2.0], 1.0)


def test_the_interval_across_replicates_covers_a_planted_mean_about_as_often_as_its_level():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        _, low, high = u.across_replicates(rng.normal(7.0, 2.0, 3), 0.9)
        covered += low <= 7.0 <= high
    assert 0.88 <= covered / 2000 <= 0.92


# --- the replicates table and the claims table -------------------------------------------------


def metrics(lc, wr=50.0, width=2.0) -> dict:
    return {
        "lc_win_rate": lc,
        "lc_win_rate_ci_low": lc - width,
        "lc_win_rate_ci_high": lc + width,
        "win_rate": wr,
        "win_rate_ci_low": wr - width,
        "win_rate_ci_high": wr + width,
    }


def test_the_layout_keeps_the_first_replicate_in_the_papers_tables():
    layout = toy_layout(EXPERIMENTS)
    assert list(layout.runs) == ["offline_dpo", "offline_dpo_newref", "dice", "judge"]
    seed2, seed3 = (derive_seed(0, "replicate", r) for r in (2, 3))
    assert layout.replicates["dice"] == [["dice", 0], ["dice_rep2", seed2]]
    assert layout.replicates["offline_dpo"][2] == ["offline_dpo_rep3", seed3]
    assert "judge" not in layout.replicates
    assert layout.replicas("dice-iter2") == ["dice-iter2", "dice_rep2-iter2"]
    assert layout.replicas("judge-iter1") == ["judge-iter1"]
    assert layout.replicas("base") == ["base"]
    assert paper.Layout.from_dict(json.loads(json.dumps(layout.to_dict()))) == layout
    table1 = paper.needs("table1", layout)["models"]
    assert "dice-iter1" in table1 and not any("_rep" in m for m in table1)


def test_figures_draw_each_later_replicate_as_a_dot_on_its_bar_or_point(tmp_path):
    """Figure 1's bars and Figures 3/5's points show replicate 1 with its interval over the
    prompts; the later replicates' LC is drawn as dots at the same x, and the figure's job
    needs their evaluations."""
    import pandas as pd
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_rgb

    layout = toy_layout(EXPERIMENTS)
    bars = paper.layout.figure1_bars(layout)
    needed = paper.needs("figure1", layout)["models"]
    dice = next(m for _, label, m, _ in bars if m.startswith("dice-"))
    t = dice.split("-iter")[1]
    assert {f"dice_rep2-iter{t}", f"offline_dpo_rep3-iter{min(int(t), 2)}"} <= set(needed)
    got = {m: metrics(10.0 + i) for i, m in enumerate(needed)}
    data = paper.figure1_data(layout, got)
    row = data.set_index("model").loc[dice]
    assert row["lc"] == got[dice]["lc_win_rate"]
    assert row["replicate_lc"] == (got[f"dice_rep2-iter{t}"]["lc_win_rate"],)
    assert data.set_index("model").loc["base", "replicate_lc"] == ()
    fig = report.figure1(data, tmp_path / "f1.png")
    dots = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    drawn = [y for c in dots for _, y in c.get_offsets().tolist()]
    assert len(drawn) == 3  # dice's second replicate, offline_dpo's second and third
    assert sorted(drawn) == sorted(v for r in data["replicate_lc"] for v in r)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels.count("other replicates") == 1
    # Figures 3 and 5: the dots in the line's colour
    sweep = pd.DataFrame(
        {"gamma": [0.0, 0.5], "iteration": [1, 1], "lc": [3.0, 5.0], "lc_low": [2.0, 4.0]}
        | {"lc_high": [4.0, 6.0], "replicate_lc": [(2.5, 3.5), ()]}
    )
    fig = report.figure3(sweep, tmp_path / "f3.png")
    (dots,) = [c for c in fig.axes[0].collections if c.get_label() == "Iter 1, other replicates"]
    assert dots.get_offsets().tolist() == [[0.0, 2.5], [0.0, 3.5]]
    line = fig.axes[0].lines[0]
    assert tuple(dots.get_facecolor()[0][:3]) == pytest.approx(to_rgb(line.get_color()))


def test_the_replicates_table_gives_each_run_and_the_mean_across_runs(tmp_path):
    layout = toy_layout({"dice": {"replicates": 3, "iterations": 1}, "judge": {"iterations": 1}})
    models = paper.needs("replicates", layout)["models"]
    assert models == ["dice-iter1", "dice_rep2-iter1", "dice_rep3-iter1"]
    got = {
        "dice-iter1": metrics(4.0),
        "dice_rep2-iter1": metrics(6.0),
        "dice_rep3-iter1": metrics(8.0),
    }
    df = paper.build_table("replicates", layout, got)
    assert df["Replicate"].tolist() == ["1", "2", "3", "mean of 3"]
    assert df["Interval"].tolist() == ["prompts"] * 3 + ["replicates"]
    assert df["Seed"].tolist()[:3] == [
        0,
        derive_seed(0, "replicate", 2),
        derive_seed(0, "replicate", 3),
    ]
    assert df["LC"].tolist() == [4.0, 6.0, 8.0, 6.0]
    assert df["LC low"].tolist()[:3] == [2.0, 4.0, 6.0]
    half = student.ppf(0.975, 2) * 2.0 / math.sqrt(3)
    assert (df["LC low"].iloc[3], df["LC high"].iloc[3]) == pytest.approx((6 - half, 6 + half))
    assert "Gold" not in df.columns  # no row has it
    report.write_table(
        df, tmp_path / "r.csv", tmp_path / "r.md", caption="c", tex=tmp_path / "r.tex"
    )
    assert "| dice | 1 | mean of 3 |" in (tmp_path / "r.md").read_text()
    # no replicated experiment: the header alone
    assert len(paper.build_table("replicates", toy_layout({"dice": {}}), {})) == 0


def test_the_claims_table_judges_each_claim_across_replicates_too():
    """DICE Iter 1 against the base in three replicates: above it in every replicate (holds
    across), and DICE Iter 2 against Iter 1 above in one replicate, below in the others
    (inconclusive across)."""
    layout = toy_layout({"dice": {"replicates": 3}}, agreement=False)
    n = 100
    hard = np.random.default_rng(0).uniform(0, 0.3, n)

    def model(shift, seed):
        noise = np.random.default_rng(seed).normal(0, 0.05, n)
        return judgements(np.clip(hard + shift + noise, 0, 1), seed=seed)

    frames = {"base": model(0.0, 1)}
    for r, (first, second) in enumerate([(0.3, 0.4), (0.25, 0.15), (0.35, 0.25)], 1):
        name = "dice" if r == 1 else f"dice_rep{r}"
        frames[f"{name}-iter1"], frames[f"{name}-iter2"] = (
            model(first, 10 + r),
            model(second, 20 + r),
        )
    assert set(cl.needs(layout)["judgements"]) == set(frames)
    pairs = cl.replicate_pairs(cl.plans(layout)[0], layout)
    assert pairs == [
        ("dice-iter1", "base"),
        ("dice_rep2-iter1", "base"),
        ("dice_rep3-iter1", "base"),
    ]
    df = cl.build(layout, frames, None, l2=1e-4, n_bootstrap=200, level=0.95, seed=0).set_index(
        "Claim"
    )
    wr = df.loc["DICE Iter 1 > Base on WR"]
    assert wr["Replicates"] == 3 and wr[f"Verdict {cl.ACROSS}"] == u.HOLDS
    effects = [100 * (frames[a].preference.mean() - frames[b].preference.mean()) for a, b in pairs]
    assert wr[cl.ACROSS] == pytest.approx(np.mean(effects))
    assert wr["Verdict"] == u.HOLDS  # the first replicate's paired bootstrap, as without replicates
    second = df.loc["DICE Iter 2 > DICE Iter 1 on LC"]
    assert second["Verdict"] == u.HOLDS  # replicate 1 alone would say it holds
    assert second[f"Verdict {cl.ACROSS}"] == u.INCONCLUSIVE
    # each replicate's own verdict: the second claim's depends on the seed set, the first's not
    assert wr[cl.PER_REPLICATE] == "holds, holds, holds"
    assert second[cl.PER_REPLICATE] == "holds, reversed, reversed"
    assert cl.seed_dependent(second[cl.PER_REPLICATE])
    assert not cl.seed_dependent(wr[cl.PER_REPLICATE])
    assert not cl.seed_dependent("inconclusive, holds, inconclusive")
    # reversed: Iter 2 below Iter 1 in every replicate
    for r in (1, 2, 3):
        name = "dice" if r == 1 else f"dice_rep{r}"
        frames[f"{name}-iter2"] = model(0.0, 30 + r)
    df = cl.build(layout, frames, None, l2=1e-4, n_bootstrap=200, level=0.95, seed=0).set_index(
        "Claim"
    )
    assert df.loc["DICE Iter 2 > DICE Iter 1 on LC", f"Verdict {cl.ACROSS}"] == u.REVERSED
    # without replicates the columns are left out
    single = {k: v for k, v in frames.items() if "_rep" not in k}
    plain = cl.build(
        toy_layout({"dice": {}}, agreement=False),
        single,
        None,
        l2=1e-4,
        n_bootstrap=50,
        level=0.95,
        seed=0,
    )
    assert list(plain.columns) == cl.COLUMNS
