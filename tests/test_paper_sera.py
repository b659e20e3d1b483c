"""SeRA's tables on the toy world (dicewf.paper.sera_tables): which files each reads, where each
number lands, the SeRA paper's numbers beside ours, and a missing input named."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from dicewf import paper, report
from dicewf.io import DatasetError, write_json
from test_paper import TOY_CONFIG, run_adapter, validated

SERA = ("sera_table1", "sera_table2", "sera_table9", "sera_table_noise", "dice_vs_sera")


def toy_layout(**experiments) -> paper.Layout:
    """The toy config's layout; ``experiments`` replace its matrix when given."""
    config = TOY_CONFIG if not experiments else TOY_CONFIG | {"experiments": experiments}
    return paper.Layout.from_config(validated(config))


def fake_metrics(models) -> dict[str, dict]:
    """Distinct numbers per model, each with its bootstrap interval as the toy eval writes it."""
    out = {}
    for i, model in enumerate(models):
        m = {}
        for key, v in (
            ("lc_win_rate", 10.0 + i),
            ("win_rate", 30.0 + i),
            ("gold_quality", 0.5 + i / 100),
            ("mean_len_model", 100.0 + i),
        ):
            m |= {key: v, f"{key}_ci_low": v - 1, f"{key}_ci_high": v + 2}
        out[model] = m
    return out


def selection(n_bad: int | None, dropped_bad: int, worse_dropped: int) -> dict:
    """selection.json as sera_mix writes it: 600 pairs, 420 kept; ``label_swapped`` only for a
    noisy D_offline (``n_bad`` swapped pairs), ``gold_worse_chosen`` always (100 such pairs)."""

    def quality(bad, hits):
        return {
            "n_pairs": 600,
            "n_bad": bad,
            "n_dropped": 180,
            "n_dropped_bad": hits,
            "precision": hits / 180,
            "recall": hits / bad if bad else None,
        }

    out = {"n_pairs": 600, "n_selected": 420, "n_offline": 420, "n_generated": 180}
    out["gold_worse_chosen"] = quality(100, worse_dropped)
    if n_bad is not None:
        out["label_swapped"] = quality(n_bad, dropped_bad)
    return out


SELECTIONS = {
    ("sera_dpo", 1): selection(None, 0, 40),
    ("sera_dpo_noise20", 1): selection(120, 90, 30),
    ("sera_dpo_noise40", 1): selection(240, 150, 20),
}


def build(name, layout, selections=SELECTIONS):
    need = paper.needs(name, layout)
    metrics = fake_metrics(need["models"])
    got = {k: selections[k] for k in need["selections"]}
    return paper.build_table(name, layout, metrics, selections=got), metrics


def write_inputs(layout, root) -> dict[str, list[str]]:
    """The noise table's files under ``root`` (metrics.json, selection.json); its inputs."""
    paths = paper.input_paths("sera_table_noise", layout)
    need = paper.needs("sera_table_noise", layout)
    metrics = fake_metrics(need["models"])
    for model, path in zip(need["models"], paths["metrics"], strict=True):
        write_json(metrics[model], root / path)
    for key, path in zip(need["selections"], paths["selections"], strict=True):
        write_json(SELECTIONS[key], root / path)
    return {k: [str(root / p) for p in v] for k, v in paths.items()}


def test_the_sera_tables_are_targets_and_not_in_paper_vs_reproduced():
    assert set(SERA) <= set(paper.TABLES) and paper.SERA_TABLES == SERA
    union = paper.needs("paper_vs_reproduced", toy_layout())
    assert "sera_dpo-iter3" not in union["models"] and union["selections"] == []


