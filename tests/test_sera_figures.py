"""SeRA's Figures 2-6 (docs/sera.md#figures): the selection criteria (sera.selection), the run
key of a lambda sweep, Figure 3's correlations, which run fills which point, and the data behind
each figure (dicewf.sera, dicewf.paper.sera_figures)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from dicewf import config as cfg
from dicewf import sera
from dicewf.io import DatasetError
from dicewf.paper import sera_figures as sf
from test_sera_workflow import toy_config
from test_workflow import REPO, load, planned_jobs, workdir

# --- the selection criteria (Figure 2) ---------------------------------------------------------


def criteria_pairs() -> pd.DataFrame:
    """Five pairs whose criteria disagree. IRM (beta 1) = (pc - rc) - (pr - rr):
    [1, 5, 3, -2, 0]; reference (pi_theta^(t-1) = logp_policy) margin pc - pr:
    [4, -1, 0, 6, 2]; gold margin cq - rq: [0.5, 0.0, 1.0, -1.0, 0.2]."""
    return pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(5)],
            "prompt": [f"prompt {i}" for i in range(5)],
            "chosen": ["a", "bb", "ccc", "dddd", "eeeee"],
            "rejected": ["A", "B", "C", "D", "E"],
            "logp_policy_chosen": [-6.0, -9.0, -10.0, -4.0, -8.0],
            "logp_policy_rejected": [-10.0, -8.0, -10.0, -10.0, -10.0],
            "logp_ref_chosen": [-7.0, -12.0, -13.0, -4.0, -8.0],
            "logp_ref_rejected": [-10.0, -6.0, -10.0, -12.0, -10.0],
            "chosen_quality": [1.0, 0.5, 1.0, 0.0, 0.6],
            "rejected_quality": [0.5, 0.5, 0.0, 1.0, 0.4],
        }
    )


@pytest.mark.parametrize(
    "selection, kept, margin",
    [
        # 0.6 of 5 keeps 3: the highest margins, ties to the earlier row
        ("irm", [1, 2, 0], [1.0, 5.0, 3.0, -2.0, 0.0]),
        ("reference", [3, 0, 4], [4.0, -1.0, 0.0, 6.0, 2.0]),
        ("gold", [2, 0, 4], [0.5, 0.0, 1.0, -1.0, 0.2]),
        ("none", [0, 1, 2, 3, 4], [1.0, 5.0, 3.0, -2.0, 0.0]),
    ],
)
def test_each_selection_criterion_keeps_the_pairs_it_ranks_highest(selection, kept, margin):
    out, report = sera.select_offline(
        criteria_pairs(), beta=1.0, proportion=0.6, selection=selection
    )
    np.testing.assert_allclose(out["margin"], margin)
    np.testing.assert_allclose(out["irm"], [1.0, 5.0, 3.0, -2.0, 0.0])  # kept for every one
    assert sorted(np.flatnonzero(out["selected"])) == sorted(kept)
    assert report["selection"] == selection and report["n_selected"] == len(kept)
    # gold labels: only pair 3 has the worse answer chosen; gold and IRM drop it, reference not
    dropped_bad = report["gold_worse_chosen"]["n_dropped_bad"]
    assert dropped_bad == (0 if selection in ("reference", "none") else 1)


def test_gold_selection_without_quality_columns_names_the_file_and_columns():
    pairs = criteria_pairs().drop(columns=["rejected_quality"])
    with pytest.raises(DatasetError, match=r"offline\.parquet.*rejected_quality.*selection: gold"):
        sera.select_offline(
            pairs, beta=1.0, proportion=0.6, selection="gold", source="offline.parquet"
        )


def test_an_unknown_selection_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"sera.selection must be one of .*'gpt4'"):
        sera.select_offline(criteria_pairs(), beta=1.0, proportion=0.6, selection="gpt4")


def test_no_selection_mixes_all_of_d_offline_and_no_bootstrapped_pair():
    selection, _ = sera.select_offline(criteria_pairs(), 1.0, 0.6, selection="none")
    scores = pd.DataFrame(
        {
            "prompt_id": ["p0", "p0"],
            "prompt": ["prompt 0", "prompt 0"],
            "sample_idx": [0, 1],
            "response": ["x", "yy"],
            "reward": [1.0, 0.0],
            "len_chars": [1, 2],
        }
    )
    mixed, counts = sera.mix_iteration(
        selection, scores, proportion=0.6, generated=None, seed=0, selection="none"
    )
    assert (counts["n_offline"], counts["n_generated"]) == (5, 0)
    assert sorted(mixed["chosen"]) == sorted(criteria_pairs()["chosen"])


def test_the_schema_fills_in_irm_and_refuses_another_criterion():
    from snakemake.exceptions import WorkflowError

    config = toy_config(s={"method": "sera"})
    assert cfg.experiment(config, "s")["sera"]["selection"] == "irm"
    with pytest.raises(WorkflowError, match="gpt4"):
        toy_config(s={"method": "sera", "sera": {"selection": "gpt4"}})


def test_a_lambda_sweep_shares_iteration_1_with_sera_but_not_iteration_2():
    config = toy_config(
        sera_dpo={"method": "sera", "iterations": 2},
        sera_lambda0={"method": "sera", "iterations": 2, "sera": {"ensemble_lambda": 0.0}},
    )
    owners = cfg.owners(config)
    assert owners["sera_lambda0", 1].run == "sera_dpo"  # lambda is not read before iteration 2
    assert owners["sera_lambda0", 2].samples == "sera_dpo"  # sampled from the same policy
    assert owners["sera_lambda0", 2].run == "sera_lambda0"


# --- Figure 3: correlations --------------------------------------------------------------------


def test_pearson_interval_is_fishers():
    x = np.arange(10.0)
    y = np.array([0, 2, 1, 3, 5, 4, 6, 8, 7, 9.0])
    r, low, high = sera.pearson_interval(x, y)
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1])
    half = 1.959963984540054 / math.sqrt(7)
    assert (low, high) == pytest.approx(
        (math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half))
    )
    assert all(math.isnan(v) for v in sera.pearson_interval([1, 2, 3], [1, 2, 4]))
    assert all(math.isnan(v) for v in sera.pearson_interval([1, 1, 1, 1], [1, 2, 3, 4]))


def test_reward_correlations_follow_quality_and_length_by_hand():
    pairs = criteria_pairs()
    # rewards, beta 2: chosen 2 (pc - rc) = [2, 6, 6, 0, 0], rejected [0, -4, 0, 4, 0]
    got = sera.reward_correlations(pairs, 2.0)
    rewards = np.array([2, 6, 6, 0, 0, 0, -4, 0, 4, 0.0])
    quality = np.array([1, 0.5, 1, 0, 0.6, 0.5, 0.5, 0, 1, 0.4])
    length = np.array([1, 2, 3, 4, 5, 1, 1, 1, 1, 1.0])
    assert got["n_responses"] == 10 and got["n_pairs"] == 5
    assert got["quality"] == pytest.approx(np.corrcoef(rewards, quality)[0, 1])
    assert got["length"] == pytest.approx(np.corrcoef(rewards, length)[0, 1])
    irm = rewards[:5] - rewards[5:]
    gap = quality[:5] - quality[5:]
    assert got["margin_quality"] == pytest.approx(np.corrcoef(irm, gap)[0, 1])
    assert got["quality_low"] < got["quality"] < got["quality_high"]


# --- which run fills which point --------------------------------------------------------------


@pytest.fixture(scope="module")
def layout() -> sf.SeraLayout:
    """The default config's SeRA runs."""
    from snakemake.utils import validate

    config = load(REPO / "config.yaml")
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    shared = {m: o for m, o in cfg.model_owners(config).items() if m != o}
    return sf.SeraLayout.from_dict(sf.SeraLayout.from_config(config, shared).to_dict())


