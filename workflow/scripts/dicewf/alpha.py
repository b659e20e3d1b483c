"""Length-regularised preference pairs and the search for alpha* (Eq. 5-6, Algorithm 1 line 4).

Each response gets the shaped score ``s - alpha * len`` (Eq. 5). Per prompt the response with the
highest shaped score is the winner and the one with the lowest is the loser; ties go to the first
response in ``sample_idx`` order. alpha* minimises the absolute mean length difference between
winners and losers (Eq. 6).

Units. For the implicit reward ``s`` is the log-ratio ``log pi_theta(y|x) - log pi_ref(y|x)``
(column ``logratio``), not ``reward = beta * logratio``: the official code shapes the log-ratio,
and the paper's alpha* = 0.023 (Figure 2, Table 4) is per character on that scale. Eq. 5 as
printed shapes ``beta * logratio``; both give the same pairs with alpha_reward = beta * alpha.
LLM-as-a-Judge scores have no log-ratio and are shaped on their rating (column ``reward``).

For one prompt, the winner as a function of alpha follows the upper envelope of the lines
``s_i - alpha * len_i`` and the loser follows the lower envelope, so the objective is piecewise
constant in alpha. The ``exact`` search walks both envelopes of every prompt at once and evaluates
the objective on every piece; ``gp`` (Appendix C) and ``grid`` are black-box baselines.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from dicewf.io import SHOWN, DatasetError, check_frame, finite_or_none

LENGTH_COLUMNS = {"chars": "len_chars", "tokens": "len_tokens"}
METHODS = ("exact", "gp", "grid")
# Figure 4's landscape: this share of the points lies in alpha* +- this fraction of the box
LANDSCAPE_DENSE_SHARE = 0.5
LANDSCAPE_WINDOW = 0.1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlphaResult:
    """Outcome of :func:`search_alpha`; ``seconds`` covers checks, preparation and search."""

    alpha: float
    objective: float
    method: str
    n_prompts: int
    n_evaluations: int
    seconds: float
    n_dropped: int = 0
    length_unit: str = "chars"
    score: str = "logratio"

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain Python values, ready for JSON."""
        out = asdict(self)
        for key in ("alpha", "objective", "seconds"):
            out[key] = float(out[key])
        for key in ("n_prompts", "n_evaluations", "n_dropped"):
            out[key] = int(out[key])
        return out


@dataclass(frozen=True)
class _Table:
    """Eligible responses as (prompt x response) arrays, responses in ``sample_idx`` order.

    ``rewards`` holds the shaped column (``logratio`` or ``reward``). Cells past a prompt's last
    response are padding: ``valid`` is False and ``rows`` is -1. ``rows`` holds positions in
    ``frame`` (eligible rows sorted by prompt_id, sample_idx).
    """

    rewards: np.ndarray
    lengths: np.ndarray
    valid: np.ndarray
    rows: np.ndarray
    frame: pd.DataFrame
    length_column: str
    n_dropped: int

    @property
    def n_prompts(self) -> int:
        return self.rewards.shape[0]


def _length_column(length_unit: str) -> str:
    try:
        return LENGTH_COLUMNS[length_unit]
    except KeyError:
        raise ValueError(
            f"unknown length_unit {length_unit!r}; expected one of {sorted(LENGTH_COLUMNS)}"
        ) from None


def eligible(scores: pd.DataFrame, min_responses: int = 2) -> tuple[pd.DataFrame, int]:
    """Keep the prompts with at least ``min_responses`` responses; return them and the number
    of prompts dropped."""
    if min_responses < 1:
        raise ValueError(f"min_responses must be at least 1, got {min_responses}")
    check_frame(scores, {"prompt_id": "str"}, "<scores>")
    counts = scores.groupby("prompt_id", sort=False)["prompt_id"].transform("size")
    keep = counts.to_numpy() >= min_responses
    n_dropped = int(scores.loc[~keep, "prompt_id"].nunique())
    return scores.loc[keep], n_dropped