def test_each_sera_table_reads_exactly_its_rows_of_the_toy_matrix():
    layout = toy_layout()
    assert paper.needs("sera_table1", layout)["models"] == [
        "base",
        *(f"iterative_dpo-iter{t}" for t in (1, 2, 3)),
        *(f"sera_dpo-iter{t}" for t in (1, 2, 3)),
    ]
    assert paper.needs("sera_table2", layout)["models"] == [
        "iterative_ipo-iter1",
        "sera_ipo-iter1",
        "iterative_hinge-iter1",
        "sera_hinge-iter1",
    ]
    noise = paper.needs("sera_table_noise", layout)
    assert noise["models"] == [
        "base",
        "iterative_dpo-iter1",
        "sera_dpo-iter1",
        *(
            m
            for k in (20, 40)
            for m in (
                f"sera_dpo_noise{k}-iter0",
                f"sera_none_noise{k}-iter1",
                f"cdpo_noise{k}-iter1",
                f"robust_dpo_noise{k}-iter1",
                f"sera_dpo_noise{k}-iter1",
            )
        ),
    ]
    assert noise["selections"] == list(SELECTIONS)
    assert paper.input_paths("sera_table_noise", layout)["selections"] == [
        "results/sera_dpo/iter1/selection.json",
        "results/sera_dpo_noise20/iter1/selection.json",
        "results/sera_dpo_noise40/iter1/selection.json",
    ]
    assert paper.needs("dice_vs_sera", layout)["models"] == [
        "base",
        *(f"dice-iter{t}" for t in (1, 2, 3)),
        *(f"sera_dpo-iter{t}" for t in (1, 2, 3)),
        *(f"offline_dpo-iter{t}" for t in (1, 2)),
        *(f"offline_dpo_newref-iter{t}" for t in (1, 2)),
        *(f"iterative_dpo-iter{t}" for t in (1, 2, 3)),
    ]


def test_sera_table1_places_each_model_and_the_papers_tinyllama_row_beside_it():
    df, metrics = build("sera_table1", toy_layout())
    assert df["Method"].tolist() == [
        "DPO (pi_theta^(0))",
        *(f"Iterative DPO Iter {t}" for t in (1, 2, 3)),
        *(f"SeRA-DPO Iter {t}" for t in (1, 2, 3)),
    ]
    assert list(df.columns) == [
        "Method",
        *(f"{c}{b}" for c in ("LC", "WR", "Gold", "Len") for b in ("", " low", " high")),
        "Paper row",
        "TinyLlama AE Single (paper)",
        "TinyLlama AE SFT (paper)",
    ]
    row = df.set_index("Method").loc["SeRA-DPO Iter 2"]
    assert row["Gold"] == metrics["sera_dpo-iter2"]["gold_quality"]
    assert row["WR high"] == metrics["sera_dpo-iter2"]["win_rate"] + 2
    # the paper's row goes to the base (its DPO) and to each run's last iteration only
    paper_rows = df.set_index("Method")["Paper row"].to_dict()
    assert {k: v for k, v in paper_rows.items() if v} == {
        "DPO (pi_theta^(0))": "DPO",
        "Iterative DPO Iter 3": "Iterative DPO",
        "SeRA-DPO Iter 3": "SeRA-DPO",
    }
    single = df.set_index("Method")["TinyLlama AE Single (paper)"]
    assert single["SeRA-DPO Iter 3"] == 6.58 and single["DPO (pi_theta^(0))"] == 5.82
    assert math.isnan(single["SeRA-DPO Iter 1"])
    assert df.set_index("Method").loc["Iterative DPO Iter 3", "TinyLlama AE SFT (paper)"] == 64.5
    md = report.to_markdown(df)
    assert "| SeRA-DPO Iter 2 | 15.00 [14.00, 17.00] |" in md


def test_sera_table2_pairs_each_loss_with_its_baseline():
    df, _ = build("sera_table2", toy_layout())
    got = df.set_index("Method")
    assert got.index.tolist() == [
        "Iterative IPO Iter 1",
        "SeRA-IPO Iter 1",
        "Iterative SLiC Iter 1",
        "SeRA-SLiC Iter 1",
    ]
    assert got["Paper row"].tolist() == ["Iterative IPO", "SeRA-IPO", "Iterative SLiC", "SeRA-SLiC"]
    assert got["TinyLlama AE Single (paper)"].tolist() == [5.98, 6.42, 6.41, 6.50]
    assert got["TinyLlama AE SFT (paper)"].tolist() == [56.5, 69.3, 70.6, 70.8]


def test_sera_table9_sets_simpo_beside_the_papers_appendix_c3_rows():
    df, metrics = build("sera_table9", toy_layout())
    got = df.set_index("Method")
    assert got.index.tolist() == ["Iterative SimPO Iter 1", "SeRA-SimPO Iter 1"]
    assert got.loc["SeRA-SimPO Iter 1", "Gold"] == metrics["sera_simpo-iter1"]["gold_quality"]
    assert got["Paper row"].tolist() == ["Iterative SimPO", "SeRA-SimPO"]
    assert got["TinyLlama AE Single (paper)"].tolist() == [6.11, 6.51]
    assert got["TinyLlama AE SFT (paper)"].tolist() == [62.3, 73.9]
    # a matrix without SimPO runs gives a table without their rows
    assert paper.needs("sera_table9", toy_layout(sera_dpo={"method": "sera"}))["models"] == []


