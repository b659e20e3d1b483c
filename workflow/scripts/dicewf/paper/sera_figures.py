"""SeRA's Figures 2-6 (Ko et al., 2024) from the small files SeRA's runs write.

Which run fills which point is decided here, from each SeRA experiment's resolved ``sera``
block (:class:`SeraLayout`), not from its name: a run joins a figure when it differs from
SeRA's defaults (IRM selection of 0.7 of D_offline, N_off + N_gen = N, no noise, the DPO loss)
only in the figure's own knob. Figure by figure (docs/sera.md#figures):

* ``sera_figure2``: the LC win rate (and win rate, gold quality, length) of iteration 1 per
  selection criterion (``sera.selection``), with no bootstrapped pairs (``generated_proportion``
  0: Section 3.2's selection alone);
* ``sera_figure3``: Pearson's correlation of those models' implicit rewards on D_offline's
  responses with the gold quality and with length (:func:`dicewf.sera.reward_correlations`);
* ``sera_figure4``: LC win rate against the noise share, SeRA and no selection, and the
  selection's precision and recall against the swapped labels (``selection.json``);
* ``sera_figure5``: LC win rate against N_off / N (N_off + N_gen = N, and selection alone) and
  against N_gen / N (N_off / N = 0.7);
* ``sera_figure6``: LC win rate at iteration 2 against Eq. 7's lambda, and the Jaccard
  similarity of the selected sets across lambdas, iterations and losses.

Every point's error bar is the metric's interval in metrics.json. No pandas at import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .. import config as cfg
from .inputs import metrics_path
from .tables import GOLD, LC, LEN, WR, bounds, value

FIGURES = tuple(f"sera_figure{n}" for n in range(2, 7))
# the files SeRA's iterations write (workflow/rules/sera.smk) and Figure 3's scores
ITER = cfg.iter_dir("{exp}", "{iter}")
SELECTION = f"{ITER}/offline_selection.parquet"
REPORT = f"{ITER}/selection.json"
TRAINED = f"{ITER}/trained_logps.parquet"
FILES = {"selections": SELECTION, "reports": REPORT, "trained": TRAINED}

# SeRA's defaults a figure's runs share except in the figure's own knob (the schema's values)
DEFAULT_PROPORTION = 0.7
# Figure 2's criteria in the paper's order (sky blue, orange, pink, green), with their labels
CRITERIA = {
    "none": "No selection",
    "gold": "Gold quality",
    "reference": "Reference log-prob",
    "irm": "IRM (SeRA)",
}
# Figure 6's loss letters (the paper's D, I, S)
LOSS_LETTERS = {"sigmoid": "D", "ipo": "I", "hinge": "S"}
METRIC_KEYS = {"lc": LC, "wr": WR, "gold": GOLD, "length": LEN}
LAMBDA_ITERATION = 2  # Figure 6 (a, b): Eq. 7 first mixes two policies at iteration 2


@dataclasses.dataclass(frozen=True)
class SeraRun:
    """What the figures need to know about one SeRA experiment (main setting)."""

    exp: str  # logical name
    iterations: int
    loss_type: str
    beta: float
    selection: str
    selection_proportion: float
    generated_proportion: float | None
    ensemble_lambda: float
    noise_fraction: float


@dataclasses.dataclass(frozen=True)
class SeraLayout:
    """The SeRA runs of the main setting (full name -> :class:`SeraRun`, config order) and the
    shared runs (model -> owner model, :attr:`dicewf.paper.Layout.shared`). JSON-serialisable:
    a Snakemake param, so a changed layout redraws the figures."""

    label: str
    runs: dict[str, SeraRun]
    shared: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], shared: Mapping[str, str]) -> SeraLayout:
        settings = cfg.settings(config)
        main = config["report"].get("setting") or settings[0]
        runs = {}
        replicate = cfg.replicates(config)
        for full, (setting, exp) in cfg.expanded(config).items():
            x = cfg.experiment(config, full)
            if setting != main or x.get("method") != "sera" or replicate[full][1] > 1:
                continue
            sera, train = x["sera"], x["train"]
            runs[full] = SeraRun(
                exp=exp,
                iterations=int(x["iterations"]),
                loss_type=train.get("loss_type") or "sigmoid",  # TRL's default
                beta=float(train["beta"]),
                selection=sera["selection"],
                selection_proportion=float(sera["selection_proportion"]),
                generated_proportion=None
                if sera["generated_proportion"] is None
                else float(sera["generated_proportion"]),
                ensemble_lambda=float(sera["ensemble_lambda"]),
                noise_fraction=float(x["noise_fraction"]),
            )
        return cls(label=cfg.setting_label(config, main), runs=runs, shared=dict(shared))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeraLayout:
        data = dict(data)
        data["runs"] = {full: SeraRun(**run) for full, run in data["runs"].items()}
        return cls(**data)

    def evaluated(self, full: str, t: int) -> str:
        """The model whose metrics.json iteration ``t`` of ``full`` reads."""
        model = f"{full}-iter{t}"
        return self.shared.get(model, model)

    def run_of(self, full: str, t: int) -> str:
        """The experiment whose iteration-``t`` files ``full`` reads (itself unless shared)."""
        owner = self.shared.get(f"{full}-iter{t}")
        return full if owner is None else owner.removesuffix(f"-iter{t}")

    def pick(self, **knobs: Any) -> list[tuple[str, SeraRun]]:
        """The runs equal to SeRA's defaults except in ``knobs`` (a value, or a callable that
        tests the run's value), in config order."""
        want = {
            "loss_type": "sigmoid",
            "selection": "irm",
            "selection_proportion": DEFAULT_PROPORTION,
            "generated_proportion": None,
            "noise_fraction": 0.0,
        } | knobs
        out = []
        for full, run in self.runs.items():
            ok = all(
                test(getattr(run, k)) if callable(test) else _same(getattr(run, k), test)
                for k, test in want.items()
            )
            if ok:
                out.append((full, run))
        return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, abs_tol=1e-12)
    return a == b


