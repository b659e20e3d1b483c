"""The paper's tables and figures as pure functions of small metric files, and its own numbers.

All free of models and GPUs: five modules and one registry.

* :mod:`.layout`: which experiment fills which role (written once, at its top), :class:`Layout`
  (a config condensed to what the report needs; a Snakemake param) and the row plans;
* :mod:`.inputs`: which files each target reads (evaluated models, alpha.json, landscape and
  length-difference files, the agreement file, D_offline), their paths and reading them back;
* :mod:`.tables` and :mod:`.figures`: Tables 1-7, 9, 10 (there is no Table 8: TRL 1.16 has no
  PPO trainer) and Figures 1-5;
* :mod:`.sera_tables`: SeRA's tables on the same world (its Tables 1 and 2, the noise table,
  DICE beside SeRA), with SeRA's printed numbers beside its Tables 1 and 2;
* :mod:`.values`: the numbers the paper prints (``values.yaml``), which
  :func:`paper_vs_reproduced` sets beside every cell we produce;
* :mod:`.claims`: the paper's qualitative claims (``claims.yaml``) and the claims table, each
  claim's effect with a paired-bootstrap interval over the evaluation prompts and a verdict
  (toy suite; its own rule, as it reads per-prompt judgements rather than metric files).

:data:`REGISTRY` maps each target to what it reads and how it is built: adding a table is one
entry there (and its printed numbers in ``values.yaml``). Importing this package does not
import pandas: the Snakefile reads the layout and the inputs at start-up.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import config as cfg
from . import claims, figures, sera_tables, tables
from . import inputs as _inputs
from .figures import alpha_axis, figure1_data, sweep_data
from .inputs import (
    AGREEMENT,
    ALPHA,
    LANDSCAPE,
    LENGTH_DIFFS,
    METRICS,
    SELECTION,
    agreement_path,
    metrics_path,
)
from .layout import FIGURE1_BARS, TABLE1_ROWS, TABLE3_ROWS, TABLE4_ROWS, TABLE6_ROWS, Layout, Run
from .layout import paper_setting as _paper_setting
from .tables import Cell, alpha_label, arena_text, sweep_iterations, sweep_label
from .values import LEADERBOARD, PAPER, PAPER_VALUES, PaperCell, paper_value

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AGREEMENT",
    "ALPHA",
    "FIGURE1_BARS",
    "FIGURES",
    "LANDSCAPE",
    "LEADERBOARD",
    "LENGTH_DIFFS",
    "METRICS",
    "PAPER",
    "PAPER_VALUES",
    "REGISTRY",
    "SELECTION",
    "SERA_TABLES",
    "TABLE1_ROWS",
    "TABLE3_ROWS",
    "TABLE4_ROWS",
    "TABLE6_ROWS",
    "TABLES",
    "TARGETS",
    "Cell",
    "Layout",
    "PaperCell",
    "Run",
    "Target",
    "agreement_path",
    "alpha_axis",
    "alpha_label",
    "arena_text",
    "build_table",
    "claims",
    "draw_figure",
    "figure1_data",
    "input_paths",
    "metrics_path",
    "needs",
    "paper_value",
    "paper_vs_reproduced",
    "read_inputs",
    "sweep_data",
    "sweep_iterations",
    "sweep_label",
]


@dataclasses.dataclass(frozen=True)
class Target:
    """A table or figure: what it reads and how it is made.

    ``needs(layout)`` -> a need (:mod:`.inputs`). ``build``: for a table,
    ``(layout, metrics, alphas, agreement) -> (DataFrame, cells)``; for a figure,
    ``(layout, data, png, pdf, **settings)`` writing PNG and PDF. ``reads``: further data of
    :func:`read_inputs` a table's build takes as keywords (SeRA's ``selections``).
    """

    kind: str  # table | figure
    needs: Callable[[Layout], dict[str, Any]]
    build: Callable[..., Any]
    reads: tuple[str, ...] = ()


def _compared(layout: Layout) -> list[str]:
    """The tables paper_vs_reproduced compares; with one setting Table 10 repeats Table 9.
    SeRA's tables set its paper's numbers beside their own rows."""
    return [
        t
        for t in TABLES
        if t not in SERA_TABLES + ("replicates",) and (t != "table10" or len(layout.settings) > 1)
    ]


def _paper_vs_reproduced_needs(layout: Layout) -> dict[str, Any]:
    return _inputs.union(REGISTRY[t].needs(layout) for t in _compared(layout))


def _paper_vs_reproduced(layout, metrics, alphas, agreement):
    return paper_vs_reproduced(layout, metrics, alphas, agreement), []


REGISTRY: dict[str, Target] = {
    "table1": Target("table", _inputs.table1, tables.table1),
    "table2": Target("table", _inputs.table2, tables.table2),
    "table3": Target("table", _inputs.table3, tables.table3),
    "table4": Target("table", _inputs.table4, tables.table4),
    "table5": Target("table", _inputs.table5, tables.table5),
    "table6": Target("table", _inputs.table6, tables.table6),
    "table7": Target("table", _inputs.table7, tables.table7),
    "table9": Target(
        "table",
        functools.partial(_inputs.sweep_table, "table9"),
        functools.partial(tables.sweep_table, "table9"),
    ),
    "table10": Target(
        "table",
        functools.partial(_inputs.sweep_table, "table10"),
        functools.partial(tables.sweep_table, "table10"),
    ),
    # experiments run more than once (replicates: R): each run and the mean across runs
    "replicates": Target("table", _inputs.replicates, tables.replicates),
    # SeRA on the toy world (dicewf.paper.sera_tables)
    "sera_table1": Target("table", sera_tables.table1_needs, sera_tables.sera_table1),
    "sera_table2": Target("table", sera_tables.table2_needs, sera_tables.sera_table2),
    "sera_table9": Target("table", sera_tables.table9_needs, sera_tables.sera_table9),
    "sera_table_noise": Target(
        "table", sera_tables.noise_needs, sera_tables.sera_noise, reads=("selections",)
    ),
    "dice_vs_sera": Target("table", sera_tables.dice_vs_sera_needs, sera_tables.dice_vs_sera),
    "paper_vs_reproduced": Target("comparison", _paper_vs_reproduced_needs, _paper_vs_reproduced),
    "figure1": Target("figure", _inputs.figure1, figures.figure1),
    "figure2": Target("figure", _inputs.figure2, figures.figure2),
    "figure3": Target(
        "figure",
        functools.partial(_inputs.sweep_figure, "figure3"),
        functools.partial(figures.sweep_figure, "figure3"),
    ),
    "figure4": Target("figure", _inputs.figure4, figures.figure4),
    "figure5": Target(
        "figure",
        functools.partial(_inputs.sweep_figure, "figure5"),
        functools.partial(figures.sweep_figure, "figure5"),
    ),
}
TABLES = tuple(name for name, target in REGISTRY.items() if target.kind == "table")
SERA_TABLES = ("sera_table1", "sera_table2", "sera_table9", "sera_table_noise", "dice_vs_sera")
FIGURES = tuple(name for name, target in REGISTRY.items() if target.kind == "figure")
TARGETS = tuple(REGISTRY)  # the tables, paper_vs_reproduced, the figures


def _target(name: str, kinds: tuple[str, ...] = ("table", "comparison", "figure")) -> Target:
    target = REGISTRY.get(name)
    if target is None or target.kind not in kinds:
        known = [n for n, t in REGISTRY.items() if t.kind in kinds]
        raise KeyError(f"unknown table or figure {name!r}; known: {known}")
    return target


def needs(name: str, layout: Layout) -> dict[str, Any]:
    """What table/figure ``name`` reads, and nothing more.

    Keys: ``models`` (evaluated models: results/eval/{model}/metrics.json), ``alphas`` and
    ``landscapes`` and ``length_diffs`` (lists of (full name, iteration)), ``agreement`` (bool)
    and ``offline`` (D_offline paths).
    """
    return _target(name).needs(layout)


def input_paths(name: str, layout: Layout, root: str = cfg.RESULTS) -> dict[str, list[str]]:
    """Snakemake's named inputs of ``name`` (in the order of :func:`needs`); a shared run's
    files are its owner's (:attr:`Layout.shared`); ``root``: the configuration's own folder."""
    return _inputs.input_paths(needs(name, layout), layout, root)


def read_inputs(name: str, layout: Layout, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Read the files of :func:`input_paths` (``inputs``: name -> path(s), e.g. snakemake.input),
    keyed as :func:`needs` lists them (see :func:`.inputs.read_inputs`)."""
    return _inputs.read_inputs(name, needs(name, layout), inputs)


