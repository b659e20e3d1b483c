"""Tests for dicewf.lcwinrate: raw and length-controlled win rates."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from dicewf.io import DatasetError
from dicewf.lcwinrate import LABEL_EPS, WinRate, fit_length_glm, judge_frame, win_rates
from scipy.special import expit, logit

N = 2000
THETA, PHI, PSI = -0.5, 1.5, 0.8


def _lengths(rng: np.random.Generator, n: int, skew: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Baseline lengths and model lengths; with ``skew`` the model is longer on average."""
    baseline = rng.integers(200, 2000, size=n)
    if skew:
        delta = rng.gamma(shape=2.0, scale=300.0, size=n) - 200.0  # mean +400, right-skewed
    else:
        delta = rng.normal(0.0, 400.0, size=n)
    model = np.maximum(baseline + np.round(delta), 0).astype(int)
    return model, baseline


def _length_term(model: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    delta = (model - baseline).astype(float)
    return np.tanh(delta / np.std(delta, ddof=1))


@pytest.fixture(scope="module")
def planted() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    model, baseline = _lengths(rng, N)
    p = expit(THETA + PHI * _length_term(model, baseline))
    return {"p": p, "bern": rng.binomial(1, p).astype(float), "model": model, "base": baseline}


# --------------------------------------------------------------------------- recovery


def test_recovers_planted_length_effect_from_exact_soft_labels(planted):
    glm = fit_length_glm(planted["p"], planted["model"], planted["base"])
    assert glm["converged"]
    assert glm["psi"] is None
    assert glm["theta"] == pytest.approx(THETA, abs=0.01)
    assert glm["phi"] == pytest.approx(PHI, abs=0.01)  # only the tiny L2 shrinks phi
    delta = planted["model"] - planted["base"]
    assert glm["length_scale"] == pytest.approx(np.std(delta, ddof=1))

    wr = win_rates(planted["p"], planted["model"], planted["base"])
    assert wr.lc_win_rate == pytest.approx(100 * expit(THETA), abs=0.3)
    assert wr.win_rate > wr.lc_win_rate + 10  # longer outputs inflate the raw win rate
    assert wr.win_rate == pytest.approx(100 * planted["p"].mean())


def test_unpenalised_fit_is_exact(planted):
    # without the L2 shrinkage, exact soft labels are reproduced to optimiser precision
    glm = fit_length_glm(planted["p"], planted["model"], planted["base"], l2=0.0)
    assert glm["converged"]
    assert glm["theta"] == pytest.approx(THETA, abs=1e-8)
    assert glm["phi"] == pytest.approx(PHI, abs=1e-8)


def test_recovers_planted_length_effect_from_bernoulli_labels(planted):
    wr = win_rates(planted["bern"], planted["model"], planted["base"])
    # standard errors at n = 2000 are about 0.06 (theta) and 0.1 (phi)
    assert wr.theta == pytest.approx(THETA, abs=0.25)
    assert wr.phi == pytest.approx(PHI, abs=0.4)
    assert wr.lc_win_rate == pytest.approx(100 * expit(THETA), abs=6)
    assert wr.win_rate > wr.lc_win_rate + 5
    assert wr.n_ties == 0 and wr.n_wins + wr.n_losses == N


def test_no_length_effect_gives_lc_close_to_raw():
    rng = np.random.default_rng(1)
    model, baseline = _lengths(rng, N, skew=False)
    quality = rng.normal(0.0, 1.0, size=N)  # per-instruction variation unrelated to length
    p = expit(0.3 + quality)
    for labels in (p, rng.binomial(1, p).astype(float)):
        wr = win_rates(labels, model, baseline)
        assert abs(wr.phi) < 0.3
        assert wr.lc_win_rate == pytest.approx(wr.win_rate, abs=1.0)


def test_recovers_planted_difficulty_term():
    rng = np.random.default_rng(2)
    model, baseline = _lengths(rng, N)
    d = rng.normal(0.0, 1.0, size=N)
    p = expit(THETA + PHI * _length_term(model, baseline) + PSI * d)

    glm = fit_length_glm(p, model, baseline, difficulty=d)
    assert glm["converged"]
    assert glm["theta"] == pytest.approx(THETA, abs=0.01)
    assert glm["phi"] == pytest.approx(PHI, abs=0.01)
    assert glm["psi"] == pytest.approx(PSI, abs=0.01)

    wr = win_rates(p, model, baseline, difficulty=d)
    assert wr.psi == pytest.approx(PSI, abs=0.01)
    assert wr.lc_win_rate == pytest.approx(100 * expit(THETA + PSI * d).mean(), abs=0.3)

    noisy = win_rates(rng.binomial(1, p).astype(float), model, baseline, difficulty=d)
    assert noisy.psi == pytest.approx(PSI, abs=0.25)


# --------------------------------------------------------------------------- direction


def test_winning_only_by_length_lowers_lc():
    rng = np.random.default_rng(3)
    model, baseline = _lengths(rng, 500)  # model longer on average
    p = expit(0.0 + 2.0 * _length_term(model, baseline))  # equal quality at equal length
    wr = win_rates(p, model, baseline)
    assert wr.win_rate > 60
    assert wr.lc_win_rate < wr.win_rate
    assert wr.lc_win_rate == pytest.approx(50, abs=1)


def test_preferred_despite_being_shorter_raises_lc():
    rng = np.random.default_rng(4)
    baseline = rng.integers(800, 2000, size=500)
    model = baseline - rng.integers(100, 700, size=500)  # always shorter
    p = expit(1.0 + 1.0 * _length_term(model, baseline))
    wr = win_rates(p, model, baseline)
    assert wr.mean_len_model < wr.mean_len_baseline
    assert wr.win_rate > 50
    assert wr.lc_win_rate > wr.win_rate
    assert wr.lc_win_rate == pytest.approx(100 * expit(1.0), abs=1)


# --------------------------------------------------------------------------- degenerate


def test_equal_lengths_fall_back_to_intercept_only():
    rng = np.random.default_rng(5)
    p = rng.uniform(0.0, 1.0, size=300)
    lengths = np.full(300, 1000)
    glm = fit_length_glm(p, lengths, lengths)
    assert glm["length_scale"] == 0.0 and glm["phi"] == 0.0
    assert glm["theta"] == pytest.approx(logit(p.mean()), abs=1e-9)

    wr = win_rates(p, lengths, lengths)
    assert wr.lc_win_rate == pytest.approx(100 * expit(wr.theta), abs=1e-12)
    assert wr.lc_win_rate == pytest.approx(wr.win_rate, abs=1e-7)

    # a constant length difference is just as uninformative as no difference
    const = win_rates(np.full(50, 0.3), lengths[:50] + 200, lengths[:50])
    assert const.phi == 0.0
    assert const.theta == pytest.approx(logit(0.3), abs=1e-9)
    assert const.lc_win_rate == pytest.approx(30.0, abs=1e-7)


def test_single_instruction():
    wr = win_rates([0.7], [1200], [800])
    assert wr.n == 1 and wr.n_wins == 1
    assert wr.standard_error == 0.0
    assert wr.phi == 0.0
    assert wr.theta == pytest.approx(logit(0.7), abs=1e-9)
    assert wr.lc_win_rate == pytest.approx(70.0, abs=1e-7)
    assert fit_length_glm([0.7], [1200], [800])["length_scale"] == 0.0


@pytest.mark.parametrize("value", [1.0, 0.0])
def test_unanimous_preferences_stay_finite(value):
    rng = np.random.default_rng(6)
    model, baseline = _lengths(rng, 200)
    p = np.full(200, value)
    wr = win_rates(p, model, baseline)
    assert math.isfinite(wr.theta) and math.isfinite(wr.phi)
    # labels are clipped to [LABEL_EPS, 1 - LABEL_EPS], which bounds theta
    assert abs(wr.theta) <= logit(1 - LABEL_EPS) + 1e-6
    if value == 1.0:
        assert wr.lc_win_rate > 99 and wr.win_rate == 100.0 and wr.n_wins == 200
    else:
        assert wr.lc_win_rate < 1 and wr.win_rate == 0.0 and wr.n_losses == 200
    assert wr.standard_error == 0.0


def test_counts_and_standard_error():
    p = np.array([0.0, 0.5, 0.5, 0.9, 1.0, 0.2])
    wr = win_rates(p, [10, 20, 30, 40, 50, 60], [30, 30, 30, 30, 30, 30])
    assert (wr.n_wins, wr.n_ties, wr.n_losses) == (2, 2, 2)
    assert wr.standard_error == pytest.approx(100 * np.std(p, ddof=1) / math.sqrt(6))
    assert wr.mean_len_model == 35.0 and wr.mean_len_baseline == 30.0


# --------------------------------------------------------------------------- validation


def test_mismatched_lengths_are_named():
    with pytest.raises(ValueError, match=r"preference has 3, len_model has 2, len_baseline has 3"):
        win_rates([0.1, 0.2, 0.3], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"difficulty has 1"):
        fit_length_glm([0.1, 0.2], [1, 2], [1, 2], difficulty=[0.0])


@pytest.mark.parametrize(
    ("p", "needle"),
    [
        ([0.2, 1.5, -0.1], r"preference\[1\] = 1\.5"),
        ([0.2, float("nan")], r"preference\[1\] = nan"),
    ],
)
def test_bad_preferences_are_named(p, needle):
    with pytest.raises(ValueError, match=needle):
        win_rates(p, [1] * len(p), [1] * len(p))


def test_bad_lengths_and_inputs():
    with pytest.raises(ValueError, match=r"len_baseline\[0\] = -3"):
        win_rates([0.5, 0.5], [1, 2], [-3, 2])
    with pytest.raises(ValueError, match=r"len_model\[1\] = inf"):
        win_rates([0.5, 0.5], [1, math.inf], [1, 2])
    with pytest.raises(ValueError, match=r"difficulty\[0\] = nan"):
        win_rates([0.5, 0.5], [1, 2], [1, 2], difficulty=[math.nan, 0.0])
    with pytest.raises(ValueError, match="empty"):
        win_rates([], [], [])
    with pytest.raises(ValueError, match="l2"):
        win_rates([0.5], [1], [1], l2=-1.0)


def _frame(n: int = 40, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "preference": rng.uniform(0.0, 1.0, size=n),
            "len_model": rng.integers(100, 900, size=n),
            "len_baseline": rng.integers(100, 900, size=n),
        }
    )


