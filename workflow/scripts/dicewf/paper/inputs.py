"""What each table and figure reads, and nothing more, and where those files are.

A *need* is a dict: ``models`` (evaluated models: results/eval/{model}/metrics.json),
``alphas``, ``landscapes``, ``length_diffs`` and ``selections`` (SeRA's selection.json; lists of
(full name, iteration)), ``agreement``
(bool) and ``offline`` (D_offline paths). One function per target, each from the row plans of
:mod:`.layout`; :func:`input_paths` turns a need into Snakemake's named inputs and
:func:`read_inputs` reads them back. No pandas at import: the Snakefile calls these at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import config as cfg
from .layout import (
    TABLE1_ROWS,
    TABLE6_ROWS,
    Layout,
    figure1_bars,
    figure_keys,
    has_alpha,
    per_setting_rows,
    replicate_rows,
    sweep_candidates,
    sweep_points,
    sweep_rows,
    table2_models,
    table3_rows,
    table4_rows,
    table7_rows,
)

# the small files the tables and figures read, written once: the rules that write them name
# their outputs with these templates too
METRICS = f"{cfg.RESULTS}/eval/{{model}}/metrics.json"  # eval.smk: toy eval, eval_summary
# under the configuration's own folder (dicewf.config.own_dir)
AGREEMENT = "{root}/agreement/agreement.json"  # agreement.smk: agreement
_ITER = cfg.iter_dir("{exp}", "{iter}")  # dice.smk: search_alpha
ALPHA, LANDSCAPE = f"{_ITER}/alpha.json", f"{_ITER}/landscape.parquet"
LENGTH_DIFFS = f"{_ITER}/length_diffs.parquet"
SELECTION = f"{_ITER}/selection.json"  # sera.smk: sera_mix (SeRA's counts, precision, recall)
ITERATION_FILES = {
    "alphas": ALPHA,
    "landscapes": LANDSCAPE,
    "length_diffs": LENGTH_DIFFS,
    "selections": SELECTION,
}
LISTS = ("models", "alphas", "landscapes", "length_diffs", "selections", "offline")


def metrics_path(model: str) -> str:
    return METRICS.format(model=model)


def agreement_path(root: str = cfg.RESULTS) -> str:
    """Table 5's agreement.json of the configuration whose own folder is ``root``."""
    return AGREEMENT.format(root=root)


def need(**parts: Any) -> dict[str, Any]:
    """A need with ``parts`` given and the rest empty; each list without repeats, in order."""
    out: dict[str, Any] = {key: [] for key in LISTS} | {"agreement": False}
    out["agreement"] = bool(parts.pop("agreement", False))
    for key, items in parts.items():
        out[key] = list(dict.fromkeys(items))
    return out