def build_table(
    name: str,
    layout: Layout,
    metrics: Mapping[str, Mapping[str, Any]],
    alphas: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    agreement: Mapping[str, Any] | None = None,
    selections: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Table ``name`` (table1..table7, table9, table10, SeRA's tables, paper_vs_reproduced) in
    the paper's layout.

    ``metrics``: {model: metrics.json}, ``alphas``: {(full name, iteration): alpha.json},
    ``agreement``: agreement.json, ``selections``: {(full name, iteration): selection.json};
    each holding at least what :func:`needs` lists. Column formats for Markdown/LaTeX are in
    ``df.attrs["floatfmt"]``.
    """
    target = _target(name, ("table", "comparison"))
    extra = {"selections": selections or {}}
    kwargs = {key: extra[key] for key in target.reads}
    return target.build(layout, metrics or {}, alphas or {}, agreement, **kwargs)[0]


_SWEEPS = ("table9", "table10")


def paper_vs_reproduced(
    layout: Layout,
    metrics: Mapping[str, Mapping[str, Any]],
    alphas: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    agreement: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Every cell we produce that the paper prints: table, setting, row, column, paper,
    reproduced, difference (reproduced - paper).

    A setting is compared with its namesake in the paper (zephyr, llama3); the toy world with
    zephyr, labelled "toy world vs zephyr". The gamma sweep is compared with the paper's sweep of
    the same setting, whichever of Tables 9/10 prints it.
    """
    import pandas as pd

    out = []
    for table in _compared(layout):
        _, cells = REGISTRY[table].build(layout, metrics or {}, alphas or {}, agreement)
        for setting, row, column, got in cells:
            if got is None or math.isnan(got):
                continue
            paper_setting = layout.paper_settings.get(setting, _paper_setting(setting))
            if paper_setting is None:
                continue
            sources = _SWEEPS if table in _SWEEPS else (table,)
            printed = next(
                (
                    v
                    for src in sources
                    if (v := paper_value(src, paper_setting, row, column)) is not None
                ),
                None,
            )
            if printed is None:
                continue
            shown = (
                paper_setting
                if setting == paper_setting
                else f"{layout.label(setting)} vs {paper_setting}"
            )
            out.append(
                {
                    "table": table,
                    "setting": shown,
                    "row": row,
                    "column": column,
                    "paper": printed,
                    "reproduced": got,
                    "difference": round(got - printed, 9),
                }
            )
    df = pd.DataFrame(
        out, columns=["table", "setting", "row", "column", "paper", "reproduced", "difference"]
    )
    df.attrs["floatfmt"] = {c: ".4g" for c in ("paper", "reproduced", "difference")}
    return df


def draw_figure(
    name: str, layout: Layout, data: Mapping[str, Any], png, pdf=None, **settings: Any
) -> None:
    """Draw figure ``name`` from what :func:`read_inputs` returns; PNG and PDF, atomically.

    ``settings``: the figure's own params (Figure 2: ``bins``, report.figure2.bins)."""
    _target(name, ("figure",)).build(layout, data, png, pdf, **settings)