def _first_by(runs: Iterable[tuple[str, SeraRun]], key) -> list[tuple[Any, str, SeraRun]]:
    """(key, full, run) of the first run per key value, sorted by key."""
    seen: dict[Any, tuple[str, SeraRun]] = {}
    for full, run in runs:
        seen.setdefault(key(run), (full, run))
    return sorted(((k, f, r) for k, (f, r) in seen.items()), key=lambda item: item[0])


def _any(_value: Any) -> bool:
    return True


# --- which run fills which point ------------------------------------------------------------------


def figure2_runs(layout: SeraLayout) -> list[tuple[str, str, SeraRun]]:
    """(criterion, full, run) of Figure 2 and 3, in :data:`CRITERIA` order: selection alone."""
    runs = layout.pick(selection=_any, generated_proportion=0.0)
    first = {k: (f, r) for k, f, r in _first_by(runs, lambda r: r.selection)}
    return [(c, *first[c]) for c in CRITERIA if c in first]


def figure4_runs(layout: SeraLayout) -> list[tuple[str, float, str, SeraRun]]:
    """(line, noise share, full, run) of Figure 4: SeRA (IRM selection, N_off + N_gen = N) and no
    selection (D_offline alone, N_gen = 0) per noise share."""
    out = []
    sera = layout.pick(noise_fraction=_any)
    none = layout.pick(
        noise_fraction=_any, selection="none", generated_proportion=lambda g: g in (None, 0.0)
    )
    for line, runs in (("SeRA-DPO", sera), ("No selection", none)):
        out += [(line, k, f, r) for k, f, r in _first_by(runs, lambda r: r.noise_fraction)]
    return out


