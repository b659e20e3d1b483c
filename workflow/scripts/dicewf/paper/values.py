"""The numbers the paper prints (``values.yaml`` beside this file), read once at import.

:data:`PAPER_VALUES` is table -> paper setting -> row -> column -> value, with the row and column
names of the table builders' long form (see :func:`dicewf.paper.paper_vs_reproduced`); the
Arena-Hard CIs of Tables 9/10 are offsets from the score. :data:`LEADERBOARD` is Table 2's
leaderboard as (model, LC, WR).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..checks import load_yaml

VALUES_FILE = Path(__file__).with_name("values.yaml")

_DATA = load_yaml(VALUES_FILE)
PAPER_VALUES: dict[str, dict[str, dict[str, dict[str, float]]]] = _DATA["tables"]
LEADERBOARD: tuple[tuple[str, float, float], ...] = tuple(
    (str(model), float(lc), float(wr)) for model, lc, wr in _DATA["leaderboard"]
)
SERA_VALUES: dict[str, dict[str, dict[str, dict[str, float]]]] = _DATA["sera"]


@dataclasses.dataclass(frozen=True)
class PaperCell:
    """One number printed in the paper."""

    table: str
    setting: str  # zephyr | llama3
    row: str
    column: str
    value: float


PAPER: tuple[PaperCell, ...] = tuple(
    PaperCell(table, setting, row, column, float(value))
    for table, by_setting in PAPER_VALUES.items()
    for setting, rows in by_setting.items()
    for row, cols in rows.items()
    for column, value in cols.items()
)


def paper_value(table: str, setting: str, row: str, column: str) -> float | None:
    """The number the paper prints in a cell, or None where it prints none."""
    return PAPER_VALUES.get(table, {}).get(setting, {}).get(row, {}).get(column)


def sera_paper_value(table: str, model: str, row: str, column: str) -> float | None:
    """The number SeRA's paper prints in a cell of its Table 1, 2 or 9 (``table``: sera_table1,
    sera_table2, sera_table9), or None where it prints none."""
    return SERA_VALUES.get(table, {}).get(model, {}).get(row, {}).get(column)