def test_the_default_config_fills_every_sera_figure(layout):
    assert [(c, f) for c, f, _ in sf.figure2_runs(layout)] == [
        ("none", "sera_sel_none"),
        ("gold", "sera_sel_gold"),
        ("reference", "sera_sel_reference"),
        ("irm", "sera_sel_irm"),
    ]
    assert [(line, x, f) for line, x, f, _ in sf.figure4_runs(layout)] == [
        ("SeRA-DPO", 0.0, "sera_dpo"),
        ("SeRA-DPO", 0.2, "sera_dpo_noise20"),
        ("SeRA-DPO", 0.4, "sera_dpo_noise40"),
        ("No selection", 0.0, "sera_sel_none"),
        ("No selection", 0.2, "sera_none_noise20"),
        ("No selection", 0.4, "sera_none_noise40"),
    ]
    assert [(p, x, f) for p, _, x, f, _ in sf.figure5_runs(layout)] == [
        ("a", 0.5, "sera_p05"),
        ("a", 0.7, "sera_dpo"),
        ("a", 0.9, "sera_p09"),
        ("a", 1.0, "sera_sel_none"),
        ("a", 0.7, "sera_sel_irm"),
        ("a", 1.0, "sera_sel_none"),
        ("b", 0.0, "sera_sel_irm"),
        ("b", 0.3, "sera_dpo"),
        ("b", 0.5, "sera_gen05"),
        ("b", 0.7, "sera_gen07"),
    ]
    assert [(x, f) for x, f, _ in sf.lambda_runs(layout)] == [
        (0.0, "sera_lambda0"),
        (0.3, "sera_dpo"),
        (0.7, "sera_lambda07"),
    ]
    assert sf.jaccard_sets(layout) == [
        ("D1", "sera_dpo", 1),
        ("D2", "sera_dpo", 2),
        ("D3", "sera_dpo", 3),
        ("I1", "sera_ipo", 1),
        ("S1", "sera_hinge", 1),
    ]