def figure5_runs(layout: SeraLayout) -> list[tuple[str, str, float, str, SeraRun]]:
    """(panel, line, x, full, run) of Figure 5. Panel a: x = N_off / N, SeRA's sum constraint
    (N_gen = N - N_off) and selection alone (N_gen = 0); no selection is x = 1 on both. Panel b:
    x = N_gen / N at N_off / N = 0.7 (SeRA's constraint gives 0.3)."""
    out = []
    none = layout.pick(selection="none", selection_proportion=_any, generated_proportion=_any)
    none = [(f, r) for f, r in none if r.generated_proportion in (None, 0.0)][:1]
    for line, generated in (("N_off + N_gen = N", None), ("selection only (N_gen = 0)", 0.0)):
        runs = layout.pick(selection_proportion=_any, generated_proportion=generated)
        points = _first_by(runs, lambda r: r.selection_proportion)
        points += [(1.0, f, r) for f, r in none if all(k != 1.0 for k, _, _ in points)]
        out += [("a", line, x, f, r) for x, f, r in points]
    runs = layout.pick(generated_proportion=_any)
    points = _first_by(
        runs,
        lambda r: (
            round(1.0 - r.selection_proportion, 12)
            if r.generated_proportion is None
            else r.generated_proportion
        ),
    )
    out += [("b", "N_off / N = 0.7", x, f, r) for x, f, r in points]
    return out


def lambda_runs(layout: SeraLayout) -> list[tuple[float, str, SeraRun]]:
    """(lambda, full, run) of Figure 6 (a, b): SeRA runs with an iteration 2."""
    runs = layout.pick(iterations=lambda n: n >= LAMBDA_ITERATION, ensemble_lambda=_any)
    return _first_by(runs, lambda r: r.ensemble_lambda)


def jaccard_sets(layout: SeraLayout) -> list[tuple[str, str, int]]:
    """(label, full, iteration) of Figure 6 (c): every iteration of the first SeRA run per loss
    (clean D_offline, IRM selection), labelled as the paper labels them (D2: DPO, iteration 2)."""
    runs = layout.pick(loss_type=lambda loss: loss in LOSS_LETTERS, ensemble_lambda=_any)
    firsts = {}
    for full, run in runs:
        firsts.setdefault(run.loss_type, (full, run))
    return [
        (f"{LOSS_LETTERS[loss]}{t}", full, t)
        for loss in LOSS_LETTERS
        if loss in firsts
        for full, run in [firsts[loss]]
        for t in range(1, run.iterations + 1)
    ]


# --- what each figure reads -------------------------------------------------------------------------


def needs(name: str, layout: SeraLayout) -> dict[str, list]:
    """What figure ``name`` reads: ``models`` [(full, t)] (metrics.json), ``selections``,
    ``reports`` and ``trained`` [(full, t)] (offline_selection.parquet, selection.json,
    trained_logps.parquet)."""
    out: dict[str, list] = {"models": [], "selections": [], "reports": [], "trained": []}
    if name == "sera_figure2":
        out["models"] = [(f, 1) for _, f, _ in figure2_runs(layout)]
    elif name == "sera_figure3":
        out["trained"] = [(f, 1) for _, f, _ in figure2_runs(layout)]
    elif name == "sera_figure4":
        runs = figure4_runs(layout)
        out["models"] = [(f, 1) for *_, f, _ in runs]
        out["reports"] = [(f, 1) for line, _, f, _ in runs if line == "SeRA-DPO"]
    elif name == "sera_figure5":
        out["models"] = [(f, 1) for *_, f, _ in figure5_runs(layout)]
    elif name == "sera_figure6":
        lam = [(f, LAMBDA_ITERATION) for _, f, _ in lambda_runs(layout)]
        out["models"] = lam
        out["selections"] = lam + [(f, t) for _, f, t in jaccard_sets(layout)]
    else:
        raise KeyError(f"unknown SeRA figure {name!r}; known: {list(FIGURES)}")
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def input_paths(name: str, layout: SeraLayout) -> dict[str, list[str]]:
    """Snakemake's named inputs of figure ``name`` (empty groups left out); a shared run's
    files are its owner's."""
    need = needs(name, layout)
    out = {"metrics": [metrics_path(layout.evaluated(f, t)) for f, t in need["models"]]}
    for group, template in FILES.items():
        out[group] = [template.format(exp=layout.run_of(f, t), iter=t) for f, t in need[group]]
    return {k: v for k, v in out.items() if v}


