"""Writing tables (CSV, Markdown, LaTeX) and drawing the paper's figures, atomically.

Everything here reads small frames only (no model, no GPU); what goes into each table and
figure is decided by :mod:`dicewf.paper`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .alpha import LANDSCAPE_WINDOW
from .io import atomic_path, check_frame, write_text

FloatFormat = str | Mapping[str, str]


def _formatter(floatfmt: FloatFormat | None, escape=str):
    """A cell formatter: floats by their column's format (default .2f), NaN as "-"."""
    per_column = dict(floatfmt) if isinstance(floatfmt, Mapping) else {}
    default = floatfmt if isinstance(floatfmt, str) else ".2f"

    def fmt(column: str, value) -> str:
        if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
            return "-"
        if isinstance(value, (float, np.floating)):
            return format(float(value), per_column.get(column, default))
        return escape(str(value))

    return fmt


def _floatfmt(df: pd.DataFrame, floatfmt: FloatFormat | None) -> FloatFormat:
    # a table built by dicewf.paper carries its column formats in df.attrs["floatfmt"]
    return floatfmt if floatfmt is not None else df.attrs.get("floatfmt") or ".2f"


def _shown(df: pd.DataFrame, fmt) -> tuple[list[str], list[list[str]]]:
    """The printed columns and cells: a column of ``df.attrs["intervals"]`` (column ->
    (low column, high column)) as ``value [low, high]`` in the column's format (the bounds
    left out where either is missing), its bound columns not printed on their own."""
    intervals = df.attrs.get("intervals") or {}
    hidden = {b for pair in intervals.values() for b in pair}
    columns = [c for c in df.columns if c not in hidden]
    rows = []
    for record in df.to_dict("records"):
        cells = []
        for c in columns:
            text = fmt(c, record[c])
            if c in intervals and text != "-":
                low, high = (fmt(c, record[b]) for b in intervals[c])
                if low != "-" and high != "-":
                    text += f" [{low}, {high}]"
            cells.append(text)
        rows.append(cells)
    return columns, rows