def score_column(scores: pd.DataFrame) -> str:
    """The column alpha shapes: ``logratio`` where the frame has it (implicit-reward scores),
    else ``reward`` (LLM-as-a-Judge ratings)."""
    return "logratio" if "logratio" in scores.columns else "reward"


def _table(
    scores: pd.DataFrame, length_unit: str, min_responses: int, source: str, score: str
) -> _Table:
    """Check ``scores``, drop ineligible prompts and lay the rest out as padded arrays."""
    column = _length_column(length_unit)
    schema = {
        "prompt_id": "str",
        "prompt": "str",
        "sample_idx": "int",
        "response": "str",
        "reward": "float",
        score: "float",
        column: "float",
    }
    # one prompt text per prompt_id, or a pair could join responses to two different prompts
    check_frame(scores, schema, source, finite=(score, column), one_prompt_per_id=True)
    negative = scores.index[scores[column].to_numpy() < 0].tolist()
    if negative:
        raise DatasetError(
            f"{source}: column {column!r} has negative lengths at rows {negative[:5]}"
        )
    duplicated = scores.index[scores.duplicated(["prompt_id", "sample_idx"])].tolist()
    if duplicated:
        raise DatasetError(f"{source}: repeated (prompt_id, sample_idx) at rows {duplicated[:5]}")
    kept, n_dropped = eligible(scores, min_responses)
    if kept.empty:
        raise ValueError(
            f"{source}: no prompt has at least {min_responses} responses "
            f"({n_dropped} prompt(s) dropped); cannot build preference pairs"
        )
    frame = kept.sort_values(["prompt_id", "sample_idx"], kind="stable").reset_index(drop=True)
    codes, uniques = pd.factorize(frame["prompt_id"])
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    sizes = np.diff(np.r_[starts, len(frame)])
    slot = np.arange(len(frame)) - np.repeat(starts, sizes)
    shape = (len(uniques), int(sizes.max()))
    rows = np.full(shape, -1, dtype=np.int64)
    rows[codes, slot] = np.arange(len(frame))
    rewards = np.zeros(shape)
    rewards[codes, slot] = frame[score].to_numpy(dtype=float)
    lengths = np.zeros(shape)
    lengths[codes, slot] = frame[column].to_numpy(dtype=float)
    return _Table(rewards, lengths, rows >= 0, rows, frame, column, n_dropped)


