"""The paper's tables (1-7, 9, 10; there is no Table 8: TRL 1.16 has no PPO trainer) from metric
files, each as a DataFrame and its long form.

Each builder takes (layout, metrics, alphas, agreement) holding at least what its need lists
(:mod:`.inputs`) and returns the table in the paper's layout and its cells (setting, row, column,
value), which :func:`dicewf.paper.paper_vs_reproduced` sets beside the paper's numbers. A row
whose experiment is not configured is left out; a table with no configured rows keeps its
header. Metrics are percentages as the evaluators write them; Arena-Hard CI bounds in
metrics.json are absolute (``arena_ci_low <= arena_score <= arena_ci_high``) and are printed as
offsets ``(-1.4, 1.7)`` as in the paper. Column formats for Markdown/LaTeX are in
``df.attrs["floatfmt"]``. pandas is imported where a frame is made, not when the Snakefile
reads the registry.
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
) -> pd.DataFrame:
    """Rows in order; ``optional`` columns are dropped when no row has a value in them."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=columns)
    drop = [c for c in optional if c in df.columns and df[c].isna().all()]
    df = df.drop(columns=drop)
    df.attrs["floatfmt"] = {c: f for c, f in (floatfmt or {}).items() if c in df.columns}
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
    header, optional, fmt = ["Method"], [], {}
    for s in layout.settings:
        for col, _, f in wanted:
            name = _scol(layout, s, col)
            if col == "Len" and not toy:
                continue
            header.append(name)
            fmt[name] = f
            if col in ("AH WR", "Len", "Gold"):
                optional.append(name)
    rows: dict[str, dict] = {}
    cells: list[Cell] = []
    for label, s, model in per_setting_rows(layout, spec):
        row = rows.setdefault(label, {"Method": label})
        for col, key, _ in wanted:
            name = _scol(layout, s, col)
            if name in header:
                row[name] = got = value(metrics, model, key)
                cells.append((s, label, col, got))
    return frame(list(rows.values()), header, optional, fmt), cells


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
        lc, wr = value(metrics, model, LC), value(metrics, model, WR)
        rows.append(
            {
                "Model": f"DICE-{layout.label(s)} Iter {t} (ours)",
                "LC": lc,
                "WR": wr,
                "Source": "reproduced",
            }
        )
        cells += [(s, f"DICE Iter {t}", "LC", lc), (s, f"DICE Iter {t}", "WR", wr)]
    df = frame(rows, ["Model", "LC", "WR", "Source"], floatfmt={"LC": ".2f", "WR": ".2f"})
    df = df.sort_values("LC", ascending=False, na_position="last", kind="stable")
    return df.reset_index(drop=True), cells


def table3(layout, metrics, alphas, agreement):
    s, rows, cells = layout.main, [], []
    columns = ["Method", "Offline LC", "Offline WR", "DICE LC", "DICE WR"]
    for label, off, dice in table3_rows(layout):
        row = {"Method": label}
        for prefix, model in (("Offline", off), ("DICE", dice)):
            for col, key in (("LC", LC), ("WR", WR)):
                row[f"{prefix} {col}"] = got = value(metrics, model, key)
                if model is not None:
                    cells.append((s, label, f"{prefix} {col}", got))
        rows.append(row)
    return frame(rows, columns, floatfmt={c: ".2f" for c in columns[1:]}), cells


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
    columns = ["Experiment", "gamma", "alpha", "LC", "WR", "Avg. Len."]
    for label, full in table4_rows(layout):
        run, model = layout.runs[full], f"{full}-iter1"
        if has_alpha(layout, full):
            alpha = float(_alpha_of(alphas, full, 1)["alpha"])
            shown = alpha_label(alpha, run)
        else:
            alpha, shown = math.nan, "-"
        gamma = math.nan if run.gamma is None else run.gamma
        values = {
            "gamma": gamma,
            "alpha": alpha,
            "LC": value(metrics, model, LC),
            "WR": value(metrics, model, WR),
            "Avg. Len.": value(metrics, model, LEN),
        }
        rows.append({"Experiment": run.exp, **values, "alpha": shown})
        cells += [(s, label, col, v) for col, v in values.items()]
    return frame(
        rows, columns, floatfmt={"gamma": ".2f", "LC": ".2f", "WR": ".2f", "Avg. Len.": ".0f"}
    ), cells


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
    columns = ["Method", "lambda", "LC", "WR", "Len"]
    for label, full, lam in table7_rows(layout):
        model = f"{full}-iter1"
        values = {
            "LC": value(metrics, model, LC),
            "WR": value(metrics, model, WR),
            "Len": value(metrics, model, LEN),
        }
        rows.append({"Method": label, "lambda": math.nan if lam is None else lam, **values})
        cells += [(s, label, col, v) for col, v in values.items()]
    return frame(
        rows, columns, floatfmt={"lambda": ".2f", "LC": ".2f", "WR": ".2f", "Len": ".0f"}
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
    columns = ["gamma", "Experiment", "Iter AE2", "LC AE2", "Iter AH", ah_col]
    for gamma, full in sweep_rows(layout, s):
        t_ae2, t_ah = sweep_iterations(layout, metrics, full)
        lc = value(metrics, f"{full}-iter{t_ae2}", LC)
        score, low, high = (
            value(metrics, f"{full}-iter{t_ah}", k) for k in (AH_LC, AH_LC_LOW, AH_LC_HIGH)
        )
        rows.append(
            {
                "gamma": gamma,
                "Experiment": layout.runs[full].exp,
                "Iter AE2": t_ae2,
                "LC AE2": lc,
                "Iter AH": t_ah,
                ah_col: arena_text(score, low, high),
            }
        )
        label = sweep_label(gamma)
        cells += [
            (s, label, "LC AE2", lc),
            (s, label, "LC AH score", score),
            (s, label, "LC AH CI low", round(low - score, 9)),
            (s, label, "LC AH CI high", round(high - score, 9)),
        ]
    df = frame(rows, columns, floatfmt={"gamma": ".2f", "LC AE2": ".2f"})
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