def to_markdown(df: pd.DataFrame, floatfmt: FloatFormat | None = None) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency).

    ``floatfmt``: one format for every float, or {column: format} (others .2f); by default
    ``df.attrs["floatfmt"]`` or .2f. Missing values print as "-". A column with an interval
    (``df.attrs["intervals"]``) prints as ``value [low, high]``.
    """
    columns, rows = _shown(df, _formatter(_floatfmt(df, floatfmt)))
    header = "| " + " | ".join(map(str, columns)) + " |"
    align = (
        "|"
        + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else ":---" for c in columns)
        + "|"
    )
    body = ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join([header, align, *body]) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(
    df: pd.DataFrame, caption: str = "", label: str = "", floatfmt: FloatFormat | None = None
) -> str:
    """A booktabs ``table`` environment (no extra dependency); formats (and intervals) as
    :func:`to_markdown`."""
    columns, rows = _shown(df, _formatter(_floatfmt(df, floatfmt), escape=_latex_escape))
    cols = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(_latex_escape(str(c)) for c in columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(cells) + r" \\" for cells in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    csv: str | os.PathLike,
    md: str | os.PathLike,
    caption: str = "",
    tex: str | os.PathLike | None = None,
    label: str = "",
    floatfmt: FloatFormat | None = None,
) -> None:
    """Write a table as CSV, Markdown and (when ``tex`` is given) LaTeX, atomically."""
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    text = (f"{caption.strip()}\n\n" if caption.strip() else "") + to_markdown(df, floatfmt)
    write_text(text, md)
    if tex is not None:
        write_text(to_latex(df, " ".join(caption.split()), label, floatfmt), tex)


def _save_figure(fig, png: str | os.PathLike, pdf: str | os.PathLike | None) -> None:
    for path in filter(None, (png, pdf)):
        suffix = Path(path).suffix
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix.lstrip("."), dpi=150, bbox_inches="tight")


def figure2(
    length_diffs: pd.DataFrame,
    offline: pd.DataFrame,
    png,
    pdf=None,
    *,
    bins: int,
    alpha_star: float | None = None,
    source: str = "<length_diffs>",
):
    """Figure 2: distribution of |y_w| - |y_l| for D(0), D(alpha*) (top) and D_offline (bottom).

    Returns the (closed) matplotlib figure, whose axes hold the drawn histograms.
    """
    plt = _pyplot()
    check_frame(length_diffs, {"dataset": "str", "len_diff": "int"}, source)
    check_frame(
        offline, {"chosen": "str", "rejected": "str"}, offline.attrs.get("source", "<offline>")
    )
    off = offline["chosen"].str.len() - offline["rejected"].str.len()
    allv = np.concatenate([length_diffs["len_diff"].to_numpy(), off.to_numpy()])
    edges = np.histogram_bin_edges(allv, bins=bins)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    colours = {"D(0)": "tab:green", "D(alpha*)": "tab:orange"}
    for name, group in length_diffs.groupby("dataset", sort=True):
        label = (
            name
            if name != "D(alpha*)" or alpha_star is None
            else f"D(alpha*), alpha*={alpha_star:.4g}"
        )
        top.hist(
            group["len_diff"],
            bins=edges,
            alpha=0.6,
            color=colours.get(name),
            label=f"{label}: mean {group['len_diff'].mean():.1f}",
        )
    top.axvline(0, color="k", lw=0.8)
    top.set_ylabel("pairs")
    top.set_title("Generated pairs, iteration 1")
    top.legend(fontsize=8)
    bottom.hist(
        off, bins=edges, color="tab:blue", alpha=0.7, label=f"D_offline: mean {off.mean():.1f}"
    )
    bottom.axvline(0, color="k", lw=0.8)
    bottom.set_xlabel("|y_w| - |y_l| (characters)")
    bottom.set_ylabel("pairs")
    bottom.set_title("Offline preference data")
    bottom.legend(fontsize=8)
    _save_figure(fig, png, pdf)
    plt.close(fig)
    return fig


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def zoom_range(alphas, centre: float) -> tuple[float, float]:
    """Figure 4's zoom: ``centre`` +- :data:`dicewf.alpha.LANDSCAPE_WINDOW` of the landscape's
    alpha span, clipped to it (where :func:`dicewf.alpha.landscape_grid` puts its dense points)."""
    values = np.asarray(alphas, dtype=float)
    lo, hi = float(values.min()), float(values.max())
    half = LANDSCAPE_WINDOW * (hi - lo)
    a, b = max(lo, centre - half), min(hi, centre + half)
    return (a, b) if b > a else (lo, hi)


def _landscape_panel(
    ax, zoom, landscape: pd.DataFrame, colour: str, label: str, centre: float, xlabel: str
) -> None:
    """The whole box on ``ax`` (the zoomed span shaded) and ``centre``'s neighbourhood on
    ``zoom``, each landscape point marked there."""
    ylabel = "|E[|y_w| - |y_l|]| (characters)"
    ax.step(landscape["alpha"], landscape["objective"], where="post", color=colour, label=label)
    a, b = zoom_range(landscape["alpha"], centre)
    ax.axvspan(a, b, color="0.9", zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    near = landscape[(landscape["alpha"] >= a) & (landscape["alpha"] <= b)]
    zoom.step(near["alpha"], near["objective"], where="post", color=colour, marker=".", ms=3)
    zoom.set_xlim(a, b)
    zoom.set_xlabel(xlabel)
    zoom.set_ylabel(ylabel)
    zoom.set_title(f"zoom: {len(near)} of {len(landscape)} points", fontsize=9)


def figure4(
    landscape: pd.DataFrame,
    png,
    pdf=None,
    *,
    alpha_star: float | None = None,
    source: str = "<landscape>",
    judge: pd.DataFrame | None = None,
    judge_source: str = "<judge landscape>",
    xlabel: str = "alpha (log-ratio per character)",
    judge_xlabel: str = "alpha (rating per character)",
):
    """Figure 4: the Eq. 6 objective |E[|y_w| - |y_l|]| against alpha.

    Left: the implicit reward, with alpha* marked. Right (when ``judge`` is given): the
    LLM-as-a-Judge reward, with the minimum of its landscape marked (the paper's is at alpha=0).
    Each panel shows the whole box over a zoom on the marked alpha (:func:`zoom_range`), so the
    dip stays resolved however narrow it is next to the box. Returns the (closed) matplotlib
    figure, whose axes hold the drawn lines.
    """
    plt = _pyplot()
    check_frame(landscape, {"alpha": "float", "objective": "float"}, source)
    if judge is not None:
        check_frame(judge, {"alpha": "float", "objective": "float"}, judge_source)
    ncols = 1 if judge is None else 2
    fig, axes = plt.subplots(2, ncols, figsize=(6 * ncols, 6.5), squeeze=False)
    left, left_zoom = axes[0][0], axes[1][0]
    best = landscape.loc[landscape["objective"].idxmin()]
    centre = float(best["alpha"]) if alpha_star is None else float(alpha_star)
    _landscape_panel(left, left_zoom, landscape, "tab:purple", "implicit reward", centre, xlabel)
    if alpha_star is not None:
        for ax in (left, left_zoom):
            ax.axvline(alpha_star, color="tab:orange", ls="--", label=f"alpha* = {alpha_star:.4g}")
    left.set_title("Objective landscape of Eq. 6" if judge is None else "Implicit reward")
    left.legend(fontsize=8)
    if judge is not None:
        right, right_zoom = axes[0][1], axes[1][1]
        best = judge.loc[judge["objective"].idxmin()]
        _landscape_panel(
            right,
            right_zoom,
            judge,
            "tab:blue",
            "LLM-as-a-Judge",
            float(best["alpha"]),
            judge_xlabel,
        )
        for ax in (right, right_zoom):
            ax.plot(
                [best["alpha"]],
                [best["objective"]],
                "o",
                color="tab:red",
                label=f"minimum at alpha = {best['alpha']:.4g}",
            )
        right.set_title("LLM-as-a-Judge reward")
        right.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, png, pdf)
    plt.close(fig)
    return fig


def _column(frame: pd.DataFrame, column: str, keys) -> list[float]:
    """``frame[column]`` at each of ``keys`` (its index), NaN where absent."""
    if column not in frame.columns:
        return [np.nan] * len(keys)
    return [float(frame[column].get(k, np.nan)) for k in keys]


def _error_bars(values, lows, highs) -> np.ndarray | None:
    """matplotlib's ``yerr`` (2, n) from interval bounds: 0 where a bound is unknown, None
    where none is known."""
    v, lo, hi = (np.asarray(a, dtype=float) for a in (values, lows, highs))
    known = ~(np.isnan(v) | np.isnan(lo) | np.isnan(hi))
    if not known.any():
        return None
    return np.where(known, np.stack([v - lo, hi - v]), 0.0).clip(min=0.0)


REPLICATE_DOTS = {"s": 9, "color": "black", "zorder": 3, "label": "other replicates"}


def _replicate_dots(ax, xs, replicates, **style) -> None:
    """Each x's tuple of replicate values as dots at that x (labelled once in the legend)."""
    points = [(x, v) for x, values in zip(xs, replicates, strict=True) for v in values]
    if points:
        x, y = zip(*points, strict=True)
        ax.scatter(x, y, **(REPLICATE_DOTS | style))


def figure1(bars: pd.DataFrame, png, pdf=None, *, iteration: int | None = None):
    """Figure 1 (right): grouped bars of the LC win rate, one group per setting.

    ``bars``: columns setting, method, lc (one row per bar, in drawing order), and optionally
    lc_low and lc_high: each bar's interval, drawn as an error bar where both are known; and
    replicate_lc: a tuple per bar of its experiment's other replicates' LC, drawn as dots on the
    bar. Returns the (closed) matplotlib figure.
    """
    plt = _pyplot()
    check_frame(
        bars, {"setting": "str", "method": "str", "lc": "float"}, "<figure1>", allow_empty=True
    )
    settings = list(dict.fromkeys(bars["setting"]))
    methods = list(dict.fromkeys(bars["method"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(settings) + 1), 3.8))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(settings))
    dotted = False
    for i, method in enumerate(methods):
        sel = bars[bars["method"] == method].set_index("setting")
        heights = [float(sel["lc"].get(s, np.nan)) for s in settings]
        errors = _error_bars(heights, *(_column(sel, c, settings) for c in ("lc_low", "lc_high")))
        xs = x + (i - (len(methods) - 1) / 2) * width
        if "replicate_lc" in sel.columns:
            replicates = [tuple(sel["replicate_lc"].get(s, ())) for s in settings]
            _replicate_dots(ax, xs, replicates, **({"label": "_nolegend_"} if dotted else {}))
            dotted = dotted or any(replicates)
        drawn = ax.bar(
            xs,
            heights,
            width,
            label=method,
            yerr=errors,
            capsize=2 if errors is not None else 0,
            error_kw={"elinewidth": 0.8},
        )
        ax.bar_label(
            drawn,
            labels=["" if np.isnan(h) else f"{h:.2f}" for h in heights],
            fontsize=7,
            padding=1,
        )
    ax.set_xticks(x, settings)
    ax.set_ylabel("LC win rate (%)")
    suffix = f" (iteration {iteration} or the last)" if iteration else ""
    ax.set_title("Length-controlled win rate" + suffix, fontsize=10)
    if methods:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no configured models", ha="center", va="center", transform=ax.transAxes)
    _save_figure(fig, png, pdf)
    plt.close(fig)
    return fig