def test_a_shared_run_is_read_from_its_owner(layout):
    # sera_lambda0's iteration 1 is sera_dpo's; Figure 6 reads iteration 2, its own
    assert layout.evaluated("sera_lambda0", 1) == "sera_dpo-iter1"
    paths = sf.input_paths("sera_figure6", layout)
    assert "results/sera_lambda0/iter2/offline_selection.parquet" in paths["selections"]
    assert "results/eval/sera_lambda0-iter2/metrics.json" in paths["metrics"]
    assert sf.input_paths("sera_figure3", layout) == {
        "trained": [
            f"results/sera_sel_{c}/iter1/trained_logps.parquet"
            for c in ("none", "gold", "reference", "irm")
        ]
    }


# --- the data behind each figure ----------------------------------------------------------------


def metric(lc: float) -> dict:
    """A metrics.json with LC lc +- 2 and the other metrics without intervals."""
    return {
        "lc_win_rate": lc,
        "lc_win_rate_ci_low": lc - 2,
        "lc_win_rate_ci_high": lc + 2,
        "win_rate": lc + 1,
        "gold_quality": 0.5,
        "mean_len_model": 10.0,
    }


def all_metrics(layout, name) -> dict:
    return {key: metric(10.0 * i) for i, key in enumerate(sf.needs(name, layout)["models"])}


def test_figure2_data_has_each_criterion_with_its_interval(layout):
    frame = sf.figure2_data(layout, all_metrics(layout, "sera_figure2"))
    assert list(frame["criterion"]) == ["none", "gold", "reference", "irm"]
    assert list(frame["lc"]) == [0.0, 10.0, 20.0, 30.0]
    assert list(frame["lc_high"] - frame["lc_low"]) == [4.0] * 4
    assert frame["wr_low"].isna().all()  # metrics.json gave none


def test_figure4_data_carries_the_selections_precision_and_recall(layout):
    reports = {
        ("sera_dpo_noise20", 1): {
            "label_swapped": {"precision": 0.5, "recall": 0.75},
            "gold_worse_chosen": {"precision": 0.25, "recall": None},
        }
    }
    frame = sf.figure4_data(layout, all_metrics(layout, "sera_figure4"), reports)
    row = frame.set_index(["line", "noise"]).loc[("SeRA-DPO", 0.2)]
    assert (row["label_swapped_precision"], row["label_swapped_recall"]) == (0.5, 0.75)
    assert row["gold_worse_chosen_precision"] == 0.25
    assert math.isnan(row["gold_worse_chosen_recall"])
    assert math.isnan(frame.set_index(["line", "noise"]).loc[("SeRA-DPO", 0.0)].iloc[-1])
    assert sf.needs("sera_figure4", layout)["reports"] == [
        ("sera_dpo", 1),
        ("sera_dpo_noise20", 1),
        ("sera_dpo_noise40", 1),
    ]


def selection_frame(selected: list[int], n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(n)],
            "chosen": [f"c{i}" for i in range(n)],
            "rejected": [f"r{i}" for i in range(n)],
            "selected": [i in selected for i in range(n)],
        }
    )