def test_judge_frame_matches_win_rates():
    df = _frame()
    wr = judge_frame(df, "judged.parquet")
    assert wr == win_rates(df["preference"], df["len_model"], df["len_baseline"])
    assert wr.psi is None

    df["difficulty"] = np.linspace(-1.0, 1.0, len(df))
    with_d = judge_frame(df)
    assert with_d.psi is not None
    assert with_d == win_rates(
        df["preference"], df["len_model"], df["len_baseline"], df["difficulty"]
    )


def test_judge_frame_errors_name_source_and_column():
    with pytest.raises(DatasetError, match=r"judged\.parquet.*missing column.*len_baseline"):
        judge_frame(_frame().drop(columns="len_baseline"), "judged.parquet")
    bad = _frame()
    bad.loc[3, "preference"] = math.nan
    with pytest.raises(DatasetError, match=r"judged\.parquet.*'preference'.*rows \[3\]"):
        judge_frame(bad, "judged.parquet")
    bad = _frame()
    bad.loc[5, "preference"] = 2.0
    with pytest.raises(DatasetError, match=r"judged\.parquet.*preference\[5\] = 2\.0"):
        judge_frame(bad, "judged.parquet")
    bad = _frame().assign(len_model=lambda f: f["len_model"].astype(str))
    with pytest.raises(DatasetError, match=r"'len_model' should hold int"):
        judge_frame(bad, "judged.parquet")


# --------------------------------------------------------------------------- output


def test_deterministic_and_json_ready(planted):
    d = np.linspace(-2.0, 2.0, N)
    first = win_rates(planted["bern"], planted["model"], planted["base"], difficulty=d)
    second = win_rates(planted["bern"].copy(), planted["model"].copy(), planted["base"].copy(), d)
    assert first == second
    a, b = first.to_dict(), second.to_dict()
    assert all(
        np.float64(a[k]).tobytes() == np.float64(b[k]).tobytes() for k in a if a[k] is not None
    )
    assert set(a) == {f for f in WinRate.__dataclass_fields__}
    assert all(type(v) in (float, int) for v in a.values())
    assert json.loads(json.dumps(a)) == a
