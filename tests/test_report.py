"""Tests for dicewf.report: the paper's tables and figures from small metric frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from dicewf import report
from dicewf.alpha import landscape_grid
from dicewf.io import DatasetError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TABLE1_COLUMNS = ["Method", "LC (%)", "WR (%)", "SE (%)", "Len", "Gold"]


def table1() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Method": ["Base", "dice Iter 1", "dice Iter 2"],
            "LC (%)": [50.0, 55.5, 61.125],
            "WR (%)": [50.0, 58.25, 66.0],
            "SE (%)": [0.0, 4.9, 4.7],
            "Len": [41.2, 47.0, 52.5],
            "Gold": [0.31, 0.42, 0.47],
        }
    )


def test_to_markdown_header_alignment_and_formatted_rows():
    df = pd.DataFrame(
        {"Method": ["Base", "dice Iter 1"], "LC (%)": [50.0, 55.5678], "Pairs": [300, 12]}
    )
    lines = report.to_markdown(df).splitlines()
    assert lines == [
        "| Method | LC (%) | Pairs |",
        "|:---|---:|---:|",
        "| Base | 50.00 | 300 |",
        "| dice Iter 1 | 55.57 | 12 |",
    ]


def test_to_markdown_honours_floatfmt_and_ends_with_a_newline():
    text = report.to_markdown(pd.DataFrame({"x": [1.23456]}), floatfmt=".3f")
    assert text.endswith("\n") and "| 1.235 |" in text


def test_to_markdown_has_one_row_per_record():
    df = table1()
    lines = report.to_markdown(df).splitlines()
    assert len(lines) == 2 + len(df)
    assert lines[1] == "|:---|---:|---:|---:|---:|---:|"
    assert lines[-1] == "| dice Iter 2 | 61.12 | 66.00 | 4.70 | 52.50 | 0.47 |"


def test_write_table_writes_csv_and_markdown_with_caption(tmp_path):
    df = table1()
    csv, md = tmp_path / "tables" / "table1.csv", tmp_path / "tables" / "table1.md"
    report.write_table(df, csv, md, caption="Table 1: win rates.")
    back = pd.read_csv(csv)
    assert list(back.columns) == TABLE1_COLUMNS
    pd.testing.assert_frame_equal(back, df, check_exact=False, atol=1e-4, check_dtype=False)
    text = md.read_text()
    assert text.startswith("Table 1: win rates.\n\n| Method |")
    assert text.endswith(report.to_markdown(df))
    assert sorted(p.name for p in csv.parent.iterdir()) == ["table1.csv", "table1.md"]


def test_write_table_without_caption_starts_with_the_header(tmp_path):
    df = pd.DataFrame({"a": [1.0]})
    report.write_table(df, tmp_path / "t.csv", tmp_path / "t.md")
    assert (tmp_path / "t.md").read_text() == report.to_markdown(df)


def test_to_markdown_per_column_formats_and_missing_values():
    df = pd.DataFrame(
        {
            "Method": ["a", "b"],
            "lambda": [math.nan, 0.02],
            "Len": [2109.4, 876.0],
            "LC": [18.881, 14.4],
        }
    )
    lines = report.to_markdown(df, {"lambda": ".2f", "Len": ".0f"}).splitlines()
    assert lines[2:] == ["| a | - | 2109 | 18.88 |", "| b | 0.02 | 876 | 14.40 |"]


def test_a_column_with_an_interval_prints_value_low_high_and_the_csv_keeps_the_bounds(tmp_path):
    df = pd.DataFrame(
        {
            "Claim": ["a", "b", "c"],
            "Effect": [-4.76, 0.5, math.nan],
            "Effect low": [-10.689, math.nan, 1.0],
            "Effect high": [0.0004, 1.0, 2.0],
        }
    )
    df.attrs["floatfmt"] = {"Effect": ".2f"}
    df.attrs["intervals"] = {"Effect": ("Effect low", "Effect high")}
    lines = report.to_markdown(df).splitlines()
    # a missing bound: the value alone; a missing value: "-"
    assert lines == [
        "| Claim | Effect |",
        "|:---|---:|",
        "| a | -4.76 [-10.69, 0.00] |",
        "| b | 0.50 |",
        "| c | - |",
    ]
    assert r"a & -4.76 [-10.69, 0.00] \\" in report.to_latex(df)
    report.write_table(df, tmp_path / "t.csv", tmp_path / "t.md")
    assert list(pd.read_csv(tmp_path / "t.csv").columns) == list(df.columns)


def test_to_markdown_uses_the_frame_formats_unless_given():
    df = pd.DataFrame({"rate": [0.6981]})
    df.attrs["floatfmt"] = {"rate": ".3f"}
    assert "| 0.698 |" in report.to_markdown(df)
    assert "| 0.70 |" in report.to_markdown(df, ".2f")


# --- figures -----------------------------------------------------------------------------------


def length_diffs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "dataset": ["D(0)"] * 40 + ["D(alpha*)"] * 40,
            "len_diff": np.concatenate([rng.integers(0, 40, 40), rng.integers(-20, 20, 40)]),
        }
    )


def offline() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "chosen": ["a long chosen answer", "yes", "four"],
            "rejected": ["no", "a longer rejected answer", "five"],
        }
    )


def assert_png_and_pdf(png, pdf):
    png_bytes, pdf_bytes = png.read_bytes(), pdf.read_bytes()
    assert len(png_bytes) > 1000 and png_bytes.startswith(PNG_MAGIC)
    assert len(pdf_bytes) > 1000 and pdf_bytes.startswith(b"%PDF")
    assert [p.name for p in png.parent.glob(".*tmp-*")] == []


def test_figure2_writes_png_and_pdf(tmp_path):
    png, pdf = tmp_path / "fig" / "figure2.png", tmp_path / "fig" / "figure2.pdf"
    report.figure2(length_diffs(), offline(), png, pdf, bins=10, alpha_star=0.0123)
    assert_png_and_pdf(png, pdf)


def test_figure2_histograms_count_each_datasets_length_differences(tmp_path):
    diffs = pd.DataFrame(
        {"dataset": ["D(0)"] * 4 + ["D(alpha*)"] * 4, "len_diff": [0, 1, 2, 10, -10, 0, 0, 5]}
    )
    # offline |y_w| - |y_l|: 4 - 1 = 3, 1 - 8 = -7, 2 - 2 = 0
    off = pd.DataFrame({"chosen": ["aaaa", "a", "ab"], "rejected": ["a", "aaaaaaaa", "ab"]})
    fig = report.figure2(diffs, off, tmp_path / "figure2.png", bins=4)
    top, bottom = fig.axes
    # all values span [-10, 10]: 4 bins with edges -10, -5, 0, 5, 10 (the last one closed)
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    drawn = {label: [p.get_height() for p in c] for label, c in zip(labels, top.containers)}
    edges = [p.get_x() for p in top.containers[0]] + [10.0]
    assert edges == pytest.approx([-10, -5, 0, 5, 10])
    assert drawn == {"D(0): mean 3.2": [0, 0, 3, 1], "D(alpha*): mean -1.2": [1, 0, 2, 1]}
    (offline_bars,) = bottom.containers
    assert [t.get_text() for t in bottom.get_legend().get_texts()] == ["D_offline: mean -1.3"]
    assert [p.get_height() for p in offline_bars] == [1, 0, 2, 0]


def test_figure2_png_only(tmp_path):
    png = tmp_path / "figure2.png"
    report.figure2(length_diffs(), offline(), png, bins=30)
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["figure2.png"]


def test_figure2_without_len_diff_names_the_column(tmp_path):
    frame = length_diffs().rename(columns={"len_diff": "length_diff"})
    png = tmp_path / "figure2.png"
    with pytest.raises(DatasetError) as err:
        report.figure2(frame, offline(), png, bins=30, source="iter1/length_diffs.parquet")
    assert "'len_diff'" in str(err.value)
    assert "iter1/length_diffs.parquet" in str(err.value)
    assert not png.exists()


def test_figure4_writes_png_and_pdf(tmp_path):
    alphas = np.linspace(0.0, 0.1, 25)
    landscape = pd.DataFrame({"alpha": alphas, "objective": np.abs(30 - 600 * alphas)})
    png, pdf = tmp_path / "figure4.png", tmp_path / "figure4.pdf"
    report.figure4(landscape, png, pdf, alpha_star=0.05)
    assert_png_and_pdf(png, pdf)


def test_figure4_names_a_missing_column(tmp_path):
    with pytest.raises(DatasetError, match="'objective'"):
        report.figure4(pd.DataFrame({"alpha": [0.0, 0.1]}), tmp_path / "f.png")


def test_to_latex_escapes_and_formats():
    df = pd.DataFrame({"Method": ["dice_g0 Iter 1", "Base"], "LC (%)": [12.345, 7.0]})
    tex = report.to_latex(df, caption="LC & WR in %", label="tab:t1")
    assert r"\caption{LC \& WR in \%}" in tex and r"\label{tab:t1}" in tex
    assert r"\begin{tabular}{lr}" in tex
    assert r"dice\_g0 Iter 1 & 12.35 \\" in tex and r"Base & 7.00 \\" in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")


def test_write_table_writes_latex_when_asked(tmp_path):
    df = pd.DataFrame({"Method": ["Base"], "WR (%)": [10.0]})
    report.write_table(
        df,
        tmp_path / "t.csv",
        tmp_path / "t.md",
        caption="c",
        tex=tmp_path / "t.tex",
        label="tab:x",
    )
    assert r"Base & 10.00 \\" in (tmp_path / "t.tex").read_text()


def landscape(slope: float = 600.0) -> pd.DataFrame:
    alphas = np.linspace(0.0, 0.1, 25)
    return pd.DataFrame({"alpha": alphas, "objective": np.abs(30 - slope * alphas)})


def test_figure4_with_the_judge_panel(tmp_path):
    png, pdf = tmp_path / "figure4.png", tmp_path / "figure4.pdf"
    report.figure4(landscape(), png, pdf, alpha_star=0.05, judge=landscape(-300.0))
    assert_png_and_pdf(png, pdf)
    single = tmp_path / "single.png"
    report.figure4(landscape(), single, alpha_star=0.05)
    assert png.stat().st_size > single.stat().st_size  # two panels


def test_figure4_zooms_on_alpha_star(tmp_path):
    # the paper's case: alpha* = 0.023 in a [0, 0.1] box, the landscape dense around it
    alphas = landscape_grid(0.0, 0.1, 0.023, 200)
    assert report.zoom_range(alphas, 0.023) == pytest.approx((0.013, 0.033))
    assert report.zoom_range(alphas, 0.0) == pytest.approx((0.0, 0.01))  # a judge's minimum
    assert report.zoom_range([0.05, 0.05], 0.05) == (0.05, 0.05)
    a, b = report.zoom_range(alphas, 0.023)
    assert ((alphas >= a) & (alphas <= b)).sum() >= 100  # half of the points resolve the dip
    frame = pd.DataFrame({"alpha": alphas, "objective": np.abs(1000 - 43500 * alphas)})
    png, pdf = tmp_path / "figure4.png", tmp_path / "figure4.pdf"
    report.figure4(
        frame,
        png,
        pdf,
        alpha_star=0.023,
        judge=frame.assign(objective=alphas),
        xlabel="alpha (log-ratio per character)",
    )
    assert_png_and_pdf(png, pdf)


def test_figure4_plots_the_landscapes_their_zooms_and_the_marked_alphas(tmp_path):
    alphas = np.arange(11.0)  # a [0, 10] box: zoom half-width 0.1 * 10 = 1
    implicit = pd.DataFrame({"alpha": alphas, "objective": np.abs(30 - 6 * alphas)})
    judge = pd.DataFrame({"alpha": alphas, "objective": np.abs(alphas - 2) + 1})  # min at 2
    fig = report.figure4(implicit, tmp_path / "figure4.png", alpha_star=6.0, judge=judge)
    left, right, left_zoom, right_zoom = fig.axes
    curve, star = left.lines
    assert curve.get_xdata().tolist() == alphas.tolist()
    assert curve.get_ydata().tolist() == [30, 24, 18, 12, 6, 0, 6, 12, 18, 24, 30]
    assert list(star.get_xdata()) == [6.0, 6.0]
    # the zoom is centred on alpha* (6), not on the landscape's minimum (5)
    assert left_zoom.get_xlim() == pytest.approx((5.0, 7.0))
    assert left_zoom.lines[0].get_xdata().tolist() == [5.0, 6.0, 7.0]
    assert left_zoom.lines[0].get_ydata().tolist() == [0.0, 6.0, 12.0]
    assert right.lines[0].get_ydata().tolist() == (np.abs(alphas - 2) + 1).tolist()
    marker = right.lines[-1]
    assert (list(marker.get_xdata()), list(marker.get_ydata())) == ([2.0], [1.0])
    assert right_zoom.get_xlim() == pytest.approx((1.0, 3.0))
    assert right_zoom.lines[0].get_xdata().tolist() == [1.0, 2.0, 3.0]


def test_figure4_names_a_bad_judge_landscape(tmp_path):
    with pytest.raises(DatasetError, match="judge/landscape.parquet.*'objective'"):
        report.figure4(
            landscape(),
            tmp_path / "f.png",
            judge=pd.DataFrame({"alpha": [0.0]}),
            judge_source="judge/landscape.parquet",
        )
    assert not (tmp_path / "f.png").exists()


def test_figure1_and_figure3_write_png_and_pdf(tmp_path):
    bars = pd.DataFrame(
        {
            "setting": ["zephyr", "zephyr", "llama3"],
            "method": ["Base", "DICE", "Base"],
            "lc": [12.69, 20.71, 18.2],
        }
    )
    report.figure1(bars, tmp_path / "f1.png", tmp_path / "f1.pdf", iteration=2)
    assert_png_and_pdf(tmp_path / "f1.png", tmp_path / "f1.pdf")
    sweep = pd.DataFrame(
        {
            "gamma": [0.0, 0.5, 1.0, 0.0, 0.5],
            "iteration": [1, 1, 1, 2, 2],
            "lc": [18.9, 19.0, 13.4, 17.0, 20.71],
        }
    )
    report.figure3(sweep, tmp_path / "f3.png", tmp_path / "f3.pdf", title="Zephyr")
    assert_png_and_pdf(tmp_path / "f3.png", tmp_path / "f3.pdf")


def test_figure3_names_a_missing_column(tmp_path):
    with pytest.raises(DatasetError, match="'iteration'"):
        report.figure3(pd.DataFrame({"gamma": [0.0], "lc": [1.0]}), tmp_path / "f.png")


def test_empty_figures_are_written_with_a_note(tmp_path):
    report.figure1(pd.DataFrame({"setting": [], "method": [], "lc": []}), tmp_path / "a.png")
    report.figure3(pd.DataFrame({"gamma": [], "iteration": [], "lc": []}), tmp_path / "b.png")
    report.placeholder_figure("not configured", tmp_path / "c.png", tmp_path / "c.pdf")
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
