"""The claims table: each qualitative claim of the paper's results (``claims.yaml``, written
once), the reproduced effect, its paired-bootstrap interval and a verdict.

A claim compares models evaluated on the same prompts, so its interval comes from resampling
those prompts once for all of them (:func:`dicewf.uncertainty.joint`): the per-prompt
judgements (results/eval/{model}/judgements.parquet, the toy eval's) are its inputs, and
Table 5's claim resamples the agreement tuples (results/agreement/tuples.parquet). The verdict
(:func:`dicewf.uncertainty.verdict`) is *holds* when the interval at ``eval.intervals.level``
excludes 0 on the claimed side, *reversed* when it excludes 0 on the other side and
*inconclusive* otherwise. Claims whose experiments are not configured are left out.

The paper suite has no per-prompt judgements of its own format yet (AlpacaEval's annotations
and the LC GLM with instruction difficulty live in the alpaca-eval package), so the claims table
is a target of the toy suite only. No pandas at import: the Snakefile reads :func:`input_paths`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config as cfg
from ..checks import load_yaml
from .layout import Layout, sweep_candidates, sweep_rows
from .tables import GOLD, LC, LEN, WR

if TYPE_CHECKING:
    import pandas as pd

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")
JUDGEMENTS = f"{cfg.RESULTS}/eval/{{model}}/judgements.parquet"  # eval.smk: the toy eval
# under the configuration's own folder (dicewf.config.own_dir)
TUPLES = "{root}/agreement/tuples.parquet"  # agreement.smk: agreement
KINDS = ("difference", "agreement", "interior_optimum")
# Table 5's reward models: the tuples' reward columns ({prefix}_1, {prefix}_2)
AGREEMENT_REWARDS = {"DPO Implicit Reward": "reward", "IntlRM": "rm_reward"}
# the metrics with a per-prompt statistic (dicewf.uncertainty.STATISTICS, which imports numpy)
STATISTICS = (LC, WR, GOLD, LEN)
# an interval bound within this of 0 counts as 0 (points or characters): the LC GLM clips the
# labels at 1e-6, so a model whose LC is at its floor still has an LC of ~1e-4 points, and two
# such models differ by less than this in every resample
TOLERANCE = 1e-3
COLUMNS = ["Claim", "Table", "Compared", "Effect", "Effect low", "Effect high", "Unit", "Verdict"]
# a difference claim whose models have replicates (replicates: R): the effect of each replicate
# (replicate i of a against replicate i of b, or b itself where b has none), its mean and the
# Student-t interval across replicates (dicewf.uncertainty.across_replicates), and that
# interval's verdict, and the verdict of each replicate's paired bootstrap over the prompts (the
# first is Verdict's); left out where no claim has replicates
ACROSS = "Across replicates"
PER_REPLICATE = "Verdicts per replicate"
REPLICATE_COLUMNS = [
    "Replicates",
    ACROSS,
    f"{ACROSS} low",
    f"{ACROSS} high",
    f"Verdict {ACROSS}",
    PER_REPLICATE,
]


def seed_dependent(verdicts: str) -> bool:
    """Whether a :data:`PER_REPLICATE` cell ("holds, inconclusive, ...") has a replicate where
    the claim holds and another where it is reversed: its verdict depends on the seed set."""
    from ..uncertainty import HOLDS, REVERSED

    return {HOLDS, REVERSED} <= {v.strip() for v in verdicts.split(",")}


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of ``claims.yaml`` (see its header for the kinds)."""

    claim: str
    table: str
    kind: str
    sign: int
    metric: str | None = None
    a: Any = None
    b: Any = None


