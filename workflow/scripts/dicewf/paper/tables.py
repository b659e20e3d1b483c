"""The paper's tables (1-7, 9, 10; there is no Table 8: TRL 1.16 has no PPO trainer) from metric
files, each as a DataFrame and its long form.

Each builder takes (layout, metrics, alphas, agreement) holding at least what its need lists
(:mod:`.inputs`) and returns the table in the paper's layout and its cells (setting, row, column,
value), which :func:`dicewf.paper.paper_vs_reproduced` sets beside the paper's numbers. A row
whose experiment is not configured is left out; a table with no configured rows keeps its
header. Metrics are percentages as the evaluators write them; Arena-Hard CI bounds in
metrics.json are absolute (``arena_ci_low <= arena_score <= arena_ci_high``) and are printed as
offsets ``(-1.4, 1.7)`` as in the paper. Column formats for Markdown/LaTeX are in
``df.attrs["floatfmt"]``.

Intervals: a metric with a percentile-bootstrap interval in metrics.json (``{key}_ci_low``,
``{key}_ci_high``: the toy eval's, :mod:`dicewf.uncertainty`; Arena-Hard's ``arena_ci_low``,
``arena_ci_high``) gets two more columns, ``{column} low`` and ``{column} high``, named in
``df.attrs["intervals"]``: the CSV keeps them, Markdown and LaTeX print ``value [low, high]``
(:mod:`dicewf.report`). They are left out where no row has them (the paper suite's AlpacaEval).

pandas is imported where a frame is made, not when the Snakefile reads the registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .layout import (
    TABLE1_ROWS,
    TABLE6_ROWS,
    Layout,
    Run,
    has_alpha,
    per_setting_rows,
    replicate_rows,
    sweep_candidates,
    sweep_rows,
    table2_models,
    table3_rows,
    table4_rows,
    table7_rows,
)
from .values import LEADERBOARD

if TYPE_CHECKING:
    import pandas as pd

Cell = tuple[str, str, str, float]  # (setting, row, column, value): the long form of a table

# metrics.json keys behind the table columns
LC, WR, LEN, GOLD = "lc_win_rate", "win_rate", "mean_len_model", "gold_quality"
AH, AH_LOW, AH_HIGH = "arena_score", "arena_ci_low", "arena_ci_high"
# Arena-Hard's length-controlled score (dicewf.arena.length_controlled): Tables 9 and 10
AH_LC, AH_LC_LOW, AH_LC_HIGH = "arena_lc_score", "arena_lc_ci_low", "arena_lc_ci_high"
# a metric's interval bounds in metrics.json (Arena-Hard's score has its own key names)
BOUNDS = {AH: (AH_LOW, AH_HIGH)}


def bounds(key: str) -> tuple[str, str]:
    """metrics.json keys of the interval of metric ``key``: ``{key}_ci_low``/``_ci_high``."""
    return BOUNDS.get(key, (f"{key}_ci_low", f"{key}_ci_high"))


def with_interval(
    row: dict, name: str, metrics: Mapping[str, Mapping[str, Any]], model: str | None, key: str
) -> float:
    """Set ``row[name]`` to the metric and ``row[name + " low"/" high"]`` to its interval
    (NaN where metrics.json has none); return the metric."""
    low, high = bounds(key)
    row[name] = got = value(metrics, model, key)
    row[f"{name} low"], row[f"{name} high"] = (
        value(metrics, model, low),
        value(metrics, model, high),
    )
    return got


def interval_columns(names: Sequence[str]) -> list[str]:
    """Each name, its low and its high column."""
    return [c for n in names for c in (n, f"{n} low", f"{n} high")]


def value(metrics: Mapping[str, Mapping[str, Any]], model: str | None, key: str) -> float:
    """A metric of a model; NaN for a model that is not configured or a key it lacks."""
    if model is None:
        return math.nan
    if model not in metrics:
        raise KeyError(f"metrics of model {model!r} were not given (needs() lists it)")
    got = metrics[model].get(key)
    return math.nan if got is None else float(got)


def _alpha_of(alphas: Mapping, full: str, t: int) -> dict:
    key = (full, t)
    if key not in alphas:
        raise KeyError(f"alpha.json of {full} iteration {t} was not given (needs() lists it)")
    return alphas[key]


def frame(
    rows: list[dict],
    columns: list[str],
    optional: Sequence[str] = (),
    floatfmt: Mapping[str, str] | None = None,
    intervals: Sequence[str] = (),
) -> pd.DataFrame:
    """Rows in order; ``optional`` columns are dropped when no row has a value in them.

    ``intervals``: columns followed by their ``low`` and ``high`` columns (:func:`with_interval`,
    :func:`interval_columns`); a pair no row has a value in is dropped, the others are named in
    ``df.attrs["intervals"]`` (column -> (low, high))."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=columns)
    pairs = {c: (f"{c} low", f"{c} high") for c in intervals if c in df.columns}
    empty = [c for c, pair in pairs.items() if all(df[b].isna().all() for b in pair)]
    drop = [c for c in optional if c in df.columns and df[c].isna().all()]
    drop += [b for c in [*empty, *(c for c in drop if c in pairs)] for b in pairs[c]]
    df = df.drop(columns=list(dict.fromkeys(drop)))
    df.attrs["floatfmt"] = {c: f for c, f in (floatfmt or {}).items() if c in df.columns}
    df.attrs["intervals"] = {c: pair for c, pair in pairs.items() if pair[0] in df.columns}
    return df


