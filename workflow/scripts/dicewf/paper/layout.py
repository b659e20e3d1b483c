"""Which run fills which cell: the experiment roles, :class:`Layout` and the row plans.

Experiments are found by their logical names. Every name that gives an experiment a place in a
table or figure is written once, in the block below; a row whose experiment is not configured is
left out. No pandas here: the Snakefile builds the layout at start-up.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from .. import config as cfg

# --- which experiment fills which role (logical experiment names) -----------------------------

BASE = None  # the setting's base model (iteration 0)
OFFLINE_DPO = "offline_dpo"
OFFLINE_DPO_NEWREF = "offline_dpo_newref"  # also the gamma = 1 end of the gamma sweep
JUDGE = "judge"  # LLM-as-a-Judge; the right panel of Figure 4
DICE = "dice"  # also Figures 2 and 4 unless report.experiment names another
SWEEP = re.compile(r"dice_gamma\d+")  # the gamma sweep, with DICE and OFFLINE_DPO_NEWREF
RDPO_PREFIX = "rdpo_"  # Table 7: length-regularised DPO, lambda from its length_penalty
NO_MITIGATION, OURS = "dice_gamma0_alpha0", "dice_gamma0"  # Table 7's first and last rows

# (row label, experiment, iteration) of Tables 1 and 6
TABLE1_ROWS = (
    ("Base", BASE, 0),
    ("Offline DPO Iter 1", OFFLINE_DPO, 1),
    ("Offline DPO Iter 2", OFFLINE_DPO, 2),
    ("Offline DPO (w/ new ref) Iter 1", OFFLINE_DPO_NEWREF, 1),
    ("Offline DPO (w/ new ref) Iter 2", OFFLINE_DPO_NEWREF, 2),
    ("LLM-as-a-Judge Iter 1", JUDGE, 1),
    ("LLM-as-a-Judge Iter 2", JUDGE, 2),
    ("DICE Iter 1", DICE, 1),
    ("DICE Iter 2", DICE, 2),
)
TABLE6_ROWS = (
    ("Base", BASE, 0),
    *((f"LLM-as-a-Judge Iter {t}", JUDGE, t) for t in (1, 2, 3)),
    *((f"DICE Iter {t}", DICE, t) for t in (1, 2, 3)),
)
# (row label, offline experiment, DICE experiment) of Table 3, iteration 1
TABLE3_ROWS = (
    ("DPO", OFFLINE_DPO, DICE),
    ("IPO", "offline_ipo", "dice_ipo"),
    ("KTO", "offline_kto", "dice_kto"),
    ("Hinge", "offline_hinge", "dice_hinge"),
)
# (row label, experiment) of Table 4, iteration 1
TABLE4_ROWS = (
    ("gamma=0, alpha=0", NO_MITIGATION),
    ("gamma=0, alpha*", OURS),
    ("gamma=0, 2 alpha*", "dice_gamma0_alpha2x"),
    ("gamma=0.5, alpha=0", "dice_alpha0"),
    ("gamma=0.5, alpha*", DICE),
    ("gamma=0.5, 2 alpha*", "dice_alpha2x"),
)
TABLE2_ITERATION = 2  # Table 2: DICE's iteration 2 (or its last)
FIGURE1_BARS = (
    ("Base", BASE),
    ("Offline DPO", OFFLINE_DPO),
    ("LLM-as-a-Judge", JUDGE),
    ("DICE", DICE),
)
SWEEP_LINES = (1, 2)  # iterations drawn in Figures 3 and 5

PAPER_SETTINGS = ("zephyr", "llama3")


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
    method: str = "dice"  # dice | sera
    # a SeRA run's resolved sera block (selection settings; dicewf.sera), else None
    sera: dict[str, Any] | None = None
    noise_fraction: float = 0.0  # the share of D_offline's labels swapped (either method)


@dataclasses.dataclass(frozen=True)
class Layout:
    """A config condensed to what the tables and figures read; see :meth:`from_config`.

    JSON-serialisable (:meth:`to_dict`), so Snakemake passes it as a param and a changed layout
    reruns the table. Figure-only settings (Figure 2's bins) are not part of it: they are params
    of their figure's job alone.
    """

    settings: list[str]
    labels: dict[str, str]
    runs: dict[str, Run]  # full name -> run, in config order
    main: str
    sweep_iteration: int | str  # an iteration, or "best" (per benchmark: sweep_iterations)
    figure1_iteration: int
    figure_experiment: str  # logical experiment of Figures 2 and 4 (left)
    figure_iteration: int
    offline: dict[str, str | None]
    agreement: bool
    paper_settings: dict[str, str | None]
    level: float  # the confidence level of intervals across replicates (eval.intervals.level)
    # model -> the model it is evaluated under, where another experiment runs its iteration
    # (dicewf.config.owners: equal inputs and settings); models not named are their own
    shared: dict[str, str] = dataclasses.field(default_factory=dict)
    # an experiment run with replicates (dicewf.config.replicates) -> [full name, seed] of each
    # replicate, the first (itself) included; its later replicates are not in ``runs``, so the
    # paper's tables show the first and the replicates table all of them
    replicates: dict[str, list[list]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Layout:
        """The layout of a validated config (the schema fills in the ``report`` defaults)."""
        settings = cfg.settings(config)
        rep = config["report"]
        main = rep.get("setting") or settings[0]  # optional: the first setting
        if main not in settings:
            raise KeyError(f"report.setting: unknown setting {main!r}; configured: {settings}")
        runs = {}
        replicates: dict[str, list[list]] = {}
        for full, (first, r) in cfg.replicates(config).items():
            replicates.setdefault(first, []).append([full, cfg.run_seed(config, full)])
        for full, (setting, exp) in cfg.expanded(config).items():
            if full not in replicates:  # a later replicate
                continue
            x = cfg.experiment(config, full)
            alpha, mix = x["alpha"], x.get("mix") or {}
            runs[full] = Run(
                setting=setting,
                exp=exp,
                iterations=int(x["iterations"]),
                gamma=None if mix.get("gamma") is None else float(mix["gamma"]),
                alpha_fixed=None if alpha["fixed"] is None else float(alpha["fixed"]),
                alpha_scale=float(alpha["scale"]),
                # None: the trainer's own default (TRL: sigmoid for DPO, kto for KTO)
                loss_type=x["train"].get("loss_type"),
                trainer=x["trainer"],
                length_penalty=float(x["length_penalty"]),
                score_method=x["score"]["method"],
                method=x.get("method", "dice"),
                sera=x.get("sera"),
                noise_fraction=float(x.get("noise_fraction") or 0.0),
            )
        sweep = rep["sweep_iteration"]
        if sweep != "best" and not (isinstance(sweep, int) and sweep >= 1):
            raise ValueError(
                f"report.sweep_iteration: expected an iteration >= 1 or 'best', got {sweep!r}"
            )
        return cls(
            settings=settings,
            labels={s: cfg.setting_label(config, s) for s in settings},
            runs=runs,
            main=main,
            sweep_iteration=sweep,
            figure1_iteration=int(rep["figure1"]["iteration"]),
            # no schema default: checks.report_targets refuses only a named experiment
            figure_experiment=rep.get("experiment", DICE),
            figure_iteration=int(rep["iteration"]),
            offline={s: cfg.base(config, s).get("offline") for s in settings},
            agreement="agreement" in config,
            paper_settings={s: paper_setting(s) for s in settings},
            shared={m: o for m, o in cfg.model_owners(config).items() if m != o},
            replicates={first: runs_ for first, runs_ in replicates.items() if len(runs_) > 1},
            level=float(config["eval"]["intervals"]["level"]),
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

    def evaluated(self, model: str) -> str:
        """The model whose evaluation ``model`` reads (itself unless its run is shared)."""
        return self.shared.get(model, model)

    def run_of(self, full: str, t: int) -> str:
        """The experiment whose iteration-``t`` files (alpha.json, ...) ``full`` reads."""
        owner = self.shared.get(f"{full}-iter{t}")
        return full if owner is None else owner.removesuffix(f"-iter{t}")

    def replicas(self, model: str) -> list[str]:
        """The models of every replicate of ``model`` (``{full}-iter{t}`` of a replicated
        experiment: :attr:`replicates`), ``model`` first; ``[model]`` for any other."""
        full, sep, t = model.rpartition("-iter")
        if not sep or full not in self.replicates:
            return [model]
        return [f"{run}-iter{t}" for run, _ in self.replicates[full]]

    def runs_of(self, setting: str) -> list[tuple[str, Run]]:
        return [(full, run) for full, run in self.runs.items() if run.setting == setting]

    def sweep_setting(self, target: str) -> str:
        """Table 9 / Figure 3: the first setting; Table 10 / Figure 5: the second (or first)."""
        second = target in ("table10", "figure5")
        return self.settings[1] if second and len(self.settings) > 1 else self.settings[0]


def paper_setting(setting: str) -> str | None:
    """The paper's setting a setting is compared with: its namesake; the toy world: zephyr."""
    if setting in PAPER_SETTINGS:
        return setting
    return PAPER_SETTINGS[0] if setting == "" else None


# --- row plans: what both needs() and the builders iterate over ---------------------------------


def per_setting_rows(layout: Layout, spec) -> list[tuple[str, str, str]]:
    """(row label, setting, model) of every configured cell of Tables 1 and 6."""
    return [
        (label, s, model)
        for label, exp, t in spec
        for s in layout.settings
        if (model := layout.model(s, exp, t)) is not None
    ]


def table2_models(layout: Layout) -> list[tuple[str, str, int]]:
    """(setting, model, iteration) of our DICE rows on Table 2's leaderboard."""
    return [(s, *got) for s in layout.settings if (got := layout.capped(s, DICE, TABLE2_ITERATION))]


def table3_rows(layout: Layout) -> list[tuple[str, str | None, str | None]]:
    s = layout.main
    rows = [
        (label, layout.model(s, off, 1), layout.model(s, dice, 1))
        for label, off, dice in TABLE3_ROWS
    ]
    return [r for r in rows if r[1] or r[2]]


def table4_rows(layout: Layout) -> list[tuple[str, str]]:
    """(row label, full name) of the configured Table 4 experiments."""
    s = layout.main
    return [(label, full) for label, exp in TABLE4_ROWS if (full := layout.full(s, exp))]


def table7_rows(layout: Layout) -> list[tuple[str, str, float | None]]:
    """(row label, full name, lambda) of Table 7: no mitigation, each rdpo_*, ours."""
    s = layout.main
    rows = []
    if full := layout.full(s, NO_MITIGATION):
        rows.append(("No mitigation", full, None))
    rdpo = [
        (run.length_penalty, i, full)
        for i, (full, run) in enumerate(layout.runs_of(s))
        if run.exp.startswith(RDPO_PREFIX)
    ]
    for lam, _, full in sorted(rdpo):
        rows.append((f"Regularized DPO (lambda={lam:g})", full, lam))
    if full := layout.full(s, OURS):
        rows.append(("Ours", full, None))
    return rows


def has_alpha(layout: Layout, full: str) -> bool:
    """Whether the run searches (and writes) alpha: gamma = 1 samples nothing."""
    gamma = layout.runs[full].gamma
    return gamma is None or gamma < 1


def sweep_rows(layout: Layout, setting: str) -> list[tuple[float, str]]:
    """(gamma, full name) of the gamma sweep of ``setting``, by gamma; first configured wins."""
    by_gamma: dict[float, str] = {}
    for full, run in layout.runs_of(setting):
        if run.exp == OFFLINE_DPO_NEWREF:
            gamma = 1.0  # Offline DPO with a new reference is the gamma = 1 end of the sweep
        elif run.exp == DICE or SWEEP.fullmatch(run.exp):
            gamma = run.gamma
        else:
            continue
        if gamma is not None:
            by_gamma.setdefault(round(float(gamma), 6), full)
    return sorted(by_gamma.items())


def sweep_candidates(layout: Layout, full: str) -> list[int]:
    """Iterations a sweep row may report: the sweep iteration (capped), or all for 'best'."""
    n = layout.runs[full].iterations
    if layout.sweep_iteration == "best":
        return list(range(1, n + 1))
    return [min(int(layout.sweep_iteration), n)]


def figure1_bars(layout: Layout) -> list[tuple[str, str, str, int]]:
    """(setting, bar label, model, iteration) of Figure 1 (right)."""
    out = []
    for s in layout.settings:
        for label, exp in FIGURE1_BARS:
            if exp is None:
                out.append((s, label, cfg.base_model(s), 0))
            elif got := layout.capped(s, exp, layout.figure1_iteration):
                out.append((s, label, *got))
    return out


def sweep_points(layout: Layout, setting: str) -> list[tuple[float, str, int, str]]:
    """(gamma, full name, iteration, model) of Figures 3 and 5."""
    return [
        (gamma, full, t, f"{full}-iter{t}")
        for gamma, full in sweep_rows(layout, setting)
        for t in SWEEP_LINES
        if t <= layout.runs[full].iterations
    ]


def figure_keys(layout: Layout) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(full name, iteration) of the Figure 2/4 experiment and of LLM-as-a-Judge in the main
    setting (``report.iteration``, or the experiment's last if it has fewer); None if absent."""
    keys = []
    for exp in (layout.figure_experiment, JUDGE):
        full = layout.full(layout.main, exp)
        keys.append(
            None
            if full is None
            else (full, min(layout.figure_iteration, layout.runs[full].iterations))
        )
    return keys[0], keys[1]


def replicate_rows(layout: Layout) -> list[tuple[str, int, list[tuple[int, str, int]]]]:
    """(first replicate's full name, iteration, [(replicate number, model, seed), ...]) of
    every replicated experiment (:attr:`Layout.replicates`) and iteration, in config order."""
    out = []
    for first, runs in layout.replicates.items():
        for t in range(1, layout.runs[first].iterations + 1):
            members = [(r, f"{full}-iter{t}", int(seed)) for r, (full, seed) in enumerate(runs, 1)]
            out.append((first, t, members))
    return out
