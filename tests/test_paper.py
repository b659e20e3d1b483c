"""Tests for dicewf.paper: which files each table/figure reads, where each number lands, and the
paper's own numbers."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dicewf import paper, report
from dicewf.io import write_json, write_parquet

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
TOY_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def validated(config: dict) -> dict:
    """A copy of ``config`` after Snakemake's validate against the schema (its defaults filled
    in), as the Snakefile hands it to the library."""
    from snakemake.utils import validate

    config = json.loads(json.dumps(config))
    validate(config, str(SCHEMA))
    return config


def validated_report(block: dict) -> dict:
    """``block`` as the report block of a validated config (the schema's defaults filled in)."""
    return validated(TOY_CONFIG | {"report": block})["report"]


SETTINGS = {"zephyr": {"label": "zephyr-7B-beta"}, "llama3": {"label": "Llama-3-8B-DPO"}}

# the paper's experiment matrix, with the loss / trainer / alpha / gamma / lambda of each
FULL = {
    "offline_dpo": {"reference": "fixed", "mix": {"gamma": 1.0}},
    "offline_dpo_newref": {"mix": {"gamma": 1.0}},
    "offline_ipo": {
        "reference": "fixed",
        "mix": {"gamma": 1.0},
        "iterations": 1,
        "train": {"loss_type": "ipo"},
    },
    "offline_kto": {"reference": "fixed", "mix": {"gamma": 1.0}, "iterations": 1, "trainer": "kto"},
    "offline_hinge": {
        "reference": "fixed",
        "mix": {"gamma": 1.0},
        "iterations": 1,
        "train": {"loss_type": "hinge"},
    },
    "judge": {"score": {"method": "judge"}, "alpha": {"fixed": 0.0}, "iterations": 3},
    "dice": {"iterations": 3},
    "dice_ipo": {"iterations": 1, "train": {"loss_type": "ipo"}},
    "dice_kto": {"iterations": 1, "trainer": "kto"},
    "dice_hinge": {"iterations": 1, "train": {"loss_type": "hinge"}},
    "dice_gamma0_alpha0": {"iterations": 1, "mix": {"gamma": 0.0}, "alpha": {"fixed": 0.0}},
    "dice_gamma0": {"mix": {"gamma": 0.0}},
    "dice_gamma0_alpha2x": {"iterations": 1, "mix": {"gamma": 0.0}, "alpha": {"scale": 2.0}},
    "dice_alpha0": {"iterations": 1, "alpha": {"fixed": 0.0}},
    "dice_alpha2x": {"iterations": 1, "alpha": {"scale": 2.0}},
    "rdpo_lambda005": {
        "iterations": 1,
        "mix": {"gamma": 0.0},
        "alpha": {"fixed": 0.0},
        "length_penalty": 0.05,
    },
    "rdpo_lambda002": {
        "iterations": 1,
        "mix": {"gamma": 0.0},
        "alpha": {"fixed": 0.0},
        "length_penalty": 0.02,
    },
    "dice_gamma025": {"mix": {"gamma": 0.25}},
    "dice_gamma010": {"mix": {"gamma": 0.1}, "settings": ["llama3"]},
    "dice_gamma075": {"mix": {"gamma": 0.75}, "iterations": 1},
    "dice_gamma05": {"mix": {"gamma": 0.5}},  # same gamma as dice, configured later: ignored
}


def make_config(experiments=None, report_block=None, settings=SETTINGS) -> dict:
    """A validated config (the toy world's, with these experiments, settings and report): the
    schema fills in what the defaults block leaves out (trainer, length_penalty, score.method)."""
    base = {"policy": "hub/policy", "reference": "hub/sft", "offline": "data/offline.parquet"}
    config = TOY_CONFIG | {
        "base": TOY_CONFIG["base"] | base,
        "defaults": {
            "iterations": 2,
            "mix": {"gamma": 0.5},
            "alpha": {},  # the schema's fixed (None) and scale (1.0)
            "score": {},
            "train": {"beta": 0.1, "loss_type": "sigmoid"},
        },
        "experiments": FULL if experiments is None else experiments,
        "report": {"label": "toy world", **(report_block or {})},
    }
    if settings:
        config["settings"] = settings
    return validated(config)


def full_layout(**report_block) -> paper.Layout:
    return paper.Layout.from_config(make_config(report_block=report_block))


def reduced_layout() -> paper.Layout:
    """The toy world: one unnamed setting, DICE and Offline DPO only."""
    experiments = {
        "dice": {},
        "offline_dpo": {"reference": "fixed", "mix": {"gamma": 1.0}, "iterations": 1},
    }
    config = make_config(experiments, settings=None)
    del config["agreement"]
    return paper.Layout.from_config(config)


def fake_metrics(models, arena=True, gold=False) -> dict[str, dict]:
    """Distinct numbers per model, so a number's place tells which model it came from."""
    out = {}
    for i, model in enumerate(models):
        m = {
            "lc_win_rate": 10.0 + i,
            "win_rate": 30.0 + i,
            "standard_error": 1.0,
            "mean_len_model": 1000.0 + 10 * i,
            "n": 805,
        }
        if arena:
            m.update(
                arena_score=20.0 + i,
                arena_ci_low=20.0 + i - 1.4,
                arena_ci_high=20.0 + i + 1.7,
                arena_lc_score=15.0 + i,
                arena_lc_ci_low=15.0 + i - 1.2,
                arena_lc_ci_high=15.0 + i + 1.3,
            )
        if gold:
            m["gold_quality"] = 0.5 + i / 100
        out[model] = m
    return out


def fake_alphas(keys) -> dict:
    """alpha.json as search_alpha writes it: alpha on the log-ratio scale, alpha_reward with
    beta = 0.01 beside it."""
    out = {}
    for full, t in keys:
        alpha = 0.023 * (2 if "2x" in full else 1) * ("alpha0" not in full)
        out[(full, t)] = {
            "alpha": alpha,
            "alpha_searched": None if "alpha0" in full else 0.023,
            "alpha_reward": 0.01 * alpha,
            "beta": 0.01,
            "score": "logratio",
            "length_unit": "chars",
        }
    return out


AGREEMENT = {
    "n_tuples": 500,
    "judge": "gpt-4o",
    "setting": "zephyr",
    "rates": {"IntlRM": 0.61, "ERM-555k": 0.66, "DPO Implicit Reward": 0.7},
}


def inputs_for(name, layout, **kw):
    """Exactly what needs() lists, nothing more: a builder reading anything else fails."""
    need = paper.needs(name, layout)
    return (
        fake_metrics(need["models"], **kw),
        fake_alphas(need["alphas"]),
        AGREEMENT if need["agreement"] else None,
    )


def build(name, layout, **kw):
    metrics, alphas, agreement = inputs_for(name, layout, **kw)
    return paper.build_table(name, layout, metrics, alphas, agreement), metrics


# --- layout ------------------------------------------------------------------------------------


def test_layout_resolves_each_run_and_round_trips_through_json():
    layout = full_layout()
    assert layout.settings == ["zephyr", "llama3"] and layout.main == "zephyr"
    assert layout.labels == {"zephyr": "zephyr-7B-beta", "llama3": "Llama-3-8B-DPO"}
    run = layout.runs["zephyr_rdpo_lambda002"]
    assert (run.setting, run.exp, run.gamma, run.alpha_fixed, run.length_penalty) == (
        "zephyr",
        "rdpo_lambda002",
        0.0,
        0.0,
        0.02,
    )
    assert layout.runs["llama3_offline_kto"].trainer == "kto"
    assert layout.runs["zephyr_dice_ipo"].loss_type == "ipo"
    assert layout.runs["zephyr_judge"].score_method == "judge"
    assert layout.runs["zephyr_dice_alpha2x"].alpha_scale == 2.0
    assert "zephyr_dice_gamma010" not in layout.runs and "llama3_dice_gamma010" in layout.runs
    assert layout.offline == {"zephyr": "data/offline.parquet", "llama3": "data/offline.parquet"}
    back = paper.Layout.from_dict(json.loads(json.dumps(layout.to_dict())))
    assert back == layout


def test_layout_report_keys():
    layout = full_layout(
        setting="llama3",
        sweep_iteration=1,
        figure1={"iteration": 1},
        experiment="dice_gamma0",
        iteration=2,
    )
    assert (
        layout.main,
        layout.sweep_iteration,
        layout.figure1_iteration,
        layout.figure_experiment,
        layout.figure_iteration,
    ) == ("llama3", 1, 1, "dice_gamma0", 2)
    with pytest.raises(KeyError, match="report.setting.*'mistral'"):
        full_layout(setting="mistral")
    with pytest.raises(ValueError, match="sweep_iteration"):
        paper.Layout.from_config(make_config() | {"report": {"sweep_iteration": 0}})


def test_report_defaults_come_from_the_schema():
    # an empty report block: every default is the schema's (Snakemake's validate fills them in)
    rep = validated_report({})
    assert rep == {
        "label": "toy world",
        "sweep_iteration": 2,
        "figure1": {"iteration": 2},
        "iteration": 1,
        "figure2": {"bins": 30},
    }
    layout = paper.Layout.from_config(make_config())
    assert (
        layout.main,
        layout.sweep_iteration,
        layout.figure1_iteration,
        layout.figure_experiment,
        layout.figure_iteration,
    ) == ("zephyr", 2, 2, "dice", 1)
    # a figure-only setting is not part of the layout (the table jobs' param)
    assert "bins" not in json.dumps(layout.to_dict())


def test_one_registry_entry_is_a_whole_table(monkeypatch, tmp_path):
    # a new table is one Target: its inputs, its paths and its build follow from that entry alone
    def build(layout, metrics, alphas, agreement):
        rows = [{"Model": m, "LC": metrics[m]["lc_win_rate"]} for m in sorted(metrics)]
        return pd.DataFrame(rows, columns=["Model", "LC"]), []

    target = paper.Target(
        "table",
        lambda layout: paper.inputs.need(
            models=[layout.model(s, "dice", 1) for s in layout.settings]
        ),
        build,
    )
    monkeypatch.setitem(paper.REGISTRY, "table11", target)
    layout = full_layout()
    assert paper.needs("table11", layout)["models"] == ["zephyr_dice-iter1", "llama3_dice-iter1"]
    inputs = write_inputs("table11", layout, tmp_path)
    assert inputs == {
        "metrics": [
            str(tmp_path / paper.metrics_path(m))
            for m in ("zephyr_dice-iter1", "llama3_dice-iter1")
        ]
    }
    data = paper.read_inputs("table11", layout, inputs)
    df = paper.build_table("table11", layout, data["metrics"])
    assert df["Model"].tolist() == ["llama3_dice-iter1", "zephyr_dice-iter1"]
    with pytest.raises(KeyError, match="unknown table or figure 'table11'"):
        paper.draw_figure("table11", layout, data, tmp_path / "x.png")


def test_the_registry_lists_every_target_once_and_the_paper_numbers_are_data():
    assert paper.TARGETS == (*paper.TABLES, "paper_vs_reproduced", *paper.FIGURES)
    assert paper.TABLES == (
        "table1",
        "table2",
        "table3",
        "table4",
        "table5",
        "table6",
        "table7",
        "table9",
        "table10",
        "replicates",  # experiments run more than once, side by side (issue 13)
        *paper.SERA_TABLES,  # SeRA's tables on the same world (tests/test_paper_sera.py)
    )
    assert paper.FIGURES == ("figure1", "figure2", "figure3", "figure4", "figure5")
    printed = yaml.safe_load(
        (REPO / "workflow" / "scripts" / "dicewf" / "paper" / "values.yaml").read_text()
    )
    assert set(printed["tables"]) <= set(paper.TABLES)
    assert printed["tables"]["table4"]["zephyr"]["gamma=0, 2 alpha*"]["Avg. Len."] == 876
    assert printed["leaderboard"][5] == ["Gemini Pro", 24.38, 18.18]


def test_importing_the_paper_layout_does_not_import_pandas():
    # the Snakefile builds the layout and every input list at start-up, without pandas
    code = (
        "import sys, json; from dicewf import paper; "
        "layout = paper.Layout.from_dict(json.loads(sys.argv[1])); "
        "[paper.input_paths(name, layout) for name in paper.TARGETS]; "
        "assert 'pandas' not in sys.modules, 'pandas imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(full_layout().to_dict())],
        env={"PYTHONPATH": str(REPO / "workflow" / "scripts")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_toy_world_layout_has_one_unnamed_setting_compared_with_zephyr():
    layout = reduced_layout()
    assert layout.settings == [""] and layout.label("") == "toy world"
    assert layout.paper_settings == {"": "zephyr"} and layout.agreement is False


# --- needs -------------------------------------------------------------------------------------


def test_needs_table1_lists_every_configured_cell_of_both_settings():
    need = paper.needs("table1", full_layout())
    expected = []
    for exp, ts in (
        ("offline_dpo", (1, 2)),
        ("offline_dpo_newref", (1, 2)),
        ("judge", (1, 2)),
        ("dice", (1, 2)),
    ):
        expected += [f"{s}_{exp}-iter{t}" for t in ts for s in ("zephyr", "llama3")]
    assert sorted(need["models"]) == sorted(["zephyr_base", "llama3_base", *expected])
    assert need["alphas"] == need["landscapes"] == need["length_diffs"] == need["offline"] == []
    assert need["agreement"] is False


@pytest.mark.parametrize(
    "name, models, alphas",
    [
        ("table2", ["zephyr_dice-iter2", "llama3_dice-iter2"], []),
        (
            "table3",
            [
                "zephyr_offline_dpo-iter1",
                "zephyr_dice-iter1",
                "zephyr_offline_ipo-iter1",
                "zephyr_dice_ipo-iter1",
                "zephyr_offline_kto-iter1",
                "zephyr_dice_kto-iter1",
                "zephyr_offline_hinge-iter1",
                "zephyr_dice_hinge-iter1",
            ],
            [],
        ),
        (
            "table4",
            [
                f"zephyr_{e}-iter1"
                for e in (
                    "dice_gamma0_alpha0",
                    "dice_gamma0",
                    "dice_gamma0_alpha2x",
                    "dice_alpha0",
                    "dice",
                    "dice_alpha2x",
                )
            ],
            [
                (f"zephyr_{e}", 1)
                for e in (
                    "dice_gamma0_alpha0",
                    "dice_gamma0",
                    "dice_gamma0_alpha2x",
                    "dice_alpha0",
                    "dice",
                    "dice_alpha2x",
                )
            ],
        ),
        ("table5", [], []),
        (
            "table7",
            [
                f"zephyr_{e}-iter1"
                for e in ("dice_gamma0_alpha0", "rdpo_lambda002", "rdpo_lambda005", "dice_gamma0")
            ],
            [],
        ),
        (
            "table9",
            [
                f"zephyr_{e}-iter{t}"
                for e, t in (
                    ("dice_gamma0", 2),
                    ("dice_gamma025", 2),
                    ("dice", 2),
                    ("dice_gamma075", 1),
                    ("offline_dpo_newref", 2),
                )
            ],
            [],
        ),
        (
            "table10",
            [
                f"llama3_{e}-iter{t}"
                for e, t in (
                    ("dice_gamma0", 2),
                    ("dice_gamma010", 2),
                    ("dice_gamma025", 2),
                    ("dice", 2),
                    ("dice_gamma075", 1),
                    ("offline_dpo_newref", 2),
                )
            ],
            [],
        ),
    ],
)
def test_needs_of_each_table_on_the_full_matrix(name, models, alphas):
    need = paper.needs(name, full_layout())
    assert sorted(need["models"]) == sorted(models)
    assert need["alphas"] == alphas
    assert need["agreement"] is (name == "table5")


def test_needs_table6_and_figures_on_the_full_matrix():
    layout = full_layout()
    assert paper.needs("table6", layout)["models"] == [
        "zephyr_base",
        "llama3_base",
        *[
            f"{s}_{e}-iter{t}"
            for e in ("judge", "dice")
            for t in (1, 2, 3)
            for s in ("zephyr", "llama3")
        ],
    ]
    assert paper.needs("figure1", layout)["models"] == [
        f"{s}_{m}"
        for s in ("zephyr", "llama3")
        for m in ("base", "offline_dpo-iter2", "judge-iter2", "dice-iter2")
    ]
    fig4 = paper.needs("figure4", layout)
    assert fig4["landscapes"] == [("zephyr_dice", 1), ("zephyr_judge", 1)]
    assert fig4["alphas"] == [("zephyr_dice", 1)]
    assert fig4["models"] == [] and fig4["length_diffs"] == []
    fig2 = paper.needs("figure2", layout)
    assert fig2["length_diffs"] == fig2["alphas"] == [("zephyr_dice", 1)]
    assert fig2["offline"] == ["data/offline.parquet"] and fig2["landscapes"] == []
    fig5 = paper.needs("figure5", layout)["models"]
    assert "llama3_dice_gamma010-iter1" in fig5 and "llama3_dice_gamma075-iter2" not in fig5
    assert all(m.startswith("llama3_") for m in fig5)


def test_needs_on_a_reduced_config_lists_only_what_is_configured():
    layout = reduced_layout()
    assert paper.needs("table1", layout)["models"] == [
        "base",
        "offline_dpo-iter1",
        "dice-iter1",
        "dice-iter2",
    ]
    assert paper.needs("table3", layout)["models"] == ["offline_dpo-iter1", "dice-iter1"]
    assert paper.needs("table4", layout) == {
        "models": ["dice-iter1"],
        "alphas": [("dice", 1)],
        "landscapes": [],
        "length_diffs": [],
        "selections": [],
        "agreement": False,
        "offline": [],
    }
    assert paper.needs("table5", layout)["agreement"] is False
    assert paper.needs("table7", layout)["models"] == []
    assert paper.needs("table9", layout)["models"] == ["dice-iter2"]
    assert paper.needs("figure4", layout)["landscapes"] == [("dice", 1)]  # no judge panel


def test_needs_paper_vs_reproduced_is_the_union_of_the_tables():
    layout = full_layout()
    union = paper.needs("paper_vs_reproduced", layout)
    for name in paper.TABLES:
        need = paper.needs(name, layout)
        assert set(need["models"]) <= set(union["models"])
        assert set(need["alphas"]) <= set(union["alphas"])
    assert union["agreement"] is True and len(set(union["models"])) == len(union["models"])


def test_input_paths_name_the_files_of_needs():
    paths = paper.input_paths("table4", full_layout())
    assert paths["metrics"][0] == "results/eval/zephyr_dice_gamma0_alpha0-iter1/metrics.json"
    assert paths["alphas"][0] == "results/zephyr_dice_gamma0_alpha0/iter1/alpha.json"
    assert set(paths) == {"metrics", "alphas"}
    assert paper.input_paths("table5", full_layout()) == {
        "agreement": ["results/agreement/agreement.json"]
    }
    # a named configuration's agreement run is in its own folder (dicewf.config.own_dir)
    assert paper.input_paths("table5", full_layout(), "results/paper") == {
        "agreement": ["results/paper/agreement/agreement.json"]
    }
    fig4 = paper.input_paths("figure4", full_layout())
    assert fig4["landscapes"] == [
        "results/zephyr_dice/iter1/landscape.parquet",
        "results/zephyr_judge/iter1/landscape.parquet",
    ]


def test_the_files_the_report_reads_are_named_once():
    # the rules that write them use the library's templates (no second spelling to drift)
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for template in (
        paper.METRICS,
        paper.AGREEMENT,
        paper.ALPHA,
        paper.LANDSCAPE,
        paper.LENGTH_DIFFS,
        paper.SELECTION,
    ):
        assert f'"{template}"' not in rules
    assert paper.ALPHA.format(exp="zephyr_dice", iter=1) == "results/zephyr_dice/iter1/alpha.json"


def test_needs_names_an_unknown_target():
    with pytest.raises(KeyError, match="table8"):
        paper.needs("table8", full_layout())


# --- build_table -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [full_layout(), reduced_layout()], ids=["full", "reduced"])
@pytest.mark.parametrize("name", paper.TABLES)
def test_every_table_builds_from_exactly_what_needs_lists(name, layout):
    df, _ = build(name, layout)
    assert len(df.columns) >= 1
    assert set(df.attrs["floatfmt"]) <= set(df.columns)


def test_table1_places_each_model_in_its_row_and_setting_column():
    df, metrics = build("table1", full_layout())
    # Arena-Hard's interval (arena_ci_low/high) as two more columns; the fake metrics have
    # no interval of LC or WR, so theirs are left out
    assert list(df.columns) == ["Method"] + [
        f"{label} {c}"
        for label in ("zephyr-7B-beta", "Llama-3-8B-DPO")
        for c in ("LC", "WR", "AH WR", "AH WR low", "AH WR high")
    ]
    assert df.attrs["intervals"]["zephyr-7B-beta AH WR"] == (
        "zephyr-7B-beta AH WR low",
        "zephyr-7B-beta AH WR high",
    )
    assert df["Method"].tolist() == [r[0] for r in paper.TABLE1_ROWS]
    row = df.set_index("Method").loc["DICE Iter 2"]
    assert row["zephyr-7B-beta LC"] == metrics["zephyr_dice-iter2"]["lc_win_rate"]
    assert row["Llama-3-8B-DPO WR"] == metrics["llama3_dice-iter2"]["win_rate"]
    assert row["Llama-3-8B-DPO AH WR"] == metrics["llama3_dice-iter2"]["arena_score"]
    assert (
        df.set_index("Method").loc["Base", "zephyr-7B-beta LC"]
        == metrics["zephyr_base"]["lc_win_rate"]
    )


def test_table1_drops_unconfigured_rows_and_absent_metrics_in_the_toy_world():
    df, metrics = build("table1", reduced_layout(), arena=False, gold=True)
    assert df["Method"].tolist() == ["Base", "Offline DPO Iter 1", "DICE Iter 1", "DICE Iter 2"]
    assert list(df.columns) == ["Method", "LC", "WR", "Len", "Gold"]  # no Arena-Hard numbers
    assert df.iloc[3]["Gold"] == metrics["dice-iter2"]["gold_quality"]
    assert df.iloc[1]["Len"] == metrics["offline_dpo-iter1"]["mean_len_model"]


def test_a_table_with_no_configured_rows_keeps_its_header(tmp_path):
    df, _ = build("table7", reduced_layout())
    assert len(df) == 0 and list(df.columns) == ["Method", "lambda", "LC", "WR", "Len"]
    report.write_table(
        df, tmp_path / "t.csv", tmp_path / "t.md", caption="Table 7.", tex=tmp_path / "t.tex"
    )
    assert (tmp_path / "t.md").read_text().splitlines()[2:] == [
        "| Method | lambda | LC | WR | Len |",
        "|:---|:---|:---|:---|:---|",
    ]
    assert list(pd.read_csv(tmp_path / "t.csv").columns) == list(df.columns)


def test_table1_with_one_setting_only_named_uses_that_label():
    layout = paper.Layout.from_config(
        make_config({"dice": {}}, settings={"llama3": SETTINGS["llama3"]})
    )
    df, _ = build("table1", layout)
    assert df["Method"].tolist() == ["Base", "DICE Iter 1", "DICE Iter 2"]
    assert list(df.columns) == [
        "Method",
        "Llama-3-8B-DPO LC",
        "Llama-3-8B-DPO WR",
        "Llama-3-8B-DPO AH WR",
        "Llama-3-8B-DPO AH WR low",
        "Llama-3-8B-DPO AH WR high",
    ]


def test_table2_adds_our_dice_rows_to_the_leaderboard_sorted_by_lc():
    df, metrics = build("table2", full_layout())
    assert len(df) == len(paper.LEADERBOARD) + 2
    ours = df[df["Source"] == "reproduced"]
    assert ours["Model"].tolist() == [
        "DICE-Llama-3-8B-DPO Iter 2 (ours)",
        "DICE-zephyr-7B-beta Iter 2 (ours)",
    ]
    assert ours["LC"].tolist() == [
        metrics["llama3_dice-iter2"]["lc_win_rate"],
        metrics["zephyr_dice-iter2"]["lc_win_rate"],
    ]
    assert df["LC"].is_monotonic_decreasing
    assert df.iloc[0]["Model"] == "GPT-4 0613"


def test_table3_rows_and_columns():
    df, metrics = build("table3", full_layout())
    assert df["Method"].tolist() == ["DPO", "IPO", "KTO", "Hinge"]
    kto = df.set_index("Method").loc["KTO"]
    assert kto["Offline LC"] == metrics["zephyr_offline_kto-iter1"]["lc_win_rate"]
    assert kto["DICE WR"] == metrics["zephyr_dice_kto-iter1"]["win_rate"]


def test_table3_follows_the_main_setting():
    df, metrics = build("table3", full_layout(setting="llama3"))
    assert df.iloc[0]["DICE LC"] == metrics["llama3_dice-iter1"]["lc_win_rate"]


def test_table4_labels_alpha_by_how_it_was_chosen():
    df, metrics = build("table4", full_layout())
    assert df["Experiment"].tolist() == [
        "dice_gamma0_alpha0",
        "dice_gamma0",
        "dice_gamma0_alpha2x",
        "dice_alpha0",
        "dice",
        "dice_alpha2x",
    ]
    assert df["gamma"].tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 0.5]
    assert df["alpha"].tolist() == [
        "0.000",
        "0.023 (alpha*)",
        "0.046 (2 alpha*)",
        "0.000",
        "0.023 (alpha*)",
        "0.046 (2 alpha*)",
    ]
    row = df.set_index("Experiment").loc["dice_gamma0_alpha2x"]
    assert row["Avg. Len."] == metrics["zephyr_dice_gamma0_alpha2x-iter1"]["mean_len_model"]
    assert row["LC"] == metrics["zephyr_dice_gamma0_alpha2x-iter1"]["lc_win_rate"]


def test_table5_has_one_column_per_reward_model():
    df, _ = build("table5", full_layout())
    assert list(df.columns) == [
        "Method",
        "IntlRM",
        "ERM-555k",
        "DPO Implicit Reward",
        "Tuples",
        "Judge",
    ]
    assert df.iloc[0].tolist() == ["Alignment Rate", 0.61, 0.66, 0.7, 500, "gpt-4o"]
    assert "| 0.610 | 0.660 | 0.700 | 500 | gpt-4o |" in report.to_markdown(df)


def test_table7_takes_lambda_from_the_length_penalty_of_each_rdpo_run():
    df, metrics = build("table7", full_layout())
    assert df["Method"].tolist() == [
        "No mitigation",
        "Regularized DPO (lambda=0.02)",
        "Regularized DPO (lambda=0.05)",
        "Ours",
    ]
    assert df["lambda"].tolist()[1:3] == [0.02, 0.05]
    assert math.isnan(df["lambda"][0]) and math.isnan(df["lambda"][3])
    assert df.iloc[2]["Len"] == metrics["zephyr_rdpo_lambda005-iter1"]["mean_len_model"]
    assert df.iloc[3]["LC"] == metrics["zephyr_dice_gamma0-iter1"]["lc_win_rate"]
    lines = report.to_markdown(df).splitlines()
    assert lines[2].startswith("| No mitigation | - |")


def test_table7_shows_any_rdpo_run_with_its_lambda():
    experiments = {
        "dice_gamma0": {"mix": {"gamma": 0.0}},
        "rdpo_strong": {"mix": {"gamma": 0.0}, "length_penalty": 0.1},
    }
    df, _ = build("table7", paper.Layout.from_config(make_config(experiments)))
    assert df["Method"].tolist() == ["Regularized DPO (lambda=0.1)", "Ours"]


def test_sweep_tables_order_by_gamma_and_print_the_lc_arena_ci_as_offsets():
    df, metrics = build("table9", full_layout())
    assert df["gamma"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert df["Experiment"].tolist() == [
        "dice_gamma0",
        "dice_gamma025",
        "dice",
        "dice_gamma075",
        "offline_dpo_newref",
    ]
    assert df["Iter AE2"].tolist() == [2, 2, 2, 1, 2]  # dice_gamma075 has one iteration only
    assert df["Iter AH"].tolist() == df["Iter AE2"].tolist()
    m = metrics["zephyr_dice-iter2"]
    assert df.iloc[2]["LC AE2"] == m["lc_win_rate"]
    # the length-controlled Arena-Hard score (footnote 11), not the plain one
    assert df.iloc[2]["LC AH: Score (95% CI)"] == f"{m['arena_lc_score']:.1f} (-1.2, 1.3)"
    assert re.fullmatch(r"\d+\.\d \(-1\.2, 1\.3\)", df.iloc[0]["LC AH: Score (95% CI)"])
    table10, _ = build("table10", full_layout())
    assert table10["gamma"].tolist() == [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]


def test_sweep_best_iteration_is_chosen_per_benchmark():
    layout = full_layout(sweep_iteration="best")
    need = paper.needs("table9", layout)
    assert {"zephyr_dice-iter1", "zephyr_dice-iter2", "zephyr_dice-iter3"} <= set(need["models"])
    metrics = fake_metrics(need["models"])
    metrics["zephyr_dice-iter1"]["lc_win_rate"] = 99.0  # AE2's best: iteration 1
    metrics["zephyr_dice-iter3"]["arena_lc_score"] = 98.0  # Arena-Hard's best: iteration 3
    metrics["zephyr_dice-iter2"]["arena_score"] = 99.0  # the plain score does not count
    for m in ("zephyr_dice_gamma0-iter1", "zephyr_dice_gamma0-iter2"):  # a tie: the earlier
        metrics[m].update(lc_win_rate=50.0, arena_lc_score=50.0)
    df = paper.build_table("table9", layout, metrics).set_index("Experiment")
    assert (df.loc["dice", "Iter AE2"], df.loc["dice", "LC AE2"]) == (1, 99.0)
    assert df.loc["dice", "Iter AH"] == 3
    assert df.loc["dice", "LC AH: Score (95% CI)"].startswith("98.0 ")
    assert (df.loc["dice_gamma0", "Iter AE2"], df.loc["dice_gamma0", "Iter AH"]) == (1, 1)
    assert paper.sweep_iterations(layout, metrics, "zephyr_dice") == (1, 3)
    fixed = full_layout(sweep_iteration=2)
    assert paper.sweep_iterations(fixed, metrics, "zephyr_dice") == (2, 2)


def test_sweep_table_without_lc_arena_drops_its_columns():
    layout = full_layout()
    metrics = fake_metrics(paper.needs("table9", layout)["models"], arena=False)
    df = paper.build_table("table9", layout, metrics)
    assert list(df.columns) == ["gamma", "Experiment", "Iter AE2", "LC AE2"]


def test_arena_text():
    assert paper.arena_text(39.1, 37.1, 41.5) == "39.1 (-2.0, 2.4)"
    assert paper.arena_text(17.6, math.nan, math.nan) == "17.6"
    assert paper.arena_text(math.nan, 1.0, 2.0) == "-"


def test_build_table_names_a_missing_model():
    with pytest.raises(KeyError, match="zephyr_offline_dpo-iter1.*needs"):
        paper.build_table("table3", full_layout(), {})


# --- the paper's numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "table, setting, row, column, value",
    [
        ("table1", "zephyr", "DICE Iter 2", "LC", 20.71),
        ("table1", "zephyr", "DICE Iter 2", "AH WR", 16.7),
        ("table1", "llama3", "Base", "LC", 18.20),
        ("table1", "llama3", "Offline DPO (w/ new ref) Iter 2", "WR", 20.18),
        ("table1", "zephyr", "Offline DPO Iter 2", "AH WR", 2.4),
        ("table2", "llama3", "DICE Iter 2", "WR", 30.99),
        ("table3", "zephyr", "Hinge", "DICE WR", 15.57),
        ("table3", "zephyr", "IPO", "Offline LC", 14.83),
        ("table4", "zephyr", "gamma=0, 2 alpha*", "Avg. Len.", 876),
        ("table4", "zephyr", "gamma=0.5, alpha*", "alpha", 0.023),
        ("table5", "zephyr", "Alignment Rate", "ERM-555k", 0.656),
        ("table6", "llama3", "LLM-as-a-Judge Iter 3", "LC", 16.86),
        ("table6", "zephyr", "DICE Iter 3", "WR", 15.30),
        ("table7", "zephyr", "Regularized DPO (lambda=0.05)", "Len", 2030),
        ("table9", "zephyr", "gamma=0.50", "LC AH score", 18.4),
        ("table9", "zephyr", "gamma=0.00", "LC AH CI high", 1.7),
        ("table10", "llama3", "gamma=0.10", "LC AH score", 39.1),
        ("table10", "llama3", "gamma=0.10", "LC AH CI low", -2.0),
        ("table10", "llama3", "gamma=0.10", "LC AH CI high", 2.4),
        ("table10", "llama3", "gamma=1.00", "LC AE2", 22.50),
    ],
)
def test_paper_numbers_as_printed(table, setting, row, column, value):
    assert paper.paper_value(table, setting, row, column) == value


def test_paper_cell_counts_match_the_printed_tables():
    counts = pd.Series([(c.table, c.setting) for c in paper.PAPER]).value_counts()
    assert counts[("table1", "zephyr")] == counts[("table1", "llama3")] == 9 * 3
    assert counts[("table3", "zephyr")] == 4 * 4
    assert counts[("table4", "zephyr")] == 6 * 5
    assert counts[("table6", "llama3")] == 7 * 2
    assert counts[("table9", "zephyr")] == 5 * 4 and counts[("table10", "llama3")] == 6 * 4
    assert len(paper.LEADERBOARD) == 15
    assert ("Gemini Pro", 24.38, 18.18) in paper.LEADERBOARD


def test_every_paper_cell_is_compared_on_the_full_matrix():
    # each printed number lands on a (table, setting, row, column) that the builders produce
    layout = full_layout()
    metrics, alphas, agreement = inputs_for("paper_vs_reproduced", layout)
    compared = paper.paper_vs_reproduced(layout, metrics, alphas, agreement)
    got = set(zip(compared["table"], compared["setting"], compared["row"], compared["column"]))
    assert [c for c in paper.PAPER if (c.table, c.setting, c.row, c.column) not in got] == []
    assert len(compared) == len(paper.PAPER)


# --- paper_vs_reproduced -----------------------------------------------------------------------


def test_paper_vs_reproduced_sets_our_cells_beside_the_papers():
    layout = full_layout()
    metrics, alphas, agreement = inputs_for("paper_vs_reproduced", layout)
    df = paper.paper_vs_reproduced(layout, metrics, alphas, agreement)
    assert list(df.columns) == [
        "table",
        "setting",
        "row",
        "column",
        "paper",
        "reproduced",
        "difference",
    ]
    cell = df[
        (df["table"] == "table1")
        & (df["setting"] == "zephyr")
        & (df["row"] == "DICE Iter 2")
        & (df["column"] == "LC")
    ].iloc[0]
    reproduced = metrics["zephyr_dice-iter2"]["lc_win_rate"]
    assert (cell["paper"], cell["reproduced"]) == (20.71, reproduced)
    assert cell["difference"] == pytest.approx(reproduced - 20.71)
    ci = df[
        (df["table"] == "table10") & (df["row"] == "gamma=0.10") & (df["column"] == "LC AH CI low")
    ].iloc[0]
    assert (ci["setting"], ci["paper"], ci["reproduced"]) == ("llama3", -2.0, -1.2)
    rate = df[(df["table"] == "table5") & (df["column"] == "DPO Implicit Reward")].iloc[0]
    assert (rate["paper"], rate["reproduced"]) == (0.698, 0.7)
    # Table 4's alpha is alpha.json's log-ratio alpha, the paper's units (not alpha_reward)
    alpha = df[
        (df["table"] == "table4") & (df["row"] == "gamma=0.5, 2 alpha*") & (df["column"] == "alpha")
    ].iloc[0]
    assert (alpha["paper"], alpha["reproduced"]) == (0.046, pytest.approx(0.046))


def test_figure4_axis_names_the_scale_of_alpha():
    alpha = fake_alphas([("zephyr_dice", 1)])[("zephyr_dice", 1)]
    assert paper.alpha_axis(alpha) == "alpha (log-ratio per character)"
    assert paper.alpha_axis(alpha, rating=True) == "alpha (rating per character)"
    assert (
        paper.alpha_axis({"alpha": 0.005, "length_unit": "tokens"}) == "alpha (reward per token)"
    )  # an alpha.json from before log-ratio units


def test_paper_vs_reproduced_in_the_toy_world_compares_with_zephyr_and_says_so():
    layout = reduced_layout()
    metrics, alphas, agreement = inputs_for("paper_vs_reproduced", layout, arena=False)
    df = paper.paper_vs_reproduced(layout, metrics, alphas, agreement)
    assert set(df["setting"]) == {"toy world vs zephyr"}
    assert "table10" not in set(df["table"])  # one setting: Table 10 would repeat Table 9
    row = df[(df["table"] == "table9") & (df["column"] == "LC AE2")].iloc[0]
    assert (row["row"], row["paper"]) == ("gamma=0.50", 20.71)
    assert not df["column"].isin(["AH WR", "LC AH score"]).any()  # nothing reproduced there


# --- files in, tables and figures out ----------------------------------------------------------


def write_inputs(name, layout, root, metrics=None):
    """Write what input_paths() names, under ``root``; returns the named inputs."""
    paths = paper.input_paths(name, layout)
    need = paper.needs(name, layout)
    metrics = metrics or fake_metrics(need["models"])
    for model, path in zip(need["models"], paths.get("metrics", [])):
        write_json(metrics[model], root / path)
    for key, path in zip(need["alphas"], paths.get("alphas", [])):
        write_json(fake_alphas([key])[key], root / path)
    alphas = np.linspace(0.0, 0.1, 21)
    for (full, _), path in zip(need["landscapes"], paths.get("landscapes", [])):
        shape = np.abs(300 - 13000 * alphas) if "judge" not in full else 5 + 800 * alphas
        write_parquet(pd.DataFrame({"alpha": alphas, "objective": shape}), root / path)
    rng = np.random.default_rng(0)
    for path in paths.get("length_diffs", []):
        write_parquet(
            pd.DataFrame(
                {
                    "dataset": ["D(0)"] * 30 + ["D(alpha*)"] * 30,
                    "len_diff": rng.integers(-50, 200, 60),
                }
            ),
            root / path,
        )
    for path in paths.get("offline", []):
        write_parquet(
            pd.DataFrame({"chosen": ["a b c", "long chosen"], "rejected": ["a", "short"]}),
            root / path,
        )
    for path in paths.get("agreement", []):
        write_json(AGREEMENT, root / path)
    return {key: [str(root / p) for p in value] for key, value in paths.items()}


def test_read_inputs_reads_back_what_input_paths_names(tmp_path):
    layout = full_layout()
    inputs = write_inputs("table4", layout, tmp_path)
    data = paper.read_inputs("table4", layout, inputs)
    assert list(data["metrics"]) == paper.needs("table4", layout)["models"]
    assert data["alphas"][("zephyr_dice_alpha2x", 1)]["alpha"] == pytest.approx(0.046)
    df = paper.build_table("table4", layout, data["metrics"], data["alphas"], data["agreement"])
    assert df["alpha"][5] == "0.046 (2 alpha*)"
    inputs["metrics"] = inputs["metrics"][:-1]
    with pytest.raises(ValueError, match="'metrics' has 5 file"):
        paper.read_inputs("table4", layout, inputs)


def assert_png_and_pdf(png, pdf):
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 1000
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000


@pytest.mark.parametrize("name", paper.FIGURES)
def test_each_figure_is_drawn_from_its_inputs(name, tmp_path):
    layout = full_layout()
    inputs = write_inputs(name, layout, tmp_path / "in")
    png, pdf = tmp_path / "out" / f"{name}.png", tmp_path / "out" / f"{name}.pdf"
    paper.draw_figure(name, layout, paper.read_inputs(name, layout, inputs), png, pdf, bins=30)
    assert_png_and_pdf(png, pdf)


def test_figure_data():
    layout = full_layout()
    metrics = fake_metrics(paper.needs("figure1", layout)["models"])
    bars = paper.figure1_data(layout, metrics)
    assert bars["method"].tolist()[:4] == ["Base", "Offline DPO", "LLM-as-a-Judge", "DICE"]
    assert bars["setting"].tolist() == ["zephyr-7B-beta"] * 4 + ["Llama-3-8B-DPO"] * 4
    assert bars["lc"][7] == metrics["llama3_dice-iter2"]["lc_win_rate"]
    metrics = fake_metrics(paper.needs("figure3", layout)["models"])
    sweep = paper.sweep_data(layout, metrics, "figure3")
    assert sorted(set(sweep["iteration"])) == [1, 2]
    assert sweep[sweep["iteration"] == 2]["gamma"].tolist() == [0.0, 0.25, 0.5, 1.0]


def test_figures_of_unconfigured_experiments_are_still_written(tmp_path):
    config = make_config(
        {"offline_dpo": {"reference": "fixed", "mix": {"gamma": 1.0}}}, settings=None
    )
    layout = paper.Layout.from_config(config)
    for name in ("figure2", "figure3", "figure4"):
        assert paper.needs(name, layout)["landscapes"] == []
        png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
        paper.draw_figure(name, layout, paper.read_inputs(name, layout, {}), png, pdf, bins=30)
        assert png.read_bytes().startswith(PNG_MAGIC) and pdf.read_bytes().startswith(b"%PDF")


# --- the Snakemake adapters --------------------------------------------------------------------

ADAPTER_DRIVER = """
import json, runpy, sys


class FakeNamedList(dict):
    # stands in for snakemake's Namedlist: attribute and .get access to named items
    __getattr__ = dict.__getitem__


class FakeSnakemake:
    def __init__(self, spec):
        self.input = FakeNamedList(spec["input"])
        self.output = FakeNamedList(spec["output"])
        self.params = FakeNamedList(spec["params"])
        self.log = [spec["log"]]


spec = json.loads(open(sys.argv[2]).read())
runpy.run_path(sys.argv[1], init_globals={"snakemake": FakeSnakemake(spec)})
"""


def run_adapter(script, spec, tmp_path):
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "driver.py").write_text(ADAPTER_DRIVER)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {
        "PYTHONPATH": str(root / "workflow" / "scripts"),
        "MPLBACKEND": "Agg",
        "HOME": str(tmp_path),
    }
    command = [
        sys.executable,
        str(tmp_path / "driver.py"),
        str(root / "workflow" / "scripts" / script),
        str(tmp_path / "spec.json"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + (tmp_path / "log.txt").read_text()


def test_report_tables_adapter_writes_csv_md_and_tex(tmp_path):
    layout = full_layout()
    inputs = write_inputs("table9", layout, tmp_path / "in")
    out = {k: str(tmp_path / "out" / f"table9.{k}") for k in ("csv", "md", "tex")}
    run_adapter(
        "report_tables.py",
        {
            "input": inputs,
            "output": out,
            "log": str(tmp_path / "log.txt"),
            "params": {"table": "table9", "layout": layout.to_dict(), "caption": "Table 9: sweep."},
        },
        tmp_path,
    )
    md = (tmp_path / "out" / "table9.md").read_text()
    assert md.startswith("Table 9: sweep.\n\n| gamma | Experiment | Iter AE2 | LC AE2 |")
    assert "| 0.50 | dice | 2 |" in md and "(-1.2, 1.3)" in md
    assert pd.read_csv(out["csv"])["gamma"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert r"\label{tab:table9}" in (tmp_path / "out" / "table9.tex").read_text()


def test_report_figures_adapter_writes_png_and_pdf(tmp_path):
    layout = full_layout()
    inputs = write_inputs("figure4", layout, tmp_path / "in")
    png, pdf = tmp_path / "out" / "figure4.png", tmp_path / "out" / "figure4.pdf"
    run_adapter(
        "report_figures.py",
        {
            "input": inputs,
            "output": {"png": str(png), "pdf": str(pdf)},
            "log": str(tmp_path / "log.txt"),
            "params": {"figure": "figure4", "layout": layout.to_dict(), "bins": None},
        },
        tmp_path,
    )
    assert_png_and_pdf(png, pdf)


def test_figures_2_and_4_use_the_report_iteration_capped_at_the_last():
    layout = full_layout(iteration=3, setting="llama3")
    assert paper.needs("figure4", layout)["landscapes"] == [("llama3_dice", 3), ("llama3_judge", 3)]
    layout = full_layout(iteration=3, experiment="dice_gamma0")
    assert paper.needs("figure2", layout)["length_diffs"] == [("zephyr_dice_gamma0", 2)]
    assert paper.needs("figure4", layout)["landscapes"] == [
        ("zephyr_dice_gamma0", 2),
        ("zephyr_judge", 3),
    ]


@pytest.mark.parametrize("name", [*paper.TARGETS])
def test_every_caption_is_valid_restructuredtext(name):
    """`snakemake --report` renders captions with docutils: a stray |x| is a substitution."""
    from docutils.core import publish_parts

    text = (Path(__file__).resolve().parents[1] / "workflow" / "report" / f"{name}.rst").read_text()
    publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})