def test_noise_table_reports_each_methods_quality_and_the_selections_precision_and_recall():
    df, metrics = build("sera_table_noise", toy_layout())
    noisy = ["DPO (pi_theta^(0))", "Iterative DPO Iter 1", "cDPO Iter 1", "rDPO Iter 1"]
    assert list(zip(df["Noise (%)"], df["Method"], strict=True)) == [
        (0.0, "DPO (pi_theta^(0))"),
        (0.0, "Iterative DPO Iter 1"),
        (0.0, "SeRA-DPO Iter 1"),
        *[(20.0, m) for m in [*noisy, "SeRA-DPO Iter 1"]],
        *[(40.0, m) for m in [*noisy, "SeRA-DPO Iter 1"]],
    ]
    by = df.set_index(["Noise (%)", "Method"])
    # the paper's baselines on the noisy data: the level's own pi_theta^(0) (evaluated once, as
    # its first noisy run's) and one round of iterative DPO, cDPO and rDPO from it
    assert (
        by.loc[(40.0, "DPO (pi_theta^(0))"), "Gold"]
        == metrics["sera_dpo_noise40-iter0"]["gold_quality"]
    )
    assert by.loc[(20.0, "rDPO Iter 1"), "WR"] == metrics["robust_dpo_noise20-iter1"]["win_rate"]
    assert math.isnan(by.loc[(20.0, "cDPO Iter 1"), "Kept"])  # no selection
    row = by.loc[(40.0, "SeRA-DPO Iter 1")]
    assert row["Gold"] == metrics["sera_dpo_noise40-iter1"]["gold_quality"]
    assert (row["Pairs"], row["Kept"], row["Swapped"], row["Swapped dropped"]) == (
        600,
        420,
        240,
        150,
    )
    assert row["Swap precision"] == pytest.approx(150 / 180)
    assert row["Swap recall"] == pytest.approx(150 / 240)
    assert row["Gold-worse recall"] == pytest.approx(20 / 100)
    clean = by.loc[(0.0, "SeRA-DPO Iter 1")]
    assert math.isnan(clean["Swap recall"]) and clean["Gold-worse precision"] == pytest.approx(
        40 / 180
    )
    assert math.isnan(by.loc[(0.0, "DPO (pi_theta^(0))"), "Kept"])  # no selection
    md = report.to_markdown(df)
    assert "| 20 | SeRA-DPO Iter 1 |" in md and "| 0.500 |" in md  # 90 / 180


def test_noise_table_takes_the_noise_level_from_each_runs_noise_fraction():
    layout = toy_layout(
        sera_dpo={"method": "sera", "iterations": 2, "noise_fraction": 0.2},
        sera_dpo_noise40={"method": "sera", "iterations": 1, "noise_fraction": 0.4},
        sera_ipo={"method": "sera", "iterations": 1, "train": {"loss_type": "ipo"}},
    )
    selections = {
        ("sera_dpo", 1): selection(120, 60, 10),
        ("sera_dpo_noise40", 1): SELECTIONS[("sera_dpo_noise40", 1)],
    }
    df, _ = build("sera_table_noise", layout, selections)
    assert list(zip(df["Noise (%)"], df["Method"])) == [
        (0.0, "DPO (pi_theta^(0))"),
        (20.0, "DPO (pi_theta^(0))"),
        (20.0, "SeRA-DPO Iter 1"),
        (40.0, "DPO (pi_theta^(0))"),
        (40.0, "SeRA-DPO Iter 1"),
    ]
    assert df["Swap recall"].tolist()[2::2] == [0.5, 150 / 240]


