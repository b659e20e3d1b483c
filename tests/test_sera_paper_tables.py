"""SeRA's Tables 1, 2 and 9 at paper scale (dicewf.paper.sera_paper_tables): which evaluated
model fills which row of config/paper.yaml, each cell from the metrics file it comes from
(hand-computed from small fake metrics files) beside the paper's number, the errors that name a
bad file, and the rule's output from those files."""

from __future__ import annotations

import copy
import json
import math

import pytest
from dicewf import sera_eval
from dicewf.io import DatasetError
from dicewf.paper import sera_paper_tables as spt
from test_sera_paper import PAPER
from test_workflow import REPO, load, snakemake, workdir


def validated(cfg: dict) -> dict:
    from snakemake.utils import validate

    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return cfg


@pytest.fixture(scope="module")
def paper():
    return validated(load(PAPER))


SIMPO = ("plain_simpo", "iterative_simpo", "sera_simpo")  # Table 9's runs (trainer cpo)


def without_simpo(paper: dict) -> dict:
    cfg = copy.deepcopy(paper)
    for name in SIMPO:
        del cfg["experiments"][name]
    cfg["eval"]["sera"]["experiments"] = [
        e for e in cfg["eval"]["sera"]["experiments"] if e not in SIMPO
    ]
    return validated(cfg)


def plan(rows):
    return [(r["base"], r["method"], r["model"]) for r in rows]


def test_table1_rows_of_the_paper_config(paper):
    assert plan(spt.rows("sera_paper_table1", paper)) == [
        ("TinyLlama", "SFT", "tinyllama_sft"),
        ("TinyLlama", "DPO", "tinyllama_base"),  # pi_theta^(0): DPO from the SFT model
        ("TinyLlama", "Iterative DPO", "tinyllama_iterative_dpo-iter2"),
        ("TinyLlama", "SeRA-DPO", "tinyllama_sera_dpo-iter2"),
        ("Mistral", "SFT", "zephyr_sft"),
        ("Mistral", "DPO", "zephyr_base"),
        ("Mistral", "Iterative DPO", "zephyr_iterative_dpo_mistral-iter2"),
        ("Mistral", "SeRA-DPO", "zephyr_sera_dpo_mistral-iter2"),
    ]


def test_table2_rows_of_the_paper_config(paper):
    assert plan(spt.rows("sera_paper_table2", paper)) == [
        ("TinyLlama", "SFT", "tinyllama_sft"),
        ("TinyLlama", "IPO", "tinyllama_plain_ipo-iter1"),
        ("TinyLlama", "Iterative IPO", "tinyllama_iterative_ipo-iter2"),
        ("TinyLlama", "SeRA-IPO", "tinyllama_sera_ipo-iter2"),
        ("TinyLlama", "SLiC", "tinyllama_plain_hinge-iter1"),
        ("TinyLlama", "Iterative SLiC", "tinyllama_iterative_hinge-iter2"),
        ("TinyLlama", "SeRA-SLiC", "tinyllama_sera_hinge-iter2"),
    ]


def test_table9_has_rows_once_its_simpo_runs_are_configured(paper):
    # no SimPO run: no row, not even SFT
    assert spt.rows("sera_paper_table9", without_simpo(paper)) == []
    # plain SimPO is iterative SimPO's first iteration (one run), evaluated under its name
    assert plan(spt.rows("sera_paper_table9", paper)) == [
        ("TinyLlama", "SFT", "tinyllama_sft"),
        ("TinyLlama", "SimPO", "tinyllama_plain_simpo-iter1"),
        ("TinyLlama", "Iterative SimPO", "tinyllama_iterative_simpo-iter2"),
        ("TinyLlama", "SeRA-SimPO", "tinyllama_sera_simpo-iter2"),
    ]


def test_only_evaluated_runs_have_rows(paper):
    cfg = copy.deepcopy(paper)
    cfg["eval"]["sera"]["experiments"] = ["sera_dpo_mistral"]
    assert plan(spt.rows("sera_paper_table1", cfg)) == [
        ("Mistral", "SFT", "zephyr_sft"),
        ("Mistral", "DPO", "zephyr_base"),
        ("Mistral", "SeRA-DPO", "zephyr_sera_dpo_mistral-iter2"),
    ]
    assert spt.rows("sera_paper_table2", cfg) == []
    with pytest.raises(KeyError, match="unknown SeRA paper-scale table 'sera_table1'"):
        spt.rows("sera_table1", cfg)