def test_figure6_data_has_the_jaccard_of_the_selected_sets(layout):
    sets = {
        ("sera_lambda0", 2): [0, 1, 2, 3],
        ("sera_dpo", 2): [0, 1, 2, 4],  # vs lambda 0: 3 shared of 5
        ("sera_lambda07", 2): [0, 1, 2, 3],
        ("sera_dpo", 1): [0, 1, 2, 3],
        ("sera_dpo", 3): [1, 2, 3, 5],
        ("sera_ipo", 1): [0, 1, 2, 3],
        ("sera_hinge", 1): [4, 5],  # disjoint from D1
    }
    need = sf.needs("sera_figure6", layout)
    assert set(need["selections"]) == set(sets)
    got = sf.figure6_data(
        layout,
        all_metrics(layout, "sera_figure6"),
        {k: selection_frame(v) for k, v in sets.items()},
    )
    assert list(got["lambda"]["lambda"]) == [0.0, 0.3, 0.7]
    assert got["lambda_jaccard"].loc["0", "0.3"] == pytest.approx(3 / 5)
    assert got["lambda_jaccard"].loc["0", "0.7"] == 1.0
    jac = got["jaccard"]
    assert list(jac.index) == ["D1", "D2", "D3", "I1", "S1"]
    assert jac.loc["D1", "D3"] == pytest.approx(3 / 5)
    assert jac.loc["D1", "S1"] == 0.0 and jac.loc["D1", "I1"] == 1.0


def test_each_figure_is_drawn_from_its_data_and_an_unfilled_one_says_so(layout, tmp_path):
    offline = criteria_pairs()
    data = {
        "sera_figure2": {"metrics": all_metrics(layout, "sera_figure2")},
        "sera_figure3": {
            "trained": {k: offline for k in sf.needs("sera_figure3", layout)["trained"]}
        },
        "sera_figure4": {"metrics": all_metrics(layout, "sera_figure4"), "reports": {}},
        "sera_figure5": {"metrics": all_metrics(layout, "sera_figure5")},
        "sera_figure6": {
            "metrics": all_metrics(layout, "sera_figure6"),
            "selections": {
                k: selection_frame([0, 1]) for k in sf.needs("sera_figure6", layout)["selections"]
            },
        },
    }
    for name in sf.FIGURES:
        png = tmp_path / f"{name}.png"
        drawn = sf.draw(
            name, layout, data[name], png, tmp_path / "f.pdf" if name[-1] == "6" else None
        )
        assert png.stat().st_size > 1000, name
        if name == "sera_figure3":  # the same scores for every criterion: equal correlations
            assert list(drawn["quality"]) == pytest.approx([drawn["quality"][0]] * 4)
    assert (tmp_path / "f.pdf").exists()
    empty = sf.SeraLayout(label="toy world", runs={})
    assert sf.draw("sera_figure2", empty, {}, tmp_path / "empty.png").empty
    with pytest.raises(KeyError, match="unknown SeRA figure"):
        sf.needs("sera_figure7", layout)


def test_read_inputs_keys_each_file_by_run_and_iteration(layout, tmp_path):
    paths = {}
    for i, key in enumerate(sf.needs("sera_figure2", layout)["models"]):
        path = tmp_path / f"m{i}.json"
        path.write_text(json.dumps(metric(float(i))))
        paths.setdefault("metrics", []).append(str(path))
    data = sf.read_inputs("sera_figure2", layout, paths)
    assert data["metrics"][("sera_sel_irm", 1)]["lc_win_rate"] == 3.0
    with pytest.raises(ValueError, match="input 'metrics' has 3 file"):
        sf.read_inputs("sera_figure2", layout, {"metrics": paths["metrics"][:3]})


# --- the workflow ---------------------------------------------------------------------------------


@pytest.mark.slow  # a Snakemake dry run, as every test that starts Snakemake
def test_figure3_plans_one_trained_logps_job_per_criterion(tmp_path):
    jobs = planned_jobs(
        workdir(tmp_path, load(REPO / "config.yaml")), "results/figures/sera_figure3.png"
    )
    assert jobs["sera_trained_logps"] == 4 and jobs["sera_figure"] == 1
    assert jobs["train"] == 4  # the four selection runs' iteration 1, nothing else
