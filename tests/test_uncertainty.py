"""Intervals over the evaluation prompts (dicewf.uncertainty), in the tables and the claims
table (dicewf.paper.claims)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dicewf import paper, report, toyeval
from dicewf import toyworld as tw
from dicewf import uncertainty as u
from dicewf.lcwinrate import win_rates
from dicewf.paper import claims as cl

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
TOY_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def validated(config: dict) -> dict:
    from snakemake.utils import validate

    config = json.loads(json.dumps(config))
    validate(config, str(SCHEMA))
    return config


def judgements(preference, quality=None, len_model=None, seed=0, ids=None) -> pd.DataFrame:
    """A judgement table (the toy eval's columns) with lengths independent of the outcome."""
    rng = np.random.default_rng(seed)
    p = np.asarray(preference, dtype=float)
    n = len(p)
    return pd.DataFrame(
        {
            "prompt_id": ids if ids is not None else [f"eval-{i:05d}" for i in range(n)],
            "preference": p,
            "len_model": len_model if len_model is not None else rng.integers(20, 80, n),
            "len_baseline": rng.integers(20, 80, n),
            "quality": p if quality is None else quality,
        }
    )


# --- the bootstrap on data with a known answer -------------------------------------------------


def test_the_interval_covers_a_planted_win_rate_about_as_often_as_its_level():
    # 200 simulated evaluations of 100 prompts whose true win rate is 30%: the 95% interval
    # covers 30 in roughly 95% of them
    rng = np.random.default_rng(1)
    stat, covered = u.statistic("win_rate"), 0
    for i in range(200):
        frame = judgements(rng.binomial(1, 0.3, 100).astype(float), seed=i)
        got = u.interval(frame, stat, n_bootstrap=300, level=0.95, seed=i)
        covered += got.low <= 30.0 <= got.high
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_the_lc_interval_covers_a_planted_lc_win_rate():
    # the length does not move the judge here, so the true LC win rate is the win rate, 40%
    rng = np.random.default_rng(2)
    stat, covered = u.statistic("lc_win_rate"), 0
    for i in range(100):
        frame = judgements(rng.binomial(1, 0.4, 100).astype(float), seed=i)
        got = u.interval(frame, stat, n_bootstrap=200, level=0.95, seed=i)
        covered += got.low <= 40.0 <= got.high
    assert 0.88 <= covered / 100 <= 1.0, covered


def test_lc_win_rates_refit_the_lcwinrate_glm_on_every_resample():
    rng = np.random.default_rng(3)
    n = 40
    p = np.clip(rng.beta(0.5, 2, n), 0, 1)
    lm, lb, d = rng.integers(5, 300, n), rng.integers(5, 300, n), rng.normal(size=n)
    idx = u.resample_indices(n, 25, seed=0)
    got = u.lc_win_rates(p[idx], lm[idx], lb[idx], l2=1e-3)
    want = [win_rates(p[i], lm[i], lb[i], l2=1e-3).lc_win_rate for i in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # with a difficulty feature, and a resample whose length differences are all equal
    # (no length feature: phi held at 0)
    flat = np.array([3, 3, 3, 3])
    rows = np.vstack([idx[:, :4], flat])
    got = u.lc_win_rates(p[rows], lm[rows], lb[rows], d[rows], l2=1e-3)
    want = [win_rates(p[i], lm[i], lb[i], d[i], l2=1e-3).lc_win_rate for i in rows]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


# --- paired differences and verdicts -----------------------------------------------------------


def paired_models(effect: float, seed: int = 0, n: int = 100):
    """Two models on the same prompts: the prompts' difficulty dominates both models' gold
    quality, and model a is ``effect`` better on every prompt (plus small noise)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0, 1, n)
    b = np.clip(difficulty + rng.normal(0, 0.02, n), 0, None)
    a = np.clip(difficulty + effect + rng.normal(0, 0.02, n), 0, None)
    return judgements(a, quality=a, seed=1), judgements(b, quality=b, seed=2)


def test_the_paired_bootstrap_finds_a_planted_effect_and_none_where_there_is_none():
    stat = u.statistic("gold_quality")
    boot = {"n_bootstrap": 500, "level": 0.95, "seed": 0}
    a, b = paired_models(effect=0.02)
    got = u.paired_difference(a, b, stat, **boot)
    assert got.low > 0 and u.verdict(got.low, got.high, +1) == u.HOLDS
    assert u.verdict(got.low, got.high, -1) == u.REVERSED
    # unpaired, the prompts' spread (difficulty) swamps the effect: the pairing is what finds it
    alone = [u.interval(f, stat, **boot) for f in (a, b)]
    assert alone[0].low < alone[1].high
    a, b = paired_models(effect=0.0)
    got = u.paired_difference(a, b, stat, **boot)
    assert got.low < 0 < got.high and u.verdict(got.low, got.high, +1) == u.INCONCLUSIVE


def test_the_paired_bootstrap_pairs_prompts_by_id_and_refuses_different_prompts():
    a, b = paired_models(effect=0.05)
    stat, boot = u.statistic("win_rate"), {"n_bootstrap": 200, "level": 0.9, "seed": 4}
    shuffled = b.sample(frac=1.0, random_state=0)
    assert u.paired_difference(a, shuffled, stat, **boot) == u.paired_difference(a, b, stat, **boot)
    other = b.assign(prompt_id=[f"other-{i}" for i in range(len(b))])
    with pytest.raises(ValueError, match=r"b\.parquet and a\.parquet: not the same prompts"):
        u.paired_difference(a, other, stat, sources=("a.parquet", "b.parquet"), **boot)
    with pytest.raises(KeyError, match=r"b\.parquet: column\(s\) \['quality'\] missing"):
        u.paired_difference(
            a, b.drop(columns="quality"), u.statistic("gold_quality"),
            sources=("a.parquet", "b.parquet"), **boot,
        )  # fmt: skip


def test_a_point_estimate_alone_resamples_nothing():
    """PairedBootstrap.point: the statistic on the prompts as they are (B = 1), equal to the
    point of values(), whose resamples it neither computes nor needs (it reuses them)."""
    a, b = paired_models(effect=0.05)
    stat = u.statistic("win_rate")
    rows = []
    spy = u.Statistic(stat.name, stat.columns, lambda cols: rows.append(
        len(next(iter(cols.values())))) or stat.fn(cols))  # fmt: skip
    boot = u.PairedBootstrap(n_bootstrap=300, level=0.9, seed=4)
    point = boot.point(a, spy, "a")
    assert rows == [1]  # one row: no resample
    assert point == u.PairedBootstrap(n_bootstrap=300, level=0.9, seed=4).values(a, stat, "a")[0]
    boot.values(b, spy, "b")
    assert rows == [1, 1, 300]
    assert boot.point(b.iloc[::-1], spy, "b") == boot.values(b, spy, "b")[0]  # cached, aligned
    assert rows == [1, 1, 300]


@pytest.mark.parametrize(
    ("low", "high", "sign", "want"),
    [
        (0.5, 2.0, 1, u.HOLDS),
        (-2.0, -0.5, 1, u.REVERSED),
        (-0.5, 2.0, 1, u.INCONCLUSIVE),
        (-2.0, -0.5, -1, u.HOLDS),
        (0.5, 2.0, -1, u.REVERSED),
        (-0.5, 2.0, -1, u.INCONCLUSIVE),
        (0.0, 2.0, 1, u.INCONCLUSIVE),  # touching 0 does not exclude it
        (float("nan"), 2.0, 1, u.INCONCLUSIVE),
    ],
)
def test_verdicts_from_an_interval_and_the_claimed_sign(low, high, sign, want):
    assert u.verdict(low, high, sign) == want


def test_a_bound_within_the_tolerance_counts_as_zero_and_bad_arguments_are_refused():
    assert u.verdict(1e-6, 8.0, 1) == u.HOLDS
    assert u.verdict(1e-6, 8.0, 1, tol=1e-3) == u.INCONCLUSIVE
    with pytest.raises(ValueError, match="sign"):
        u.verdict(0.1, 0.2, 0)
    with pytest.raises(ValueError, match="swapped"):
        u.verdict(0.2, 0.1, 1)
    with pytest.raises(ValueError, match="level"):
        u.interval(judgements([0.5, 1.0]), u.statistic("win_rate"), n_bootstrap=5, level=95, seed=0)


def test_the_schema_holds_the_interval_defaults_and_refuses_a_level_outside_0_1():
    from snakemake.exceptions import WorkflowError

    assert validated(TOY_CONFIG)["eval"]["intervals"] == {"n_bootstrap": 1000, "level": 0.95}
    bad = TOY_CONFIG | {"eval": TOY_CONFIG["eval"] | {"intervals": {"level": 95}}}
    with pytest.raises(WorkflowError, match=r"\['intervals'\]\['properties'\]\['level'\]"):
        validated(bad)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    frame = judgements(np.random.default_rng(5).uniform(0, 1, 60))
    stat = u.statistic("lc_win_rate")
    runs = [u.interval(frame, stat, n_bootstrap=200, level=0.95, seed=s) for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert (runs[0].low, runs[0].high) != (runs[2].low, runs[2].high)
    assert runs[0].estimate == pytest.approx(
        win_rates(frame.preference, frame.len_model, frame.len_baseline).lc_win_rate
    )


# --- the toy eval writes the intervals; the tables and figures show them ------------------------


def test_the_toy_eval_writes_each_metrics_interval():
    prompts = tw.build_world(
        tw.WorldSpec(n_train_prompts=5, n_eval_prompts=30, n_agreement_pairs=2)
    )["eval_prompts"]
    tasks = tw.tasks_from_frame(prompts)
    rng = np.random.default_rng(0)
    samples = pd.DataFrame(
        {
            "prompt_id": prompts["prompt_id"],
            "response": [
                tw.render(tasks[p], tasks[p].answer if i % 3 else tw.wrong_answer(tasks[p], rng), s)
                for i, (p, s) in enumerate(zip(prompts["prompt_id"], ["chatty", "concise"] * 15))
            ],
            "finish_reason": ["stop"] * 30,
        }
    )
    intervals = {"n_bootstrap": 100, "level": 0.9, "seed": 3}
    _, judged, metrics = toyeval.evaluate(
        prompts, samples, tw.JudgeSpec(), l2=1e-4, n_bootstrap=10, seed=3, policy="p",
        intervals=intervals,
    )  # fmt: skip
    for key in u.STATISTICS:
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
    assert metrics["lc_win_rate_ci_high"] > metrics["lc_win_rate_ci_low"]
    assert (metrics["ci_level"], metrics["ci_n_bootstrap"], metrics["ci_seed"]) == (0.9, 100, 3)
    assert (
        metrics["win_rate_ci_low"]
        == u.interval(judged, u.statistic("win_rate"), n_bootstrap=100, level=0.9, seed=3).low
    )


def toy_layout(experiments: dict, agreement: bool = True) -> paper.Layout:
    config = validated(TOY_CONFIG | {"experiments": experiments})
    if not agreement:  # as a config without Table 5 reads once validated
        del config["agreement"]
    return paper.Layout.from_config(config)


EXPERIMENTS = {
    "offline_dpo": {"reference": "fixed", "mix": {"gamma": 1.0}},
    "dice": {},
}


def test_table1_prints_value_and_interval_and_the_csv_keeps_the_bounds(tmp_path):
    layout = toy_layout(EXPERIMENTS)
    models = paper.needs("table1", layout)["models"]
    metrics = {
        m: {
            "lc_win_rate": 10.0 + i,
            "lc_win_rate_ci_low": 4.0 + i,
            "lc_win_rate_ci_high": 17.5 + i,
            "win_rate": 20.0,
            "mean_len_model": 60.0,
            "gold_quality": 0.25,
        }
        for i, m in enumerate(models)
    }
    df = paper.build_table("table1", layout, metrics)
    assert list(df.columns) == ["Method", "LC", "LC low", "LC high", "WR", "Len", "Gold"]
    report.write_table(df, tmp_path / "t.csv", tmp_path / "t.md", tex=tmp_path / "t.tex")
    md = (tmp_path / "t.md").read_text().splitlines()
    assert md[0] == "| Method | LC | WR | Len | Gold |"
    assert md[2] == "| Base | 10.00 [4.00, 17.50] | 20.00 | 60 | 0.250 |"
    assert "Base & 10.00 [4.00, 17.50] & 20.00" in (tmp_path / "t.tex").read_text()
    back = pd.read_csv(tmp_path / "t.csv")
    assert back.loc[0, ["LC", "LC low", "LC high"]].tolist() == [10.0, 4.0, 17.5]
    data = paper.figure1_data(layout, metrics)
    assert data[["lc", "lc_low", "lc_high"]].iloc[0].tolist() == [10.0, 4.0, 17.5]


def test_figures_1_and_3_draw_the_intervals_as_error_bars(tmp_path):
    bars = pd.DataFrame(
        {"setting": ["", ""], "method": ["Base", "DICE"], "lc": [6.0, 8.0]}
        | {"lc_low": [1.0, 7.0], "lc_high": [15.0, 9.5]}
    )
    fig = report.figure1(bars, tmp_path / "f1.png")
    drawn = [c for c in fig.axes[0].containers if getattr(c, "errorbar", None) is not None]
    segments = [seg for c in drawn for seg in c.errorbar.lines[2][0].get_segments()]
    assert sorted((s[0][1], s[1][1]) for s in segments) == [(1.0, 15.0), (7.0, 9.5)]
    sweep = pd.DataFrame(
        {"gamma": [0.0, 0.5, 1.0], "iteration": [1, 1, 1], "lc": [3.0, 5.0, 2.0]}
        | {"lc_low": [1.0, 4.0, 0.0], "lc_high": [4.0, 9.0, 2.5]}
    )
    fig = report.figure3(sweep, tmp_path / "f3.png")
    (bars_drawn,) = [c for c in fig.axes[0].containers if c.has_yerr]
    segments = bars_drawn.lines[2][0].get_segments()
    assert sorted((s[0][1], s[1][1]) for s in segments) == [(0.0, 2.5), (1.0, 4.0), (4.0, 9.0)]


# --- the claims table ---------------------------------------------------------------------------


def test_the_claims_and_the_statistics_agree():
    assert cl.STATISTICS == u.STATISTICS
    assert {c.kind for c in cl.CLAIMS} == set(cl.KINDS)


def test_a_bad_claim_is_named_with_its_file_and_key(tmp_path):
    bad = tmp_path / "claims.yaml"
    entry = {"claim": "x", "table": "table1", "kind": "difference", "metric": "lc_win_rate"}
    entry |= {"a": ["dice", 1], "b": [None, 0], "sign": 1}
    cases = [
        ({"kind": "ratio"}, "claims\\[0\\] \\('x'\\): kind 'ratio'"),
        ({"metric": "lc"}, "claims\\[0\\] \\('x'\\): metric 'lc'"),
        ({"sign": 2}, "sign must be 1 or -1"),
        ({"a": ["dice"]}, "a must be \\[experiment or null, iteration\\]"),
        ({"colour": 1}, "unknown key\\(s\\) \\['colour'\\]"),
    ]
    for change, message in cases:
        bad.write_text(yaml.safe_dump({"claims": [entry | change]}))
        with pytest.raises(ValueError, match=message):
            cl.load_claims(bad)
    bad.write_text(yaml.safe_dump({"claims": [{k: v for k, v in entry.items() if k != "sign"}]}))
    with pytest.raises(ValueError, match=f"{bad}: claims\\[0\\]: key 'sign' missing"):
        cl.load_claims(bad)


def test_seras_claims_compare_its_runs_with_their_baselines_on_the_toy_matrix():
    full = validated(TOY_CONFIG)
    plans = {p.claim.claim: p.models for p in cl.plans(paper.Layout.from_config(full))}
    assert plans["SeRA-DPO Iter 3 > Iterative DPO Iter 3 on LC"] == (
        "sera_dpo-iter3",
        "iterative_dpo-iter3",
    )
    assert plans["SeRA-DPO > rDPO on LC at 40% swapped labels"] == (
        "sera_dpo_noise40-iter1",
        "robust_dpo_noise40-iter1",
    )
    assert plans["SeRA-SimPO > Iterative SimPO on LC"] == (
        "sera_simpo-iter1",
        "iterative_simpo-iter1",
    )
    sera = [c for c in cl.CLAIMS if c.table.startswith("sera_")]
    assert len(sera) == 7 and all(c.claim in plans for c in sera)
    # a config without SeRA's runs leaves its claims out
    assert not [p for p in cl.plans(toy_layout(EXPERIMENTS)) if p.claim.table.startswith("sera")]


def test_the_claims_table_gives_each_claim_its_verdict():
    """Synthetic judgements with planted effects: DICE Iter 1 well above the base (holds),
    Offline DPO Iter 2 above Iter 1 although the paper says below (reversed), DICE Iter 2 equal
    to Iter 1 (inconclusive); Table 5's implicit reward agrees with the labels more often."""
    layout = toy_layout(EXPERIMENTS)
    rng = np.random.default_rng(0)
    n = 100
    hard = rng.uniform(0, 0.3, n)  # what every model shares: the prompts' difficulty

    def model(shift, seed):
        noise = np.random.default_rng(seed).normal(0, 0.05, n)
        return judgements(np.clip(hard + shift + noise, 0, 1), seed=seed)

    frames = {
        "base": model(0.0, 1),
        "offline_dpo-iter1": model(0.0, 2),
        "offline_dpo-iter2": model(0.3, 3),
        "dice-iter1": model(0.3, 4),
    }
    frames["dice-iter2"] = frames["dice-iter1"].assign(
        preference=frames["dice-iter1"]["preference"].to_numpy()[rng.permutation(n)]
    )
    labels = rng.binomial(1, 0.5, 300).astype(float)
    labels[:5] = np.nan
    truth = np.where(labels == 1, 1.0, -1.0)
    tuples = pd.DataFrame(
        {
            "label": labels,
            "reward_1": truth * rng.choice([1, -1], 300, p=[0.8, 0.2]),
            "reward_2": np.zeros(300),
            "rm_reward_1": truth * rng.choice([1, -1], 300, p=[0.55, 0.45]),
            "rm_reward_2": np.zeros(300),
        }
    )
    assert set(cl.needs(layout)["judgements"]) == set(frames) and cl.needs(layout)["tuples"]
    df = cl.build(layout, frames, tuples, l2=1e-4, n_bootstrap=300, level=0.95, seed=0)
    verdicts = dict(zip(df["Claim"], df["Verdict"]))
    assert verdicts == {
        "DICE Iter 1 > Base on LC": u.HOLDS,
        "DICE Iter 1 > Base on WR": u.HOLDS,
        "DICE Iter 2 > DICE Iter 1 on LC": u.INCONCLUSIVE,
        "Offline DPO Iter 2 < Offline DPO Iter 1 on LC": u.REVERSED,
        "DICE Iter 1 > Offline DPO Iter 1 on LC": u.HOLDS,
        "the implicit reward agrees with the judge more than the IntlRM": u.HOLDS,
    }
    row = df.set_index("Claim").loc["DICE Iter 1 > Base on WR"]
    assert row["Effect"] == pytest.approx(
        100 * (frames["dice-iter1"].preference.mean() - frames["base"].preference.mean())
    )
    assert row["Effect low"] < row["Effect"] < row["Effect high"]
    assert row["Compared"] == "dice-iter1 - base"
    md = report.to_markdown(df).splitlines()
    assert md[0] == "| Claim | Table | Compared | Effect | Unit | Verdict |"


def test_the_gamma_sweeps_interior_optimum():
    experiments = {
        "dice_gamma0": {"mix": {"gamma": 0.0}, "iterations": 1},
        "dice": {"iterations": 1},
        "offline_dpo_newref": {"mix": {"gamma": 1.0}, "iterations": 1},
    }
    layout = toy_layout(experiments, agreement=False)
    interior = [c for c in cl.CLAIMS if c.kind == "interior_optimum"]
    assert cl.needs(layout, interior) == {
        "judgements": ["dice_gamma0-iter1", "dice-iter1", "offline_dpo_newref-iter1"],
        "tuples": False,
    }
    rng = np.random.default_rng(1)
    hard = rng.uniform(0, 0.3, 100)

    def model(shift, seed):
        noise = np.random.default_rng(seed).normal(0, 0.03, 100)
        return judgements(np.clip(hard + shift + noise, 0, 1), seed=seed)

    def table(middle):
        frames = {"dice_gamma0-iter1": model(0.0, 1), "dice-iter1": model(middle, 2)}
        frames["offline_dpo_newref-iter1"] = model(0.05, 3)
        df = cl.build(
            layout, frames, None, l2=1e-4, n_bootstrap=300, level=0.95, seed=0, claims=interior
        )
        return df.set_index("Claim").loc["gamma has an interior optimum on LC"]

    peak, dip = table(0.3), table(-0.2)
    assert peak["Verdict"] == u.HOLDS and peak["Effect"] > 0
    assert dip["Verdict"] == u.REVERSED and dip["Effect"] < 0
    assert peak["Compared"].startswith("best of gamma 0.50 - better of gamma 0.00, 1.00")


@pytest.mark.slow  # starts Snakemake (a dry run)
def test_the_claims_table_is_a_target_of_the_reduced_config(tmp_path):
    from test_workflow import load, planned_jobs, snakemake, workdir

    wd = workdir(tmp_path, load(REPO / ".test" / "config.yaml"))
    assert planned_jobs(wd)["claims"] == 1
    out = snakemake("-n", "results/tables/claims.md", cwd=wd).stdout
    # the per-prompt judgements of the models its claims compare are its inputs
    assert "results/eval/dice-iter1/judgements.parquet" in out


def test_the_claims_table_reads_the_agreement_tuples_of_its_configurations_folder():
    layout = toy_layout({"dice": {"iterations": 1}})
    assert cl.input_paths(layout)["tuples"] == ["results/agreement/tuples.parquet"]
    named = cl.input_paths(layout, root="results/mytoy")
    assert named["tuples"] == ["results/mytoy/agreement/tuples.parquet"]
    assert named["judgements"] == cl.input_paths(layout)["judgements"]


def test_report_claims_adapter_writes_csv_md_and_tex(tmp_path):
    from test_paper import run_adapter

    layout = toy_layout({"dice": {"iterations": 1}}, agreement=False)
    inputs = cl.input_paths(layout)
    assert inputs == {
        "judgements": [
            "results/eval/dice-iter1/judgements.parquet",
            "results/eval/base/judgements.parquet",
        ]
    }
    rng = np.random.default_rng(0)
    paths = []
    for shift, path in zip((0.4, 0.0), inputs["judgements"], strict=True):
        paths.append(tmp_path / "in" / path)
        paths[-1].parent.mkdir(parents=True)
        judgements(np.clip(rng.uniform(0, 0.3, 100) + shift, 0, 1)).to_parquet(paths[-1])
    out = {k: str(tmp_path / "out" / f"claims.{k}") for k in ("csv", "md", "tex")}
    run_adapter(
        "report_claims.py",
        {
            "input": {"judgements": [str(p) for p in paths]},
            "output": out,
            "log": str(tmp_path / "log.txt"),
            "params": {
                "layout": layout.to_dict(),
                "l2": 1e-4,
                "intervals": {"n_bootstrap": 200, "level": 0.95, "seed": 0},
                "caption": "The claims.",
            },
        },
        tmp_path,
    )
    md = (tmp_path / "out" / "claims.md").read_text()
    assert md.startswith("The claims.\n\n| Claim | Table | Compared | Effect | Unit | Verdict |")
    assert "| DICE Iter 1 > Base on WR | table1 | dice-iter1 - base |" in md
    csv = pd.read_csv(out["csv"])
    assert csv["Verdict"].tolist() == [u.HOLDS, u.HOLDS]
    assert (csv["Effect low"] < csv["Effect"]).all() and (csv["Effect"] < csv["Effect high"]).all()
    assert r"\label{tab:claims}" in (tmp_path / "out" / "claims.tex").read_text()