# --- cells from fake metrics files ----------------------------------------------------------


def bench_metrics(bench: str, grades, vs_sft=None) -> dict:
    """One benchmark's block as dicewf.sera_eval writes it: grades and outcomes (1 win, 0.5 tie,
    0 loss, None unparsable) against the SFT model and, on AlpacaEval, the references."""
    out = {"benchmark": bench, "single": sera_eval.mean_rating(grades)}
    if vs_sft is not None:
        out["vs_sft"] = sera_eval.weighted_win_rate(vs_sft)
    if bench == "alpaca_eval":
        out["vs_text_davinci_003"] = sera_eval.weighted_win_rate([1, 1, 1, 0])
        out["vs_gpt4_turbo"] = sera_eval.weighted_win_rate([0, 0, 0.5, 0])
    return out


FOUR = list(sera_eval.BENCHMARKS)
MISTRAL_ROWS = [
    {"base": "Mistral", "setting": "zephyr", "method": "SFT", "model": "zephyr_sft"},
    {"base": "Mistral", "setting": "zephyr", "method": "DPO", "model": "zephyr_base"},
    {
        "base": "Mistral",
        "setting": "zephyr",
        "method": "SeRA-DPO",
        "model": "zephyr_sera_dpo_mistral-iter2",
    },
]


def write_metrics(root, rows=MISTRAL_ROWS):
    """Fake metrics files of ``rows``' models (SFT: grades only); returns their paths."""
    files = {
        "zephyr_sft": {b: bench_metrics(b, [6, 7]) for b in FOUR},
        "zephyr_base": {b: bench_metrics(b, [8, 9, None], [1, 0.5, 0]) for b in FOUR},
        "zephyr_sera_dpo_mistral-iter2": {
            b: bench_metrics(b, [7, 8], [1, 1, 1, 0.5, 0.5, 0, 0, None]) for b in FOUR
        },
    }
    paths = []
    for model in spt.models(rows):
        path = root / spt.metrics_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(files[model]))
        paths.append(path)
    return paths


def by_method(df):
    return df.set_index("Method")


def test_each_cell_is_its_metric_beside_the_papers_number(tmp_path):
    metrics = spt.read_metrics(MISTRAL_ROWS, write_metrics(tmp_path))
    df = by_method(spt.build("sera_paper_table1", MISTRAL_ROWS, metrics, FOUR))
    sera = df.loc["SeRA-DPO"]
    # grades 7, 8: 7.5; against SFT 3 wins, 2 ties, 2 losses of 7 judged (one unparsable):
    # 100 (3 + 1) / 7; AlpacaEval's G3.5 3 of 4 won, G4 one tie in 4
    assert sera["AE Single"] == sera["UF Single"] == 7.5
    assert sera["Vicuna SFT"] == pytest.approx(400 / 7)
    assert (sera["AE G3.5"], sera["AE G4"]) == (75.0, 12.5)
    assert df.loc["DPO", "Evol Single"] == 8.5 and df.loc["DPO", "Evol SFT"] == 50.0
    # the paper's Mistral rows (Table 1) beside them
    assert (sera["AE Single (paper)"], sera["AE SFT (paper)"]) == (8.38, 86.9)
    assert df.loc["DPO", "UF SFT (paper)"] == 65.6
    # the SFT model against itself: neither ours nor the paper's
    assert math.isnan(df.loc["SFT", "AE SFT"]) and math.isnan(df.loc["SFT", "AE SFT (paper)"])
    assert df.loc["SFT", "AE Single"] == 6.5 and df.loc["SFT", "AE G4 (paper)"] == 5.4
    cols = list(df.columns)
    assert cols[:4] == ["Base model", "Model", "AE Single", "AE Single (paper)"]
    assert cols.index("UF SFT (paper)") == cols.index("UF SFT") + 1


def test_a_benchmark_not_evaluated_is_empty_and_no_decided_prompt_is_nan(tmp_path):
    paths = write_metrics(tmp_path)
    metrics = spt.read_metrics(MISTRAL_ROWS, paths)
    metrics["zephyr_base"]["vicuna"]["vs_sft"] = sera_eval.weighted_win_rate([None, None])
    df = by_method(spt.build("sera_paper_table1", MISTRAL_ROWS, metrics, ["alpaca_eval"]))
    assert math.isnan(df.loc["SeRA-DPO", "UF Single"])  # ultrafeedback not evaluated
    assert df.loc["SeRA-DPO", "UF Single (paper)"] == 7.67
    df = by_method(spt.build("sera_paper_table1", MISTRAL_ROWS, metrics, FOUR))
    assert math.isnan(df.loc["DPO", "Vicuna SFT"])