def test_dice_vs_sera_puts_both_methods_and_the_baselines_side_by_side():
    df, metrics = build("dice_vs_sera", toy_layout())
    got = df.set_index("Method")
    assert got.index.tolist()[:7] == [
        "Base (pi_theta^(0))",
        "DICE Iter 1",
        "DICE Iter 2",
        "DICE Iter 3",
        "SeRA-DPO Iter 1",
        "SeRA-DPO Iter 2",
        "SeRA-DPO Iter 3",
    ]
    assert "Offline DPO (w/ new ref) Iter 2" in got.index
    assert got.loc["DICE Iter 2", "LC"] == metrics["dice-iter2"]["lc_win_rate"]
    assert got.loc["SeRA-DPO Iter 3", "Len"] == metrics["sera_dpo-iter3"]["mean_len_model"]
    assert df.attrs["intervals"]["Gold"] == ("Gold low", "Gold high")


def test_sera_tables_without_sera_runs_keep_their_headers():
    layout = toy_layout(dice={"iterations": 1})
    for name in SERA:
        df, _ = build(name, layout)
        assert "Method" in df.columns
    assert paper.needs("sera_table1", layout)["models"] == ["base"]


def test_a_missing_selection_or_metrics_file_is_named():
    layout = toy_layout()
    need = paper.needs("sera_table_noise", layout)
    metrics = fake_metrics(need["models"])
    partial = {k: v for k, v in SELECTIONS.items() if k != ("sera_dpo_noise20", 1)}
    with pytest.raises(KeyError, match="selection.json of sera_dpo_noise20 iteration 1"):
        paper.build_table("sera_table_noise", layout, metrics, selections=partial)
    models = paper.needs("sera_table1", layout)["models"]
    some = fake_metrics([m for m in models if m != "sera_dpo-iter3"])
    with pytest.raises(KeyError, match="'sera_dpo-iter3' were not given"):
        paper.build_table("sera_table1", layout, some)


def test_a_missing_selection_file_is_named(tmp_path):
    layout = toy_layout()
    inputs = write_inputs(layout, tmp_path)
    short = inputs | {"selections": inputs["selections"][:2]}
    with pytest.raises(ValueError, match="sera_table_noise: input 'selections' has 2 file"):
        paper.read_inputs("sera_table_noise", layout, short)
    gone = inputs["selections"][1]
    Path(gone).unlink()
    with pytest.raises(DatasetError, match=f"{gone}: file does not exist"):
        paper.read_inputs("sera_table_noise", layout, inputs)


def test_paper_numbers_of_seras_tables_as_printed():
    assert (
        paper.values.sera_paper_value("sera_table1", "TinyLlama", "best-SeRA-DPO", "UF SFT") == 79.5
    )
    assert paper.values.sera_paper_value("sera_table1", "Mistral", "ORPO", "AE G4") == 14.5
    assert paper.values.sera_paper_value("sera_table2", "Pythia", "SeRA-SLiC", "Evol SFT") == 71.1
    assert paper.values.sera_paper_value("sera_table1", "TinyLlama", "SFT", "AE SFT") is None
    assert (
        paper.values.sera_paper_value("sera_table9", "TinyLlama", "SeRA-SimPO", "AE G3.5") == 48.4
    )
    rows = paper.values.SERA_VALUES
    assert [len(rows["sera_table1"][m]) for m in ("TinyLlama", "Pythia", "Mistral")] == [6, 6, 8]
    assert [len(rows["sera_table2"][m]) for m in ("TinyLlama", "Pythia")] == [7, 7]
    assert list(rows["sera_table9"]["TinyLlama"]) == [
        "SFT",
        "SimPO",
        "Iterative SimPO",
        "SeRA-SimPO",
    ]


def test_report_tables_adapter_writes_the_noise_table_from_its_files(tmp_path):
    layout = toy_layout()
    inputs = write_inputs(layout, tmp_path / "in")
    out = {k: str(tmp_path / "out" / f"sera_table_noise.{k}") for k in ("csv", "md", "tex")}
    run_adapter(
        "report_tables.py",
        {
            "input": inputs,
            "output": out,
            "log": str(tmp_path / "log.txt"),
            "params": {
                "table": "sera_table_noise",
                "layout": layout.to_dict(),
                "caption": "SeRA noise.",
            },
        },
        tmp_path,
    )
    csv = pd.read_csv(out["csv"])
    assert csv["Swap recall"].dropna().round(4).tolist() == [0.75, 0.625]
    md = (tmp_path / "out" / "sera_table_noise.md").read_text()
    assert md.startswith("SeRA noise.\n\n| Noise (%) | Method | Gold | WR |")
    assert (
        r"\label{tab:sera_table_noise}" in (tmp_path / "out" / "sera_table_noise.tex").read_text()
    )
