"""Tests for dicewf.lcwinrate: raw and length-controlled win rates."""

from __future__ import annotations

import json
import math
import warnings

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


# --------------------------------------------------------------------------- mutation edges
# edges the mutation benchmark (benchmarks/mutation.py) showed untested


def test_each_bad_input_is_refused_with_its_exact_message():
    cases = [
        (
            ([0.2, 1.5, -0.1], [1, 1, 1], [1, 1, 1]),
            {},
            r"preference\[1\] = 1.5 is not a finite value in \[0, 1\] \(2 bad value\(s\) in all\)",
        ),
        (
            ([0.5, 0.5], [1, -2], [1, 2]),
            {},
            r"len_model\[1\] = -2.0 is not a finite length >= 0 \(1 bad value\(s\) in all\)",
        ),
        (
            ([0.5, 0.5], [1, 2], [-3, 2]),
            {},
            r"len_baseline\[0\] = -3.0 is not a finite length >= 0 \(1 bad value\(s\) in all\)",
        ),
        (
            ([0.5, 0.5], [1, 2], [1, 2]),
            {"difficulty": [0.0, math.inf]},
            r"difficulty\[1\] = inf is not finite \(1 bad value\(s\) in all\)",
        ),
        (([], [], []), {}, r"no instructions: the inputs are empty"),
        (([[0.5]], [1], [1]), {}, r"preference: expected a 1-D sequence, got shape \(1, 1\)"),
        (
            (["x"], [1], [1]),
            {},
            r"preference: cannot be read as numbers \(could not convert string to float: 'x'\)",
        ),
        (([0.5], ["x"], [1]), {}, r"len_model: cannot be read as numbers \(.*\)"),
        (([0.5], [1], ["x"]), {}, r"len_baseline: cannot be read as numbers \(.*\)"),
        (([0.5], [1], [1]), {"difficulty": ["x"]}, r"difficulty: cannot be read as numbers \(.*\)"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=f"^{message}$"):
            win_rates(*args, **kwargs)


def test_a_missing_preference_is_named_as_not_finite():
    with pytest.raises(ValueError, match=r"^preference\[1\] = nan is not a finite value"):
        win_rates([0.5, None], [1, 2], [1, 2])


def test_no_numpy_warning_for_one_instruction_or_equal_lengths():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 or a ddof warning would fail here
        win_rates([0.7], [1200], [800])
        win_rates([0.7, 0.2, 0.4], [10, 20, 30], [10, 20, 30])
        win_rates([0.9, 0.1, 0.8, 0.3], [1, 0, 1, 0], [0, 0, 0, 0])


def test_a_small_length_spread_still_gets_its_length_term():
    # deltas of 0 and 1 character: s = std([1, 0, 1, 0], ddof=1) ~ 0.58, below 1
    glm = fit_length_glm([0.9, 0.1, 0.8, 0.3], [1, 0, 1, 0], [0, 0, 0, 0])
    assert glm["length_scale"] == pytest.approx(np.std([1, 0, 1, 0], ddof=1))
    assert glm["phi"] > 1.0  # the longer answers win
    # two instructions already have a spread
    assert fit_length_glm([0.9, 0.1], [5, 1], [1, 1])["length_scale"] == pytest.approx(
        np.std([4, 0], ddof=1)
    )


def test_the_fit_reports_its_fields_and_converges_in_a_few_newton_steps():
    p = [0.9, 0.1, 0.8, 0.3, 0.6]
    for l2 in (1e-4, 1.0, 10.0):
        glm = fit_length_glm(p, [5, 1, 4, 2, 3], [1, 1, 1, 1, 1], difficulty=[1, 0, 1, 0, 2], l2=l2)
        assert set(glm) == {"theta", "phi", "psi", "length_scale", "converged", "iterations"}
        assert glm["converged"] is True and glm["iterations"] <= 10


def test_the_objective_is_the_mean_cross_entropy_plus_half_the_penalised_square():
    from dicewf.lcwinrate import _objective

    x = np.array([[1.0, 2.0], [1.0, -1.0]])
    y = np.array([0.8, 0.3])
    beta = np.array([0.5, 3.0])
    z = x @ beta
    cross_entropy = np.mean(-(y * np.log(expit(z)) + (1 - y) * np.log(1 - expit(z))))
    penalty = np.array([0.0, 0.2])
    assert _objective(beta, x, y, penalty) == pytest.approx(cross_entropy + 0.5 * 0.2 * 9.0)


def test_a_fit_stopped_at_the_iteration_cap_warns_and_reports_the_cap(monkeypatch, planted):
    from dicewf import lcwinrate

    monkeypatch.setattr(lcwinrate, "_MAX_ITER", 1)
    glm = fit_length_glm(planted["bern"], planted["model"], planted["base"])
    assert glm["converged"] is False and glm["iterations"] == 1
    with pytest.warns(
        RuntimeWarning, match=r"^length-controlled GLM did not converge after 1 Newton steps$"
    ):
        win_rates(planted["bern"], planted["model"], planted["base"])


def test_a_converged_fit_does_not_warn(planted):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        win_rates(planted["bern"], planted["model"], planted["base"])


def test_the_standard_error_of_two_instructions():
    assert win_rates([1.0, 0.0], [1, 2], [1, 1]).standard_error == pytest.approx(50.0)


def test_judge_frame_checks_the_difficulty_column_and_names_the_default_source():
    bad = _frame().assign(difficulty="hard")
    with pytest.raises(
        DatasetError, match=r"^<frame>: column 'difficulty' should hold float values, found dtype"
    ):
        judge_frame(bad)
    bad = _frame().assign(difficulty=0.0)
    bad.loc[2, "difficulty"] = math.nan
    with pytest.raises(
        DatasetError,
        match=r"^j.parquet: column 'difficulty' has NaN or infinite values at rows \[2\]",
    ):
        judge_frame(bad, "j.parquet")


def _first_newton_direction(monkeypatch, bad: str) -> None:
    """Replace the first Newton direction of the next fit by a bad one: ``"overshoot"`` (100
    times the true step) or ``"ascent"`` (the step reversed and scaled so that its slope
    ``grad @ step`` is +0.5)."""
    real, calls = np.linalg.lstsq, []

    def lstsq(a, b, rcond=None):  # b is -grad
        step, *rest = real(a, b, rcond=rcond)
        calls.append(1)
        if len(calls) == 1:
            step = step * 100.0 if bad == "overshoot" else step * (-0.5 / float(b @ step))
        return (step, *rest)

    monkeypatch.setattr(np.linalg, "lstsq", lstsq)


@pytest.mark.parametrize("bad", ["overshoot", "ascent"])
def test_a_bad_newton_direction_is_damped_or_replaced_and_the_fit_still_converges(
    monkeypatch, planted, bad
):
    # an overshooting step is halved until the objective decreases; an ascent direction (a
    # numerically degenerate Hessian) is replaced by the negative gradient
    args = (planted["p"][:200], planted["model"][:200], planted["base"][:200])
    want = fit_length_glm(*args)
    _first_newton_direction(monkeypatch, bad)
    got = fit_length_glm(*args)
    assert got["converged"] is True
    assert got["theta"] == pytest.approx(want["theta"], abs=1e-8)
    assert got["phi"] == pytest.approx(want["phi"], abs=1e-8)


def test_equal_lengths_leave_the_difficulty_term_its_own_coefficient():
    d = np.linspace(-1.0, 1.0, 50)
    p = expit(0.3 + 1.2 * d)
    wr = win_rates(p, np.full(50, 100), np.full(50, 100), difficulty=d, l2=0.0)
    assert wr.phi == 0.0
    assert wr.theta == pytest.approx(0.3, abs=1e-6) and wr.psi == pytest.approx(1.2, abs=1e-6)