def test_a_metrics_file_without_a_block_is_named(tmp_path):
    paths = write_metrics(tmp_path)
    metrics = spt.read_metrics(MISTRAL_ROWS, paths)
    del metrics["zephyr_base"]["vicuna"]
    with pytest.raises(
        DatasetError, match=r"results/eval/zephyr_base/sera/metrics.json: no 'vicuna' metrics"
    ):
        spt.build("sera_paper_table1", MISTRAL_ROWS, metrics, FOUR)
    metrics = spt.read_metrics(MISTRAL_ROWS, paths)
    del metrics["zephyr_sera_dpo_mistral-iter2"]["alpaca_eval"]["vs_gpt4_turbo"]
    with pytest.raises(DatasetError, match=r"iter2/sera/metrics.json: alpaca_eval: no 'vs_gpt4"):
        spt.build("sera_paper_table1", MISTRAL_ROWS, metrics, FOUR)
    metrics = spt.read_metrics(MISTRAL_ROWS, paths)
    metrics["zephyr_sft"]["ultrafeedback"]["single"]["score"] = "7"
    with pytest.raises(
        DatasetError, match=r"zephyr_sft/sera/metrics.json: ultrafeedback.single.score should be"
    ):
        spt.build("sera_paper_table1", MISTRAL_ROWS, metrics, FOUR)
    paths[1].write_text("[1, 2]")
    with pytest.raises(DatasetError, match=r"zephyr_base/sera/metrics.json: expected a mapping"):
        spt.read_metrics(MISTRAL_ROWS, paths)
    with pytest.raises(ValueError, match=r"2 metrics files for the 3 models"):
        spt.read_metrics(MISTRAL_ROWS, paths[:2])


@pytest.mark.slow  # starts Snakemake
def test_the_sera_paper_targets_include_the_tables_with_a_row(tmp_path, paper):
    """The dry run of sera_paper plans Tables 1, 2 and 9, and without SimPO runs no Table 9; each
    reads the metrics of exactly its rows' models."""
    out = snakemake("-n", "sera_paper", cwd=workdir(tmp_path / "simpo", paper)).stdout
    for n in (1, 2, 9):
        assert f"results/paper/tables/sera_paper_table{n}.md" in out
    out = snakemake("-n", "sera_paper", cwd=workdir(tmp_path / "none", without_simpo(paper))).stdout
    assert "results/paper/tables/sera_paper_table1.md" in out
    assert "sera_paper_table9" not in out
    wd = workdir(tmp_path, paper)
    out = snakemake("-n", "results/paper/tables/sera_paper_table2.csv", "--forceall", cwd=wd).stdout
    want = {spt.metrics_path(m) for m in spt.models(spt.rows("sera_paper_table2", paper))}
    job = out.split("rule sera_paper_table:")[1].split("rule ")[0]
    assert {p for p in want if p in job} == want and "sera_dpo" not in job


@pytest.mark.slow  # starts Snakemake
def test_the_rule_writes_the_table_from_the_metrics_files(tmp_path, paper):
    """rule sera_paper_table for real on the fake metrics files (nothing upstream runs)."""
    cfg = copy.deepcopy(paper)
    cfg["eval"]["sera"]["experiments"] = ["sera_dpo_mistral"]
    wd = workdir(tmp_path, cfg)
    write_metrics(wd)
    snakemake(
        "results/paper/tables/sera_paper_table1.md",
        "--cores",
        "1",
        "--allowed-rules",
        "sera_paper_table",
        cwd=wd,
    )
    md = (wd / "results" / "paper" / "tables" / "sera_paper_table1.md").read_text()
    assert md.startswith("SeRA Table 1 (paper scale)")
    assert "| Mistral | SeRA-DPO | zephyr_sera_dpo_mistral-iter2 | 7.50 | 8.38 |" in md
    tex = (wd / "results" / "paper" / "tables" / "sera_paper_table1.tex").read_text()
    assert "tab:sera_paper_table1" in tex