def _pick(table: _Table, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shaped rewards and the winner and loser slot of every prompt at ``alpha``."""
    shaped = table.rewards - alpha * table.lengths
    winner = np.where(table.valid, shaped, -np.inf).argmax(axis=1)
    loser = np.where(table.valid, shaped, np.inf).argmin(axis=1)
    return shaped, winner, loser


def _length_sum(table: _Table, alpha: float) -> float:
    """Sum over prompts of len_winner - len_loser at ``alpha``."""
    _, winner, loser = _pick(table, alpha)
    prompts = np.arange(table.n_prompts)
    return float((table.lengths[prompts, winner] - table.lengths[prompts, loser]).sum())


def _objective(table: _Table, alpha: float) -> float:
    return abs(_length_sum(table, alpha)) / table.n_prompts


def objective(
    scores: pd.DataFrame,
    alpha: float,
    length_unit: str = "chars",
    *,
    min_responses: int = 2,
    source: str = "<scores>",
    score: str = "logratio",
) -> float:
    """Eq. 6 at ``alpha``: |mean over eligible prompts of (len_winner - len_loser)|.

    ``score`` names the shaped column (``logratio``; ``reward`` for judge ratings). Prompts whose
    shaped scores are all equal count with a length difference of 0.
    """
    return _objective(_table(scores, length_unit, min_responses, source, score), alpha)


def build_pairs(
    scores: pd.DataFrame,
    alpha: float,
    length_unit: str = "chars",
    *,
    min_responses: int = 2,
    source: str = "<scores>",
    score: str = "logratio",
    ref_logps: str | None = None,
) -> pd.DataFrame:
    """The preference dataset D(alpha): one (chosen, rejected) row per eligible prompt.

    Prompts whose winner and loser have the same shaped score carry no preference and are left
    out. ``chosen_reward``/``rejected_reward`` hold the unshaped ``reward`` column. ``attrs``
    records ``n_degenerate`` (those prompts), ``n_dropped`` (prompts with fewer than
    ``min_responses`` responses), ``length_unit`` and ``score``. Rows are ordered by prompt_id.
    ``ref_logps`` names the scores column that holds log pi_ref of the train reference
    (:func:`dicewf.reflogps.reused_column`): its values and ``len_tokens`` become the pairs'
    ``ref_chosen_logps`` / ``ref_rejected_logps`` and ``ref_chosen_tokens`` /
    ``ref_rejected_tokens`` (:mod:`dicewf.reflogps`); None adds no column.
    """
    table = _table(scores, length_unit, min_responses, source, score)
    shaped, winner, loser = _pick(table, alpha)
    prompts = np.arange(table.n_prompts)
    informative = shaped[prompts, winner] != shaped[prompts, loser]
    chosen = table.rows[prompts, winner][informative]
    rejected = table.rows[prompts, loser][informative]

    def take(column: str, rows: np.ndarray) -> pd.Series:
        return table.frame[column].iloc[rows].reset_index(drop=True)

    chosen_len = take(table.length_column, chosen)
    rejected_len = take(table.length_column, rejected)
    pairs = pd.DataFrame(
        {
            "prompt_id": take("prompt_id", chosen),
            "prompt": take("prompt", chosen),
            "chosen": take("response", chosen),
            "rejected": take("response", rejected),
            "chosen_sample_idx": take("sample_idx", chosen),
            "rejected_sample_idx": take("sample_idx", rejected),
            "chosen_reward": take("reward", chosen),
            "rejected_reward": take("reward", rejected),
            "chosen_len": chosen_len,
            "rejected_len": rejected_len,
            "len_diff": chosen_len - rejected_len,
            "alpha": float(alpha),
        }
    )
    if ref_logps is not None:
        check_frame(table.frame, {ref_logps: "float", "len_tokens": "int"}, source)
        pairs["ref_chosen_logps"] = take(ref_logps, chosen).astype(float)
        pairs["ref_rejected_logps"] = take(ref_logps, rejected).astype(float)
        pairs["ref_chosen_tokens"] = take("len_tokens", chosen).astype("int64")
        pairs["ref_rejected_tokens"] = take("len_tokens", rejected).astype("int64")
    pairs.attrs.update(
        n_degenerate=int((~informative).sum()),
        n_dropped=table.n_dropped,
        length_unit=length_unit,
        score=score,
    )
    return pairs


def landscape(
    scores: pd.DataFrame,
    alphas: Sequence[float] | np.ndarray,
    length_unit: str = "chars",
    *,
    min_responses: int = 2,
    source: str = "<scores>",
    score: str = "logratio",
) -> pd.DataFrame:
    """Objective and signed mean length difference at each alpha (Figure 4).

    Each alpha is one vectorised pass over the (prompt x response) arrays, so the values agree
    exactly with :func:`objective`, ties included.
    """
    table = _table(scores, length_unit, min_responses, source, score)
    grid = np.asarray(alphas, dtype=float)
    means = np.array([_length_sum(table, a) for a in grid]) / table.n_prompts
    return pd.DataFrame({"alpha": grid, "objective": np.abs(means), "mean_len_diff": means})


def _walk(
    rewards: np.ndarray, lengths: np.ndarray, valid: np.ndarray, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Follow the upper envelope of the lines ``rewards - alpha * lengths`` of every prompt.

    Returns the envelope's length just above ``lo`` per prompt and its breakpoints below ``hi``
    as (alpha, change in length) events. Along the envelope the length strictly decreases.
    """
    n_prompts, width = rewards.shape
    prompts = np.arange(n_prompts)
    shaped = np.where(valid, rewards - lo * lengths, -np.inf)
    top = valid & (shaped == shaped.max(axis=1, keepdims=True))
    shortest = np.where(top, lengths, np.inf).min(axis=1, keepdims=True)
    current = (top & (lengths == shortest)).argmax(axis=1)
    start = lengths[prompts, current]
    active = np.ones(n_prompts, dtype=bool)
    at: list[np.ndarray] = []
    change: list[np.ndarray] = []
    for _ in range(width - 1):
        cur_reward = rewards[prompts, current][:, None]
        cur_length = lengths[prompts, current][:, None]
        shorter = valid & (lengths < cur_length) & active[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = np.where(shorter, (cur_reward - rewards) / (cur_length - lengths), np.inf)
        first = cross.min(axis=1)
        active = first < hi
        if not active.any():
            break
        tied = shorter & (cross == first[:, None])
        shortest = np.where(tied, lengths, np.inf).min(axis=1, keepdims=True)
        following = (tied & (lengths == shortest)).argmax(axis=1)
        at.append(first[active])
        change.append(lengths[prompts, following][active] - lengths[prompts, current][active])
        current = np.where(active, following, current)
    empty = np.empty(0)
    return start, np.concatenate(at) if at else empty, np.concatenate(change) if change else empty


def _pieces(table: _Table, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct breakpoints b_1 < ... < b_m in (lo, hi) and the length sum on each open piece
    (lo, b_1), (b_1, b_2), ..., (b_m, hi)."""
    total = 0.0
    points: list[np.ndarray] = []
    changes: list[np.ndarray] = []
    # The loser follows the upper envelope of the negated lines; in those coordinates both walks
    # add their (signed) length to sum(len_winner - len_loser).
    for sign in (1.0, -1.0):
        start, at, change = _walk(sign * table.rewards, sign * table.lengths, table.valid, lo, hi)
        total += float(start.sum())
        points.append(at)
        changes.append(change)
    at = np.concatenate(points)
    change = np.concatenate(changes)
    rounding = at <= lo  # crossings that fall on lo in floating point
    total += float(change[rounding].sum())
    breakpoints, which = np.unique(at[~rounding], return_inverse=True)
    steps = np.bincount(which, weights=change[~rounding], minlength=len(breakpoints))
    return breakpoints, total + np.concatenate([[0.0], np.cumsum(steps)])


def _search_exact(table: _Table, lo: float, hi: float) -> tuple[float, float, int]:
    candidates = [lo]
    values = [_objective(table, lo)]
    if hi > lo:
        breakpoints, sums = _pieces(table, lo, hi)
        edges = np.concatenate([[lo], breakpoints, [hi]])
        candidates.extend(((edges[:-1] + edges[1:]) / 2).tolist())
        values.extend((np.abs(sums) / table.n_prompts).tolist())
    best = int(np.argmin(values))
    return float(candidates[best]), float(values[best]), len(values)


def _search_gp(
    table: _Table, lo: float, hi: float, n_calls: int, seed: int
) -> tuple[float, float, int]:
    from skopt import gp_minimize

    with warnings.catch_warnings():
        # the objective is piecewise constant, so the optimiser often proposes a known point
        warnings.filterwarnings("ignore", message="The objective has been evaluated")
        res = gp_minimize(
            lambda x: _objective(table, float(x[0])),
            [(lo, hi)],
            n_calls=n_calls,
            n_initial_points=min(10, n_calls),
            random_state=seed,
        )
    return float(res.x[0]), float(res.fun), len(res.func_vals)


def _search_grid(table: _Table, lo: float, hi: float, step: float) -> tuple[float, float, int]:
    if not step > 0:
        raise ValueError(f"grid_step must be positive, got {step}")
    count = int(np.floor((hi - lo) / step + 1e-9)) + 1
    alphas = np.minimum(lo + step * np.arange(count), hi)
    values = [_objective(table, float(a)) for a in alphas]
    best = int(np.argmin(values))
    return float(alphas[best]), float(values[best]), len(values)


def search_alpha(
    scores: pd.DataFrame,
    method: str = "exact",
    bounds: tuple[float, float] = (0.0, 0.1),
    length_unit: str = "chars",
    grid_step: float = 0.001,
    n_calls: int = 30,
    seed: int = 0,
    *,
    min_responses: int = 2,
    source: str = "<scores>",
    score: str = "logratio",
) -> AlphaResult:
    """Find alpha* in ``bounds`` minimising Eq. 6; alpha is per length unit on the scale of the
    ``score`` column (the log-ratio by default, see the module's note on units).

    ``exact`` evaluates the objective at ``lo`` and at the midpoint of every open piece between
    consecutive distinct breakpoints (where some prompt's winner or loser changes) and returns the
    smallest candidate with the minimal objective. Where every prompt's responses share one
    length the objective is 0 everywhere and ``lo`` is returned. A value reached only exactly at a
    breakpoint (three or more responses tied there) is not a candidate. ``gp`` runs
    ``skopt.gp_minimize`` (Appendix C); ``grid`` tries lo, lo + grid_step, ..., hi and keeps the
    smallest alpha with the minimal objective.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"bounds must be finite with lo <= hi, got {bounds}")
    started = time.perf_counter()
    table = _table(scores, length_unit, min_responses, source, score)
    if lo == hi:
        alpha, value, evaluations = lo, _objective(table, lo), 1
    elif method == "exact":
        alpha, value, evaluations = _search_exact(table, lo, hi)
    elif method == "gp":
        alpha, value, evaluations = _search_gp(table, lo, hi, n_calls, seed)
    else:
        alpha, value, evaluations = _search_grid(table, lo, hi, grid_step)
    return AlphaResult(
        alpha=alpha,
        objective=value,
        method=method,
        n_prompts=table.n_prompts,
        n_evaluations=evaluations,
        seconds=time.perf_counter() - started,
        n_dropped=table.n_dropped,
        length_unit=length_unit,
        score=score,
    )


def landscape_grid(lo: float, hi: float, centre: float, points: int) -> np.ndarray:
    """``points`` sorted alphas over [lo, hi] for Figure 4, denser around ``centre`` (alpha*).

    A share :data:`LANDSCAPE_DENSE_SHARE` of the points falls in ``centre`` +- a fraction
    :data:`LANDSCAPE_WINDOW` of the box (clipped to it), the rest spreads over the whole box, so
    the dip at alpha* is resolved whatever the box. lo and hi are always points; ``centre``
    replaces its nearest point when it lies in the box.
    """
    if points < 1:
        raise ValueError(f"landscape points must be at least 1, got {points}")
    if points < 3 or hi <= lo:
        return np.linspace(lo, hi, points)
    half = LANDSCAPE_WINDOW * (hi - lo)
    a, b = min(max(lo, centre - half), hi), max(min(hi, centre + half), lo)
    knots = np.unique([lo, a, b, hi])
    lengths = np.diff(knots)
    density = (1.0 - LANDSCAPE_DENSE_SHARE) / (hi - lo) * np.ones_like(lengths)
    if b > a:
        inside = (knots[:-1] >= a) & (knots[1:] <= b)
        density[inside] += LANDSCAPE_DENSE_SHARE / (b - a)
    cdf = np.concatenate([[0.0], np.cumsum(density * lengths)])
    grid = np.interp(np.linspace(0.0, 1.0, points), cdf / cdf[-1], knots)
    grid[0], grid[-1] = lo, hi
    if lo <= centre <= hi:
        grid[int(np.argmin(np.abs(grid - centre)))] = centre
    return grid


@dataclass(frozen=True)
class SearchOutput:
    """What the search_alpha rule writes: alpha.json, D(alpha*) and Figure 2's data."""

    result: dict[str, Any]
    pairs: pd.DataFrame
    length_diffs: pd.DataFrame


def _single_beta(scores: pd.DataFrame, source: str) -> float | None:
    if "beta" not in scores.columns:
        return None
    betas = pd.unique(scores["beta"])
    if len(betas) != 1:
        raise DatasetError(
            f"{source}: column 'beta' holds {len(betas)} distinct values ({list(betas[:5])}); "
            "one scoring run has one beta"
        )
    return float(betas[0])


def _check_implicit_rewards(scores: pd.DataFrame, source: str) -> None:
    """Refuse NaN or infinite implicit rewards, naming rows and prompt ids."""
    columns = [c for c in ("logratio", "reward") if c in scores.columns]
    values = scores[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        rows = scores.index[bad].tolist()[:SHOWN]
        ids = (
            scores.loc[bad, "prompt_id"].unique().tolist()[:SHOWN]
            if "prompt_id" in scores.columns
            else []
        )
        raise DatasetError(
            f"{source}: {int(bad.sum())} of {len(scores)} implicit rewards ({'/'.join(columns)}) "
            f"are NaN or infinite, at rows {rows} (prompt ids {ids}): a NaN log-probability "
            "means a broken policy or reference model; rescore with working models"
        )


def _rated(scores: pd.DataFrame, source: str) -> tuple[pd.DataFrame, str, int]:
    """(the scores that take part, the shaped column, how many responses are unrated).

    For LLM-as-a-Judge ratings, rows whose ``reward`` is NaN (an unparsed rating) take no part;
    a NaN or infinite implicit reward is an error (a broken model)."""
    score = score_column(scores)
    n_unrated = 0
    if score == "logratio":
        # an implicit reward is never missing: a NaN log-probability means a broken model
        _check_implicit_rewards(scores, source)
    elif "reward" in scores.columns:
        unrated = scores["reward"].isna()
        n_unrated = int(unrated.sum())
        if n_unrated:
            log.info(
                "%s: %d of %d responses have no reward (unparsed rating)",
                source,
                n_unrated,
                len(scores),
            )
            scores = scores[~unrated].reset_index(drop=True)
    return scores, score, n_unrated


def run_search(
    scores: pd.DataFrame,
    params: Mapping[str, Any],
    *,
    source: str = "<scores>",
    ref_logps: str | None = None,
) -> SearchOutput:
    """alpha* of Eq. 6 with an experiment's ``alpha`` config block, and D(alpha*).

    ``params`` holds method, bounds, length_unit, grid_step, n_calls, min_responses, seed, fixed
    and scale. For LLM-as-a-Judge ratings, rows whose ``reward`` is NaN (an unparsed rating)
    take no part and are counted in ``n_unrated``; a NaN or infinite implicit reward is an error
    (a broken model). No pair at all (every prompt's responses tie) is an error naming
    ``source``. Non-finite numbers in the result are None, so it writes as valid JSON. Implicit-
    reward scores are shaped on ``logratio`` (see :func:`score_column`), so ``alpha`` in the
    result, ``bounds`` and ``fixed`` are per length unit on the log-ratio scale, the paper's
    units; ``alpha_reward`` = beta * alpha is the same penalty on the reward scale (None for
    judge ratings). The used alpha is ``fixed`` when set, else alpha* (``alpha_searched``) times
    ``scale``. ``zero_gap_in_bounds`` is False when the signed mean length difference keeps one
    sign over the whole box (alpha* may lie outside it; a warning is logged). ``ref_logps``:
    the column of reused reference log-probs (:func:`build_pairs`), None for none.
    """
    scores, score, n_unrated = _rated(scores, source)
    beta = _single_beta(scores, source) if score == "logratio" else None
    common = {
        "length_unit": params["length_unit"],
        "min_responses": params["min_responses"],
        "source": source,
        "score": score,
    }
    lo, hi = (float(v) for v in params["bounds"])
    scale = float(params["scale"])
    if params["fixed"] is not None:
        result: dict[str, Any] = {
            "method": "fixed",
            "alpha_searched": None,
            "alpha": float(params["fixed"]),
        }
    else:
        found = search_alpha(
            scores,
            params["method"],
            (lo, hi),
            grid_step=params["grid_step"],
            n_calls=params["n_calls"],
            seed=params["seed"],
            **common,
        )
        result = {**found.to_dict(), "alpha_searched": found.alpha, "alpha": found.alpha * scale}
    alpha = result["alpha"]
    pairs = build_pairs(scores, alpha, **common, ref_logps=ref_logps)
    if pairs.empty:
        n_tied = pairs.attrs["n_degenerate"]
        raise ValueError(
            f"{source}: no preference pair at alpha = {alpha:g}: the responses of all {n_tied} "
            f"prompt(s) with at least {params['min_responses']} responses tie on the shaped "
            f"{score!r} (winner and loser score the same; {pairs.attrs['n_dropped']} prompt(s) "
            "had too few responses), so D(alpha) would be empty. Check the scores: rewards that "
            "all tie usually mean identical policy and reference models, or identical responses"
        )
    unshaped = build_pairs(scores, 0.0, **common)
    ends = landscape(scores, [lo, hi], **common)["mean_len_diff"].to_numpy()
    bracketed = bool(ends[0] * ends[1] <= 0)
    if not bracketed and params["fixed"] is None:
        log.warning(
            "%s: the mean length difference is %.4g at alpha = %g and %.4g at %g: it "
            "keeps its sign over the bounds, so alpha* may lie outside them",
            source,
            ends[0],
            lo,
            ends[1],
            hi,
        )
    result.update(
        score=score,
        beta=beta,
        alpha_reward=None if beta is None else alpha * beta,
        scale=scale,
        bounds=[lo, hi],
        length_unit=params["length_unit"],
        objective=objective(scores, alpha, **common),
        objective_alpha0=objective(scores, 0.0, **common),
        zero_gap_in_bounds=bracketed,
        n_pairs=len(pairs),
        n_degenerate=pairs.attrs["n_degenerate"],
        n_prompts_dropped=pairs.attrs["n_dropped"],
        mean_len_diff=float(pairs["len_diff"].mean()),
        mean_len_diff_alpha0=float(unshaped["len_diff"].mean()),
        n_unrated=n_unrated,
    )
    # D(0) is empty when a fixed alpha > 0 breaks ties that alpha = 0 leaves: null, not NaN
    result = finite_or_none(result)
    length_diffs = pd.concat(
        [
            pd.DataFrame(
                {
                    "dataset": "D(0)",
                    "prompt_id": unshaped["prompt_id"],
                    "len_diff": unshaped["len_diff"].astype("int64"),
                }
            ),
            pd.DataFrame(
                {
                    "dataset": "D(alpha*)",
                    "prompt_id": pairs["prompt_id"],
                    "len_diff": pairs["len_diff"].astype("int64"),
                }
            ),
        ],
        ignore_index=True,
    )
    return SearchOutput(result, pairs, length_diffs)


def figure4_landscape(
    scores: pd.DataFrame,
    result: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    points: int,
    source: str = "<scores>",
) -> pd.DataFrame:
    """Figure 4's data: the objective of Eq. 6 at ``points`` alphas over the ``bounds`` of the
    experiment's ``alpha`` block (``params``), dense around the searched alpha* of ``result``
    (alpha.json of :func:`run_search`; the fixed alpha when nothing was searched).

    Computed apart from the search, so a new point count redraws Figure 4 from cached scores.
    """
    scores, score, _ = _rated(scores, source)
    lo, hi = (float(v) for v in params["bounds"])
    searched = result["alpha_searched"]
    centre = float(result["alpha"] if searched is None else searched)
    return landscape(
        scores,
        landscape_grid(lo, hi, centre, points),
        params["length_unit"],
        min_responses=params["min_responses"],
        source=source,
        score=score,
    )