def _scol(layout: Layout, setting: str, column: str) -> str:
    """Column name of a per-setting table: prefixed by the setting's label when it is named."""
    return f"{layout.label(setting)} {column}" if setting else column


_PER_SETTING_METRICS = (
    ("LC", LC, ".2f"),
    ("WR", WR, ".2f"),
    ("AH WR", AH, ".1f"),
    ("Len", LEN, ".0f"),
    ("Gold", GOLD, ".3f"),
)


def _per_setting(layout: Layout, metrics, spec, columns) -> tuple[pd.DataFrame, list[Cell]]:
    """Tables 1 and 6: one row per method, ``columns`` of every setting side by side."""
    wanted = [c for c in _PER_SETTING_METRICS if c[0] in columns]
    toy = layout.settings == [""]
    header, optional, fmt, shown = ["Method"], [], {}, []
    for s in layout.settings:
        for col, _, f in wanted:
            name = _scol(layout, s, col)
            if col == "Len" and not toy:
                continue
            header += interval_columns([name])
            shown.append(name)
            fmt[name] = f
            if col in ("AH WR", "Len", "Gold"):
                optional.append(name)
    rows: dict[str, dict] = {}
    cells: list[Cell] = []
    for label, s, model in per_setting_rows(layout, spec):
        row = rows.setdefault(label, {"Method": label})
        for col, key, _ in wanted:
            name = _scol(layout, s, col)
            if name in shown:
                got = with_interval(row, name, metrics, model, key)
                cells.append((s, label, col, got))
    return frame(list(rows.values()), header, optional, fmt, intervals=shown), cells


def table1(layout, metrics, alphas, agreement):
    return _per_setting(layout, metrics, TABLE1_ROWS, ("LC", "WR", "AH WR", "Len", "Gold"))


def table6(layout, metrics, alphas, agreement):
    return _per_setting(layout, metrics, TABLE6_ROWS, ("LC", "WR", "Len", "Gold"))


def table2(layout, metrics, alphas, agreement):
    rows = [
        {"Model": model, "LC": lc, "WR": wr, "Source": "paper"} for model, lc, wr in LEADERBOARD
    ]
    cells: list[Cell] = []
    for s, model, t in table2_models(layout):
        row = {"Model": f"DICE-{layout.label(s)} Iter {t} (ours)"}
        lc, wr = (
            with_interval(row, col, metrics, model, key) for col, key in (("LC", LC), ("WR", WR))
        )
        rows.append({**row, "Source": "reproduced"})
        cells += [(s, f"DICE Iter {t}", "LC", lc), (s, f"DICE Iter {t}", "WR", wr)]
    df = frame(
        rows,
        ["Model", *interval_columns(["LC", "WR"]), "Source"],
        floatfmt={"LC": ".2f", "WR": ".2f"},
        intervals=["LC", "WR"],
    )
    df = df.sort_values("LC", ascending=False, na_position="last", kind="stable")
    return df.reset_index(drop=True), cells


