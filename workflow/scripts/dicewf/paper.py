"""The paper's tables and figures as pure functions of small metric files, and its own numbers.

Three layers, all free of models and GPUs:

* :class:`Layout` condenses a config into what the report needs (settings and their labels, every
  experiment run with its resolved gamma, alpha, loss, trainer, lambda and iterations, the main
  setting, the sweep iteration, ...). It is JSON-serialisable, so Snakemake passes
  ``Layout.to_dict()`` as a param and a changed layout reruns the table.
* :func:`needs` says which files a table or figure reads (evaluated models, alpha.json,
  landscape and length-difference files, the agreement file, D_offline) and :func:`input_paths`
  turns that into Snakemake's named inputs; :func:`read_inputs` reads them back.
* :func:`build_table` places the metrics into the paper's layouts (Tables 1-7, 9, 10; there is no
  Table 8: TRL 1.16 has no PPO trainer), :func:`paper_vs_reproduced` sets every cell we produce
  beside the number the paper prints (:data:`PAPER`) and :func:`draw_figure` draws Figures 1-5.

Experiments are found by their logical names (``dice``, ``offline_dpo``, ``judge``, ...): a row
whose experiment is not configured is left out, and a table with no configured rows keeps its
header. Metrics are percentages as the evaluators write them; Arena-Hard CI bounds in
metrics.json are absolute (``arena_ci_low <= arena_score <= arena_ci_high``) and are printed as
offsets ``(-1.4, 1.7)`` as in the paper.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from . import config as cfg

if TYPE_CHECKING:
    import pandas as pd
else:  # pandas is imported when a table is built, not when the Snakefile reads the layout
    pd = cfg.LazyModule("pandas")

TABLES = ("table1", "table2", "table3", "table4", "table5", "table6", "table7", "table9",
          "table10")
FIGURES = ("figure1", "figure2", "figure3", "figure4", "figure5")
TARGETS = TABLES + ("paper_vs_reproduced",) + FIGURES

AGREEMENT = "results/agreement/agreement.json"
PAPER_SETTINGS = ("zephyr", "llama3")

# metrics.json keys behind the table columns
LC, WR, LEN, GOLD = "lc_win_rate", "win_rate", "mean_len_model", "gold_quality"
AH, AH_LOW, AH_HIGH = "arena_score", "arena_ci_low", "arena_ci_high"
# Arena-Hard's length-controlled score (dicewf.arena.length_controlled): Tables 9 and 10
AH_LC, AH_LC_LOW, AH_LC_HIGH = "arena_lc_score", "arena_lc_ci_low", "arena_lc_ci_high"

# --- the paper's numbers, typed in from the text ----------------------------------------------
# table -> paper setting -> row -> column -> value. Column names are those of build_table's
# long form (see paper_vs_reproduced). Arena-Hard CIs of Tables 9/10 are offsets from the score.

PAPER_VALUES: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    # Table 1: AlpacaEval 2 LC / WR and Arena-Hard WR, two base models
    "table1": {
        "zephyr": {
            "Base": {"LC": 12.69, "WR": 10.71, "AH WR": 9.9},
            "Offline DPO Iter 1": {"LC": 13.40, "WR": 11.10, "AH WR": 14.8},
            "Offline DPO Iter 2": {"LC": 4.96, "WR": 5.47, "AH WR": 2.4},
            "Offline DPO (w/ new ref) Iter 1": {"LC": 13.40, "WR": 11.10, "AH WR": 13.0},
            "Offline DPO (w/ new ref) Iter 2": {"LC": 4.58, "WR": 5.27, "AH WR": 6.3},
            "LLM-as-a-Judge Iter 1": {"LC": 15.36, "WR": 17.81, "AH WR": 15.2},
            "LLM-as-a-Judge Iter 2": {"LC": 14.14, "WR": 17.89, "AH WR": 15.7},
            "DICE Iter 1": {"LC": 19.03, "WR": 17.67, "AH WR": 15.5},
            "DICE Iter 2": {"LC": 20.71, "WR": 20.16, "AH WR": 16.7},
        },
        "llama3": {
            "Base": {"LC": 18.20, "WR": 15.50, "AH WR": 21.6},  # AE2 from Meng et al. (2024)
            "Offline DPO Iter 1": {"LC": 20.22, "WR": 18.33, "AH WR": 24.5},
            "Offline DPO Iter 2": {"LC": 21.04, "WR": 19.21, "AH WR": 23.3},
            "Offline DPO (w/ new ref) Iter 1": {"LC": 22.29, "WR": 19.96, "AH WR": 21.9},
            "Offline DPO (w/ new ref) Iter 2": {"LC": 22.50, "WR": 20.18, "AH WR": 23.0},
            "LLM-as-a-Judge Iter 1": {"LC": 20.30, "WR": 21.31, "AH WR": 27.2},
            "LLM-as-a-Judge Iter 2": {"LC": 21.80, "WR": 22.42, "AH WR": 28.7},
            "DICE Iter 1": {"LC": 25.08, "WR": 25.77, "AH WR": 35.9},
            "DICE Iter 2": {"LC": 27.55, "WR": 30.99, "AH WR": 41.2},
        },
    },
    # Table 2: the paper's own rows on the AlpacaEval 2 leaderboard
    "table2": {
        "zephyr": {"DICE Iter 2": {"LC": 20.71, "WR": 20.16}},
        "llama3": {"DICE Iter 2": {"LC": 27.55, "WR": 30.99}},
    },
    # Table 3: other DAP losses on the iteration-1 data (Zephyr)
    "table3": {
        "zephyr": {
            "DPO": {"Offline LC": 13.40, "Offline WR": 11.10, "DICE LC": 19.03, "DICE WR": 17.67},
            "IPO": {"Offline LC": 14.83, "Offline WR": 16.16, "DICE LC": 18.51, "DICE WR": 19.49},
            "KTO": {"Offline LC": 13.92, "Offline WR": 10.65, "DICE LC": 14.88, "DICE WR": 12.16},
            "Hinge": {"Offline LC": 13.51, "Offline WR": 12.45, "DICE LC": 15.92,
                      "DICE WR": 15.57},
        },
    },
    # Table 4: length-regularisation weight alpha and replay ratio gamma (Zephyr, iteration 1).
    # alpha is per character on the log-ratio scale (log pi - log pi_ref, the official code's),
    # the scale of alpha.json's "alpha"
    "table4": {
        "zephyr": {
            "gamma=0, alpha=0": {"gamma": 0.0, "alpha": 0.000, "LC": 13.32, "WR": 15.37,
                                 "Avg. Len.": 2570},
            "gamma=0, alpha*": {"gamma": 0.0, "alpha": 0.023, "LC": 18.88, "WR": 19.31,
                                "Avg. Len.": 2109},
            "gamma=0, 2 alpha*": {"gamma": 0.0, "alpha": 0.046, "LC": 14.40, "WR": 9.08,
                                  "Avg. Len.": 876},
            "gamma=0.5, alpha=0": {"gamma": 0.5, "alpha": 0.000, "LC": 15.92, "WR": 19.08,
                                   "Avg. Len.": 2600},
            "gamma=0.5, alpha*": {"gamma": 0.5, "alpha": 0.023, "LC": 19.03, "WR": 17.67,
                                  "Avg. Len.": 1848},
            "gamma=0.5, 2 alpha*": {"gamma": 0.5, "alpha": 0.046, "LC": 14.91, "WR": 10.80,
                                    "Avg. Len.": 1185},
        },
    },
    # Table 5: agreement with GPT-4o's labels on 500 iteration-1 tuples (Zephyr)
    "table5": {
        "zephyr": {"Alignment Rate": {"IntlRM": 0.624, "ERM-555k": 0.656,
                                      "DPO Implicit Reward": 0.698}},
    },
    # Table 6: three iterations
    "table6": {
        "zephyr": {
            "Base": {"LC": 12.69, "WR": 10.71},
            "LLM-as-a-Judge Iter 1": {"LC": 15.36, "WR": 17.81},
            "LLM-as-a-Judge Iter 2": {"LC": 14.14, "WR": 17.89},
            "LLM-as-a-Judge Iter 3": {"LC": 13.95, "WR": 17.23},
            "DICE Iter 1": {"LC": 19.03, "WR": 17.67},
            "DICE Iter 2": {"LC": 20.71, "WR": 20.16},
            "DICE Iter 3": {"LC": 14.02, "WR": 15.30},
        },
        "llama3": {
            "Base": {"LC": 18.20, "WR": 15.50},  # from Meng et al. (2024)
            "LLM-as-a-Judge Iter 1": {"LC": 20.30, "WR": 21.31},
            "LLM-as-a-Judge Iter 2": {"LC": 21.80, "WR": 22.42},
            "LLM-as-a-Judge Iter 3": {"LC": 16.86, "WR": 19.78},
            "DICE Iter 1": {"LC": 25.08, "WR": 25.77},
            "DICE Iter 2": {"LC": 27.55, "WR": 30.99},
            "DICE Iter 3": {"LC": 20.61, "WR": 26.18},
        },
    },
    # Table 7: length-regularised DPO (Park et al., 2024) against LR reward shaping (Zephyr)
    "table7": {
        "zephyr": {
            "No mitigation": {"LC": 13.32, "WR": 15.37, "Len": 2570},
            "Regularized DPO (lambda=0.02)": {"LC": 16.30, "WR": 19.16, "Len": 2629},
            "Regularized DPO (lambda=0.05)": {"LC": 16.03, "WR": 16.14, "Len": 2030},
            "Ours": {"LC": 18.88, "WR": 19.31, "Len": 2109},
        },
    },
    # Table 9: gamma sweep, Zephyr: LC on AlpacaEval 2 and the length-controlled Arena-Hard score
    # (footnote 11), each at its gamma's best iteration
    "table9": {
        "zephyr": {
            "gamma=0.00": {"LC AE2": 18.88, "LC AH score": 17.6, "LC AH CI low": -1.4,
                           "LC AH CI high": 1.7},
            "gamma=0.25": {"LC AE2": 17.87, "LC AH score": 16.1, "LC AH CI low": -1.2,
                           "LC AH CI high": 1.4},
            "gamma=0.50": {"LC AE2": 20.71, "LC AH score": 18.4, "LC AH CI low": -1.3,
                           "LC AH CI high": 1.6},
            "gamma=0.75": {"LC AE2": 16.90, "LC AH score": 14.9, "LC AH CI low": -1.6,
                           "LC AH CI high": 1.4},
            "gamma=1.00": {"LC AE2": 13.40, "LC AH score": 13.0, "LC AH CI low": -1.3,
                           "LC AH CI high": 1.3},
        },
    },
    # Table 10: gamma sweep, Llama-3
    "table10": {
        "llama3": {
            "gamma=0.00": {"LC AE2": 26.93, "LC AH score": 39.1, "LC AH CI low": -2.3,
                           "LC AH CI high": 2.5},
            "gamma=0.10": {"LC AE2": 27.55, "LC AH score": 39.1, "LC AH CI low": -2.0,
                           "LC AH CI high": 2.4},
            "gamma=0.25": {"LC AE2": 24.78, "LC AH score": 33.3, "LC AH CI low": -2.1,
                           "LC AH CI high": 1.8},
            "gamma=0.50": {"LC AE2": 23.59, "LC AH score": 32.2, "LC AH CI low": -2.3,
                           "LC AH CI high": 2.2},
            "gamma=0.75": {"LC AE2": 22.57, "LC AH score": 27.4, "LC AH CI low": -2.0,
                           "LC AH CI high": 1.8},
            "gamma=1.00": {"LC AE2": 22.50, "LC AH score": 24.5, "LC AH CI low": -1.7,
                           "LC AH CI high": 1.8},
        },
    },
}

# Table 2's leaderboard as the paper prints it: (model, LC, WR); the DICE rows are the paper's.
LEADERBOARD: tuple[tuple[str, float, float], ...] = (
    ("GPT-4 0613", 30.18, 15.76),
    ("Mistral Medium", 28.61, 21.86),
    ("Claude 2", 28.15, 17.19),
    ("DICE-Llama3 8B Iter 2", 27.55, 30.99),
    ("Snorkel (Mistral-PairRM-DPO)", 26.39, 30.22),
    ("Gemini Pro", 24.38, 18.18),
    ("Mixtral 8x7B v0.1", 23.69, 18.26),
    ("Llama 3 8B Instruct", 22.92, 22.57),
    ("GPT-3.5 Turbo 0613", 22.35, 14.10),
    ("Tulu 2+DPO 70B", 21.24, 15.98),
    ("DICE-Zephyr 7B Iter 2", 20.71, 20.16),
    ("GPT-3.5 Turbo 1106", 19.30, 9.18),
    ("Llama-3-8B-DPO", 18.20, 15.50),
    ("Vicuna 33B v1.3", 17.58, 12.71),
    ("zephyr-7B-beta", 12.69, 10.71),
)


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


# --- layout ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """What the report needs to know about one experiment run (one setting)."""

    setting: str
    exp: str  # logical name
    iterations: int
    gamma: float | None
    alpha_fixed: float | None
    alpha_scale: float
    loss_type: Any
    trainer: str
    length_penalty: float
    score_method: str


@dataclasses.dataclass(frozen=True)
class Layout:
    """A config condensed to what the tables and figures read; see :meth:`from_config`."""

    settings: list[str]
    labels: dict[str, str]
    runs: dict[str, Run]  # full name -> run, in config order
    main: str
    sweep_iteration: int | str = 2  # an iteration, or "best" (per benchmark: sweep_iterations)
    figure1_iteration: int = 2
    figure_experiment: str = "dice"  # logical experiment of Figures 2 and 4 (left)
    figure_iteration: int = 1
    figure2_bins: int = 30
    offline: dict[str, str | None] = dataclasses.field(default_factory=dict)
    agreement: bool = True
    paper_settings: dict[str, str | None] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Layout:
        settings = cfg.settings(config)
        rep = dict(config.get("report") or {})
        main = rep.get("setting") or settings[0]
        if main not in settings:
            raise KeyError(f"report.setting: unknown setting {main!r}; configured: {settings}")
        runs = {}
        for full, (setting, exp) in cfg.expanded(config).items():
            x = cfg.experiment(config, full)
            alpha, mix = x.get("alpha") or {}, x.get("mix") or {}
            runs[full] = Run(
                setting=setting, exp=exp, iterations=int(x["iterations"]),
                gamma=None if mix.get("gamma") is None else float(mix["gamma"]),
                alpha_fixed=None if alpha.get("fixed") is None else float(alpha["fixed"]),
                alpha_scale=float(alpha.get("scale", 1.0)),
                loss_type=(x.get("train") or {}).get("loss_type", "sigmoid"),
                trainer=x.get("trainer", "dpo"),
                length_penalty=float(x.get("length_penalty") or 0.0),
                score_method=(x.get("score") or {}).get("method", "implicit"),
            )
        sweep = rep.get("sweep_iteration", 2)
        if sweep != "best" and not (isinstance(sweep, int) and sweep >= 1):
            raise ValueError(f"report.sweep_iteration: expected an iteration >= 1 or 'best', "
                             f"got {sweep!r}")
        return cls(
            settings=settings,
            labels={s: cfg.setting_label(config, s) for s in settings},
            runs=runs,
            main=main,
            sweep_iteration=sweep,
            figure1_iteration=int((rep.get("figure1") or {}).get("iteration", 2)),
            figure_experiment=rep.get("experiment", "dice"),
            figure_iteration=int(rep.get("iteration", 1)),
            figure2_bins=int((rep.get("figure2") or {}).get("bins", 30)),
            offline={s: cfg.base(config, s).get("offline") for s in settings},
            agreement="agreement" in config,
            paper_settings={s: _paper_setting(s) for s in settings},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (a Snakemake param)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Layout:
        data = dict(data)
        data["runs"] = {full: Run(**run) for full, run in data["runs"].items()}
        return cls(**data)

    # lookups --------------------------------------------------------------------------------

    def label(self, setting: str) -> str:
        return self.labels.get(setting) or setting or "toy world"

    def full(self, setting: str, exp: str) -> str | None:
        """The full name of logical experiment ``exp`` in ``setting``, None if not configured.

        A full name (as in ``report.experiment`` of a config with settings) is accepted too.
        """
        name = cfg.full_name(setting, exp)
        if name in self.runs and self.runs[name].setting == setting:
            return name
        if exp in self.runs and self.runs[exp].setting == setting:
            return exp
        return None

    def model(self, setting: str, exp: str | None, t: int = 0) -> str | None:
        """Evaluated model of ``exp`` at iteration ``t`` (the base model for ``exp`` None)."""
        if exp is None:
            return cfg.base_model(setting)
        full = self.full(setting, exp)
        if full is None or not 1 <= t <= self.runs[full].iterations:
            return None
        return f"{full}-iter{t}"

    def capped(self, setting: str, exp: str, t: int) -> tuple[str, int] | None:
        """(model, iteration) at iteration ``t``, or the experiment's last one if it has fewer."""
        full = self.full(setting, exp)
        if full is None:
            return None
        t = min(t, self.runs[full].iterations)
        return f"{full}-iter{t}", t

    def runs_of(self, setting: str) -> list[tuple[str, Run]]:
        return [(full, run) for full, run in self.runs.items() if run.setting == setting]

    def sweep_setting(self, table: str) -> str:
        """Table 9 / Figure 3: the first setting; Table 10 / Figure 5: the second (or first)."""
        second = table in ("table10", "figure5")
        return self.settings[1] if second and len(self.settings) > 1 else self.settings[0]


