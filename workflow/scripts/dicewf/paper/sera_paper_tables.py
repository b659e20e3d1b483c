"""SeRA's Tables 1, 2 and 9 at paper scale (docs/sera.md, "Paper-scale tables"), from the
metrics of its evaluation (``results/eval/{model}/sera/metrics.json``, :mod:`dicewf.sera_eval`),
each reproduced cell beside the number SeRA's paper prints (``values.yaml``, ``sera:``).

Which experiment fills which row is written once, in the block below: per table, per base model
of the paper (TinyLlama, Mistral), the setting it runs in and its rows. A row is there only when
its experiment is in ``eval.sera.experiments`` in that setting (the only runs whose metrics the
workflow makes); the SFT row (``{setting}_sft``) and Table 1's DPO row (``{setting}_base``,
pi_theta^(0): the paper's DPO from the SFT model) come with a base model's first evaluated
experiment. A row is the experiment's last iteration. The paper's judge was Claude 3, ours the
configured one, so the two numbers sit side by side and are not subtracted.

:func:`rows` (from the config; a param of the table's job), :func:`input_paths`,
:func:`read_metrics` and :func:`build` (pure: rows and metrics in, a DataFrame out). No pandas at
import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import config as cfg
from ..io import DatasetError, read_json
from .values import sera_paper_value

if TYPE_CHECKING:
    import pandas as pd

# --- which experiment fills which row (logical experiment names) ------------------------------

SFT, BASE = "{setting}_sft", "{setting}_base"  # the setting's SFT model and pi_theta^(0)


@dataclasses.dataclass(frozen=True)
class Block:
    """One base model of a paper table: the setting it runs in here and (paper row, experiment
    or SFT/BASE) of its rows, in the paper's order."""

    model: str  # the paper's name of the base model (values.yaml)
    setting: str
    rows: tuple[tuple[str, str], ...]


_TINYLLAMA, _MISTRAL = "TinyLlama", "Mistral"
# table -> (the paper's table in values.yaml, its blocks)
TABLES: dict[str, tuple[str, tuple[Block, ...]]] = {
    "sera_paper_table1": (
        "sera_table1",
        (
            Block(
                _TINYLLAMA,
                "tinyllama",
                (
                    ("SFT", SFT),
                    ("DPO", BASE),
                    ("Iterative DPO", "iterative_dpo"),
                    ("SeRA-DPO", "sera_dpo"),
                ),
            ),
            Block(
                _MISTRAL,
                "zephyr",
                (
                    ("SFT", SFT),
                    ("DPO", BASE),
                    ("Iterative DPO", "iterative_dpo_mistral"),
                    ("SeRA-DPO", "sera_dpo_mistral"),
                ),
            ),
        ),
    ),
    "sera_paper_table2": (
        "sera_table2",
        (
            Block(
                _TINYLLAMA,
                "tinyllama",
                (
                    ("SFT", SFT),
                    ("IPO", "plain_ipo"),
                    ("Iterative IPO", "iterative_ipo"),
                    ("SeRA-IPO", "sera_ipo"),
                    ("SLiC", "plain_hinge"),
                    ("Iterative SLiC", "iterative_hinge"),
                    ("SeRA-SLiC", "sera_hinge"),
                ),
            ),
        ),
    ),
    # Appendix C.3: SimPO
    "sera_paper_table9": (
        "sera_table9",
        (
            Block(
                _TINYLLAMA,
                "tinyllama",
                (
                    ("SFT", SFT),
                    ("SimPO", "plain_simpo"),
                    ("Iterative SimPO", "iterative_simpo"),
                    ("SeRA-SimPO", "sera_simpo"),
                ),
            ),
        ),
    ),
}

# (column, benchmark, metric): "single" is the mean 1-10 grade, any other the weighted win rate
# (%) against that opponent (vs_sft: the setting's SFT model; AlpacaEval's G3.5 and G4 answers)
COLUMNS = (
    ("AE Single", "alpaca_eval", "single"),
    ("AE SFT", "alpaca_eval", "sft"),
    ("AE G3.5", "alpaca_eval", "text_davinci_003"),
    ("AE G4", "alpaca_eval", "gpt4_turbo"),
    ("Vicuna Single", "vicuna", "single"),
    ("Vicuna SFT", "vicuna", "sft"),
    ("Evol Single", "evol_instruct", "single"),
    ("Evol SFT", "evol_instruct", "sft"),
    ("UF Single", "ultrafeedback", "single"),
    ("UF SFT", "ultrafeedback", "sft"),
)
PAPER = "(paper)"  # suffix of the column with the paper's number


def metrics_path(model: str) -> str:
    """A model's SeRA metrics on every benchmark (rule sera_eval_summary)."""
    return f"results/eval/{model}/sera/metrics.json"


# --- row plans ----------------------------------------------------------------------------------