def table3(layout, metrics, alphas, agreement):
    s, rows, cells = layout.main, [], []
    shown = ["Offline LC", "Offline WR", "DICE LC", "DICE WR"]
    for label, off, dice in table3_rows(layout):
        row = {"Method": label}
        for prefix, model in (("Offline", off), ("DICE", dice)):
            for col, key in (("LC", LC), ("WR", WR)):
                got = with_interval(row, f"{prefix} {col}", metrics, model, key)
                if model is not None:
                    cells.append((s, label, f"{prefix} {col}", got))
        rows.append(row)
    return frame(
        rows,
        ["Method", *interval_columns(shown)],
        floatfmt={c: ".2f" for c in shown},
        intervals=shown,
    ), cells


def alpha_label(alpha: float, run: Run) -> str:
    """Table 4's alpha cell: the used alpha, marked (alpha*) / (2 alpha*) when it was searched."""
    text = "0.000" if alpha == 0 else f"{alpha:.3g}"
    if run.alpha_fixed is not None:
        return text
    if run.alpha_scale == 1:
        return f"{text} (alpha*)"
    return f"{text} ({run.alpha_scale:g} alpha*)"


def table4(layout, metrics, alphas, agreement):
    s, rows, cells = layout.main, [], []
    measured = (("LC", LC), ("WR", WR), ("Avg. Len.", LEN))
    columns = ["Experiment", "gamma", "alpha", *interval_columns([c for c, _ in measured])]
    for label, full in table4_rows(layout):
        run, model = layout.runs[full], f"{full}-iter1"
        if has_alpha(layout, full):
            alpha = float(_alpha_of(alphas, full, 1)["alpha"])
            shown = alpha_label(alpha, run)
        else:
            alpha, shown = math.nan, "-"
        gamma = math.nan if run.gamma is None else run.gamma
        row = {"Experiment": run.exp, "gamma": gamma, "alpha": shown}
        values = {"gamma": gamma, "alpha": alpha}
        values |= {col: with_interval(row, col, metrics, model, key) for col, key in measured}
        rows.append(row)
        cells += [(s, label, col, v) for col, v in values.items()]
    return frame(
        rows,
        columns,
        floatfmt={"gamma": ".2f", "LC": ".2f", "WR": ".2f", "Avg. Len.": ".0f"},
        intervals=[c for c, _ in measured],
    ), cells


# the columns of the replicates table: (column, metrics.json key, format)
REPLICATE_METRICS = (
    ("LC", LC, ".2f"),
    ("WR", WR, ".2f"),
    ("Gold", GOLD, ".3f"),
    ("Len", LEN, ".0f"),
)


def replicates(layout, metrics, alphas, agreement):
    """Every replicated experiment's iterations: one row per replicate (its seed, each metric
    with its interval over the evaluation prompts), then their mean with its Student-t interval
    across the replicates at ``layout.level`` (:func:`dicewf.uncertainty.across_replicates`);
    the Interval column says which interval a row's bounds are."""
    from ..uncertainty import across_replicates

    names = [c for c, _, _ in REPLICATE_METRICS]
    columns = ["Experiment", "Iter", "Replicate", "Seed", "Interval", *interval_columns(names)]
    rows, cells = [], []
    for first, t, members in replicate_rows(layout):
        run = layout.runs[first]
        values: dict[str, list[float]] = {c: [] for c in names}
        for r, model, seed in members:
            row = {"Experiment": run.exp, "Iter": t, "Replicate": str(r), "Seed": seed}
            row["Interval"] = "prompts"
            for col, key, _ in REPLICATE_METRICS:
                values[col].append(with_interval(row, col, metrics, model, key))
            rows.append(row)
        row = {"Experiment": run.exp, "Iter": t, "Replicate": f"mean of {len(members)}"}
        row |= {"Seed": math.nan, "Interval": "replicates"}
        for col in names:
            row[col], row[f"{col} low"], row[f"{col} high"] = across_replicates(
                values[col], layout.level
            )
            cells.append((run.setting, f"{run.exp} Iter {t}", col, row[col]))
        rows.append(row)
    fmt = {c: f for c, _, f in REPLICATE_METRICS} | {"Seed": ".0f"}
    return frame(rows, columns, ("Gold", "Len"), fmt, intervals=names), cells


def table5(layout, metrics, alphas, agreement):
    if not layout.agreement or agreement is None:
        return frame([], ["Method"]), []
    rates = dict(agreement["rates"])
    setting = agreement.get("setting", "")
    row = {
        "Method": "Alignment Rate",
        **{k: float(v) for k, v in rates.items()},
        "Tuples": int(agreement["n_tuples"]),
        "Judge": agreement.get("judge", ""),
    }
    df = frame([row], ["Method", *rates, "Tuples", "Judge"], floatfmt={k: ".3f" for k in rates})
    return df, [(setting, "Alignment Rate", k, float(v)) for k, v in rates.items()]