def figure3(sweep: pd.DataFrame, png, pdf=None, *, title: str = "LC win rate against gamma"):
    """Figures 3 and 5: LC win rate against the replay ratio gamma, one line per iteration;
    the best point is annotated with its value.

    ``sweep``: columns gamma, iteration, lc, and optionally lc_low and lc_high: each point's
    interval, drawn as an error bar where both are known; and replicate_lc: a tuple per point of
    its experiment's other replicates' LC, drawn as dots in the line's colour. Returns the
    (closed) matplotlib figure.
    """
    plt = _pyplot()
    check_frame(
        sweep, {"gamma": "float", "iteration": "int", "lc": "float"}, "<sweep>", allow_empty=True
    )
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for t, line in sweep.sort_values("gamma").groupby("iteration", sort=True):
        errors = _error_bars(
            line["lc"], *(line.get(c, pd.Series(np.nan, line.index)) for c in ("lc_low", "lc_high"))
        )
        drawn = ax.errorbar(
            line["gamma"], line["lc"], yerr=errors, marker="o", capsize=3, label=f"Iter {t}"
        )
        if "replicate_lc" in line.columns:
            _replicate_dots(
                ax,
                line["gamma"],
                [tuple(v) for v in line["replicate_lc"]],
                color=drawn.lines[0].get_color(),
                label=f"Iter {t}, other replicates",
            )
    finite = sweep.dropna(subset=["lc"])
    if len(finite):
        best = finite.loc[finite["lc"].idxmax()]
        ax.annotate(
            f"{best['lc']:.2f}",
            (best["gamma"], best["lc"]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=9,
            fontweight="bold",
        )
        ax.legend(fontsize=8)
        ax.set_xticks(sorted(set(sweep["gamma"])))
        ax.margins(y=0.15)
    else:
        ax.text(0.5, 0.5, "no configured sweep", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("experience replay ratio gamma")
    ax.set_ylabel("LC win rate (%)")
    ax.set_title(title, fontsize=10)
    _save_figure(fig, png, pdf)
    plt.close(fig)
    return fig


figure5 = figure3  # the same plot for the second setting


def placeholder_figure(text: str, png, pdf=None) -> None:
    """A figure that says why it is empty (its experiment is not configured)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    _save_figure(fig, png, pdf)
    plt.close(fig)