def read_inputs(name: str, layout: SeraLayout, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The files of :func:`input_paths` read back, keyed by (full, t) per group."""
    from ..io import read_json, read_parquet

    readers = {
        "metrics": read_json,
        "selections": read_parquet,
        "reports": read_json,
        "trained": read_parquet,
    }
    need = needs(name, layout)
    need["metrics"] = need.pop("models")
    out = {}
    for group, reader in readers.items():
        keys = need[group]
        got = inputs.get(group) or []
        paths = [got] if isinstance(got, str) else [str(p) for p in got]
        if len(paths) != len(keys):
            raise ValueError(
                f"{name}: input {group!r} has {len(paths)} file(s), the layout needs "
                f"{len(keys)}: {keys}"
            )
        out[group] = {}
        for key, path in zip(keys, paths, strict=True):
            data = reader(path)
            if hasattr(data, "attrs"):
                data.attrs["source"] = path
            out[group][key] = data
    return out


# --- the data behind each figure ------------------------------------------------------------------


def _metrics(metrics: Mapping[tuple[str, int], Mapping[str, Any]], full: str, t: int) -> dict:
    """Each of :data:`METRIC_KEYS` and its interval (``*_low``, ``*_high``; NaN where missing)."""
    key = (full, t)
    if key not in metrics:
        raise KeyError(f"metrics of {full} iteration {t} were not given (needs() lists them)")
    by_model = {"m": metrics[key]}
    row = {}
    for short, metric in METRIC_KEYS.items():
        low, high = bounds(metric)
        row[short] = value(by_model, "m", metric)
        row[f"{short}_low"], row[f"{short}_high"] = (
            value(by_model, "m", low),
            value(by_model, "m", high),
        )
    return row


METRIC_COLUMNS = [c for s in METRIC_KEYS for c in (s, f"{s}_low", f"{s}_high")]


def figure2_data(layout: SeraLayout, metrics: Mapping) -> Any:
    """Figure 2: one row per selection criterion (label, experiment, the metrics with their
    intervals) at iteration 1."""
    import pandas as pd

    rows = [
        {"criterion": c, "label": CRITERIA[c], "experiment": run.exp, **_metrics(metrics, f, 1)}
        for c, f, run in figure2_runs(layout)
    ]
    return pd.DataFrame(rows, columns=["criterion", "label", "experiment", *METRIC_COLUMNS])


def figure3_data(layout: SeraLayout, trained: Mapping) -> Any:
    """Figure 3: per selection criterion, the correlations of the iteration-1 model's implicit
    rewards (against its train reference) with the gold quality and with length, per response
    and per pair (:func:`dicewf.sera.reward_correlations`)."""
    import pandas as pd

    from ..sera import reward_correlations

    rows = []
    for c, full, run in figure2_runs(layout):
        pairs = trained.get((full, 1))
        if pairs is None:
            raise KeyError(f"trained log-probs of {full} iteration 1 were not given")
        source = pairs.attrs.get("source", f"<{full} trained log-probs>")
        rows.append(
            {
                "criterion": c,
                "label": CRITERIA[c],
                "experiment": run.exp,
                **reward_correlations(pairs, run.beta, source=source),
            }
        )
    return pd.DataFrame(rows)


def _quality(report: Mapping[str, Any], label: str) -> dict[str, float]:
    got = report.get(label) or {}
    return {
        f"{label}_{k}": math.nan if got.get(k) is None else float(got[k])
        for k in ("precision", "recall")
    }


def figure4_data(layout: SeraLayout, metrics: Mapping, reports: Mapping) -> Any:
    """Figure 4: one row per (line, noise share) with the metrics and, for SeRA's rows, the
    selection's precision and recall against the swapped labels (``label_swapped_*``) and
    against the gold judge's worse-chosen pairs (``gold_worse_chosen_*``; NaN where absent)."""
    import pandas as pd

    rows = []
    for line, noise, full, run in figure4_runs(layout):
        row = {"line": line, "noise": noise, "experiment": run.exp, **_metrics(metrics, full, 1)}
        report = reports.get((full, 1), {})
        for label in ("label_swapped", "gold_worse_chosen"):
            row |= _quality(report, label)
        rows.append(row)
    quality = [
        f"{a}_{b}" for a in ("label_swapped", "gold_worse_chosen") for b in ("precision", "recall")
    ]
    return pd.DataFrame(rows, columns=["line", "noise", "experiment", *METRIC_COLUMNS, *quality])


def figure5_data(layout: SeraLayout, metrics: Mapping) -> Any:
    """Figure 5: one row per (panel, line, x) with the metrics at iteration 1."""
    import pandas as pd

    rows = [
        {"panel": p, "line": line, "x": x, "experiment": run.exp, **_metrics(metrics, f, 1)}
        for p, line, x, f, run in figure5_runs(layout)
    ]
    return pd.DataFrame(rows, columns=["panel", "line", "x", "experiment", *METRIC_COLUMNS])


def _selected_keys(selection: Any, name: str) -> list[tuple]:
    """The selected pairs of an offline_selection.parquet as (prompt_id, chosen, rejected)."""
    from ..io import check_frame
    from ..sera import SELECTED

    source = selection.attrs.get("source", name)
    check_frame(
        selection,
        {"prompt_id": "str", "chosen": "str", "rejected": "str", SELECTED: "bool"},
        source,
    )
    kept = selection[selection[SELECTED].to_numpy(dtype=bool)]
    return list(zip(kept["prompt_id"], kept["chosen"], kept["rejected"], strict=True))


def figure6_data(layout: SeraLayout, metrics: Mapping, selections: Mapping) -> dict[str, Any]:
    """Figure 6: ``lambda`` (one row per lambda: the metrics at iteration 2), ``lambda_jaccard``
    (:func:`dicewf.sera.jaccard_matrix` of those runs' iteration-2 selections) and
    ``jaccard`` (of the selections of :func:`jaccard_sets`: iterations and losses)."""
    import pandas as pd

    from ..sera import jaccard_matrix

    t = LAMBDA_ITERATION
    lam = lambda_runs(layout)
    rows = [{"lambda": x, "experiment": run.exp, **_metrics(metrics, f, t)} for x, f, run in lam]

    def keys(full, it):
        if (full, it) not in selections:
            raise KeyError(f"offline selection of {full} iteration {it} was not given")
        return _selected_keys(selections[(full, it)], f"<{full} iteration {it} selection>")

    return {
        "lambda": pd.DataFrame(rows, columns=["lambda", "experiment", *METRIC_COLUMNS]),
        "lambda_jaccard": jaccard_matrix({f"{x:g}": keys(f, t) for x, f, _ in lam}),
        "jaccard": jaccard_matrix({label: keys(f, it) for label, f, it in jaccard_sets(layout)}),
    }


# --- drawing ------------------------------------------------------------------------------------


def _bars(ax, frame, column: str, labels, title: str) -> None:
    from ..report import _error_bars

    errors = _error_bars(frame[column], frame[f"{column}_low"], frame[f"{column}_high"])
    ax.bar(range(len(frame)), frame[column], yerr=errors, capsize=3, color="tab:green")
    ax.set_xticks(range(len(frame)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=9)


def _lines(ax, frame, x: str, line: str, column: str = "lc") -> None:
    """One line per value of column ``line`` (dotted for a selection-only line, as the paper
    draws IRM selection alone in Figure 5a), error bars from the metric's interval."""
    from ..report import _error_bars

    for name, points in frame.sort_values(x).groupby(line, sort=False):
        errors = _error_bars(points[column], points[f"{column}_low"], points[f"{column}_high"])
        ax.errorbar(
            points[x],
            points[column],
            yerr=errors,
            marker="o",
            capsize=3,
            ls=":" if "only" in str(name) else "-",
            label=name,
        )
    if len(frame):
        ax.legend(fontsize=7)


def _heatmap(ax, matrix, title: str) -> None:
    ax.set_title(title, fontsize=9)
    if matrix.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, "no configured runs", ha="center", va="center", transform=ax.transAxes)
        return
    ax.imshow(matrix.to_numpy(dtype=float), vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, fontsize=8)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=8)
    for i in range(len(matrix.index)):
        for j in range(len(matrix.columns)):
            v = float(matrix.iat[i, j])
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if v > 0.6 else "white",
            )