def _paper_setting(setting: str) -> str | None:
    """The paper's setting a setting is compared with: its namesake; the toy world: zephyr."""
    if setting in PAPER_SETTINGS:
        return setting
    return PAPER_SETTINGS[0] if setting == "" else None


# --- row plans (shared by needs() and the builders) ------------------------------------------

TABLE1_ROWS = (
    ("Base", None, 0),
    ("Offline DPO Iter 1", "offline_dpo", 1),
    ("Offline DPO Iter 2", "offline_dpo", 2),
    ("Offline DPO (w/ new ref) Iter 1", "offline_dpo_newref", 1),
    ("Offline DPO (w/ new ref) Iter 2", "offline_dpo_newref", 2),
    ("LLM-as-a-Judge Iter 1", "judge", 1),
    ("LLM-as-a-Judge Iter 2", "judge", 2),
    ("DICE Iter 1", "dice", 1),
    ("DICE Iter 2", "dice", 2),
)
TABLE6_ROWS = (
    ("Base", None, 0),
    *((f"LLM-as-a-Judge Iter {t}", "judge", t) for t in (1, 2, 3)),
    *((f"DICE Iter {t}", "dice", t) for t in (1, 2, 3)),
)
TABLE3_ROWS = (
    ("DPO", "offline_dpo", "dice"),
    ("IPO", "offline_ipo", "dice_ipo"),
    ("KTO", "offline_kto", "dice_kto"),
    ("Hinge", "offline_hinge", "dice_hinge"),
)
TABLE4_ROWS = (
    ("gamma=0, alpha=0", "dice_gamma0_alpha0"),
    ("gamma=0, alpha*", "dice_gamma0"),
    ("gamma=0, 2 alpha*", "dice_gamma0_alpha2x"),
    ("gamma=0.5, alpha=0", "dice_alpha0"),
    ("gamma=0.5, alpha*", "dice"),
    ("gamma=0.5, 2 alpha*", "dice_alpha2x"),
)
FIGURE1_BARS = (("Base", None), ("Offline DPO", "offline_dpo"), ("LLM-as-a-Judge", "judge"),
                ("DICE", "dice"))
