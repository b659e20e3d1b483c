"""SeRA's tables on the toy world (docs/sera.md, "Tables"): its Tables 1, 2 and 9, the noise table
(Section 4.2, Figure 4's runs) and DICE beside SeRA, from the same metric files as DICE's tables
and SeRA's selection.json.

Which experiment fills which row is written once, in the block below; a row whose experiment is
not configured is left out, as in :mod:`.tables`. Each table has a row plan (used by both the
need and the builder), a need (:mod:`.inputs`) and a builder ``(layout, metrics, alphas,
agreement, selections) -> (DataFrame, cells)``. The SeRA paper's numbers (``values.yaml``,
``sera:``) for its TinyLlama rows are set beside ours in Tables 1, 2 and 9: the paper's metrics are
Claude 3 grades and win rates on AlpacaEval, the toy world's the gold judge's, so the columns sit
side by side and are not subtracted. No pandas at import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .inputs import need
from .layout import BASE, DICE, OFFLINE_DPO, OFFLINE_DPO_NEWREF, Layout
from .tables import GOLD, LC, LEN, WR, Cell, frame, interval_columns, with_interval
from .values import sera_paper_value

# --- which experiment fills which row (logical experiment names) ------------------------------

SERA_DPO, SERA_IPO, SERA_SLIC = "sera_dpo", "sera_ipo", "sera_hinge"
SERA_SIMPO, ITERATIVE_SIMPO = "sera_simpo", "iterative_simpo"  # Table 9: SimPO (trainer cpo)
BEST_SERA_DPO = "best_sera_dpo"  # best-SeRA (sera.generated_proportion set): optional row
# the iterative baselines: D_offline every iteration, reference pi_theta^(t-1), SeRA's beta
ITERATIVE_DPO, ITERATIVE_IPO, ITERATIVE_SLIC = "iterative_dpo", "iterative_ipo", "iterative_hinge"
# the noise table's runs, each read at its noise_fraction: SeRA-DPO (sera_dpo, sera_dpo_noise<k>)
# and the paper's baselines on the noisy data (Tables 7-8; iterative DPO, cDPO, rDPO)
SERA_NOISE = re.compile(r"sera_dpo(_noise\d+)?")
NOISE_BASELINES = (
    ("Iterative DPO", re.compile(r"sera_none_noise\d+")),  # no selection, N_gen = 0
    ("cDPO", re.compile(r"cdpo_noise\d+")),
    ("rDPO", re.compile(r"robust_dpo_noise\d+")),
)
NOISE_ITERATION = 1  # the noise table's iteration (capped at a run's last)
PAPER_MODEL = "TinyLlama"  # the paper's base model set beside the toy world (Table 4's betas)

# (method label, experiment, the paper's row at the run's last iteration) of Tables 1 and 2;
# every configured iteration is a row. BASE is pi_theta^(0): DPO from the SFT model on D_offline,
# the paper's DPO and SeRA's t = 0.
SERA_TABLE1 = (
    ("DPO (pi_theta^(0))", BASE, "DPO"),
    ("Iterative DPO", ITERATIVE_DPO, "Iterative DPO"),
    ("SeRA-DPO", SERA_DPO, "SeRA-DPO"),
    ("best-SeRA-DPO", BEST_SERA_DPO, "best-SeRA-DPO"),
)
# at iteration 1 the paper's IPO (reference fixed) and Iterative IPO are one model here
SERA_TABLE2 = (
    ("Iterative IPO", ITERATIVE_IPO, "Iterative IPO"),
    ("SeRA-IPO", SERA_IPO, "SeRA-IPO"),
    ("Iterative SLiC", ITERATIVE_SLIC, "Iterative SLiC"),
    ("SeRA-SLiC", SERA_SLIC, "SeRA-SLiC"),
)
# Appendix C.3 (SimPO, reference-free): at iteration 1 the paper's SimPO and Iterative SimPO are
# one model here, as IPO's are
SERA_TABLE9 = (
    ("Iterative SimPO", ITERATIVE_SIMPO, "Iterative SimPO"),
    ("SeRA-SimPO", SERA_SIMPO, "SeRA-SimPO"),
)
# (method label, experiment) of DICE beside SeRA, every configured iteration
DICE_VS_SERA = (
    ("Base (pi_theta^(0))", BASE),
    ("DICE", DICE),
    ("SeRA-DPO", SERA_DPO),
    ("Offline DPO", OFFLINE_DPO),
    ("Offline DPO (w/ new ref)", OFFLINE_DPO_NEWREF),
    ("Iterative DPO (SeRA's beta)", ITERATIVE_DPO),
)
# the paper's columns set beside ours (AlpacaEval: Claude 3's grade, win rate against SFT)
PAPER_COLUMNS = (("AE Single", ".2f"), ("AE SFT", ".1f"))
MEASURED = (("LC", LC, ".2f"), ("WR", WR, ".2f"), ("Gold", GOLD, ".3f"), ("Len", LEN, ".0f"))

# --- row plans ----------------------------------------------------------------------------------


def method_rows(layout: Layout, spec) -> list[tuple[str, str, str | None]]:
    """(row label, model, paper row or None) of every configured iteration of ``spec``'s methods
    in the main setting; the paper's row goes to a run's last iteration (and to the base)."""
    s, rows = layout.main, []
    for entry in spec:
        label, exp = entry[0], entry[1]
        printed = entry[2] if len(entry) > 2 else None
        if exp is None:
            rows.append((label, layout.model(s, None), printed))
            continue
        full = layout.full(s, exp)
        if full is None:
            continue
        n = layout.runs[full].iterations
        for t in range(1, n + 1):
            rows.append((f"{label} Iter {t}", f"{full}-iter{t}", printed if t == n else None))
    return rows


def noise_rows(layout: Layout) -> list[tuple[float, str, str, tuple[str, int] | None]]:
    """(noise fraction, row label, model, SeRA (full name, iteration) or None) of the noise
    table: pi_theta^(0) and iterative DPO on the clean D_offline; then per noise level the
    noisy runs' own pi_theta^(0) (``{exp}-iter0``, evaluated once per level), the baselines
    configured at that level and SeRA-DPO (the first configured of equal fractions)."""
    s = layout.main
    rows: list[tuple[float, str, str, tuple[str, int] | None]] = [
        (0.0, "DPO (pi_theta^(0))", layout.model(s, None), None)
    ]
    if got := layout.capped(s, ITERATIVE_DPO, NOISE_ITERATION):
        rows.append((0.0, f"Iterative DPO Iter {got[1]}", got[0], None))
    by_noise: dict[float, str] = {}
    baselines: dict[float, list[tuple[str, str]]] = {}
    for full, run in layout.runs_of(s):
        if run.method == "sera" and SERA_NOISE.fullmatch(run.exp):
            by_noise.setdefault(round(run.noise_fraction, 6), full)
    for label, pattern in NOISE_BASELINES:  # in this order at each level
        for full, run in layout.runs_of(s):
            noise = round(run.noise_fraction, 6)
            if noise > 0 and pattern.fullmatch(run.exp):
                t = min(NOISE_ITERATION, run.iterations)
                baselines.setdefault(noise, []).append((f"{label} Iter {t}", f"{full}-iter{t}"))
    for noise in sorted(set(by_noise) | set(baselines)):
        if noise > 0:  # the noisy runs' own pi_theta^(0): the paper's DPO on the noisy data
            first = by_noise.get(noise) or baselines[noise][0][1].rsplit("-iter", 1)[0]
            rows.append((noise, "DPO (pi_theta^(0))", f"{first}-iter0", None))
        rows += [(noise, label, model, None) for label, model in baselines.get(noise, [])]
        if full := by_noise.get(noise):
            t = min(NOISE_ITERATION, layout.runs[full].iterations)
            rows.append((noise, f"SeRA-DPO Iter {t}", f"{full}-iter{t}", (full, t)))
    return rows


# --- needs --------------------------------------------------------------------------------------


def table1_needs(layout: Layout) -> dict[str, Any]:
    return need(models=[m for _, m, _ in method_rows(layout, SERA_TABLE1)])


def table2_needs(layout: Layout) -> dict[str, Any]:
    return need(models=[m for _, m, _ in method_rows(layout, SERA_TABLE2)])


def table9_needs(layout: Layout) -> dict[str, Any]:
    return need(models=[m for _, m, _ in method_rows(layout, SERA_TABLE9)])


def noise_needs(layout: Layout) -> dict[str, Any]:
    rows = noise_rows(layout)
    return need(models=[m for *_, m, _ in rows], selections=[k for *_, k in rows if k])


def dice_vs_sera_needs(layout: Layout) -> dict[str, Any]:
    return need(models=[m for _, m, _ in method_rows(layout, DICE_VS_SERA)])


# --- builders -----------------------------------------------------------------------------------


def _measured_row(row: dict, metrics, model: str, s: str, label: str) -> list[Cell]:
    return [
        (s, label, col, with_interval(row, col, metrics, model, key)) for col, key, _ in MEASURED
    ]


def _paper_table(name: str, spec, layout: Layout, metrics):
    """SeRA's Table 1, 2 or 9: our rows with the paper's TinyLlama row and numbers beside them."""
    s, rows, cells = layout.main, [], []
    paper = [f"{PAPER_MODEL} {col} (paper)" for col, _ in PAPER_COLUMNS]
    for label, model, printed in method_rows(layout, spec):
        row: dict[str, Any] = {"Method": label}
        cells += _measured_row(row, metrics, model, s, label)
        row["Paper row"] = printed or ""
        for (col, _), shown in zip(PAPER_COLUMNS, paper, strict=True):
            got = sera_paper_value(name, PAPER_MODEL, printed, col) if printed else None
            row[shown] = math.nan if got is None else got
        rows.append(row)
    measured = [c for c, _, _ in MEASURED]
    return frame(
        rows,
        ["Method", *interval_columns(measured), "Paper row", *paper],
        optional=paper,
        floatfmt={c: f for c, _, f in MEASURED}
        | {shown: f for (_, f), shown in zip(PAPER_COLUMNS, paper, strict=True)},
        intervals=measured,
    ), cells


def sera_table1(layout, metrics, alphas, agreement, selections=None):
    return _paper_table("sera_table1", SERA_TABLE1, layout, metrics)


def sera_table2(layout, metrics, alphas, agreement, selections=None):
    return _paper_table("sera_table2", SERA_TABLE2, layout, metrics)


def sera_table9(layout, metrics, alphas, agreement, selections=None):
    return _paper_table("sera_table9", SERA_TABLE9, layout, metrics)


# selection.json -> the noise table's selection columns: (column, report key, quality key)
SELECTION_COLUMNS = (
    ("Swap precision", "label_swapped", "precision"),
    ("Swap recall", "label_swapped", "recall"),
    ("Gold-worse precision", "gold_worse_chosen", "precision"),
    ("Gold-worse recall", "gold_worse_chosen", "recall"),
)


def _selected(
    selections: Mapping[tuple[str, int], Mapping[str, Any]], key: tuple[str, int]
) -> Mapping[str, Any]:
    if key not in selections:
        raise KeyError(
            f"selection.json of {key[0]} iteration {key[1]} was not given (needs() lists it)"
        )
    return selections[key]


def _count(report: Mapping[str, Any], *path: str) -> float:
    got: Any = report
    for part in path:
        if not isinstance(got, Mapping) or got.get(part) is None:
            return math.nan
        got = got[part]
    return float(got)


def sera_noise(layout, metrics, alphas, agreement, selections=None):
    """Section 4.2 on the toy world: per noise level, each method's gold quality, win rates and
    length, and for SeRA the selection's counts and its precision and recall of the swapped pairs
    and of the pairs whose chosen answer the gold judge rates worse (selection.json)."""
    selections = selections or {}
    s, rows, cells = layout.main, [], []
    measured = [("Gold", GOLD, ".3f"), ("WR", WR, ".2f"), ("LC", LC, ".2f"), ("Len", LEN, ".0f")]
    counts = (("Pairs", ("n_pairs",)), ("Kept", ("n_selected",)))
    counts += (("Swapped", ("label_swapped", "n_bad")),)
    counts += (("Swapped dropped", ("label_swapped", "n_dropped_bad")),)
    for noise, label, model, key in noise_rows(layout):
        row: dict[str, Any] = {"Noise (%)": 100 * noise, "Method": label}
        tag = f"noise {100 * noise:g}%: {label}"
        for col, metric, _ in measured:
            cells.append((s, tag, col, with_interval(row, col, metrics, model, metric)))
        report = _selected(selections, key) if key else {}
        for col, path in counts:
            row[col] = _count(report, *path)
        for col, part, stat in SELECTION_COLUMNS:
            row[col] = got = _count(report, part, stat)
            if key:
                cells.append((s, tag, col, got))
        rows.append(row)
    shown = [c for c, _, _ in measured]
    selection = [c for c, *_ in SELECTION_COLUMNS]
    return frame(
        rows,
        ["Noise (%)", "Method", *interval_columns(shown), *(c for c, _ in counts), *selection],
        optional=[*(c for c, _ in counts), *selection],
        floatfmt={"Noise (%)": ".0f"}
        | {c: f for c, _, f in measured}
        | {c: ".0f" for c, _ in counts}
        | {c: ".3f" for c in selection},
        intervals=shown,
    ), cells


def dice_vs_sera(layout, metrics, alphas, agreement, selections=None):
    """DICE and SeRA on the same world: pi_theta^(0), every iteration of each, the offline DPO
    baselines; LC, WR, gold quality and length with their intervals."""
    s, rows, cells = layout.main, [], []
    for label, model, _ in method_rows(layout, DICE_VS_SERA):
        row: dict[str, Any] = {"Method": label}
        cells += _measured_row(row, metrics, model, s, label)
        rows.append(row)
    measured = [c for c, _, _ in MEASURED]
    return frame(
        rows,
        ["Method", *interval_columns(measured)],
        floatfmt={c: f for c, _, f in MEASURED},
        intervals=measured,
    ), cells
