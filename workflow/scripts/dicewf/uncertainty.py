"""Percentile-bootstrap intervals over evaluation prompts, paired differences and verdicts.

Every number of the toy tables comes from one set of held-out prompts (100 by default), so each
has a sampling error that single numbers hide. Here a statistic of per-prompt data (a judgement
table: ``preference``, ``len_model``, ``len_baseline``, ``quality``) is recomputed on
``n_bootstrap`` resamples of the prompts (drawn with replacement, ``numpy``'s default generator
seeded from the config) and the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
quantiles of the resampled values (Efron's percentile interval).

* :data:`STATISTICS`: the metrics.json keys that get an interval (LC and raw win rate, mean gold
  quality, mean length). The LC win rate refits the GLM of :mod:`dicewf.lcwinrate` on each
  resample, all resamples at once (:func:`lc_win_rates`: one batched Newton method, the same
  objective, start, step rule and stopping rule as :func:`dicewf.lcwinrate.win_rates`).
* :func:`interval`: one model's interval; :func:`prompt_intervals`: all of :data:`STATISTICS`
  as metrics.json keys (``{key}_ci_low``, ``{key}_ci_high``), what the toy eval writes.
* :func:`joint`: a function of several models' statistics evaluated on the SAME resampled
  prompts (a paired bootstrap: the models answered the same prompts, so the prompts' shared
  difficulty cancels out of a difference); :func:`paired_difference` is its commonest case.
* :func:`verdict`: holds / reversed / inconclusive from a difference's interval and the sign
  a claim states.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.special import expit

from .lcwinrate import _GRAD_TOL, _MAX_ITER, LABEL_EPS

__all__ = [
    "HOLDS",
    "INCONCLUSIVE",
    "INTERVAL_KEYS",
    "REVERSED",
    "STATISTICS",
    "Interval",
    "PairedBootstrap",
    "Statistic",
    "across_replicates",
    "agreement_scores",
    "interval",
    "joint",
    "lc_win_rates",
    "paired_difference",
    "percentile",
    "prompt_intervals",
    "resample_indices",
    "statistic",
    "verdict",
]

HOLDS, REVERSED, INCONCLUSIVE = "holds", "reversed", "inconclusive"


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float
    n_bootstrap: int

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclasses.dataclass(frozen=True)
class Statistic:
    """A statistic of per-prompt columns, computed on many resamples at once.

    ``fn`` maps {column: array of shape (B, n)} (row b: resample b's prompts) to an array of
    shape (B,); the point estimate is ``fn`` on the prompts as they are (B = 1).
    """

    name: str
    columns: tuple[str, ...]
    fn: Callable[[Mapping[str, NDArray[np.float64]]], NDArray[np.float64]]


# --- the batched LC GLM -------------------------------------------------------------------------


def _linear(x, beta):
    """x (B, n, k) times beta (B, k): (B, n); k is 2 or 3, so a sum of columns is fastest."""
    return sum(x[:, :, j] * beta[:, j, None] for j in range(x.shape[2]))


def _objective(beta, x, y, penalty):
    """Per-resample :func:`dicewf.lcwinrate._objective`: beta (B, k), x (B, n, k), y (B, n)."""
    z = _linear(x, beta)
    return np.mean(np.logaddexp(0.0, z) - y * z, axis=1) + 0.5 * np.sum(penalty * beta**2, axis=1)


def _batched_newton(x, y, penalty, fixed):
    """:func:`dicewf.lcwinrate._newton` on B problems at once; ``fixed`` (B, k) marks
    coefficients held at 0 (a resample's all-zero length column). Returns beta (B, k)."""
    b, _, k = x.shape
    cols = [np.ascontiguousarray(x[:, :, j]) for j in range(k)]
    beta = np.zeros((b, k))
    f = _objective(beta, x, y, penalty)
    active = np.ones(b, dtype=bool)
    eps = np.finfo(float).eps
    for _ in range(_MAX_ITER):
        mu = expit(_linear(x, beta))
        grad = np.stack([np.mean(c * (mu - y), axis=1) for c in cols], axis=1) + penalty * beta
        grad[fixed] = 0.0
        active &= np.max(np.abs(grad), axis=1) > _GRAD_TOL
        if not active.any():
            break
        w = mu * (1.0 - mu)
        hess = np.empty((b, k, k))
        for i in range(k):
            for j in range(i + 1):
                hess[:, i, j] = hess[:, j, i] = np.mean(cols[i] * w * cols[j], axis=1)
        hess += np.diag(penalty)
        hess[fixed] = 0.0  # a held coefficient's row and column: identity, so its step is 0
        hess.transpose(0, 2, 1)[fixed] = 0.0
        hess[:, np.arange(k), np.arange(k)] += fixed
        step = -np.einsum("bkl,bl->bk", np.linalg.pinv(hess), grad)
        slope = np.einsum("bk,bk->b", grad, step)
        uphill = slope >= 0  # a numerically degenerate Hessian: steepest descent instead
        step[uphill], slope[uphill] = -grad[uphill], -np.sum(grad[uphill] ** 2, axis=1)
        slack = 8 * eps * np.maximum(1.0, np.abs(f))
        t = np.ones(b)
        searching = active.copy()
        while True:
            candidate = beta + t[:, None] * step
            f_new = _objective(candidate, x, y, penalty)
            accepted = (f_new <= f + 1e-4 * t * slope + slack) | (t < 1e-12)
            searching &= ~accepted
            if not searching.any():
                break
            t = np.where(searching, t * 0.5, t)
        stuck = t < 1e-12  # no further progress in floating point: that resample is done
        move = active & ~stuck
        beta[move], f[move] = candidate[move], f_new[move]
        active &= ~stuck
    return beta


def lc_win_rates(
    preference: NDArray[np.float64],
    len_model: NDArray[np.float64],
    len_baseline: NDArray[np.float64],
    difficulty: NDArray[np.float64] | None = None,
    l2: float = 1e-4,
) -> NDArray[np.float64]:
    """The LC win rate (percent) of each row of (B, n) arrays: the GLM of
    :mod:`dicewf.lcwinrate` refitted on each row, its length scale ``s`` included (so a row
    that is a resample of the prompts gives what :func:`~dicewf.lcwinrate.win_rates` gives on
    those prompts)."""
    p = np.atleast_2d(np.asarray(preference, dtype=float))
    delta = np.atleast_2d(np.asarray(len_model, dtype=float)) - np.atleast_2d(
        np.asarray(len_baseline, dtype=float)
    )
    b, n = p.shape
    scale = np.std(delta, axis=1, ddof=1) if n > 1 else np.zeros(b)
    safe = np.where(scale > 0, scale, 1.0)
    length = np.where(scale[:, None] > 0, np.tanh(delta / safe[:, None]), 0.0)
    columns = [np.ones_like(p), length]
    penalty = [0.0, l2]
    fixed = [np.zeros(b, dtype=bool), ~(scale > 0)]
    d = None if difficulty is None else np.atleast_2d(np.asarray(difficulty, dtype=float))
    if d is not None:
        columns.append(d)
        penalty.append(l2)
        fixed.append(np.zeros(b, dtype=bool))
    x = np.stack(columns, axis=2)
    y = np.clip(p, LABEL_EPS, 1.0 - LABEL_EPS)
    beta = _batched_newton(x, y, np.asarray(penalty), np.stack(fixed, axis=1))
    z0 = beta[:, :1] + (beta[:, 2:3] * d if d is not None else 0.0)
    return 100.0 * np.mean(np.broadcast_to(expit(z0), (b, n)), axis=1)


# --- statistics ---------------------------------------------------------------------------------


def _mean(column: str, name: str) -> Statistic:
    return Statistic(name, (column,), lambda c: np.mean(c[column], axis=1))


def statistic(key: str, l2: float = 1e-4) -> Statistic:
    """The statistic behind a metrics.json key (see :data:`STATISTICS`); ``l2``: the LC GLM's."""
    if key == "lc_win_rate":
        return Statistic(
            key,
            ("preference", "len_model", "len_baseline"),
            lambda c: lc_win_rates(
                c["preference"], c["len_model"], c["len_baseline"], c.get("difficulty"), l2
            ),
        )
    if key == "win_rate":
        return Statistic(key, ("preference",), lambda c: 100.0 * np.mean(c["preference"], axis=1))
    if key == "gold_quality":
        return _mean("quality", key)
    if key == "mean_len_model":
        return _mean("len_model", key)
    if key == "agreement":
        return _mean("agreement", key)
    raise KeyError(f"no statistic {key!r}; known: {[*STATISTICS, 'agreement']}")


#: metrics.json keys that get an interval, and the per-prompt column each is computed from
STATISTICS = ("lc_win_rate", "win_rate", "gold_quality", "mean_len_model")
INTERVAL_KEYS = tuple(f"{key}_ci_{end}" for key in STATISTICS for end in ("low", "high"))


def agreement_scores(reward_1, reward_2, labels) -> NDArray[np.float64]:
    """Per labelled tuple, 1 where a reward model prefers the labelled response, 1/2 where it
    rates both equally, 0 otherwise (unlabelled tuples, NaN labels, left out): their mean is
    :func:`dicewf.agreement.rate`."""
    r1, r2, y = (np.asarray(v, dtype=float) for v in (reward_1, reward_2, labels))
    keep = ~np.isnan(y)
    prefers_1 = np.sign(r1 - r2)[keep]
    want = np.where(y[keep] == 1.0, 1.0, -1.0)
    return np.where(prefers_1 == 0, 0.5, (prefers_1 == want).astype(float))


# --- resampling ---------------------------------------------------------------------------------


def resample_indices(n: int, n_bootstrap: int, seed: int) -> NDArray[np.intp]:
    """(n_bootstrap, n) prompt indices drawn with replacement; the same for the same seed."""
    if n < 1:
        raise ValueError("no prompts to resample")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def percentile(samples, level: float) -> tuple[float, float]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of ``samples``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    values = np.asarray(samples, dtype=float)
    if values.size == 0 or np.isnan(values).any():
        return math.nan, math.nan
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _columns(frame: pd.DataFrame, stat: Statistic, source: str) -> dict[str, NDArray]:
    missing = [c for c in stat.columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{source}: column(s) {missing} missing (needed for {stat.name})")
    names = [*stat.columns, *(["difficulty"] if "difficulty" in frame.columns else [])]
    return {c: frame[c].to_numpy(dtype=float) for c in names}


def _point(cols: Mapping[str, NDArray], stat: Statistic) -> float:
    """``stat`` on the prompts as they are (one "resample": all of them, once)."""
    return float(stat.fn({c: v[None, :] for c, v in cols.items()})[0])


class PairedBootstrap:
    """Statistics of several models on the same resampled prompts.

    The first frame seen fixes the prompts (by ``key``, or by row when ``key`` is None) and
    every later frame must hold the same prompts, each once (in any order: it is aligned). A
    model's resampled statistic is computed once per ``source`` and statistic name and reused
    by every combination that names it (the claims table compares one model with several).
    """

    def __init__(
        self, *, n_bootstrap: int, level: float, seed: int, key: str | None = "prompt_id"
    ) -> None:
        percentile([0.0], level)  # check the level now
        self.n_bootstrap, self.level, self.seed, self.key = n_bootstrap, level, seed, key
        self._prompts: list | None = None
        self._first = ""
        self._idx: NDArray[np.intp] | None = None
        self._cache: dict[tuple[str, str], tuple[float, NDArray[np.float64]]] = {}

    def _aligned(self, frame: pd.DataFrame, source: str) -> pd.DataFrame:
        if self.key is None:
            prompts = list(range(len(frame)))
        else:
            if self.key not in frame.columns:
                raise KeyError(f"{source}: no {self.key!r} column to pair prompts by")
            dup = frame[self.key][frame[self.key].duplicated()]
            if len(dup):
                raise ValueError(f"{source}: {self.key} {dup.iloc[0]!r} appears more than once")
            prompts = frame[self.key].tolist()
        if self._prompts is None:
            self._prompts, self._first = prompts, source
            self._idx = resample_indices(len(prompts), self.n_bootstrap, self.seed)
            return frame
        if self.key is None:
            if len(prompts) != len(self._prompts):
                raise ValueError(
                    f"{source} has {len(prompts)} rows, {self._first} {len(self._prompts)}: "
                    "paired data must have one row per unit in both"
                )
            return frame
        if set(prompts) != set(self._prompts):
            odd = sorted(map(str, set(prompts) ^ set(self._prompts)))
            raise ValueError(
                f"{source} and {self._first}: not the same prompts ({len(odd)} differ, e.g. "
                f"{odd[0]!r}); a paired bootstrap needs both models on the same prompts"
            )
        return frame.set_index(self.key).loc[self._prompts].reset_index()

    def values(
        self, frame: pd.DataFrame, stat: Statistic, source: str
    ) -> tuple[float, NDArray[np.float64]]:
        """(point estimate, the ``n_bootstrap`` resampled values) of ``stat`` on ``frame``."""
        cached = self._cache.get((source, stat.name))
        if cached is None:
            cols = _columns(self._aligned(frame, source), stat, source)
            cached = _point(cols, stat), stat.fn({c: v[self._idx] for c, v in cols.items()})
            self._cache[source, stat.name] = cached
        return cached

    def point(self, frame: pd.DataFrame, stat: Statistic, source: str) -> float:
        """The point estimate of ``stat`` on ``frame``, without resampling it where
        :meth:`values` has not (a model whose value alone is needed, such as a later
        replicate's in the claims table; for LC that saves 1,000 GLM fits)."""
        cached = self._cache.get((source, stat.name))
        if cached is not None:
            return cached[0]
        return _point(_columns(self._aligned(frame, source), stat, source), stat)

    def interval(
        self,
        frames: Sequence[pd.DataFrame],
        stat: Statistic,
        combine: Callable[[NDArray[np.float64]], NDArray[np.float64]],
        sources: Sequence[str],
    ) -> Interval:
        """``combine`` of the models' statistics (an array of shape (models, B) mapped to B
        values) and its percentile interval."""
        got = [self.values(f, stat, s) for f, s in zip(frames, sources, strict=True)]
        point = combine(np.array([[p] for p, _ in got]))
        draws = combine(np.stack([d for _, d in got]))
        low, high = percentile(draws, self.level)
        return Interval(float(point[0]), low, high, self.level, self.n_bootstrap)

    def difference(
        self, a: pd.DataFrame, b: pd.DataFrame, stat: Statistic, sources: Sequence[str]
    ) -> Interval:
        """``stat(a) - stat(b)`` on the same resampled prompts."""
        return self.interval([a, b], stat, lambda v: v[0] - v[1], sources)


def joint(
    frames: Sequence[pd.DataFrame],
    stat: Statistic,
    combine: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    *,
    n_bootstrap: int,
    level: float,
    seed: int,
    key: str | None = "prompt_id",
    sources: Sequence[str] | None = None,
) -> Interval:
    """A function of several models' statistics, bootstrapped over their shared prompts.

    ``frames``: one per-prompt table per model (paired by ``key``; None: by row). Every
    resample draws the same prompts for all models; ``combine`` maps the statistics, an array
    of shape (models, B), to B values (a difference: ``v[0] - v[1]``). See
    :class:`PairedBootstrap` to reuse one model's resamples in several combinations.
    """
    sources = list(sources or [f"<frame {i}>" for i in range(len(frames))])
    boot = PairedBootstrap(n_bootstrap=n_bootstrap, level=level, seed=seed, key=key)
    return boot.interval(frames, stat, combine, sources)


def interval(
    frame: pd.DataFrame,
    stat: Statistic,
    *,
    n_bootstrap: int,
    level: float,
    seed: int,
    source: str = "<judgements>",
) -> Interval:
    """One model's statistic and its percentile-bootstrap interval over its prompts."""
    return joint(
        [frame],
        stat,
        lambda v: v[0],
        n_bootstrap=n_bootstrap,
        level=level,
        seed=seed,
        key=None,
        sources=[source],
    )


def paired_difference(
    a: pd.DataFrame,
    b: pd.DataFrame,
    stat: Statistic,
    *,
    n_bootstrap: int,
    level: float,
    seed: int,
    key: str | None = "prompt_id",
    sources: Sequence[str] = ("<a>", "<b>"),
) -> Interval:
    """``stat(a) - stat(b)`` with a paired bootstrap interval (same resampled prompts)."""
    return joint(
        [a, b],
        stat,
        lambda v: v[0] - v[1],
        n_bootstrap=n_bootstrap,
        level=level,
        seed=seed,
        key=key,
        sources=list(sources),
    )


def prompt_intervals(
    judged: pd.DataFrame,
    *,
    l2: float,
    n_bootstrap: int,
    level: float,
    seed: int,
    source: str = "<judgements>",
) -> dict[str, Any]:
    """The intervals of :data:`STATISTICS` as metrics.json keys: ``{key}_ci_low`` and
    ``{key}_ci_high`` for each, and ``ci_level``, ``ci_n_bootstrap``, ``ci_seed``. Every
    statistic is computed on the same resampled prompts."""
    boot = PairedBootstrap(n_bootstrap=n_bootstrap, level=level, seed=seed, key=None)
    out: dict[str, Any] = {}
    for key in STATISTICS:
        got = boot.interval([judged], statistic(key, l2), lambda v: v[0], [source])
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = got.low, got.high
    return {**out, "ci_level": level, "ci_n_bootstrap": n_bootstrap, "ci_seed": seed}


# --- across replicates ---------------------------------------------------------------------------


def across_replicates(values: Sequence[float], level: float) -> tuple[float, float, float]:
    """The mean of one statistic over R independent replicates (runs that differ in their
    seeds alone) and its Student-t interval, mean +- t_{R-1} * sd / sqrt(R): the run-to-run
    spread that an interval over prompts cannot show. NaN bounds for fewer than 2 replicates
    (no spread to estimate) or a NaN value; the bounds are the mean where all values agree.
    Returns (mean, low, high)."""
    from scipy.stats import t as student

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no replicates")
    mean = float(x.mean())
    if x.size < 2 or np.isnan(x).any():
        return mean, math.nan, math.nan
    half = float(student.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


# --- verdicts -----------------------------------------------------------------------------------


def verdict(low: float, high: float, sign: int, tol: float = 0.0) -> str:
    """A claim that an effect is positive (``sign`` +1) or negative (-1), judged by the effect's
    interval: holds when it excludes 0 on the claimed side, reversed when it excludes 0 on the
    other side, inconclusive when it covers 0 (or is unknown). A bound within ``tol`` of 0
    counts as 0 (an effect below the resolution of the statistic excludes nothing)."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if low > high:
        raise ValueError(f"interval [{low}, {high}] has its bounds swapped")
    if sign * low > tol and sign * high > tol:
        return HOLDS
    if sign * low < -tol and sign * high < -tol:
        return REVERSED
    return INCONCLUSIVE