SWEEP_LINES = (1, 2)  # iterations drawn in Figures 3 and 5
_SWEEP_EXP = re.compile(r"dice_gamma\d+")


def _per_setting_rows(layout: Layout, spec) -> list[tuple[str, str, str]]:
    """(row label, setting, model) of every configured cell of Tables 1 and 6."""
    return [(label, s, model) for label, exp, t in spec for s in layout.settings
            if (model := layout.model(s, exp, t)) is not None]


def _table3_rows(layout: Layout) -> list[tuple[str, str | None, str | None]]:
    s = layout.main
    rows = [(label, layout.model(s, off, 1), layout.model(s, dice, 1))
            for label, off, dice in TABLE3_ROWS]
    return [r for r in rows if r[1] or r[2]]


def _table4_rows(layout: Layout) -> list[tuple[str, str]]:
    """(row label, full name) of the configured Table 4 experiments."""
    s = layout.main
    return [(label, full) for label, exp in TABLE4_ROWS if (full := layout.full(s, exp))]


def _table7_rows(layout: Layout) -> list[tuple[str, str, float | None]]:
    """(row label, full name, lambda) of Table 7: no mitigation, each rdpo_*, ours."""
    s = layout.main
    rows = []
    if full := layout.full(s, "dice_gamma0_alpha0"):
        rows.append(("No mitigation", full, None))
    rdpo = [(run.length_penalty, i, full) for i, (full, run) in enumerate(layout.runs_of(s))
            if run.exp.startswith("rdpo_")]
    for lam, _, full in sorted(rdpo):
        rows.append((f"Regularized DPO (lambda={lam:g})", full, lam))
    if full := layout.full(s, "dice_gamma0"):
        rows.append(("Ours", full, None))
    return rows