def load_claims(path: str | Path = CLAIMS_FILE) -> tuple[Claim, ...]:
    """The claims of ``path``; a malformed entry raises ValueError naming the file, the entry
    and the key."""
    data = load_yaml(path)
    entries = data.get("claims") if isinstance(data, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list under 'claims'")
    out = []
    for i, entry in enumerate(entries):
        where = f"{path}: claims[{i}]"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where}: expected a mapping, got {entry!r}")
        fields = {f.name for f in dataclasses.fields(Claim)}
        unknown = sorted(set(entry) - fields)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
        for key in ("claim", "table", "kind", "sign"):
            if key not in entry:
                raise ValueError(f"{where}: key {key!r} missing")
        claim = Claim(**entry)
        where = f"{where} ({claim.claim!r})"
        if claim.kind not in KINDS:
            raise ValueError(f"{where}: kind {claim.kind!r} is not one of {KINDS}")
        if claim.sign not in (1, -1):
            raise ValueError(f"{where}: sign must be 1 or -1, got {claim.sign!r}")
        if claim.kind in ("difference", "interior_optimum") and claim.metric not in STATISTICS:
            raise ValueError(f"{where}: metric {claim.metric!r} is not one of {STATISTICS}")
        if claim.kind == "difference":
            for key in ("a", "b"):
                model = getattr(claim, key)
                if not (
                    isinstance(model, list)
                    and len(model) == 2
                    and (model[0] is None or isinstance(model[0], str))
                    and isinstance(model[1], int)
                ):
                    raise ValueError(
                        f"{where}: {key} must be [experiment or null, iteration], got {model!r}"
                    )
        if claim.kind == "agreement":
            for key in ("a", "b"):
                if getattr(claim, key) not in AGREEMENT_REWARDS:
                    raise ValueError(
                        f"{where}: {key} {getattr(claim, key)!r} is not one of "
                        f"{list(AGREEMENT_REWARDS)}"
                    )
        out.append(claim)
    return tuple(out)


CLAIMS = load_claims()