def rows(name: str, config: Mapping[str, Any], table: Mapping | None = None) -> list[dict]:
    """The rows of table ``name`` for ``config``: ``{"base": paper base model, "setting",
    "method": paper row, "model": evaluated model}`` in the paper's order; ``table``: the
    owners table (:func:`dicewf.config.owners`), computed when None."""
    evaluated = cfg.sera_evaluated_runs(config, table)
    out = []
    for block in _blocks(name):
        got = []
        for method, exp in block.rows:
            if exp in (SFT, BASE):
                continue
            model = evaluated.get(cfg.full_name(block.setting, exp))
            if model is not None and block.setting in cfg.settings(config):
                got.append((method, model))
        if not got:  # no experiment of this base model is evaluated: no SFT or DPO row either
            continue
        own = {
            SFT: cfg.sera_sft_model(block.setting),
            BASE: cfg.base_model(block.setting),
        }
        for method, exp in block.rows:
            model = own.get(exp) or dict(got).get(method)
            if model is not None:
                out.append(
                    {
                        "base": block.model,
                        "setting": block.setting,
                        "method": method,
                        "model": model,
                    }
                )
    return out


def _blocks(name: str) -> tuple[Block, ...]:
    if name not in TABLES:
        raise KeyError(f"unknown SeRA paper-scale table {name!r}; known: {list(TABLES)}")
    return TABLES[name][1]


def models(plan: Sequence[Mapping[str, str]]) -> list[str]:
    """The models of ``plan``'s rows, each once, in row order."""
    return list(dict.fromkeys(r["model"] for r in plan))


def input_paths(plan: Sequence[Mapping[str, str]]) -> list[str]:
    """The metrics file of each of :func:`models`, in that order."""
    return [metrics_path(m) for m in models(plan)]


def read_metrics(plan: Sequence[Mapping[str, str]], paths: Sequence[Any]) -> dict[str, Any]:
    """{model: its metrics.json}; ``paths``: one file per model of :func:`models`, in order
    (:func:`input_paths`, or where they were put)."""
    wanted = models(plan)
    if len(paths) != len(wanted):
        raise ValueError(f"{len(paths)} metrics files for the {len(wanted)} models {wanted}")
    out = {}
    for model, path in zip(wanted, paths, strict=True):
        got = read_json(path)
        if not isinstance(got, Mapping):
            raise DatasetError(f"{path}: expected a mapping benchmark -> metrics")
        out[model] = got
    return out


# --- the table ----------------------------------------------------------------------------------


def cell(
    metrics: Mapping[str, Any],
    model: str,
    bench: str,
    metric: str,
    benchmarks: Sequence[str],
    sft: bool = False,
) -> float:
    """One reproduced cell: ``model``'s mean grade (``metric`` "single") or weighted win rate
    against ``metric`` on ``bench``; NaN where the benchmark is not evaluated
    (``benchmarks``: eval.sera.benchmarks), where the SFT model (``sft``) would meet itself, or
    where no prompt was judged. A metrics file without a block it should have is named."""
    if bench not in benchmarks:
        return math.nan
    source = metrics_path(model)
    block = metrics.get(model, {}).get(bench)
    if not isinstance(block, Mapping):
        raise DatasetError(f"{source}: no {bench!r} metrics (eval.sera.benchmarks lists it)")
    key, field = ("single", "score") if metric == "single" else (f"vs_{metric}", "win_rate")
    if key not in block:
        if key == "vs_sft" and sft:
            return math.nan  # the SFT model is not compared with itself
        raise DatasetError(f"{source}: {bench}: no {key!r} metrics")
    got = block[key].get(field) if isinstance(block[key], Mapping) else "?"
    if got is None:  # no prompt rated or judged
        return math.nan
    if isinstance(got, bool) or not isinstance(got, int | float):
        raise DatasetError(f"{source}: {bench}.{key}.{field} should be a number, got {got!r}")
    return float(got)


def build(
    name: str,
    plan: Sequence[Mapping[str, str]],
    metrics: Mapping[str, Any],
    benchmarks: Sequence[str],
) -> pd.DataFrame:
    """Table ``name``: one row per row of ``plan`` (:func:`rows`), each column of
    :data:`COLUMNS` followed by the paper's number ``<column> (paper)`` (NaN where it prints
    none). ``metrics``: {model: metrics.json}; ``benchmarks``: the evaluated ones."""
    from .tables import frame

    _blocks(name)
    printed_in = TABLES[name][0]
    shown, fmt = ["Base model", "Method", "Model"], {}
    for col, _, metric in COLUMNS:
        shown += [col, f"{col} {PAPER}"]
        fmt |= dict.fromkeys((col, f"{col} {PAPER}"), ".2f" if metric == "single" else ".1f")
    out = []
    for r in plan:
        row: dict[str, Any] = {"Base model": r["base"], "Method": r["method"], "Model": r["model"]}
        for col, bench, metric in COLUMNS:
            sft = r["model"] == cfg.sera_sft_model(r["setting"])
            row[col] = cell(metrics, r["model"], bench, metric, benchmarks, sft=sft)
            printed = sera_paper_value(printed_in, r["base"], r["method"], col)
            row[f"{col} {PAPER}"] = math.nan if printed is None else printed
        out.append(row)
    return frame(out, shown, floatfmt=fmt)