def table7(layout, metrics, alphas, agreement):
    s, rows, cells = layout.main, [], []
    measured = (("LC", LC), ("WR", WR), ("Len", LEN))
    columns = ["Method", "lambda", *interval_columns([c for c, _ in measured])]
    for label, full, lam in table7_rows(layout):
        model = f"{full}-iter1"
        row = {"Method": label, "lambda": math.nan if lam is None else lam}
        values = {col: with_interval(row, col, metrics, model, key) for col, key in measured}
        rows.append(row)
        cells += [(s, label, col, v) for col, v in values.items()]
    return frame(
        rows,
        columns,
        floatfmt={"lambda": ".2f", "LC": ".2f", "WR": ".2f", "Len": ".0f"},
        intervals=[c for c, _ in measured],
    ), cells


def arena_text(score: float, low: float, high: float) -> str:
    """``17.6 (-1.4, 1.7)``: the score and its CI as offsets, as Tables 9/10 print them."""
    if math.isnan(score):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return f"{score:.1f}"
    return f"{score:.1f} (-{score - low:.1f}, {high - score:.1f})"


def sweep_label(gamma: float) -> str:
    return f"gamma={gamma:.2f}"


def sweep_table(name, layout, metrics, alphas, agreement):
    """Tables 9/10: per gamma, LC on AlpacaEval 2 and Arena-Hard's length-controlled score with
    its interval, each at the iteration :func:`sweep_iterations` picks for its benchmark."""
    s = layout.sweep_setting(name)
    rows, cells = [], []
    ah_col = "LC AH: Score (95% CI)"
    columns = ["gamma", "Experiment", "Iter AE2", *interval_columns(["LC AE2"]), "Iter AH", ah_col]
    for gamma, full in sweep_rows(layout, s):
        t_ae2, t_ah = sweep_iterations(layout, metrics, full)
        row = {"gamma": gamma, "Experiment": layout.runs[full].exp, "Iter AE2": t_ae2}
        lc = with_interval(row, "LC AE2", metrics, f"{full}-iter{t_ae2}", LC)
        score, low, high = (
            value(metrics, f"{full}-iter{t_ah}", k) for k in (AH_LC, AH_LC_LOW, AH_LC_HIGH)
        )
        rows.append({**row, "Iter AH": t_ah, ah_col: arena_text(score, low, high)})
        label = sweep_label(gamma)
        cells += [
            (s, label, "LC AE2", lc),
            (s, label, "LC AH score", score),
            (s, label, "LC AH CI low", round(low - score, 9)),
            (s, label, "LC AH CI high", round(high - score, 9)),
        ]
    df = frame(rows, columns, floatfmt={"gamma": ".2f", "LC AE2": ".2f"}, intervals=["LC AE2"])
    if rows and all(r[ah_col] == "-" for r in rows):
        df = df.drop(columns=["Iter AH", ah_col])
    return df, cells


def sweep_iterations(
    layout: Layout, metrics: Mapping[str, Mapping[str, Any]], full: str
) -> tuple[int, int]:
    """(AlpacaEval 2 iteration, Arena-Hard iteration) of a gamma-sweep row.

    With ``report.sweep_iteration`` an integer, that iteration (capped at the run's last) for
    both. With ``best``, the paper's rule: each benchmark's column reports the row's best
    iteration on that benchmark (highest AE2 LC; highest length-controlled Arena-Hard score), the
    earlier iteration on a tie. (Table 9's AE2 column is the best of the two rounds: gamma=0 is
    Table 4's iteration-1 18.88, gamma=1 Table 1's Offline DPO (w/ new ref) iteration 1 in
    Zephyr but iteration 2 in Llama-3; the two benchmarks serve in turn as validation set,
    Appendix F.)
    """
    candidates = sweep_candidates(layout, full)

    def best(key: str) -> int:
        return max(candidates, key=lambda i: (_nan_low(value(metrics, f"{full}-iter{i}", key)), -i))

    return best(LC), best(AH_LC)


def _nan_low(x: float) -> float:
    return -math.inf if math.isnan(x) else x