def _has_alpha(layout: Layout, full: str) -> bool:
    """Whether the run searches (and writes) alpha: gamma = 1 samples nothing."""
    gamma = layout.runs[full].gamma
    return gamma is None or gamma < 1


def _sweep_rows(layout: Layout, setting: str) -> list[tuple[float, str]]:
    """(gamma, full name) of the gamma sweep of ``setting``, by gamma; first configured wins."""
    by_gamma: dict[float, str] = {}
    for full, run in layout.runs_of(setting):
        if run.exp == "offline_dpo_newref":
            gamma = 1.0  # Offline DPO with a new reference is the gamma = 1 end of the sweep
        elif run.exp == "dice" or _SWEEP_EXP.fullmatch(run.exp):
            gamma = run.gamma
        else:
            continue
        if gamma is not None:
            by_gamma.setdefault(round(float(gamma), 6), full)
    return sorted(by_gamma.items())


def _sweep_candidates(layout: Layout, full: str) -> list[int]:
    """Iterations a sweep row may report: the sweep iteration (capped), or all for 'best'."""
    n = layout.runs[full].iterations
    if layout.sweep_iteration == "best":
        return list(range(1, n + 1))
    return [min(int(layout.sweep_iteration), n)]


def _figure1_bars(layout: Layout) -> list[tuple[str, str, str, int]]:
    """(setting, bar label, model, iteration) of Figure 1 (right)."""
    out = []
    for s in layout.settings:
        for label, exp in FIGURE1_BARS:
            if exp is None:
                out.append((s, label, cfg.base_model(s), 0))
            elif got := layout.capped(s, exp, layout.figure1_iteration):
                out.append((s, label, *got))
    return out