# --- which models each claim compares -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """A configured claim and what it compares: ``models`` (difference: [a, b]) or, for an
    interior optimum, ``rows`` (gamma, [candidate models]) in gamma order."""

    claim: Claim
    models: tuple[str, ...] = ()
    rows: tuple[tuple[float, tuple[str, ...]], ...] = ()


def plans(layout: Layout, claims: Sequence[Claim] = CLAIMS) -> list[Plan]:
    """The claims whose experiments are configured in the main setting, with their models."""
    s, out = layout.main, []
    for claim in claims:
        if claim.kind == "difference":
            models = [layout.model(s, exp, t) for exp, t in (claim.a, claim.b)]
            if all(models):
                out.append(Plan(claim, models=tuple(models)))
        elif claim.kind == "agreement":
            if layout.agreement:
                out.append(Plan(claim))
        else:
            rows = sweep_rows(layout, layout.sweep_setting(claim.table))
            if len(rows) >= 3:  # an interior needs two ends around it
                out.append(
                    Plan(
                        claim,
                        rows=tuple(
                            (g, tuple(f"{full}-iter{t}" for t in sweep_candidates(layout, full)))
                            for g, full in rows
                        ),
                    )
                )
    return out


def _models(plan: Plan, layout: Layout) -> list[str]:
    """The models a plan reads: a difference's two with their replicates, a sweep's rows."""
    pairs = [r for m in plan.models for r in layout.replicas(m)]
    return [*pairs, *(m for _, candidates in plan.rows for m in candidates)]


def replicate_pairs(plan: Plan, layout: Layout) -> list[tuple[str, str]]:
    """A difference claim's (a, b) per replicate: replicate i of each where both have one,
    an unreplicated side (the base model) in every pair; one pair without replicates."""
    a, b = (layout.replicas(m) for m in plan.models)
    n = max(len(a), len(b)) if min(len(a), len(b)) == 1 else min(len(a), len(b))
    return [(a[min(i, len(a) - 1)], b[min(i, len(b) - 1)]) for i in range(n)]


def needs(layout: Layout, claims: Sequence[Claim] = CLAIMS) -> dict[str, Any]:
    """``judgements``: the evaluated models whose judgements the claims read (each once; a
    shared run under its owner's name), ``tuples``: whether Table 5's tuples are read."""
    planned = plans(layout, claims)
    models = [layout.evaluated(m) for p in planned for m in _models(p, layout)]
    return {
        "judgements": list(dict.fromkeys(models)),
        "tuples": any(p.claim.kind == "agreement" for p in planned),
    }


def tuples_path(root: str = cfg.RESULTS) -> str:
    """The agreement run's labelled tuples of the configuration whose own folder is ``root``."""
    return TUPLES.format(root=root)


def input_paths(
    layout: Layout, claims: Sequence[Claim] = CLAIMS, root: str = cfg.RESULTS
) -> dict[str, list[str]]:
    """Snakemake's named inputs of the claims table; empty groups left out. ``root``: the
    configuration's own folder (:func:`dicewf.config.own_dir`), which holds the agreement run."""
    needed = needs(layout, claims)
    out = {
        "judgements": [JUDGEMENTS.format(model=m) for m in needed["judgements"]],
        "tuples": [tuples_path(root)] if needed["tuples"] else [],
    }
    return {key: paths for key, paths in out.items() if paths}


def read_inputs(
    layout: Layout, inputs: Mapping[str, Any], claims: Sequence[Claim] = CLAIMS
) -> dict[str, Any]:
    """Read :func:`input_paths` (``inputs``: e.g. snakemake.input): ``judgements`` {evaluated
    model: DataFrame} and ``tuples`` (DataFrame or None)."""
    from ..io import read_parquet
    from .inputs import _as_list

    needed = needs(layout, claims)
    paths = _as_list(inputs.get("judgements"))
    if len(paths) != len(needed["judgements"]):
        raise ValueError(
            f"claims: input 'judgements' has {len(paths)} file(s), the claims need "
            f"{len(needed['judgements'])}: {needed['judgements']}"
        )
    judgements = {}
    for model, path in zip(needed["judgements"], paths, strict=True):
        judgements[model] = read_parquet(path)
        judgements[model].attrs["source"] = str(path)
    tuples = None
    if needed["tuples"]:
        (path,) = _as_list(inputs.get("tuples"))
        tuples = read_parquet(path)
        tuples.attrs["source"] = str(path)
    return {"judgements": judgements, "tuples": tuples}


# --- the table ----------------------------------------------------------------------------------


def build(
    layout: Layout,
    judgements: Mapping[str, pd.DataFrame],
    tuples: pd.DataFrame | None,
    *,
    l2: float,
    n_bootstrap: int,
    level: float,
    seed: int,
    claims: Sequence[Claim] = CLAIMS,
) -> pd.DataFrame:
    """The claims table: per configured claim its text, paper table, what it compares, the
    reproduced effect with its interval (columns ``Effect low``/``Effect high``), the unit and
    the verdict. ``judgements``: {evaluated model: per-prompt judgements} (:func:`read_inputs`),
    ``tuples``: Table 5's tuples (with ``label``; None when no agreement claim is planned)."""
    from .. import uncertainty as u
    from .tables import frame

    settings = {"n_bootstrap": n_bootstrap, "level": level, "seed": seed}
    # one set of resampled prompts for every model: each model's statistic is resampled once
    boot = u.PairedBootstrap(**settings)

    def judged(model: str) -> pd.DataFrame:
        name = layout.evaluated(model)
        if name not in judgements:
            raise KeyError(f"judgements of model {name!r} were not given (needs() lists it)")
        return judgements[name]

    def source(model: str) -> str:
        return judged(model).attrs.get("source", model)

    rows = []
    for plan in plans(layout, claims):
        claim = plan.claim
        unit = "chars" if claim.metric == "mean_len_model" else "points"
        across: dict[str, Any] = {}
        if claim.kind == "difference":
            a, b = plan.models
            stat = u.statistic(claim.metric, l2)
            got = boot.difference(judged(a), judged(b), stat, (source(a), source(b)))
            compared = f"{a} - {b}"
            pairs = replicate_pairs(plan, layout)
            if len(pairs) > 1:
                each = [
                    boot.difference(judged(x), judged(y), stat, (source(x), source(y)))
                    for x, y in pairs
                ]
                mean, low, high = u.across_replicates([e.estimate for e in each], level)
                across = {
                    "Replicates": len(pairs),
                    ACROSS: mean,
                    f"{ACROSS} low": low,
                    f"{ACROSS} high": high,
                    f"Verdict {ACROSS}": u.verdict(low, high, claim.sign, tol=TOLERANCE),
                    PER_REPLICATE: ", ".join(
                        u.verdict(e.low, e.high, claim.sign, tol=TOLERANCE) for e in each
                    ),
                }
        elif claim.kind == "agreement":
            got, compared = _agreement(claim, tuples, settings)
        else:
            got, compared = _interior(plan, judged, source, u.statistic(claim.metric, l2), boot)
        rows.append(
            {
                "Claim": claim.claim,
                "Table": claim.table,
                "Compared": compared,
                "Effect": got.estimate,
                "Effect low": got.low,
                "Effect high": got.high,
                "Unit": unit,
                "Verdict": u.verdict(got.low, got.high, claim.sign, tol=TOLERANCE),
                **across,
            }
        )
    df = frame(
        rows,
        COLUMNS + REPLICATE_COLUMNS,
        optional=REPLICATE_COLUMNS,
        floatfmt={"Effect": ".2f", ACROSS: ".2f", "Replicates": ".0f"},
        intervals=["Effect", ACROSS],
    )
    df.attrs["level"] = level
    return df


def _agreement(claim: Claim, tuples: pd.DataFrame | None, settings: Mapping[str, Any]):
    """Table 5: agreement rate of ``claim.a`` minus that of ``claim.b`` (points), paired over
    the labelled tuples."""
    import pandas as pd

    from .. import uncertainty as u
    from ..io import check_frame

    if tuples is None:
        raise ValueError(f"claim {claim.claim!r}: Table 5's tuples were not given")
    source = tuples.attrs.get("source", "<tuples>")
    columns = [f"{AGREEMENT_REWARDS[m]}_{k}" for m in (claim.a, claim.b) for k in (1, 2)]
    check_frame(tuples, {c: "float" for c in [*columns, "label"]}, source)
    frames = [
        pd.DataFrame(
            {
                "agreement": 100.0
                * u.agreement_scores(
                    tuples[f"{AGREEMENT_REWARDS[m]}_1"],
                    tuples[f"{AGREEMENT_REWARDS[m]}_2"],
                    tuples["label"],
                )
            }
        )
        for m in (claim.a, claim.b)
    ]
    if len(frames[0]) == 0:
        raise ValueError(f"{source}: no labelled tuple to compare {claim.a} and {claim.b} on")
    got = u.paired_difference(
        *frames,
        u.statistic("agreement"),
        key=None,
        sources=(f"{source} ({claim.a})", f"{source} ({claim.b})"),
        **settings,
    )
    return got, f"{claim.a} - {claim.b} ({len(frames[0])} labelled tuples)"


def _interior(plan: Plan, judged, source, stat, boot):
    """Tables 9/10: the best interior gamma's statistic minus the better end's, every gamma's
    model on the same resampled prompts. A row with several candidate iterations
    (report.sweep_iteration: best) reports its best one by the point estimate, as the table
    does; that choice is not redone per resample."""
    import numpy as np

    chosen = []
    for _, candidates in plan.rows:
        points = [boot.point(judged(m), stat, source(m)) for m in candidates]
        chosen.append(candidates[int(np.argmax(points))])  # the earliest on a tie

    def combine(v):
        return np.max(v[1:-1], axis=0) - np.maximum(v[0], v[-1])

    got = boot.interval([judged(m) for m in chosen], stat, combine, [source(m) for m in chosen])
    gammas = [f"{g:.2f}" for g, _ in plan.rows]
    compared = (
        f"best of gamma {', '.join(gammas[1:-1])} - better of gamma {gammas[0]}, {gammas[-1]} "
        f"({', '.join(chosen)})"
    )
    return got, compared