def union(needs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Everything any of ``needs`` reads (paper_vs_reproduced: the compared tables)."""
    needs = list(needs)
    return need(
        agreement=any(n["agreement"] for n in needs),
        **{key: [item for n in needs for item in n[key]] for key in LISTS},
    )


# --- one function per target --------------------------------------------------------------------


def table1(layout: Layout) -> dict[str, Any]:
    return need(models=[m for _, _, m in per_setting_rows(layout, TABLE1_ROWS)])


def table2(layout: Layout) -> dict[str, Any]:
    return need(models=[model for _, model, _ in table2_models(layout)])


def table3(layout: Layout) -> dict[str, Any]:
    return need(models=[m for _, off, dice in table3_rows(layout) for m in (off, dice) if m])


def table4(layout: Layout) -> dict[str, Any]:
    rows = table4_rows(layout)
    return need(
        models=[f"{full}-iter1" for _, full in rows],
        alphas=[(full, 1) for _, full in rows if has_alpha(layout, full)],
    )


def replicates(layout: Layout) -> dict[str, Any]:
    return need(
        models=[model for _, _, members in replicate_rows(layout) for _, model, _ in members]
    )


def table5(layout: Layout) -> dict[str, Any]:
    return need(agreement=layout.agreement)


def table6(layout: Layout) -> dict[str, Any]:
    return need(models=[m for _, _, m in per_setting_rows(layout, TABLE6_ROWS)])


def table7(layout: Layout) -> dict[str, Any]:
    return need(models=[f"{full}-iter1" for _, full, _ in table7_rows(layout)])


def sweep_table(name: str, layout: Layout) -> dict[str, Any]:
    """Tables 9 and 10: each gamma's candidate iterations (:func:`.layout.sweep_candidates`)."""
    return need(
        models=[
            f"{full}-iter{t}"
            for _, full in sweep_rows(layout, layout.sweep_setting(name))
            for t in sweep_candidates(layout, full)
        ]
    )


def figure1(layout: Layout) -> dict[str, Any]:
    """Each bar's model and its replicates (drawn as dots)."""
    return need(models=[r for _, _, m, _ in figure1_bars(layout) for r in layout.replicas(m)])


def sweep_figure(name: str, layout: Layout) -> dict[str, Any]:
    """Figures 3 and 5: each point's model and its replicates (drawn as dots)."""
    points = sweep_points(layout, layout.sweep_setting(name))
    return need(models=[r for *_, m in points for r in layout.replicas(m)])


def figure2(layout: Layout) -> dict[str, Any]:
    key, _ = figure_keys(layout)
    offline = layout.offline.get(layout.main)
    if key is None or not offline:
        return need()
    return need(alphas=[key], length_diffs=[key], offline=[offline])


def figure4(layout: Layout) -> dict[str, Any]:
    left, judge = figure_keys(layout)
    if left is None:  # the judge panel only beside the implicit-reward one
        return need()
    return need(
        alphas=[left],  # alpha* of the left panel
        landscapes=[left] + ([judge] if judge else []),
    )


# --- files --------------------------------------------------------------------------------------


def input_paths(
    needed: Mapping[str, Any], layout: Layout, root: str = cfg.RESULTS
) -> dict[str, list[str]]:
    """Snakemake's named inputs of a need (in its order); empty groups left out. ``root``: the
    configuration's own folder (:func:`dicewf.config.own_dir`), which holds the agreement run.

    A model or iteration whose run another experiment does (:attr:`.layout.Layout.shared`)
    names that experiment's file: one file may then stand for two entries of the need, and
    :func:`read_inputs` keys it under both names."""
    out = {
        "metrics": [metrics_path(layout.evaluated(m)) for m in needed["models"]],
        **{
            group: [
                template.format(exp=layout.run_of(full, t), iter=t) for full, t in needed[group]
            ]
            for group, template in ITERATION_FILES.items()
        },
        "agreement": [agreement_path(root)] if needed["agreement"] else [],
        "offline": list(needed["offline"]),
    }
    return {key: paths for key, paths in out.items() if paths}


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def read_inputs(name: str, needed: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Read the files of :func:`input_paths` (``inputs``: name -> path(s), e.g. snakemake.input).

    Returns ``metrics`` {model: dict}, ``alphas`` and ``selections`` {(full, t): dict},
    ``landscapes`` and
    ``length_diffs`` {(full, t): DataFrame}, ``agreement`` (dict or None) and ``offline``
    (DataFrame or None), keyed as the need lists them.
    """
    from ..io import read_json, read_parquet

    def paired(keys, input_name):
        paths = _as_list(inputs.get(input_name))
        if len(paths) != len(keys):
            raise ValueError(
                f"{name}: input {input_name!r} has {len(paths)} file(s), "
                f"the layout needs {len(keys)}: {keys}"
            )
        return list(zip(keys, paths, strict=True))

    def frame(path):
        df = read_parquet(path)
        df.attrs["source"] = str(path)
        return df

    agreement = _as_list(inputs.get("agreement")) if needed["agreement"] else []
    offline = _as_list(inputs.get("offline")) if needed["offline"] else []
    return {
        "metrics": {m: read_json(p) for m, p in paired(needed["models"], "metrics")},
        "alphas": {k: read_json(p) for k, p in paired(needed["alphas"], "alphas")},
        "selections": {k: read_json(p) for k, p in paired(needed["selections"], "selections")},
        "landscapes": {k: frame(p) for k, p in paired(needed["landscapes"], "landscapes")},
        "length_diffs": {k: frame(p) for k, p in paired(needed["length_diffs"], "length_diffs")},
        "agreement": read_json(agreement[0]) if agreement else None,
        "offline": frame(offline[0]) if offline else None,
    }