def _sweep_points(layout: Layout, setting: str) -> list[tuple[float, str, int, str]]:
    """(gamma, full name, iteration, model) of Figures 3 and 5."""
    return [(gamma, full, t, f"{full}-iter{t}") for gamma, full in _sweep_rows(layout, setting)
            for t in SWEEP_LINES if t <= layout.runs[full].iterations]


def _figure_keys(layout: Layout) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(full name, iteration) of the Figure 2/4 experiment and of LLM-as-a-Judge in the main
    setting (``report.iteration``, or the experiment's last if it has fewer); None if absent."""
    keys = []
    for exp in (layout.figure_experiment, "judge"):
        full = layout.full(layout.main, exp)
        keys.append(None if full is None else
                    (full, min(layout.figure_iteration, layout.runs[full].iterations)))
    return keys[0], keys[1]


# --- needs -------------------------------------------------------------------------------------


def _dedupe(items) -> list:
    return list(dict.fromkeys(items))


def needs(name: str, layout: Layout) -> dict[str, Any]:
    """What table/figure ``name`` reads, and nothing more.

    Keys: ``models`` (evaluated models: results/eval/{model}/metrics.json), ``alphas`` and
    ``landscapes`` and ``length_diffs`` (lists of (full name, iteration)), ``agreement`` (bool)
    and ``offline`` (D_offline paths).
    """
    out: dict[str, Any] = {"models": [], "alphas": [], "landscapes": [], "length_diffs": [],
                           "agreement": False, "offline": []}
    s = layout.main
    if name == "table1":
        out["models"] = [m for _, _, m in _per_setting_rows(layout, TABLE1_ROWS)]
    elif name == "table6":
        out["models"] = [m for _, _, m in _per_setting_rows(layout, TABLE6_ROWS)]
    elif name == "table2":
        out["models"] = [got[0] for st in layout.settings if (got := layout.capped(st, "dice", 2))]
    elif name == "table3":
        out["models"] = [m for _, off, dice in _table3_rows(layout) for m in (off, dice) if m]
    elif name == "table4":
        rows = _table4_rows(layout)
        out["models"] = [f"{full}-iter1" for _, full in rows]
        out["alphas"] = [(full, 1) for _, full in rows if _has_alpha(layout, full)]
    elif name == "table5":
        out["agreement"] = layout.agreement
    elif name == "table7":
        out["models"] = [f"{full}-iter1" for _, full, _ in _table7_rows(layout)]
    elif name in ("table9", "table10"):
        out["models"] = [f"{full}-iter{t}" for _, full in _sweep_rows(layout,
                                                                      layout.sweep_setting(name))
                         for t in _sweep_candidates(layout, full)]
    elif name == "paper_vs_reproduced":
        for table in _compared_tables(layout):
            part = needs(table, layout)
            for key in ("models", "alphas"):
                out[key] += part[key]
            out["agreement"] |= part["agreement"]
    elif name == "figure1":
        out["models"] = [m for _, _, m, _ in _figure1_bars(layout)]
    elif name in ("figure3", "figure5"):
        out["models"] = [m for *_, m in _sweep_points(layout, layout.sweep_setting(name))]
    elif name == "figure2":
        key, _ = _figure_keys(layout)
        if key is not None and layout.offline.get(s):
            out["alphas"], out["length_diffs"] = [key], [key]
            out["offline"] = [layout.offline[s]]
    elif name == "figure4":
        left, judge = _figure_keys(layout)
        if left is not None:  # the judge panel only beside the implicit-reward one
            out["alphas"] = [left]  # alpha* of the left panel
            out["landscapes"] = [left] + ([judge] if judge else [])
    else:
        raise KeyError(f"unknown table or figure {name!r}; known: {list(TARGETS)}")
    for key in ("models", "alphas", "landscapes", "length_diffs", "offline"):
        out[key] = _dedupe(out[key])
    return out


def metrics_path(model: str) -> str:
    return f"results/eval/{model}/metrics.json"


def input_paths(name: str, layout: Layout) -> dict[str, list[str]]:
    """Snakemake's named inputs of ``name`` (in the order of :func:`needs`)."""
    need = needs(name, layout)
    out = {"metrics": [metrics_path(m) for m in need["models"]],
           "alphas": [f"{cfg.iter_dir(f, t)}/alpha.json" for f, t in need["alphas"]],
           "landscapes": [f"{cfg.iter_dir(f, t)}/landscape.parquet" for f, t in need["landscapes"]],
           "length_diffs": [f"{cfg.iter_dir(f, t)}/length_diffs.parquet"
                            for f, t in need["length_diffs"]],
           "agreement": [AGREEMENT] if need["agreement"] else [],
           "offline": list(need["offline"])}
    return {key: paths for key, paths in out.items() if paths}


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def read_inputs(name: str, layout: Layout, inputs: Mapping[str, Any]) -> dict[str, Any]:
    from .io import read_json, read_parquet

    """Read the files of :func:`input_paths` (``inputs``: name -> path(s), e.g. snakemake.input).

    Returns ``metrics`` {model: dict}, ``alphas`` {(full, t): dict}, ``landscapes`` and
    ``length_diffs`` {(full, t): DataFrame}, ``agreement`` (dict or None) and ``offline``
    (DataFrame or None), keyed as :func:`needs` lists them.
    """
    need = needs(name, layout)

    def paired(keys, input_name):
        paths = _as_list(inputs.get(input_name))
        if len(paths) != len(keys):
            raise ValueError(f"{name}: input {input_name!r} has {len(paths)} file(s), "
                             f"the layout needs {len(keys)}: {keys}")
        return list(zip(keys, paths, strict=True))

    agreement = _as_list(inputs.get("agreement")) if need["agreement"] else []
    offline = _as_list(inputs.get("offline")) if need["offline"] else []
    return {
        "metrics": {m: read_json(p) for m, p in paired(need["models"], "metrics")},
        "alphas": {k: read_json(p) for k, p in paired(need["alphas"], "alphas")},
        "landscapes": {k: _with_source(read_parquet(p), p)
                       for k, p in paired(need["landscapes"], "landscapes")},
        "length_diffs": {k: _with_source(read_parquet(p), p)
                         for k, p in paired(need["length_diffs"], "length_diffs")},
        "agreement": read_json(agreement[0]) if agreement else None,
        "offline": _with_source(read_parquet(offline[0]), offline[0]) if offline else None,
    }


def _with_source(df: pd.DataFrame, path) -> pd.DataFrame:
    df.attrs["source"] = str(path)
    return df


# --- tables ------------------------------------------------------------------------------------

Cell = tuple[str, str, str, float]  # (setting, row, column, value): the long form of a table


def _value(metrics: Mapping[str, Mapping[str, Any]], model: str | None, key: str) -> float:
    """A metric of a model; NaN for a model that is not configured or a key it lacks."""
    if model is None:
        return math.nan
    if model not in metrics:
        raise KeyError(f"metrics of model {model!r} were not given (needs() lists it)")
    value = metrics[model].get(key)
    return math.nan if value is None else float(value)


def _alpha_of(alphas: Mapping, full: str, t: int) -> dict:
    key = (full, t)
    if key not in alphas:
        raise KeyError(f"alpha.json of {full} iteration {t} was not given (needs() lists it)")
    return alphas[key]


def _frame(rows: list[dict], columns: list[str], optional: Sequence[str] = (),
           floatfmt: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Rows in order; ``optional`` columns are dropped when no row has a value in them."""
    df = pd.DataFrame(rows, columns=columns)
    drop = [c for c in optional if c in df.columns and df[c].isna().all()]
    df = df.drop(columns=drop)
    df.attrs["floatfmt"] = {c: f for c, f in (floatfmt or {}).items() if c in df.columns}
    return df


def _scol(layout: Layout, setting: str, column: str) -> str:
    """Column name of a per-setting table: prefixed by the setting's label when it is named."""
    return f"{layout.label(setting)} {column}" if setting else column


_PER_SETTING_METRICS = (("LC", LC, ".2f"), ("WR", WR, ".2f"), ("AH WR", AH, ".1f"),
                        ("Len", LEN, ".0f"), ("Gold", GOLD, ".3f"))


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
    for label, s, model in _per_setting_rows(layout, spec):
        row = rows.setdefault(label, {"Method": label})
        for col, key, _ in wanted:
            name = _scol(layout, s, col)
            if name in header:
                row[name] = value = _value(metrics, model, key)
                cells.append((s, label, col, value))
    return _frame(list(rows.values()), header, optional, fmt), cells


def _table1(layout, metrics, alphas, agreement):
    return _per_setting(layout, metrics, TABLE1_ROWS, ("LC", "WR", "AH WR", "Len", "Gold"))


def _table6(layout, metrics, alphas, agreement):
    return _per_setting(layout, metrics, TABLE6_ROWS, ("LC", "WR", "Len", "Gold"))


def _table2(layout, metrics, alphas, agreement):
    rows = [{"Model": model, "LC": lc, "WR": wr, "Source": "paper"}
            for model, lc, wr in LEADERBOARD]
    cells: list[Cell] = []
    for s in layout.settings:
        got = layout.capped(s, "dice", 2)
        if got is None:
            continue
        model, t = got
        lc, wr = _value(metrics, model, LC), _value(metrics, model, WR)
        rows.append({"Model": f"DICE-{layout.label(s)} Iter {t} (ours)", "LC": lc, "WR": wr,
                     "Source": "reproduced"})
        cells += [(s, f"DICE Iter {t}", "LC", lc), (s, f"DICE Iter {t}", "WR", wr)]
    df = _frame(rows, ["Model", "LC", "WR", "Source"], floatfmt={"LC": ".2f", "WR": ".2f"})
    df = df.sort_values("LC", ascending=False, na_position="last", kind="stable")
    return df.reset_index(drop=True), cells


def _table3(layout, metrics, alphas, agreement):
    s, rows, cells = layout.main, [], []
    columns = ["Method", "Offline LC", "Offline WR", "DICE LC", "DICE WR"]
    for label, off, dice in _table3_rows(layout):
        row = {"Method": label}
        for prefix, model in (("Offline", off), ("DICE", dice)):
            for col, key in (("LC", LC), ("WR", WR)):
                row[f"{prefix} {col}"] = value = _value(metrics, model, key)
                if model is not None:
                    cells.append((s, label, f"{prefix} {col}", value))
        rows.append(row)
    return _frame(rows, columns, floatfmt={c: ".2f" for c in columns[1:]}), cells


def alpha_label(alpha: float, run: Run) -> str:
    """Table 4's alpha cell: the used alpha, marked (alpha*) / (2 alpha*) when it was searched."""
    text = "0.000" if alpha == 0 else f"{alpha:.3g}"
    if run.alpha_fixed is not None:
        return text
    if run.alpha_scale == 1:
        return f"{text} (alpha*)"
    return f"{text} ({run.alpha_scale:g} alpha*)"


def _table4(layout, metrics, alphas, agreement):
    s, rows, cells = layout.main, [], []
    columns = ["Experiment", "gamma", "alpha", "LC", "WR", "Avg. Len."]
    for label, full in _table4_rows(layout):
        run, model = layout.runs[full], f"{full}-iter1"
        if _has_alpha(layout, full):
            alpha = float(_alpha_of(alphas, full, 1)["alpha"])
            shown = alpha_label(alpha, run)
        else:
            alpha, shown = math.nan, "-"
        gamma = math.nan if run.gamma is None else run.gamma
        values = {"gamma": gamma, "alpha": alpha, "LC": _value(metrics, model, LC),
                  "WR": _value(metrics, model, WR), "Avg. Len.": _value(metrics, model, LEN)}
        rows.append({"Experiment": run.exp, **values, "alpha": shown})
        cells += [(s, label, col, v) for col, v in values.items()]
    return _frame(rows, columns, floatfmt={"gamma": ".2f", "LC": ".2f", "WR": ".2f",
                                           "Avg. Len.": ".0f"}), cells


def _table5(layout, metrics, alphas, agreement):
    if not layout.agreement or agreement is None:
        return _frame([], ["Method"]), []
    rates = dict(agreement["rates"])
    setting = agreement.get("setting", "")
    row = {"Method": "Alignment Rate", **{k: float(v) for k, v in rates.items()},
           "Tuples": int(agreement["n_tuples"]), "Judge": agreement.get("judge", "")}
    df = _frame([row], ["Method", *rates, "Tuples", "Judge"],
                floatfmt={k: ".3f" for k in rates})
    return df, [(setting, "Alignment Rate", k, float(v)) for k, v in rates.items()]


def _table7(layout, metrics, alphas, agreement):
    s, rows, cells = layout.main, [], []
    columns = ["Method", "lambda", "LC", "WR", "Len"]
    for label, full, lam in _table7_rows(layout):
        model = f"{full}-iter1"
        values = {"LC": _value(metrics, model, LC), "WR": _value(metrics, model, WR),
                  "Len": _value(metrics, model, LEN)}
        rows.append({"Method": label, "lambda": math.nan if lam is None else lam, **values})
        cells += [(s, label, col, v) for col, v in values.items()]
    return _frame(rows, columns, floatfmt={"lambda": ".2f", "LC": ".2f", "WR": ".2f",
                                           "Len": ".0f"}), cells


def arena_text(score: float, low: float, high: float) -> str:
    """``17.6 (-1.4, 1.7)``: the score and its CI as offsets, as Tables 9/10 print them."""
    if math.isnan(score):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return f"{score:.1f}"
    return f"{score:.1f} (-{score - low:.1f}, {high - score:.1f})"


def sweep_label(gamma: float) -> str:
    return f"gamma={gamma:.2f}"


def _sweep_table(name, layout, metrics, alphas, agreement):
    """Tables 9/10: per gamma, LC on AlpacaEval 2 and Arena-Hard's length-controlled score with
    its interval, each at the iteration :func:`sweep_iterations` picks for its benchmark."""
    s = layout.sweep_setting(name)
    rows, cells = [], []
    ah_col = "LC AH: Score (95% CI)"
    columns = ["gamma", "Experiment", "Iter AE2", "LC AE2", "Iter AH", ah_col]
    for gamma, full in _sweep_rows(layout, s):
        t_ae2, t_ah = sweep_iterations(layout, metrics, full)
        lc = _value(metrics, f"{full}-iter{t_ae2}", LC)
        score, low, high = (_value(metrics, f"{full}-iter{t_ah}", k)
                            for k in (AH_LC, AH_LC_LOW, AH_LC_HIGH))
        rows.append({"gamma": gamma, "Experiment": layout.runs[full].exp, "Iter AE2": t_ae2,
                     "LC AE2": lc, "Iter AH": t_ah, ah_col: arena_text(score, low, high)})
        label = sweep_label(gamma)
        cells += [(s, label, "LC AE2", lc), (s, label, "LC AH score", score),
                  (s, label, "LC AH CI low", round(low - score, 9)),
                  (s, label, "LC AH CI high", round(high - score, 9))]
    df = _frame(rows, columns, floatfmt={"gamma": ".2f", "LC AE2": ".2f"})
    if rows and all(r[ah_col] == "-" for r in rows):
        df = df.drop(columns=["Iter AH", ah_col])
    return df, cells


def sweep_iterations(layout: Layout, metrics: Mapping[str, Mapping[str, Any]],
                     full: str) -> tuple[int, int]:
    """(AlpacaEval 2 iteration, Arena-Hard iteration) of a gamma-sweep row.

    With ``report.sweep_iteration`` an integer, that iteration (capped at the run's last) for
    both. With ``best``, the paper's rule: each benchmark's column reports the row's best
    iteration on that benchmark (highest AE2 LC; highest length-controlled Arena-Hard score), the
    earlier iteration on a tie. (Table 9's AE2 column is the best of the two rounds: gamma=0 is
    Table 4's iteration-1 18.88, gamma=1 Table 1's Offline DPO (w/ new ref) iteration 1 in
    Zephyr but iteration 2 in Llama-3; the two benchmarks serve in turn as validation set,
    Appendix F.)
    """
    candidates = _sweep_candidates(layout, full)

    def best(key: str) -> int:
        return max(candidates,
                   key=lambda i: (_nan_low(_value(metrics, f"{full}-iter{i}", key)), -i))

    return best(LC), best(AH_LC)


def _nan_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value


_BUILDERS = {
    "table1": _table1, "table2": _table2, "table3": _table3, "table4": _table4,
    "table5": _table5, "table6": _table6, "table7": _table7,
    "table9": lambda *a: _sweep_table("table9", *a),
    "table10": lambda *a: _sweep_table("table10", *a),
}


def _build(name, layout, metrics, alphas, agreement) -> tuple[pd.DataFrame, list[Cell]]:
    if name not in _BUILDERS:
        raise KeyError(f"unknown table {name!r}; known: {list(_BUILDERS)}")
    return _BUILDERS[name](layout, metrics or {}, alphas or {}, agreement)


def build_table(name: str, layout: Layout, metrics: Mapping[str, Mapping[str, Any]],
                alphas: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
                agreement: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Table ``name`` (table1..table7, table9, table10) in the paper's layout.

    ``metrics``: {model: metrics.json}, ``alphas``: {(full name, iteration): alpha.json},
    ``agreement``: agreement.json; each holding at least what :func:`needs` lists. Column
    formats for Markdown/LaTeX are in ``df.attrs["floatfmt"]``.
    """
    return _build(name, layout, metrics, alphas, agreement)[0]


def _compared_tables(layout: Layout) -> list[str]:
    # with one setting Table 10 repeats Table 9
    return [t for t in TABLES if t != "table10" or len(layout.settings) > 1]


_SWEEPS = ("table9", "table10")


def paper_vs_reproduced(layout: Layout, metrics: Mapping[str, Mapping[str, Any]],
                        alphas: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
                        agreement: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every cell we produce that the paper prints: table, setting, row, column, paper,
    reproduced, difference (reproduced - paper).

    A setting is compared with its namesake in the paper (zephyr, llama3); the toy world with
    zephyr, labelled "toy world vs zephyr". The gamma sweep is compared with the paper's sweep of
    the same setting, whichever of Tables 9/10 prints it.
    """
    out = []
    for table in _compared_tables(layout):
        _, cells = _build(table, layout, metrics, alphas, agreement)
        for setting, row, column, value in cells:
            if value is None or math.isnan(value):
                continue
            paper_setting = layout.paper_settings.get(setting, _paper_setting(setting))
            if paper_setting is None:
                continue
            sources = _SWEEPS if table in _SWEEPS else (table,)
            printed = next((v for src in sources
                            if (v := paper_value(src, paper_setting, row, column)) is not None),
                           None)
            if printed is None:
                continue
            shown = paper_setting if setting == paper_setting else \
                f"{layout.label(setting)} vs {paper_setting}"
            out.append({"table": table, "setting": shown, "row": row, "column": column,
                        "paper": printed, "reproduced": value,
                        "difference": round(value - printed, 9)})
    df = pd.DataFrame(out, columns=["table", "setting", "row", "column", "paper", "reproduced",
                                    "difference"])
    df.attrs["floatfmt"] = {c: ".4g" for c in ("paper", "reproduced", "difference")}
    return df


# --- figures -----------------------------------------------------------------------------------


def figure1_data(layout: Layout, metrics: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Figure 1 (right): LC win rate of Base, Offline DPO, LLM-as-a-Judge and DICE per setting."""
    rows = [{"setting": layout.label(s), "method": label, "model": model, "iteration": t,
             "lc": _value(metrics, model, LC)} for s, label, model, t in _figure1_bars(layout)]
    return pd.DataFrame(rows, columns=["setting", "method", "model", "iteration", "lc"])


def sweep_data(layout: Layout, metrics: Mapping[str, Mapping[str, Any]],
               figure: str = "figure3") -> pd.DataFrame:
    """Figures 3 and 5: LC win rate against gamma, one line per iteration."""
    s = layout.sweep_setting(figure)
    rows = [{"gamma": gamma, "experiment": layout.runs[full].exp, "iteration": t,
             "lc": _value(metrics, model, LC)}
            for gamma, full, t, model in _sweep_points(layout, s)]
    return pd.DataFrame(rows, columns=["gamma", "experiment", "iteration", "lc"])


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


def draw_figure(name: str, layout: Layout, data: Mapping[str, Any], png, pdf=None) -> None:
    from . import report

    """Draw figure ``name`` from what :func:`read_inputs` returns; PNG and PDF, atomically."""
    main = layout.label(layout.main)
    if name == "figure1":
        report.figure1(figure1_data(layout, data["metrics"]), png, pdf,
                       iteration=layout.figure1_iteration)
    elif name in ("figure3", "figure5"):
        label = layout.label(layout.sweep_setting(name))
        report.figure3(sweep_data(layout, data["metrics"], name), png, pdf,
                       title=f"LC win rate against gamma ({label})")
    elif name == "figure2":
        need = needs(name, layout)
        if not need["length_diffs"]:
            report.placeholder_figure(f"Figure 2: experiment {layout.figure_experiment!r} "
                                      f"(or D_offline) not configured in {main}", png, pdf)
            return
        key = need["length_diffs"][0]
        diffs = data["length_diffs"][key]
        report.figure2(diffs, data["offline"], png, pdf, bins=layout.figure2_bins,
                       alpha_star=_alpha_star(data["alphas"][key]),
                       source=diffs.attrs.get("source", "<length_diffs>"))
    elif name == "figure4":
        keys = needs(name, layout)["landscapes"]
        if not keys:
            report.placeholder_figure(f"Figure 4: experiment {layout.figure_experiment!r} not "
                                      f"configured in {main}", png, pdf)
            return
        land = data["landscapes"][keys[0]]
        judge = data["landscapes"][keys[1]] if len(keys) > 1 else None
        alpha = data["alphas"][keys[0]]
        report.figure4(land, png, pdf, alpha_star=_alpha_star(alpha),
                       source=land.attrs.get("source", "<landscape>"), judge=judge,
                       judge_source="<judge landscape>" if judge is None else
                       judge.attrs.get("source", "<judge landscape>"),
                       xlabel=alpha_axis(alpha),
                       judge_xlabel=alpha_axis(alpha, rating=True))
    else:
        raise KeyError(f"unknown figure {name!r}; known: {list(FIGURES)}")