def _empty(name: str, layout: SeraLayout, png, pdf, what: str) -> None:
    from ..report import placeholder_figure

    placeholder_figure(
        f"{name}: no SeRA experiment for {what} in {layout.label} (docs/sera.md#figures)", png, pdf
    )


def _draw(fig, png, pdf) -> None:
    from ..report import _pyplot, _save_figure

    fig.tight_layout()
    _save_figure(fig, png, pdf)
    _pyplot().close(fig)


def draw(name: str, layout: SeraLayout, data: Mapping[str, Any], png, pdf=None) -> Any:
    """Draw SeRA figure ``name`` from :func:`read_inputs`' ``data``; returns the figure's data
    (a frame, or Figure 6's dict of frames), also when the figure is a placeholder."""
    from ..report import _pyplot

    plt = _pyplot()
    metrics = data.get("metrics", {})
    if name == "sera_figure2":
        frame = figure2_data(layout, metrics)
        if frame.empty:
            _empty(name, layout, png, pdf, "the selection criteria (generated_proportion: 0)")
            return frame
        fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
        titles = ("LC win rate (%)", "win rate (%)", "gold quality", "length (chars)")
        for ax, column, title in zip(axes, METRIC_KEYS, titles, strict=True):
            _bars(ax, frame, column, frame["label"], title)
        fig.suptitle(f"Offline selection criteria, iteration 1 ({layout.label})", fontsize=10)
    elif name == "sera_figure3":
        frame = figure3_data(layout, data.get("trained", {}))
        if frame.empty:
            _empty(name, layout, png, pdf, "the selection criteria (generated_proportion: 0)")
            return frame
        fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
        titles = (
            "reward vs gold quality",
            "reward vs length",
            "IRM vs quality gap",
            "IRM vs length difference",
        )
        columns = ("quality", "length", "margin_quality", "margin_length")
        for ax, column, title in zip(axes, columns, titles, strict=True):
            _bars(ax, frame, column, frame["label"], f"Pearson r: {title}")
            ax.axhline(0.0, color="grey", lw=0.5)
        fig.suptitle(f"Implicit rewards of the iteration-1 models ({layout.label})", fontsize=10)
    elif name == "sera_figure4":
        frame = figure4_data(layout, metrics, data.get("reports", {}))
        if frame.empty:
            _empty(name, layout, png, pdf, "noise shares (sera.noise_fraction)")
            return frame
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        _lines(left, frame, "noise", "line")
        left.set(xlabel="share of labels swapped", ylabel="LC win rate (%)")
        sera = frame[frame["line"] == "SeRA-DPO"].sort_values("noise")
        for label, style in (("label_swapped", "-"), ("gold_worse_chosen", "--")):
            for metric in ("precision", "recall"):
                right.plot(
                    sera["noise"],
                    sera[f"{label}_{metric}"],
                    marker="o",
                    ls=style,
                    label=f"{metric} ({label})",
                )
        right.set(xlabel="share of labels swapped", ylabel="share", ylim=(0, 1.05))
        right.legend(fontsize=7)
        right.set_title("pairs the IRM selection drops", fontsize=9)
    elif name == "sera_figure5":
        frame = figure5_data(layout, metrics)
        if frame.empty:
            _empty(name, layout, png, pdf, "the N_off / N_gen ratios")
            return frame
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for ax, panel, xlabel in zip(
            axes, ("a", "b"), ("N_off / N", "N_gen / N (N_off / N = 0.7)"), strict=True
        ):
            _lines(ax, frame[frame["panel"] == panel], "x", "line")
            ax.set(xlabel=xlabel, ylabel="LC win rate (%)")
    elif name == "sera_figure6":
        got = figure6_data(layout, metrics, data.get("selections", {}))
        if got["lambda"].empty and got["jaccard"].empty:
            _empty(name, layout, png, pdf, "lambda or the iterations")
            return got
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        frame = got["lambda"].assign(line=f"iteration {LAMBDA_ITERATION}")
        _lines(axes[0], frame, "lambda", "line")
        axes[0].set(xlabel="ensemble coefficient lambda (Eq. 7)", ylabel="LC win rate (%)")
        _heatmap(axes[1], got["lambda_jaccard"], "Jaccard: selections across lambda")
        _heatmap(axes[2], got["jaccard"], "Jaccard: across iterations and losses")
        _draw(fig, png, pdf)
        return got
    else:
        raise KeyError(f"unknown SeRA figure {name!r}; known: {list(FIGURES)}")
    _draw(fig, png, pdf)
    return frame
