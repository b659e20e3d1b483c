"""The paper's Figures 1-5 from what :func:`dicewf.paper.read_inputs` returns.

Each drawer takes (layout, data, png, pdf) and the figure's own settings (Figure 2: ``bins``),
which are params of the figure's job alone. A figure whose experiment is not configured is
drawn as a placeholder saying so. pandas and matplotlib (:mod:`dicewf.report`) are imported
when a figure is drawn, not when the Snakefile reads the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import inputs
from .layout import Layout, figure1_bars, sweep_points
from .tables import LC, bounds, value

if TYPE_CHECKING:
    import pandas as pd


LC_COLUMNS = ("lc", "lc_low", "lc_high")
# each point's later replicates' LC (a tuple; empty where its experiment has no replicates)
REPLICATES = "replicate_lc"


def _lc(metrics: Mapping[str, Mapping[str, Any]], model: str) -> dict[str, float]:
    """The LC win rate and its interval (NaN bounds where metrics.json has none)."""
    low, high = bounds(LC)
    return {
        "lc": value(metrics, model, LC),
        "lc_low": value(metrics, model, low),
        "lc_high": value(metrics, model, high),
    }


def _replicate_lc(
    layout: Layout, metrics: Mapping[str, Mapping[str, Any]], model: str
) -> tuple[float, ...]:
    """The LC win rates of ``model``'s replicates 2..R (:meth:`Layout.replicas`); () if none."""
    return tuple(value(metrics, m, LC) for m in layout.replicas(model)[1:])


def figure1_data(layout: Layout, metrics: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Figure 1 (right): LC win rate of Base, Offline DPO, LLM-as-a-Judge and DICE per setting,
    with its interval (lc_low, lc_high; NaN where metrics.json has none) and the LC of the
    experiment's later replicates (:data:`REPLICATES`)."""
    import pandas as pd

    rows = [
        {
            "setting": layout.label(s),
            "method": label,
            "model": model,
            "iteration": t,
            **_lc(metrics, model),
            REPLICATES: _replicate_lc(layout, metrics, model),
        }
        for s, label, model, t in figure1_bars(layout)
    ]
    columns = ["setting", "method", "model", "iteration", *LC_COLUMNS, REPLICATES]
    return pd.DataFrame(rows, columns=columns)


def sweep_data(
    layout: Layout, metrics: Mapping[str, Mapping[str, Any]], figure: str = "figure3"
) -> pd.DataFrame:
    """Figures 3 and 5: LC win rate (its interval, its later replicates' LC) against gamma, one
    line per iteration."""
    import pandas as pd

    s = layout.sweep_setting(figure)
    rows = [
        {
            "gamma": gamma,
            "experiment": layout.runs[full].exp,
            "iteration": t,
            **_lc(metrics, model),
            REPLICATES: _replicate_lc(layout, metrics, model),
        }
        for gamma, full, t, model in sweep_points(layout, s)
    ]
    columns = ["gamma", "experiment", "iteration", *LC_COLUMNS, REPLICATES]
    return pd.DataFrame(rows, columns=columns)


def _alpha_star(alpha: Mapping[str, Any]) -> float:
    searched = alpha.get("alpha_searched")
    return float(alpha["alpha"] if searched is None else searched)


def alpha_axis(alpha: Mapping[str, Any], rating: bool = False) -> str:
    """Figure 4's x label from an alpha.json: what alpha penalises per length unit. Implicit
    rewards are shaped on the log-ratio (an alpha.json without ``score`` predates that: the
    reward); ``rating`` labels an LLM-as-a-Judge panel."""
    unit = {"chars": "character", "tokens": "token"}.get(alpha.get("length_unit", "chars"))
    scale = "rating" if rating else ("log-ratio" if alpha.get("score") == "logratio" else "reward")
    return f"alpha ({scale} per {unit})"


def figure1(layout: Layout, data: Mapping[str, Any], png, pdf=None, **_) -> None:
    from .. import report

    report.figure1(
        figure1_data(layout, data["metrics"]), png, pdf, iteration=layout.figure1_iteration
    )


def sweep_figure(name: str, layout: Layout, data: Mapping[str, Any], png, pdf=None, **_) -> None:
    """Figures 3 and 5."""
    from .. import report

    label = layout.label(layout.sweep_setting(name))
    report.figure3(
        sweep_data(layout, data["metrics"], name),
        png,
        pdf,
        title=f"LC win rate against gamma ({label})",
    )


def figure2(layout: Layout, data: Mapping[str, Any], png, pdf=None, *, bins: int, **_) -> None:
    from .. import report

    keys = inputs.figure2(layout)["length_diffs"]
    if not keys:
        report.placeholder_figure(
            f"Figure 2: experiment {layout.figure_experiment!r} "
            f"(or D_offline) not configured in "
            f"{layout.label(layout.main)}",
            png,
            pdf,
        )
        return
    diffs = data["length_diffs"][keys[0]]
    report.figure2(
        diffs,
        data["offline"],
        png,
        pdf,
        bins=bins,
        alpha_star=_alpha_star(data["alphas"][keys[0]]),
        source=diffs.attrs.get("source", "<length_diffs>"),
    )


def figure4(layout: Layout, data: Mapping[str, Any], png, pdf=None, **_) -> None:
    from .. import report

    keys = inputs.figure4(layout)["landscapes"]
    if not keys:
        report.placeholder_figure(
            f"Figure 4: experiment {layout.figure_experiment!r} not "
            f"configured in {layout.label(layout.main)}",
            png,
            pdf,
        )
        return
    land = data["landscapes"][keys[0]]
    judge = data["landscapes"][keys[1]] if len(keys) > 1 else None
    alpha = data["alphas"][keys[0]]
    report.figure4(
        land,
        png,
        pdf,
        alpha_star=_alpha_star(alpha),
        source=land.attrs.get("source", "<landscape>"),
        judge=judge,
        judge_source="<judge landscape>"
        if judge is None
        else judge.attrs.get("source", "<judge landscape>"),
        xlabel=alpha_axis(alpha),
        judge_xlabel=alpha_axis(alpha, rating=True),
    )
