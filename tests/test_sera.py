"""Tests for dicewf.sera: SeRA's implicit reward margin, selection, bootstrapping and mixture."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from dicewf import sera
from dicewf.io import DatasetError
from dicewf.mixing import REF_COLUMNS


def offline_pairs(n: int, tag: str = "off") -> pd.DataFrame:
    """``n`` pairs on prompts p0000, p0001, ... with distinct per-side values in every column
    that swaps (texts, reference log-probs and token counts, policy log-probs)."""
    ids = [f"p{i:04d}" for i in range(n)]
    i = np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "prompt_id": ids,
            "prompt": [f"prompt {p}" for p in ids],
            "chosen": [f"{tag} chosen {p}" for p in ids],
            "rejected": [f"{tag} rejected {p}" for p in ids],
            "ref_chosen_logps": -10.0 - i,
            "ref_rejected_logps": -20.0 - i,
            "ref_chosen_tokens": np.arange(n, dtype="int64") + 3,
            "ref_rejected_tokens": np.arange(n, dtype="int64") + 30,
            "logp_policy_chosen": -8.0 - i,
            "logp_policy_rejected": -25.0 - i,
            "logp_ref_chosen": -10.0 - i,
            "logp_ref_rejected": -20.0 - i,
            "len_diff": np.arange(n, dtype="int64") - 27,
        }
    )


# --- Eq. 5: the implicit reward margin -----------------------------------------------------------


IRM_PAIRS = pd.DataFrame(
    {
        "logp_policy_chosen": [-10.0, -5.0, -30.0],
        "logp_policy_rejected": [-12.0, -4.0, -20.0],
        "logp_ref_chosen": [-11.0, -6.0, -33.0],
        "logp_ref_rejected": [-11.0, -2.0, -26.0],
        "len_tokens_chosen": [5, 2, 10],
        "len_tokens_rejected": [3, 4, 4],
    }
)


def test_the_dpo_margin_is_beta_times_the_difference_of_log_ratios():
    # row 0: (-10 + 11) - (-12 + 11) = 2; row 1: (1) - (-2) = 3; row 2: (3) - (6) = -3
    margin = sera.implicit_reward_margin(IRM_PAIRS, 0.5)
    np.testing.assert_allclose(margin, [1.0, 1.5, -1.5])


def test_the_simpo_margin_is_beta_times_the_difference_of_mean_token_log_probs():
    # row 0: 2 * (-10/5 - -12/3) = 2 * (-2 + 4) = 4; row 1: 2 * (-2.5 + 1) = -3;
    # row 2: 2 * (-3 + 5) = 4: no reference
    margin = sera.implicit_reward_margin(IRM_PAIRS, 2.0, reward="simpo")
    np.testing.assert_allclose(margin, [4.0, -3.0, 4.0])


def test_the_margin_names_a_missing_column_a_nan_row_and_a_bad_beta():
    with pytest.raises(DatasetError, match=r"<pairs>: missing column\(s\) \['logp_ref_rejected'\]"):
        sera.implicit_reward_margin(IRM_PAIRS.drop(columns="logp_ref_rejected"), 0.1)
    bad = IRM_PAIRS.assign(logp_ref_rejected=[-1.0, -2.0, np.nan])
    with pytest.raises(DatasetError, match=r"pairs.parquet: column 'logp_ref_rejected' .* \[2\]"):
        sera.implicit_reward_margin(bad, 0.1, source="pairs.parquet")
    zero = IRM_PAIRS.assign(len_tokens_rejected=[3, 0, 4])
    with pytest.raises(DatasetError, match=r"'len_tokens_rejected' .* below 1 at rows \[1\]"):
        sera.implicit_reward_margin(zero, 0.1, reward="simpo")
    for beta in (0.0, -0.2, float("nan")):
        with pytest.raises(ValueError, match="beta must be a positive number"):
            sera.implicit_reward_margin(IRM_PAIRS, beta)
    with pytest.raises(ValueError, match="reward must be one of"):
        sera.implicit_reward_margin(IRM_PAIRS, 0.1, reward="ipo")


# --- Eq. 7: the ensemble across iterations -------------------------------------------------------


def test_the_ensemble_weighs_the_older_policy_by_lambda():
    prev, prev2 = [1.0, 2.0, 3.0], [3.0, 0.0, -1.0]
    # 0.25 * prev2 + 0.75 * prev
    np.testing.assert_allclose(sera.ensemble_margin(prev, prev2, 0.25), [1.5, 1.5, 2.0])
    np.testing.assert_allclose(sera.ensemble_margin(prev, prev2, 0.0), prev)
    np.testing.assert_allclose(sera.ensemble_margin(prev, prev2, 1.0), prev2)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_without_a_t_minus_2_policy_lambda_counts_as_zero(lam):
    out = sera.ensemble_margin(np.array([0.5, -1.0]), None, lam)
    np.testing.assert_array_equal(out, [0.5, -1.0])


def test_the_first_iterations_have_no_second_policy():
    assert sera.margin_policies(1) == (None, None)  # D_1 is the offline data alone
    assert sera.margin_policies(2) == ((1, 0), None)  # lambda counts as 0
    assert sera.margin_policies(3) == ((2, 1), (1, 0))
    assert sera.margin_policies(5) == ((4, 3), (3, 2))
    with pytest.raises(ValueError, match="iteration must be >= 1"):
        sera.margin_policies(0)


def test_the_ensemble_refuses_a_bad_lambda_nan_margins_and_unequal_lengths():
    for lam in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match=r"lambda must lie in \[0, 1\]"):
            sera.ensemble_margin([1.0], [1.0], lam)
    with pytest.raises(ValueError, match=r"irm_prev2: 1 of 3 values .* positions \[1\]"):
        sera.ensemble_margin([1.0, 2.0, 3.0], [1.0, np.inf, 3.0], 0.5)
    with pytest.raises(ValueError, match="irm_prev2 has 2 margins and irm_prev 3"):
        sera.ensemble_margin([1.0, 2.0, 3.0], [1.0, 2.0], 0.5)


# --- Section 3.2: selection by margin ------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "proportion", "kept"),
    [
        (3, 0.7, 2),  # 2.1: ceil would keep 3
        (5, 0.7, 4),  # 3.5: floor would keep 3
        (10, 0.25, 2),  # 2.5, halves to even: round-half-up would keep 3
        (10, 0.75, 8),  # 7.5 -> 8
        (10, 0.7, 7),
        (1, 1.0, 1),
        (0, 0.7, 0),
    ],
)
def test_the_selected_count_is_pythons_round_of_the_share(n, proportion, kept):
    assert sera.selection_count(n, proportion) == kept


def test_a_share_out_of_range_or_keeping_nothing_is_refused():
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"selection proportion must lie in \(0, 1\]"):
            sera.selection_count(10, bad)
    with pytest.raises(ValueError, match="keeps none of 4 pairs"):
        sera.selection_count(4, 0.1)


# margins with ties: 3.0 twice, 1.0 three times
MARGINS = [1.0, 3.0, 1.0, 0.0, 3.0, 1.0]


def test_selection_keeps_the_highest_margins_ties_to_the_earlier_row():
    pairs = offline_pairs(6)
    # half: both 3.0 (rows 1, 4), then the first of the tied 1.0 (row 0, not 2 or 5)
    selected, mask = sera.select_by_margin(pairs, MARGINS, 0.5)
    assert mask.tolist() == [True, True, False, False, True, False]
    assert selected["prompt_id"].tolist() == ["p0000", "p0001", "p0004"]  # original order
    # 0.7 of 6 = 4.2 -> 4: rows 1, 4, 0, 2
    selected, mask = sera.select_by_margin(pairs.assign(irm=MARGINS), "irm", 0.7)
    assert mask.tolist() == [True, True, True, False, True, False]
    assert selected.index.tolist() == [0, 1, 2, 3]
    assert selected["irm"].tolist() == [1.0, 3.0, 1.0, 3.0]


def test_selection_by_count_and_its_errors():
    pairs = offline_pairs(6)
    _, mask = sera.select_by_margin(pairs, MARGINS, count=1)
    assert mask.tolist() == [False, True, False, False, False, False]
    with pytest.raises(ValueError, match="exactly one of proportion and count"):
        sera.select_by_margin(pairs, MARGINS, 0.5, count=2)
    with pytest.raises(ValueError, match="asked for 7 pairs but only 6"):
        sera.select_by_margin(pairs, MARGINS, count=7)
    with pytest.raises(ValueError, match="5 margins for 6 pairs"):
        sera.select_by_margin(pairs, MARGINS[:5], 0.5)
    with pytest.raises(DatasetError, match=r"off.parquet: column 'irm' .* rows \[3\]"):
        sera.select_by_margin(
            pairs.assign(irm=[1.0, 2.0, 3.0, np.nan, 0.0, 0.0]), "irm", 0.5, source="off.parquet"
        )
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['irm'\]"):
        sera.select_by_margin(pairs, "irm", 0.5)


# --- Section 3.3: bootstrapped pairs -------------------------------------------------------------

REWARDS = {
    "a": [0.5, 2.0, -1.0, 1.0],  # pair (1, 2), margin 3.0
    "b": [1.5, 1.5, 0.0, 1.0],  # tie at the top: (0, 2), margin 1.5
    "c": [0.2, 0.2, 0.2, 0.2],  # every response ties: no pair
    "d": [0.7],  # one response: dropped
    "e": [0.0, 0.4, 0.1, 0.3],  # pair (1, 0), margin 0.4
}


def scored_samples(rewards: dict[str, list[float]] = REWARDS) -> pd.DataFrame:
    rows = [
        {
            "prompt_id": pid,
            "prompt": f"prompt {pid}",
            "sample_idx": k,
            "response": f"{pid} response {k}" + "!" * (3 * k),
            "reward": r,
            "len_chars": len(f"{pid} response {k}") + 3 * k,
        }
        for pid, values in rewards.items()
        for k, r in enumerate(values)
    ]
    return pd.DataFrame(rows)


def brute_force_pairs(scores: pd.DataFrame, column: str) -> dict[str, tuple[int, int, float]]:
    """Per prompt, the (chosen, rejected) sample pair with the largest margin, first in order."""
    out = {}
    for pid, group in scores.groupby("prompt_id", sort=True):
        r = dict(zip(group["sample_idx"], group[column], strict=True))
        best = max(itertools.permutations(r, 2), key=lambda p: r[p[0]] - r[p[1]], default=None)
        if best is not None and r[best[0]] > r[best[1]]:
            out[pid] = (*best, r[best[0]] - r[best[1]])
    return out


def test_bootstrapped_pairs_are_the_max_and_min_reward_of_each_prompt():
    scores = scored_samples()
    pairs = sera.bootstrap_pairs(scores, count=3)
    got = {
        row.prompt_id: (row.chosen_sample_idx, row.rejected_sample_idx, row.irm)
        for row in pairs.itertuples()
    }
    assert got == {"a": (1, 2, 3.0), "b": (0, 2, 1.5), "e": (1, 0, 0.4)}
    assert {k: v[2] for k, v in brute_force_pairs(scores, "reward").items()} == {
        k: v[2] for k, v in got.items()
    }
    assert pairs.loc[pairs["prompt_id"] == "a", "chosen"].item() == "a response 1!!!"
    assert pairs.attrs["n_candidates"] == 3
    assert (pairs.attrs["n_degenerate"], pairs.attrs["n_dropped"]) == (1, 1)


def test_bootstrapping_keeps_the_highest_margins():
    scores = scored_samples()
    # 0.7 of 3 candidates = 2.1 -> 2: a (3.0) and b (1.5), in prompt order
    assert sera.bootstrap_pairs(scores, 0.7)["prompt_id"].tolist() == ["a", "b"]
    assert sera.bootstrap_pairs(scores, count=1)["prompt_id"].tolist() == ["a"]
    with pytest.raises(ValueError, match=r"asked for 4 bootstrapped pairs but only 3 prompt"):
        sera.bootstrap_pairs(scores, count=4)


def test_bootstrapping_ranks_by_the_named_column_such_as_the_ensemble_reward():
    scores = scored_samples()
    older = np.where(scores["prompt_id"] == "e", -scores["reward"], 0.0)
    scores["ensemble"] = sera.ensemble_margin(scores["reward"], older, 0.75)
    pairs = sera.bootstrap_pairs(scores, count=3, score="ensemble")
    row = pairs.set_index("prompt_id").loc["e"]
    # 0.25 * r - 0.75 * r = -r / 2: the order of e's responses flips
    assert (row["chosen_sample_idx"], row["rejected_sample_idx"]) == (0, 1)
    assert row["irm"] == pytest.approx(0.2)
    assert brute_force_pairs(scores, "ensemble")["e"][:2] == (0, 1)


# --- Sections 4.1 and 5.1: the mixture D_t --------------------------------------------------------


def test_sera_keeps_n_pairs_and_best_sera_relaxes_the_sum():
    assert sera.sera_counts(20, 0.7) == (14, 6)  # N_off + N_gen = N
    assert sera.sera_counts(10, 0.25) == (2, 8)  # round(2.5) = 2
    assert sera.sera_counts(20, 0.7, 0.5) == (14, 10)  # best-SeRA: N_gen = 0.5 N
    assert sera.sera_counts(20, 0.7, 0.0) == (14, 0)  # selection alone (Table 3)
    with pytest.raises(ValueError, match="generated proportion must be >= 0"):
        sera.sera_counts(20, 0.7, -0.1)


def bootstrapped(n: int) -> pd.DataFrame:
    return offline_pairs(n, "gen").assign(irm=[float((7 * i) % n) for i in range(n)])


@pytest.mark.parametrize("generated", [None, 0.5])
def test_the_mixture_has_exactly_the_configured_counts(generated):
    offline = offline_pairs(20)
    n_off, n_gen = sera.sera_counts(len(offline), 0.7, generated)
    selected, _ = sera.select_by_margin(offline, np.arange(20.0), 0.7)
    gen = bootstrapped(12)
    mixed = sera.mix_sera(selected, gen, n_gen, seed=3)
    assert len(selected) == n_off == 14
    assert (mixed["source"] == "offline").sum() == n_off
    assert (mixed["source"] == "generated").sum() == n_gen == (6 if generated is None else 10)
    top = gen.nlargest(n_gen, "irm", keep="first")["chosen"]
    assert set(mixed.loc[mixed["source"] == "generated", "chosen"]) == set(top)
    assert set(mixed.loc[mixed["source"] == "offline", "chosen"]) == set(selected["chosen"])
    # the reference log-probs travel with the pairs, as in DICE's mixture
    assert set(REF_COLUMNS) <= set(mixed.columns)


def test_the_mixture_is_shuffled_by_its_seed_and_refuses_a_shortfall():
    selected, gen = offline_pairs(8), bootstrapped(5)
    a = sera.mix_sera(selected, gen, 4, seed=1)
    pd.testing.assert_frame_equal(a, sera.mix_sera(selected, gen, 4, seed=1))
    assert a["chosen"].tolist() != sera.mix_sera(selected, gen, 4, seed=2)["chosen"].tolist()
    with pytest.raises(ValueError, match="boot.parquet: asked for 6 bootstrapped pairs but only 5"):
        sera.mix_sera(selected, gen, 6, seed=1, generated_source="boot.parquet")
    clash = gen.assign(prompt=lambda f: f["prompt"] + " (other)")
    with pytest.raises(DatasetError, match="name different prompts"):
        sera.mix_sera(selected, clash, 4, seed=1)


# --- Section 4.2: noisy preferences --------------------------------------------------------------


def test_swapping_exactly_round_fraction_n_rows_and_their_columns():
    pairs = offline_pairs(20)
    out = sera.swap_labels(pairs, 0.2, seed=0)
    swapped = out["label_swapped"].to_numpy()
    assert out["label_swapped"].dtype == bool and swapped.sum() == 4
    assert sera.swap_labels(offline_pairs(10), 0.25, seed=0)["label_swapped"].sum() == 2
    for chosen, rejected in [
        ("chosen", "rejected"),
        ("ref_chosen_logps", "ref_rejected_logps"),
        ("ref_chosen_tokens", "ref_rejected_tokens"),
        ("logp_policy_chosen", "logp_policy_rejected"),
        ("logp_ref_chosen", "logp_ref_rejected"),
    ]:
        assert (out.loc[swapped, chosen] == pairs.loc[swapped, rejected]).all(), chosen
        assert (out.loc[swapped, rejected] == pairs.loc[swapped, chosen]).all(), rejected
        assert (out.loc[~swapped, chosen] == pairs.loc[~swapped, chosen]).all(), chosen
        assert out[chosen].dtype == pairs[chosen].dtype
    assert (out.loc[swapped, "len_diff"] == -pairs.loc[swapped, "len_diff"]).all()
    assert (out["prompt"] == pairs["prompt"]).all()


def test_swapping_is_seeded_and_twice_gives_the_original():
    pairs = offline_pairs(20)
    rows = {s: sera.swap_labels(pairs, 0.3, seed=s)["label_swapped"].tolist() for s in (0, 0, 1)}
    again = sera.swap_labels(pairs, 0.3, seed=0)["label_swapped"].tolist()
    assert rows[0] == again and rows[0] != rows[1]
    twice = sera.swap_labels(sera.swap_labels(pairs, 0.3, seed=5), 0.3, seed=5)
    assert not twice["label_swapped"].any()
    pd.testing.assert_frame_equal(twice.drop(columns="label_swapped"), pairs)
    assert sera.swap_labels(pairs, 0.0, seed=0).drop(columns="label_swapped").equals(pairs)
    assert sera.swap_labels(pairs, 1.0, seed=0)["label_swapped"].all()


def test_swapping_refuses_a_one_sided_column_and_a_bad_fraction():
    with pytest.raises(DatasetError, match="'chosen_score' has no counterpart 'rejected_score'"):
        sera.swap_labels(offline_pairs(4).assign(chosen_score=1.0), 0.5, seed=0)
    for bad in (-0.1, 1.2):
        with pytest.raises(ValueError, match=r"noise fraction must lie in \[0, 1\]"):
            sera.swap_labels(offline_pairs(4), bad, seed=0)
    with pytest.raises(DatasetError, match="'label_swapped' should hold booleans"):
        sera.swap_labels(offline_pairs(4).assign(label_swapped=1), 0.5, seed=0)


# --- selection quality --------------------------------------------------------------------------


def test_selection_quality_on_a_hand_case():
    selected = [True, True, False, False, True, False, True, False]
    bad = [False, True, True, False, False, True, False, False]
    # dropped: 2, 3, 5, 7; bad: 1, 2, 5; dropped and bad: 2, 5
    assert sera.selection_quality(selected, bad) == {
        "n_pairs": 8,
        "n_bad": 3,
        "n_dropped": 4,
        "n_dropped_bad": 2,
        "precision": 0.5,
        "recall": 2 / 3,
        "bad_share_selected": 0.25,
        "bad_share_all": 3 / 8,
    }


def test_selection_quality_without_drops_or_bad_pairs_and_its_errors():
    out = sera.selection_quality(np.ones(3, dtype=bool), np.zeros(3, dtype=bool))
    assert (out["precision"], out["recall"], out["bad_share_selected"]) == (None, None, 0.0)
    with pytest.raises(ValueError, match="bad: expected booleans .* int64"):
        sera.selection_quality([True, False], np.array([0, 1]))
    with pytest.raises(ValueError, match="selected has 2 entries and bad 3"):
        sera.selection_quality([True, False], [True, False, True])


def test_irm_selection_removes_swapped_pairs_where_the_margin_knows_better():
    # every original pair has a positive margin; a swap makes it negative
    noisy = sera.swap_labels(offline_pairs(20), 0.2, seed=7)
    margin = sera.implicit_reward_margin(noisy, 0.1)
    _, mask = sera.select_by_margin(noisy, margin, 0.8)
    quality = sera.selection_quality(mask, noisy["label_swapped"])
    assert (quality["precision"], quality["recall"]) == (1.0, 1.0)


# --- Figure 6: Jaccard similarity -------------------------------------------------------------------


def test_jaccard_of_selected_sets():
    assert sera.jaccard({1, 2, 3}, [2, 3, 4]) == 0.5
    assert sera.jaccard(["p1"], ["p1"]) == 1.0 and sera.jaccard([1], [2]) == 0.0
    assert sera.jaccard([], []) == 1.0
    mask = np.array([True, False, True])
    assert sera.jaccard(np.flatnonzero(mask), [0, 1]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="pass the selected keys"):
        sera.jaccard(mask, [0])
    matrix = sera.jaccard_matrix({"LD1": [1, 2, 3], "LD2": [2, 3, 4], "LI1": [9]})
    assert matrix.loc["LD1", "LD2"] == matrix.loc["LD2", "LD1"] == 0.5
    assert np.diag(matrix).tolist() == [1.0, 1.0, 1.0] and matrix.loc["LI1", "LD1"] == 0.0


# --- the config schema's sera block ------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def shipped_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_the_schema_fills_the_sera_block_with_the_papers_values():
    from snakemake.utils import validate

    config = shipped_config()
    validate(config, str(SCHEMA))
    # on the defaults block, which every experiment block is merged over
    assert config["defaults"]["sera"] == {
        "selection": "irm",  # Figure 2's criteria: SeRA's IRM
        "selection_proportion": 0.7,  # Table 4
        "generated_proportion": None,  # SeRA: N_off + N_gen = N
        "ensemble_lambda": 0.3,
        "bootstrap": "implicit",  # alpha = 0; DICE's D(alpha*) as an option
        "sampling": {"n": 4, "temperature": 0.7, "top_p": 0.95},  # Appendix B.2
        # Table 4, TinyLlama; SimPO's beta is not given (SimPO's own paper's 2.0)
        "beta": {"sigmoid": 0.2, "hinge": 0.2, "ipo": 1.0, "simpo": 2.0},
    }
    # a partial block keeps the other defaults
    config = shipped_config()
    config["defaults"]["sera"] = {"beta": {"ipo": 0.5}, "sampling": {"n": 8}}
    validate(config, str(SCHEMA))
    assert config["defaults"]["sera"]["beta"] == {
        "sigmoid": 0.2,
        "hinge": 0.2,
        "ipo": 0.5,
        "simpo": 2.0,
    }
    assert config["defaults"]["sera"]["sampling"] == {"n": 8, "temperature": 0.7, "top_p": 0.95}
    # an experiment's partial block gets no defaults of its own (they come from the merge)
    config["experiments"]["x"] = {"method": "sera", "sera": {"ensemble_lambda": 0.2}}
    validate(config, str(SCHEMA))
    assert config["experiments"]["x"]["sera"] == {"ensemble_lambda": 0.2}
    # the noise is the experiment's, for any method, 0 unless set
    assert config["defaults"]["noise_fraction"] == 0.0


@pytest.mark.parametrize(
    ("block", "named"),
    [
        ({"selection_proportion": 0}, "selection_proportion"),
        ({"ensemble_lambda": 1.5}, "ensemble_lambda"),
        ({"generated_proportion": -0.1}, "generated_proportion"),
        ({"noise_fraction": 0.2}, "noise_fraction"),  # an experiment's key, not sera's
        ({"reward": "orpo"}, "reward"),
        ({"beta": {"ipo": 0}}, "ipo"),
        ({"sampling": {"n": 1}}, "n"),
        ({"selection": 0.7}, "selection"),
    ],
)
@pytest.mark.parametrize("where", [("defaults",), ("experiments", "dice")])
def test_the_schema_refuses_a_bad_sera_value_naming_it(block, named, where):
    config = shipped_config()
    parent = config
    for key in where:
        parent = parent[key]
    parent["sera"] = block
    schema = yaml.safe_load(SCHEMA.read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    # the error is inside the sera block and names the key (its path, or the message of an
    # unknown key)
    assert any(
        list(e.absolute_path)[: len(where) + 1] == [*where, "sera"]
        and (named in e.absolute_path or repr(named) in e.message)
        for e in errors
    ), [(list(e.absolute_path), e.message) for e in errors]


# --- inputs at the edges and what the errors say ---------------------------------------------------


def test_margins_that_are_not_numbers_or_not_one_dimensional_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"^irm_prev: expected numbers \(could not convert"):
        sera.ensemble_margin(["a", "b"], None, 0.5)  # numpy's ValueError
    with pytest.raises(ValueError, match=r"^irm_prev: expected numbers \(float\(\) argument"):
        sera.ensemble_margin([{}], None, 0.5)  # numpy's TypeError
    with pytest.raises(
        ValueError, match=r"^irm_prev: expected a 1-D array of margins, got shape \(2, 2\)$"
    ):
        sera.ensemble_margin([[1.0, 2.0], [3.0, 4.0]], None, 0.5)


def test_a_non_finite_margin_error_counts_them_all_and_shows_the_first_five_positions():
    values = [1.0, np.nan, 2.0, np.inf, -np.inf, np.nan, np.nan, np.nan, 0.0]
    with pytest.raises(
        ValueError,
        match=r"^irm_prev: 6 of 9 values are NaN or infinite, at positions \[1, 3, 4, 5, 6\]$",
    ):
        sera.ensemble_margin(values, None, 0.0)


def test_without_a_second_policy_the_ensemble_returns_a_copy_of_the_margins():
    prev = np.array([0.5, -1.0])
    out = sera.ensemble_margin(prev, None, 0.3)
    out[0] = 9.0
    assert prev.tolist() == [0.5, -1.0]


def test_a_lambda_that_is_not_a_number_is_refused_with_its_repr():
    with pytest.raises(
        ValueError, match=r"^the ensemble coefficient lambda must lie in \[0, 1\], got '0.5'$"
    ):
        sera.ensemble_margin([1.0], [1.0], "0.5")


def test_the_iteration_may_come_as_a_wildcard_string_and_zero_is_named_in_the_error():
    assert sera.margin_policies("3") == ((2, 1), (1, 0))
    assert sera.margin_policies("2") == ((1, 0), None)
    with pytest.raises(ValueError, match=r"^iteration must be >= 1, got 0$"):
        sera.margin_policies("0")


def test_a_negative_count_of_pairs_and_a_share_that_is_not_a_number_are_refused():
    with pytest.raises(ValueError, match=r"^n must be >= 0, got -1$"):
        sera.selection_count(-1, 0.5)
    with pytest.raises(
        ValueError, match=r"^the selection proportion must lie in \(0, 1\], got '0.5'$"
    ):
        sera.selection_count(4, "0.5")
    with pytest.raises(ValueError, match=r"^a selection proportion of 0.1 keeps none of 4 pairs$"):
        sera.selection_count(4, 0.1)


def test_top_mask_keeps_all_none_and_refuses_counts_outside_the_margins():
    assert sera.top_mask([1.0, 2.0], 2).tolist() == [True, True]
    assert sera.top_mask([1.0, 2.0], 0).tolist() == [False, False]
    with pytest.raises(ValueError, match=r"^cannot keep 3 of 2 pairs$"):
        sera.top_mask([1.0, 2.0], 3)
    with pytest.raises(ValueError, match=r"^cannot keep -1 of 2 pairs$"):
        sera.top_mask([1.0, 2.0], -1)
    with pytest.raises(ValueError, match=r"^margin: 1 of 1 values are NaN"):
        sera.top_mask([np.nan], 0)


def test_top_mask_breaks_ties_by_position_in_a_long_array():
    # 300 margins in three tied levels: value 2 at positions 2, 5, 8, ... (i = 2 mod 3); the 50
    # highest are the first 50 of those, 2 .. 149 (an unstable sort picks others among them)
    values = np.array([(7 * i) % 3 for i in range(300)], dtype=float)
    mask = sera.top_mask(values, 50)
    assert np.flatnonzero(mask).tolist() == list(range(2, 150, 3))


def test_selection_needs_exactly_one_of_share_and_count_and_names_the_default_source():
    pairs = offline_pairs(6)
    with pytest.raises(ValueError, match=r"^give exactly one of proportion and count$"):
        sera.select_by_margin(pairs, MARGINS)
    with pytest.raises(ValueError, match=r"^<pairs>: asked for -1 pairs but only 6 are available$"):
        sera.select_by_margin(pairs, MARGINS, count=-1)
    with pytest.raises(ValueError, match=r"^<pairs>: 5 margins for 6 pairs$"):
        sera.select_by_margin(pairs, MARGINS[:5], 0.5)
    with pytest.raises(DatasetError, match=r"^<pairs>: column 'irm' has NaN"):
        sera.select_by_margin(pairs.assign(irm=np.nan), "irm", 0.5)
    with pytest.raises(ValueError, match=r"^<pairs>: margin: 1 of 6 values are NaN"):
        sera.select_by_margin(pairs, [1.0, 2.0, np.nan, 0.0, 0.0, 0.0], 0.5)


def test_selecting_from_no_pairs_by_a_column_gives_no_pairs():
    empty = offline_pairs(0).assign(irm=pd.Series(dtype=float))
    selected, mask = sera.select_by_margin(empty, "irm", count=0)
    assert len(selected) == 0 and mask.tolist() == []
    selected, mask = sera.select_by_margin(empty, "irm", 0.7)
    assert len(selected) == 0 and mask.tolist() == []


def test_a_prompt_with_two_responses_gives_a_pair_unless_more_are_required():
    scores = scored_samples({"a": [0.0, 1.0], "b": [1.0, 0.0, 2.0]})
    pairs = sera.bootstrap_pairs(scores, count=2)  # at least 2 responses by default
    assert pairs["prompt_id"].tolist() == ["a", "b"] and pairs["irm"].tolist() == [1.0, 2.0]
    assert sera.bootstrap_pairs(scores, count=1, min_responses=3)["prompt_id"].tolist() == ["b"]
    with pytest.raises(
        ValueError,
        match=r"^<scores>: asked for 2 bootstrapped pairs but only 1 prompt\(s\) give a pair "
        r"\(0 with tied responses, 1 with fewer than 3 responses\)$",
    ):
        sera.bootstrap_pairs(scores, count=2, min_responses=3)


def test_a_shortfall_of_bootstrapped_pairs_names_the_tied_and_dropped_prompts():
    with pytest.raises(
        ValueError,
        match=r"^<scores>: asked for 4 bootstrapped pairs but only 3 prompt\(s\) give a pair "
        r"\(1 with tied responses, 1 with fewer than 2 responses\)$",
    ):
        sera.bootstrap_pairs(scored_samples(), count=4)
    with pytest.raises(ValueError, match=r"^give exactly one of proportion and count$"):
        sera.bootstrap_pairs(scored_samples())


def test_bootstrapped_lengths_are_in_characters_unless_tokens_are_asked_for():
    scores = scored_samples()  # response k of prompt p: len("p response k") + 3 k characters
    pairs = sera.bootstrap_pairs(scores, count=3)
    # a: sample 1 (15 chars) against 2 (18); b: 0 (12) against 2 (18); e: 1 (15) against 0 (12)
    assert pairs["len_diff"].tolist() == [-3, -6, 3]
    tokens = sera.bootstrap_pairs(
        scores.assign(len_tokens=10 * scores["sample_idx"] + 1), count=3, length_unit="tokens"
    )
    assert tokens["len_diff"].tolist() == [-10, -20, 10]  # 10 (chosen - rejected sample)


def test_bootstrapping_logs_how_many_pairs_it_kept(caplog):
    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.sera"):
        sera.bootstrap_pairs(scored_samples(), count=2, source="s.parquet")
    assert "s.parquet: kept 2 of 3 bootstrapped pairs by IRM" in caplog.messages


def candidate_pairs(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    """Per-prompt pairs built elsewhere (as DICE's D(alpha*)) on scored_samples' responses."""
    return pd.DataFrame(
        {
            "prompt_id": [p for p, _, _ in rows],
            "prompt": [f"prompt {p}" for p, _, _ in rows],
            "chosen": [f"{p} response {c}" for p, c, _ in rows],
            "rejected": [f"{p} response {r}" for p, _, r in rows],
            "chosen_sample_idx": [c for _, c, _ in rows],
            "rejected_sample_idx": [r for _, _, r in rows],
        },
        index=[10 + i for i in range(len(rows))],
    )


def test_given_pairs_are_ranked_by_the_score_margin_of_their_two_responses():
    # rewards: a 3 - 0: 1.0 - 0.5 = 0.5; b 1 - 3: 1.5 - 1.0 = 0.5; e 3 - 2: 0.3 - 0.1 = 0.2
    candidates = candidate_pairs([("a", 3, 0), ("b", 1, 3), ("e", 3, 2)])
    pairs = sera.bootstrap_pairs(scored_samples(), count=2, candidates=candidates)
    assert pairs["prompt_id"].tolist() == ["a", "b"]
    np.testing.assert_allclose(pairs["irm"], [0.5, 0.5])
    assert pairs.index.tolist() == [0, 1] and "index" not in pairs.columns
    assert pairs.attrs["n_candidates"] == 3
    assert "irm" not in candidates.columns  # the input is left as it was
    # no counts of tied or dropped prompts for pairs built elsewhere
    with pytest.raises(
        ValueError,
        match=r"^<scores>: asked for 4 bootstrapped pairs but only 3 prompt\(s\) give a pair "
        r"\(\? with tied responses, \? with fewer than 2 responses\)$",
    ):
        sera.bootstrap_pairs(scored_samples(), count=4, candidates=candidates)


def test_given_pairs_with_a_missing_column_or_response_are_refused_naming_the_file():
    scores = scored_samples()
    candidates = candidate_pairs([("a", 3, 0), ("e", 3, 2)])
    with pytest.raises(
        DatasetError, match=r"^<pairs>: missing column\(s\) \['rejected_sample_idx'\]"
    ):
        sera.bootstrap_pairs(
            scores, count=1, candidates=candidates.drop(columns="rejected_sample_idx")
        )
    with pytest.raises(DatasetError, match=r"^<pairs>: missing column\(s\) \['prompt'\]"):
        sera.bootstrap_pairs(scores, count=1, candidates=candidates.drop(columns="prompt"))
    with pytest.raises(DatasetError, match=r"^<pairs>: missing column\(s\) \['ref_chosen_logps'"):
        sera.bootstrap_pairs(scores, count=1, candidates=candidates, ref_logps="logp_policy")
    carried = candidates.assign(
        ref_chosen_logps=-1.0, ref_rejected_logps=-2.0, ref_chosen_tokens=3.5, ref_rejected_tokens=4
    )
    with pytest.raises(DatasetError, match=r"^<pairs>: column 'ref_chosen_tokens' should hold int"):
        sera.bootstrap_pairs(scores, count=1, candidates=carried, ref_logps="logp_policy")
    with pytest.raises(
        DatasetError,
        match=r"^<pairs>: the rejected response of 1 pair\(s\) is not in <scores> \(prompt_id, "
        r"sample_idx\) \[\('e', 7\)\]; the pairs must come from the iteration's scores$",
    ):
        sera.bootstrap_pairs(
            scores, count=1, candidates=candidate_pairs([("a", 3, 0), ("e", 3, 7)])
        )
    with pytest.raises(
        DatasetError, match=r"^<scores>: column 'reward' has NaN or infinite values at rows \[1\]"
    ):
        sera.bootstrap_pairs(
            scores.assign(reward=[0.0, np.nan] + [0.0] * 15), count=1, candidates=candidates
        )
    with pytest.raises(DatasetError, match=r"^<scores>: missing column\(s\) \['ensemble'\]"):
        sera.bootstrap_pairs(scores, count=1, candidates=candidates, score="ensemble")


def test_no_given_pairs_bootstrap_no_pairs():
    empty = candidate_pairs([]).assign(
        ref_chosen_logps=pd.Series(dtype=float),
        ref_rejected_logps=pd.Series(dtype=float),
        ref_chosen_tokens=pd.Series(dtype="int64"),
        ref_rejected_tokens=pd.Series(dtype="int64"),
    )
    pairs = sera.bootstrap_pairs(
        scored_samples(), count=0, candidates=empty, ref_logps="logp_policy"
    )
    assert len(pairs) == 0 and pairs.attrs["n_candidates"] == 0


def test_ensemble_rewards_match_responses_by_prompt_and_sample_in_any_order():
    scores = scored_samples({"a": [1.0, 3.0], "b": [0.0]})  # rows (a, 0), (a, 1), (b, 0)
    prev2 = pd.DataFrame(
        {"prompt_id": ["b", "a", "a"], "sample_idx": [0, 1, 0], "reward": [5.0, -1.0, 2.0]}
    )
    out = sera.ensemble_rewards(scores, prev2, 0.25)
    assert out["reward_prev2"].tolist() == [2.0, -1.0, 5.0]
    # 0.25 r_(t-2) + 0.75 r_(t-1): 0.5 + 0.75, -0.25 + 2.25, 1.25 + 0
    assert out["ensemble_reward"].tolist() == [1.25, 2.0, 1.25]
    assert out["response"].tolist() == scores["response"].tolist()
    assert "reward_prev2" not in scores.columns


def test_ensemble_rewards_refuse_repeated_or_unmatched_responses_naming_the_default_sources():
    scores = scored_samples()
    repeated = pd.concat([scores, scores.iloc[[2]]], ignore_index=True)
    with pytest.raises(
        DatasetError, match=r"^<scores>: repeated \(prompt_id, sample_idx\) at rows \[17\]$"
    ):
        sera.ensemble_rewards(repeated, scores, 0.5)
    with pytest.raises(
        DatasetError, match=r"^<scores prev2>: repeated \(prompt_id, sample_idx\) at rows \[17\]$"
    ):
        sera.ensemble_rewards(scores, repeated, 0.5)
    with pytest.raises(DatasetError, match=r"^<scores>: missing column\(s\) \['reward'\]"):
        sera.ensemble_rewards(scores.drop(columns="reward"), scores, 0.5)
    with pytest.raises(
        DatasetError,
        match=r"^<scores prev2>: no reward for 1 response\(s\) of <scores> \(prompt_id, "
        r"sample_idx\) \[\('e', 3\)\]; Eq. 7 scores the same samples under both \(policy, "
        r"reference\) pairs$",
    ):
        sera.ensemble_rewards(scores, scores.iloc[:-1], 0.5)
    with pytest.raises(
        DatasetError, match=r"^<scores>: no reward for 1 response\(s\) of <scores prev2> "
    ):
        sera.ensemble_rewards(scores.iloc[:-1], scores, 0.5)


def test_best_sera_rounds_its_generated_share_and_refuses_one_that_is_not_finite():
    assert sera.sera_counts(10, 0.7, 0.25) == (7, 2)  # round(2.5) = 2
    assert sera.sera_counts(10, 0.7, 1.0) == (7, 10)
    for bad, shown in ((float("inf"), "inf"), (float("nan"), "nan"), ("0.5", "'0.5'")):
        with pytest.raises(
            ValueError, match=rf"^the generated proportion must be >= 0, got {shown}$"
        ):
            sera.sera_counts(10, 0.7, bad)


def test_the_mixture_refuses_a_negative_or_empty_mixture_naming_the_default_sources():
    with pytest.raises(ValueError, match=r"^n_generated must be >= 0, got -1$"):
        sera.mix_sera(offline_pairs(3), bootstrapped(3), -1, seed=0)
    with pytest.raises(
        ValueError, match=r"^<selected offline> and <bootstrapped>: the mixture is empty$"
    ):
        sera.mix_sera(offline_pairs(0), bootstrapped(0), 0, seed=0)
    with pytest.raises(
        ValueError, match=r"^<bootstrapped>: asked for 3 bootstrapped pairs but only 2 are"
    ):
        sera.mix_sera(offline_pairs(3), bootstrapped(2), 3, seed=0)
    with pytest.raises(
        DatasetError, match=r"^<selected offline>: missing column\(s\) \['prompt'\]"
    ):
        sera.mix_sera(offline_pairs(3).drop(columns="prompt"), bootstrapped(2), 1, seed=0)
    with pytest.raises(DatasetError, match=r"^<bootstrapped>: missing column\(s\) \['prompt'\]"):
        sera.mix_sera(offline_pairs(3), bootstrapped(2).drop(columns="prompt"), 1, seed=0)
    with pytest.raises(DatasetError, match=r"^<bootstrapped> and <selected offline>: 3 prompt_id"):
        sera.mix_sera(offline_pairs(3), bootstrapped(3).assign(prompt="x"), 1, seed=0)
    with pytest.raises(DatasetError, match=r"^<bootstrapped>: missing column\(s\) \['irm'\]"):
        sera.mix_sera(offline_pairs(0), bootstrapped(3).drop(columns="irm"), 2, seed=0)


def test_a_mixture_may_have_no_offline_or_no_bootstrapped_pairs():
    no_offline = offline_pairs(0).assign(irm=pd.Series(dtype=float))
    mixed = sera.mix_sera(no_offline, bootstrapped(3), 2, seed=0)  # irm 0, 1, 2: rows 1 and 2
    assert sorted(mixed["chosen"]) == ["gen chosen p0001", "gen chosen p0002"]
    assert set(mixed["source"]) == {"generated"}
    mixed = sera.mix_sera(offline_pairs(2), bootstrapped(0), 0, seed=0)
    assert sorted(mixed["chosen"]) == ["off chosen p0000", "off chosen p0001"]
    assert set(mixed["source"]) == {"offline"}


# --- noisy labels: the edges -------------------------------------------------------------------


def test_swap_columns_pairs_each_chosen_column_with_its_rejected_one():
    columns = ["prompt_id", "chosen", "rejected", "ref_chosen_logps", "ref_rejected_logps", "x"]
    assert sera.swap_columns(columns) == [
        ("chosen", "rejected"),
        ("ref_chosen_logps", "ref_rejected_logps"),
    ]
    assert sera.swap_columns(iter(columns)) == sera.swap_columns(columns)  # any iterable
    with pytest.raises(
        DatasetError,
        match=r"^<pairs>: column 'rejected_score' has no counterpart 'chosen_score'; swapping "
        r"labels would leave it on the wrong side$",
    ):
        sera.swap_columns(["chosen", "rejected", "rejected_score"])


def test_swapping_draws_its_rows_from_the_derived_seed():
    from dicewf.seeds import derive_seed

    rng = np.random.default_rng(derive_seed("swap_labels", 4))
    expected = sorted(rng.choice(20, 6, replace=False).tolist())
    out = sera.swap_labels(offline_pairs(20), 0.3, seed=4)
    assert np.flatnonzero(out["label_swapped"]).tolist() == expected


def test_swapping_flips_the_margin_and_keeps_earlier_swaps_marked():
    pairs = offline_pairs(10).assign(irm=np.arange(10.0) + 1, label_swapped=True)
    out = sera.swap_labels(pairs, 0.2, seed=1)
    now = ~out["label_swapped"].to_numpy()  # swapped now: marked True ^ True = False
    assert now.sum() == 2
    np.testing.assert_array_equal(out["irm"], np.where(now, -1.0, 1.0) * (np.arange(10.0) + 1))
    untouched = sera.swap_labels(pairs, 0.0, seed=1)
    assert untouched["label_swapped"].all()  # nothing swapped: every earlier mark stays


def test_swapping_names_the_default_source_and_logs_the_count(caplog):
    with pytest.raises(
        DatasetError,
        match=r"^<pairs>: column 'label_swapped' should hold booleans, found dtype int64$",
    ):
        sera.swap_labels(offline_pairs(4).assign(label_swapped=1), 0.5, seed=0)
    with pytest.raises(DatasetError, match=r"^<pairs>: missing column\(s\) \['prompt'\]"):
        sera.swap_labels(offline_pairs(4).drop(columns="prompt"), 0.5, seed=0)
    with pytest.raises(ValueError, match=r"^the noise fraction must lie in \[0, 1\], got '0.5'$"):
        sera.swap_labels(offline_pairs(4), "0.5", seed=0)
    caplog.clear()
    with caplog.at_level("INFO", logger="dicewf.sera"):
        sera.swap_labels(offline_pairs(20), 0.2, seed=0, source="off.parquet")
    assert "off.parquet: swapped chosen and rejected on 4 of 20 pairs" in caplog.messages


def test_selection_quality_refuses_missing_labels_and_handles_no_pairs():
    with pytest.raises(
        ValueError,
        match=r"^selected: expected booleans \(one per pair\), got dtype object with missing "
        r"values at positions \[1\]$",
    ):
        sera.selection_quality([True, None], [True, False])
    with pytest.raises(
        ValueError,
        match=r"^bad: expected booleans \(one per pair\), got dtype boolean with missing",
    ):
        sera.selection_quality([True, False], pd.Series([True, pd.NA], dtype="boolean"))
    none = np.array([], dtype=bool)
    assert sera.selection_quality(none, none) == {
        "n_pairs": 0,
        "n_bad": 0,
        "n_dropped": 0,
        "n_dropped_bad": 0,
        "precision": None,
        "recall": None,
        "bad_share_selected": None,
        "bad_share_all": None,
    }
    # nothing kept: every pair dropped, no bad share of the selection
    out = sera.selection_quality(pd.Series([False, False]), pd.Series([True, False]))
    assert (out["precision"], out["recall"], out["bad_share_selected"]) == (0.5, 1.0, None)


def test_jaccard_names_the_side_holding_booleans_and_reads_each_selection_once():
    with pytest.raises(ValueError, match=r"^jaccard: a holds booleans; pass the selected keys"):
        sera.jaccard([np.True_], [1])
    with pytest.raises(
        ValueError,
        match=r"^jaccard: b holds booleans; pass the selected keys \(np.flatnonzero\(mask\) for a "
        r"mask\)$",
    ):
        sera.jaccard([0], [True])
    # generators: each is read once, then compared with every other selection
    matrix = sera.jaccard_matrix({"x": (k for k in [1, 2]), "y": (k for k in [2, 3, 4, 5])})
    assert matrix.loc["x", "y"] == matrix.loc["y", "x"] == 0.2
    assert matrix.index.tolist() == matrix.columns.tolist() == ["x", "y"]
    assert np.diag(matrix).tolist() == [1.0, 1.0]


def fisher(r: float, n: int, z: float) -> tuple[float, float, float]:
    """r with tanh(atanh(r) -+ z / sqrt(n - 3))."""
    half = z / math.sqrt(n - 3)
    return r, math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)


def test_pearson_interval_with_four_points_at_any_level():
    # x 0..3, y 0 2 1 3: deviations -1.5 -0.5 0.5 1.5 and -1.5 0.5 -0.5 1.5, r = 4 / 5 = 0.8
    got = sera.pearson_interval([0, 1, 2, 3], [0, 2, 1, 3])
    assert got == pytest.approx(fisher(0.8, 4, 1.959963984540054))
    got = sera.pearson_interval([0, 1, 2, 3], [0, 2, 1, 3], level=0.5)
    assert got == pytest.approx(fisher(0.8, 4, 0.6744897501960817))  # the 75% normal quantile


def test_pearson_interval_on_a_line_a_constant_y_and_unequal_lengths():
    assert sera.pearson_interval([1, 2, 3, 4], [2, 4, 6, 8]) == (1.0, 1.0, 1.0)
    assert sera.pearson_interval([1, 2, 3, 4], [8, 6, 4, 2]) == (-1.0, -1.0, -1.0)
    assert all(math.isnan(v) for v in sera.pearson_interval([0, 1, 2, 3], [1, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"^x has 3 values and y 4: one pair per point$"):
        sera.pearson_interval([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"^y: 1 of 4 values are NaN"):
        sera.pearson_interval([1, 2, 3, 4], [1, 2, np.nan, 4])


def correlation_pairs() -> pd.DataFrame:
    """Four pairs; at beta 2 the rewards are chosen 2, 4, 6, 8 and rejected 0, 2, 0, 4."""
    return pd.DataFrame(
        {
            "prompt_id": [f"q{i}" for i in range(4)],
            "prompt": [f"prompt {i}" for i in range(4)],
            "chosen": ["a", "bb", "ccc", "dddd"],
            "rejected": ["xx", "y", "z", "www"],
            "logp_policy_chosen": [-1.0, 0.0, 1.0, 2.0],
            "logp_policy_rejected": [-3.0, -2.0, -3.0, -1.0],
            "logp_ref_chosen": [-2.0, -2.0, -2.0, -2.0],
            "logp_ref_rejected": [-3.0, -3.0, -3.0, -3.0],
            "chosen_quality": [1.0, 0.0, 1.0, 1.0],
            "rejected_quality": [0.0, 0.0, 1.0, 0.0],
        }
    )


def test_reward_correlations_give_every_coefficient_and_interval_by_hand():
    got = sera.reward_correlations(correlation_pairs(), 2.0, level=0.9)
    z = 1.6448536269514722  # the 95% normal quantile: a 90% interval
    rewards = np.array([2, 4, 6, 8, 0, 2, 0, 4.0])
    quality = np.array([1, 0, 1, 1, 0, 0, 1, 0.0])
    length = np.array([1, 2, 3, 4, 2, 1, 1, 3.0])
    margin, gap, diff = (
        np.array([2, 2, 6, 4.0]),
        np.array([1, 0, 0, 1.0]),
        np.array([-1, 1, 2, 1.0]),
    )
    expected = {"n_pairs": 4, "n_responses": 8}
    for name, x, y, n in [
        ("quality", rewards, quality, 8),
        ("length", rewards, length, 8),
        ("margin_quality", margin, gap, 4),
        ("margin_length", margin, diff, 4),
    ]:
        r = float(np.corrcoef(x, y)[0, 1])
        expected[name], expected[f"{name}_low"], expected[f"{name}_high"] = fisher(r, n, z)
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected)
    # margin against length difference: 5.5 / sqrt(11 x 4.75)
    assert got["margin_length"] == pytest.approx(5.5 / math.sqrt(11 * 4.75))


def test_reward_correlations_name_the_default_source_of_a_missing_column():
    with pytest.raises(DatasetError, match=r"^<pairs>: missing column\(s\) \['chosen_quality'\]"):
        sera.reward_correlations(correlation_pairs().drop(columns="chosen_quality"), 1.0)
    with pytest.raises(DatasetError, match=r"^<pairs>: missing column\(s\) \['prompt'\]"):
        sera.reward_correlations(correlation_pairs().drop(columns="prompt"), 1.0)


# --- the implicit reward and the offline selection: the edges ---------------------------------


def test_simpos_token_check_allows_one_token_and_names_rows_by_their_index():
    one = IRM_PAIRS.assign(len_tokens_chosen=[1, 2, 10])
    # row 0: 2 x (-10 / 1 - -12 / 3) = 2 x (-10 + 4) = -12
    assert sera.implicit_reward_margin(one, 2.0, reward="simpo")[0] == -12.0
    short = IRM_PAIRS.assign(len_tokens_chosen=[0, 0, 1]).set_axis([7, 8, 9])
    with pytest.raises(
        DatasetError,
        match=r"^<pairs>: column 'len_tokens_chosen' holds token counts below 1 at rows \[7, 8\]; "
        r"SimPO's reward divides by them$",
    ):
        sera.implicit_reward_margin(short, 1.0, reward="simpo")
    many = pd.concat([IRM_PAIRS] * 3, ignore_index=True).assign(len_tokens_rejected=0)
    with pytest.raises(DatasetError, match=r"at rows \[0, 1, 2, 3, 4\];"):
        sera.implicit_reward_margin(many, 1.0, reward="simpo")
    with pytest.raises(
        DatasetError, match=r"^<pairs>: missing column\(s\) \['len_tokens_chosen'\]"
    ):
        sera.implicit_reward_margin(
            IRM_PAIRS.drop(columns="len_tokens_chosen"), 1.0, reward="simpo"
        )


def test_the_margin_reads_the_columns_it_is_given_and_refuses_an_infinite_or_text_beta():
    renamed = IRM_PAIRS.rename(
        columns={
            "logp_policy_chosen": "pc",
            "logp_policy_rejected": "pr",
            "logp_ref_chosen": "rc",
            "logp_ref_rejected": "rr",
            "len_tokens_chosen": "nc",
            "len_tokens_rejected": "nr",
        }
    )
    dpo = sera.implicit_reward_margin(
        renamed, 0.5, policy=("pc", "pr"), reference=("rc", "rr"), source="r.parquet"
    )
    np.testing.assert_allclose(dpo, [1.0, 1.5, -1.5])  # as the default columns' test
    simpo = sera.implicit_reward_margin(
        renamed, 2.0, reward="simpo", policy=("pc", "pr"), tokens=("nc", "nr")
    )
    np.testing.assert_allclose(simpo, [4.0, -3.0, 4.0])
    assert dpo.dtype == simpo.dtype == np.float64
    for beta, shown in ((float("inf"), "inf"), ("1", "'1'")):
        with pytest.raises(ValueError, match=rf"^beta must be a positive number, got {shown}$"):
            sera.implicit_reward_margin(IRM_PAIRS, beta)
    with pytest.raises(ValueError, match=r"^reward must be one of \('dpo', 'simpo'\), got 'ipo'$"):
        sera.implicit_reward_margin(IRM_PAIRS, 0.1, reward="ipo")


def test_kept_share_is_the_proportion_or_all_for_no_selection():
    assert sera.kept_share("irm", 0.7) == 0.7
    assert sera.kept_share("gold", 0.4) == 0.4
    assert sera.kept_share("none", 0.7) == 1.0
    with pytest.raises(
        ValueError,
        match=r"^sera.selection must be one of \('irm', 'none', 'reference', 'gold'\), got 'x'$",
    ):
        sera.kept_share("x", 0.5)


def test_selection_margin_by_the_reference_or_gold_names_the_criterion_and_default_source():
    pairs = offline_pairs(2).assign(chosen_quality=[0.5, 1.0], rejected_quality=[1.0, 0.25])
    # logp_policy_chosen - logp_policy_rejected = (-8 - i) - (-25 - i) = 17
    assert sera.selection_margin(pairs, "reference", np.zeros(2)).tolist() == [17.0, 17.0]
    assert sera.selection_margin(pairs, "gold", np.zeros(2)).tolist() == [-0.5, 0.75]
    assert sera.selection_margin(pairs, "none", [3, 1]).tolist() == [3.0, 1.0]
    with pytest.raises(
        DatasetError,
        match=r"^<offline pairs>: missing column\(s\) \['logp_policy_rejected'\]; .* \(sera.selection: "
        r"reference ranks by \['logp_policy_chosen', 'logp_policy_rejected'\]\)$",
    ):
        sera.selection_margin(pairs.drop(columns="logp_policy_rejected"), "reference", np.zeros(2))
    with pytest.raises(ValueError, match=r"sera.selection must be one of"):
        sera.selection_margin(pairs, "x", np.zeros(2))


def offline_scored(**extra) -> pd.DataFrame:
    """Four offline pairs; IRM / beta = (pc - rc) - (pr - rr) = pc - pr: 1, 0, -2, 4."""
    return offline_pairs(4).assign(
        logp_policy_chosen=[-1.0, -2.0, -3.0, -4.0],
        logp_policy_rejected=[-2.0, -2.0, -1.0, -8.0],
        logp_ref_chosen=0.0,
        logp_ref_rejected=0.0,
        **extra,
    )


def test_select_offline_reports_every_figure_of_the_selection():
    out, report = sera.select_offline(offline_scored(), beta=0.5, proportion=0.5)
    assert out["irm"].tolist() == [0.5, 0.0, -1.0, 2.0]
    assert out["selected"].tolist() == [True, False, False, True]
    assert report == {
        "selection": "irm",
        "n_pairs": 4,
        "n_selected": 2,
        "selection_proportion": 0.5,
        "ensemble": False,
        "ensemble_lambda": 0.0,
        "beta": 0.5,
        "reward": "dpo",
        "lowest_selected_margin": 0.5,
    }
    with pytest.raises(
        DatasetError, match=r"^<offline pairs>: missing column\(s\) \['logp_ref_chosen'\]"
    ):
        sera.select_offline(offline_scored().drop(columns="logp_ref_chosen"), 0.5, 0.5)


def test_select_offline_by_another_criterion_reports_no_ensemble_but_keeps_the_older_margin():
    # IRM under the (t-2) pair: p2c - p2r = 0, 0, 0, 8 (references 0)
    pairs = offline_scored(
        logp_policy2_chosen=[0.0, 0.0, 0.0, 8.0],
        logp_policy2_rejected=0.0,
        logp_ref2_chosen=0.0,
        logp_ref2_rejected=0.0,
    )
    out, report = sera.select_offline(pairs, 1.0, 0.5, lam=0.5, selection="reference")
    assert out["irm_prev2"].tolist() == [0.0, 0.0, 0.0, 8.0]
    assert out["margin"].tolist() == [1.0, 0.0, -2.0, 4.0]  # pc - pr: the reference's margin
    assert (report["ensemble"], report["ensemble_lambda"]) == (False, 0.0)
    out, report = sera.select_offline(pairs, 1.0, 0.5, lam=0.5)
    assert out["margin"].tolist() == [0.5, 0.0, -1.0, 6.0]  # 0.5 x (t-2) + 0.5 x (t-1)
    assert (report["ensemble"], report["ensemble_lambda"]) == (True, 0.5)


def test_any_one_column_of_the_older_pair_asks_for_all_of_them_naming_the_file():
    with pytest.raises(
        DatasetError,
        match=r"^off.parquet: missing column\(s\) \['logp_policy2_chosen', 'logp_policy2_rejected', "
        r"'logp_ref2_chosen'\]",
    ):
        sera.select_offline(offline_scored(logp_ref2_rejected=0.0), 1.0, 0.5, source="off.parquet")


def test_select_offline_by_simpo_scores_the_older_pair_by_simpo_too():
    pairs = offline_scored(
        len_tokens_chosen=[1, 2, 3, 4],
        len_tokens_rejected=[2, 2, 1, 4],
        logp_policy2_chosen=[-2.0, -2.0, -3.0, -4.0],
        logp_policy2_rejected=[-2.0, -4.0, -1.0, -4.0],
    )
    out, report = sera.select_offline(pairs, 2.0, 0.5, lam=0.5, reward="simpo")
    # 2 x (pc / nc - pr / nr): 2 x (-1 + 1), 2 x (-1 + 1), 2 x (-1 + 1), 2 x (-1 + 2)
    assert out["irm"].tolist() == [0.0, 0.0, 0.0, 2.0]
    # the older policy: 2 x (-2 + 1), 2 x (-1 + 2), 2 x (-1 + 1), 2 x (-1 + 1)
    assert out["irm_prev2"].tolist() == [-2.0, 2.0, 0.0, 0.0]
    assert out["selected"].tolist() == [False, True, False, True]  # margins -1, 1, 0, 1
    assert report["reward"] == "simpo"


def test_gold_labels_count_a_pair_as_bad_only_where_its_chosen_answer_is_worse():
    pairs = offline_scored(
        chosen_quality=[0.5, 0.5, 0.0, 1.0], rejected_quality=[0.5, 1.0, 1.0, 0.0]
    )
    _, report = sera.select_offline(pairs, 1.0, 0.5)  # keeps pairs 0 and 3 (IRM 1 and 4)
    # worse chosen: pairs 1 and 2 (a tie is not worse): both dropped
    assert report["gold_worse_chosen"]["n_bad"] == 2
    assert (report["gold_worse_chosen"]["precision"], report["gold_worse_chosen"]["recall"]) == (
        1.0,
        1.0,
    )


# --- one iteration's mixture: the edges ----------------------------------------------------------


def test_simpo_response_rewards_divide_by_the_tokens_and_allow_one_token():
    scores = pd.DataFrame(
        {
            "prompt_id": ["a", "a", "b"],
            "sample_idx": [0, 1, 0],
            "logp_policy": [-4.0, -9.0, -3.0],
            "len_tokens": [2, 3, 1],
            "reward": [7.0, 7.0, 7.0],
        }
    )
    out = sera.response_rewards(scores, "simpo", 0.5)
    assert out["reward"].tolist() == [-1.0, -1.5, -1.5]  # 0.5 x -4 / 2, 0.5 x -9 / 3, 0.5 x -3
    assert scores["reward"].tolist() == [7.0, 7.0, 7.0]
    assert sera.response_rewards(scores, "dpo", 0.5) is scores


def test_simpo_response_rewards_refuse_bad_tokens_naming_the_default_source():
    scores = pd.DataFrame(
        {"logp_policy": [-3.0] * 7, "len_tokens": [0] * 6 + [1]}, index=range(10, 17)
    )
    with pytest.raises(
        DatasetError,
        match=r"^<scores>: column 'len_tokens' holds token counts below 1 at rows "
        r"\[10, 11, 12, 13, 14\]; SimPO's reward divides by them$",
    ):
        sera.response_rewards(scores, "simpo", 1.0)
    with pytest.raises(
        DatasetError, match=r"^<scores>: column 'len_tokens' should hold int values"
    ):
        sera.response_rewards(scores.assign(len_tokens=1.0), "simpo", 1.0)
    with pytest.raises(DatasetError, match=r"^<scores>: column 'logp_policy' has NaN"):
        sera.response_rewards(scores.assign(logp_policy=np.nan, len_tokens=1), "simpo", 1.0)
    with pytest.raises(ValueError, match=r"^reward must be one of \('dpo', 'simpo'\), got 'ipo'$"):
        sera.response_rewards(scores, "ipo", 1.0)


def test_reference_logps_are_copied_from_the_named_columns_as_floats_and_int64_tokens():
    pairs = offline_pairs(2).assign(
        len_tokens_chosen=np.array([3, 4], dtype="int32"),
        len_tokens_rejected=np.array([5, 6], dtype="int32"),
        logp_policy_chosen=[-1, -2],  # integers: carried as floats
    )
    out = sera.with_reference_logps(pairs, "logp_policy")
    assert out["ref_chosen_logps"].tolist() == [-1.0, -2.0]
    assert out["ref_rejected_logps"].tolist() == [-25.0, -26.0]
    assert out["ref_chosen_tokens"].tolist() == [3, 4]
    assert out["ref_rejected_tokens"].tolist() == [5, 6]
    assert out["ref_chosen_logps"].dtype == out["ref_rejected_logps"].dtype == np.float64
    assert out["ref_chosen_tokens"].dtype == out["ref_rejected_tokens"].dtype == np.int64
    assert pairs["ref_chosen_logps"].tolist() == [-10.0, -11.0]  # the input is left as it was
    empty = sera.with_reference_logps(pairs.iloc[:0], "logp_policy")
    assert len(empty) == 0 and set(REF_COLUMNS) <= set(empty.columns)
    with pytest.raises(
        DatasetError,
        match=r"^<pairs>: missing column\(s\) \['len_tokens_chosen', 'len_tokens_rejected'\]",
    ):
        sera.with_reference_logps(offline_pairs(2), "logp_policy")
    with pytest.raises(
        DatasetError, match=r"^<pairs>: column 'len_tokens_rejected' should hold int"
    ):
        sera.with_reference_logps(pairs.assign(len_tokens_rejected=5.0), "logp_policy")
    with pytest.raises(DatasetError, match=r"^<pairs>: column 'logp_policy_rejected' has NaN"):
        sera.with_reference_logps(pairs.assign(logp_policy_rejected=np.nan), "logp_policy")


def selected_offline(n: int, selected: list[bool]) -> pd.DataFrame:
    return offline_pairs(n).assign(selected=selected)


def test_mix_iteration_names_its_default_sources():
    offline = selected_offline(4, [True, False, True, False])
    scores = scored_samples()
    with pytest.raises(
        DatasetError, match=r"^<offline selection>: missing column\(s\) \['selected'\]"
    ):
        sera.mix_iteration(
            offline.drop(columns="selected"), scores, proportion=0.5, generated=None, seed=0
        )
    with pytest.raises(
        ValueError,
        match=r"^<offline selection>: 2 pairs are selected, but a selection proportion of 0.75 "
        r"keeps 3 of 4: the selection was made with another proportion$",
    ):
        sera.mix_iteration(offline, scores, proportion=0.75, generated=None, seed=0)
    with pytest.raises(ValueError, match=r"^<scores>: asked for 4 bootstrapped pairs but only 3"):
        sera.mix_iteration(offline, scores, proportion=0.5, generated=1.0, seed=0)
    with pytest.raises(
        ValueError,
        match=r"^<pairs>: DICE's pairs are built by the DPO implicit reward; they cannot be "
        r"bootstrapped by 'simpo''s$",
    ):
        sera.mix_iteration(
            offline,
            scores,
            proportion=0.5,
            generated=None,
            seed=0,
            candidates=candidate_pairs([("a", 1, 2)]),
            reward="simpo",
            beta=1.0,
        )
    with pytest.raises(ValueError, match=r"^reward 'simpo' needs the beta of its reward$"):
        sera.mix_iteration(offline, scores, proportion=0.5, generated=None, seed=0, reward="simpo")


def test_mix_iteration_counts_dices_candidates_and_keeps_the_highest_of_them():
    offline = selected_offline(4, [True, False, True, False])
    # margins by reward: a 3 - 0: 0.5; b 1 - 3: 0.5; e 3 - 2: 0.2
    candidates = candidate_pairs([("a", 3, 0), ("b", 1, 3), ("e", 3, 2)])
    mixed, counts = sera.mix_iteration(
        offline, scored_samples(), proportion=0.5, generated=None, seed=0, candidates=candidates
    )
    assert counts == {
        "n_offline_all": 4,
        "n_offline": 2,
        "n_generated": 2,
        "n_candidates": 3,
        "n_mixed": 4,
        "bootstrap_ensemble": False,
        "bootstrap_ensemble_lambda": 0.0,
        "bootstrap": "dice_alpha",
        "bootstrap_reward": "dpo",
    }
    generated = mixed[mixed["source"] == "generated"]
    assert sorted(generated["prompt_id"]) == ["a", "b"]
    offline_rows = mixed[mixed["source"] == "offline"]
    assert sorted(offline_rows["prompt_id"]) == ["p0000", "p0002"]


def test_simpo_bootstraps_the_ensemble_by_both_policies_simpo_rewards():
    def simpo_scores(logps: list[float]) -> pd.DataFrame:
        # DPO rewards all tie: only SimPO's reward tells the responses apart
        return scored_samples({"a": [0.0, 0.0, 0.0]}).assign(logp_policy=logps, len_tokens=1)

    offline = selected_offline(2, [True, False])
    scores, prev2 = simpo_scores([-1.0, -2.0, -3.0]), simpo_scores([-3.0, -2.0, -1.0])
    # lambda 1: the older policy's SimPO reward alone, 2 x (-3, -2, -1): sample 2 over sample 0
    mixed, counts = sera.mix_iteration(
        offline,
        scores,
        proportion=0.5,
        generated=None,
        seed=0,
        scores_prev2=prev2,
        lam=1.0,
        reward="simpo",
        beta=2.0,
    )
    row = mixed[mixed["source"] == "generated"].iloc[0]
    assert (row["chosen"], row["rejected"]) == ("a response 2!!!!!!", "a response 0")
    assert (counts["bootstrap_ensemble"], counts["bootstrap_ensemble_lambda"]) == (True, 1.0)
    with pytest.raises(DatasetError, match=r"^<scores prev2>: column 'len_tokens' holds token"):
        sera.mix_iteration(
            offline,
            scores,
            proportion=0.5,
            generated=None,
            seed=0,
            scores_prev2=prev2.assign(len_tokens=0),
            reward="simpo",
            beta=2.0,
        )
    with pytest.raises(DatasetError, match=r"^<scores>: column 'len_tokens' holds token"):
        sera.mix_iteration(
            offline,
            scores.assign(len_tokens=0),
            proportion=0.5,
            generated=None,
            seed=0,
            reward="simpo",
            beta=2.0,
        )


# --- what the second mutation run left: dtypes, exact messages, sources passed on ----------------


def test_a_mask_error_without_missing_values_says_only_the_dtype():
    with pytest.raises(
        ValueError, match=r"^bad: expected booleans \(one per pair\), got dtype int64$"
    ):
        sera.selection_quality([True, False], np.array([0, 1]))


def test_selection_quality_reads_pandas_nullable_booleans():
    kept = pd.Series([True, False], dtype="boolean")
    # dropped: pair 1, bad: both; so 1 of 2 bad pairs dropped, the one kept pair bad
    assert sera.selection_quality(kept, [True, True]) == {
        "n_pairs": 2,
        "n_bad": 2,
        "n_dropped": 1,
        "n_dropped_bad": 1,
        "precision": 1.0,
        "recall": 0.5,
        "bad_share_selected": 1.0,
        "bad_share_all": 1.0,
    }


def test_simpos_margin_refuses_a_nan_log_prob():
    bad = IRM_PAIRS.assign(logp_policy_rejected=[-1.0, np.nan, -2.0])
    with pytest.raises(DatasetError, match=r"^<pairs>: column 'logp_policy_rejected' has NaN"):
        sera.implicit_reward_margin(bad, 1.0, reward="simpo")


def test_unequal_margin_lengths_name_the_rule_of_one_margin_per_pair():
    with pytest.raises(
        ValueError,
        match=r"^irm_prev2 has 2 margins and irm_prev 3: one margin per pair under each policy, "
        r"in the same order$",
    ):
        sera.ensemble_margin([1.0, 2.0, 3.0], [1.0, 2.0], 0.5)


def test_bootstrapping_names_its_source_in_errors_from_the_pair_builder_and_the_count():
    with pytest.raises(ValueError, match=r"^s.parquet: no prompt has at least 5 responses"):
        sera.bootstrap_pairs(scored_samples(), count=1, min_responses=5, source="s.parquet")
    with pytest.raises(
        ValueError, match=r"^s.parquet: asked for -1 pairs but only 3 are available$"
    ):
        sera.bootstrap_pairs(scored_samples(), count=-1, source="s.parquet")


def test_bootstrapped_margins_are_floats_for_integer_rewards():
    scores = scored_samples({"a": [0.0, 0.0, 0.0], "b": [0.0, 0.0]})
    scores["reward"] = np.array([1, 3, 2, 5, 0], dtype="int64")
    candidates = candidate_pairs([("a", 1, 0), ("b", 0, 1)])
    pairs = sera.bootstrap_pairs(scores, count=2, candidates=candidates)
    assert pairs["irm"].tolist() == [2.0, 5.0] and pairs["irm"].dtype == np.float64


def test_ensemble_rewards_refuse_one_response_scored_twice_with_different_rewards():
    scores = scored_samples({"a": [1.0, 2.0]})
    twice = pd.concat([scores, scores.iloc[[1]].assign(reward=9.0)], ignore_index=True)
    with pytest.raises(
        DatasetError, match=r"^<scores prev2>: repeated \(prompt_id, sample_idx\) at rows \[2\]$"
    ):
        sera.ensemble_rewards(scores, twice, 0.5)


def test_ensemble_rewards_are_floats_for_integer_rewards():
    scores = scored_samples({"a": [1.0, 2.0]})
    prev2 = scores.assign(reward=np.array([4, 6], dtype="int64"))
    out = sera.ensemble_rewards(scores, prev2, 0.5)
    assert out["reward_prev2"].dtype == out["ensemble_reward"].dtype == np.float64
    assert out["ensemble_reward"].tolist() == [2.5, 4.0]  # (4 + 1) / 2, (6 + 2) / 2


def test_swapping_keeps_the_row_labels_of_the_input():
    pairs = offline_pairs(20).set_axis(range(100, 120))
    out = sera.swap_labels(pairs, 0.2, seed=0)
    swapped = out["label_swapped"].to_numpy()
    assert out.index.tolist() == list(range(100, 120))
    assert (out.loc[swapped, "chosen"] == pairs.loc[swapped, "rejected"]).all()
    assert (out.loc[~swapped, "chosen"] == pairs.loc[~swapped, "chosen"]).all()
    assert out["chosen"].notna().all()


def test_swapping_names_its_source_for_a_one_sided_column_and_reads_nullable_marks():
    with pytest.raises(DatasetError, match=r"^x.parquet: column 'chosen_score' has no counterpart"):
        sera.swap_labels(offline_pairs(4).assign(chosen_score=1.0), 0.5, seed=0, source="x.parquet")
    marked = offline_pairs(4).assign(label_swapped=pd.array([True, False] * 2, dtype="boolean"))
    out = sera.swap_labels(marked, 0.0, seed=0)
    assert out["label_swapped"].dtype == bool
    assert out["label_swapped"].tolist() == [True, False, True, False]


def test_pearson_interval_names_x_and_does_not_warn_on_a_constant_side():
    import warnings

    with pytest.raises(ValueError, match=r"^x: 1 of 4 values are NaN"):
        sera.pearson_interval([1, 2, np.nan, 4], [1, 2, 3, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by a zero spread
        assert all(math.isnan(v) for v in sera.pearson_interval([1, 1, 1, 1], [1, 2, 3, 4]))
        assert all(math.isnan(v) for v in sera.pearson_interval([1, 2, 3, 4], [1, 1, 1, 1]))


def test_pearson_interval_of_sides_whose_spread_is_exactly_one():
    # [-1, 1, -1, 1] has standard deviation 1; with 0..3: deviations products sum to 2, squares
    # 5 and 4: r = 2 / sqrt(20)
    r = 2 / math.sqrt(20)
    assert sera.pearson_interval([-1, 1, -1, 1], [0, 1, 2, 3])[0] == pytest.approx(r)
    assert sera.pearson_interval([0, 1, 2, 3], [-1, 1, -1, 1])[0] == pytest.approx(r)


def test_reward_correlations_refuse_a_nan_quality_naming_the_source():
    bad = correlation_pairs().assign(rejected_quality=[0.0, np.nan, 1.0, 0.0])
    with pytest.raises(DatasetError, match=r"^c.parquet: column 'rejected_quality' has NaN"):
        sera.reward_correlations(bad, 1.0, source="c.parquet")


def test_selection_margin_by_irm_is_the_irm_as_floats_and_gold_needs_finite_quality():
    pairs = offline_pairs(2).assign(chosen_quality=[1, 3], rejected_quality=[2, 0])
    irm = sera.selection_margin(pairs, "irm", [3, 1])
    assert irm.tolist() == [3.0, 1.0] and irm.dtype == np.float64
    gold = sera.selection_margin(pairs, "gold", [3, 1])  # integer qualities
    assert gold.tolist() == [-1.0, 3.0] and gold.dtype == np.float64
    with pytest.raises(
        DatasetError,
        match=r"^<offline pairs>: column 'rejected_quality' has NaN .* \(sera.selection: gold ranks "
        r"by \['chosen_quality', 'rejected_quality'\]\)$",
    ):
        sera.selection_margin(pairs.assign(rejected_quality=[np.nan, 0.0]), "gold", [3, 1])


def older_pair_scored() -> pd.DataFrame:
    # IRM under the (t-2) pair: 0, 0, 0, 8; under the (t-1) pair: 1, 0, -2, 4
    return offline_scored(
        logp_policy2_chosen=[0.0, 0.0, 0.0, 8.0],
        logp_policy2_rejected=0.0,
        logp_ref2_chosen=0.0,
        logp_ref2_rejected=0.0,
    )


def test_select_offline_weighs_the_older_pair_by_zero_unless_lambda_is_given():
    out, report = sera.select_offline(older_pair_scored(), 1.0, 0.5)
    assert out["margin"].tolist() == [1.0, 0.0, -2.0, 4.0]
    assert (report["ensemble"], report["ensemble_lambda"]) == (True, 0.0)


def two_prompt_scores() -> pd.DataFrame:
    return scored_samples({"a": [0.0, 1.0], "b": [2.0, 0.0]}).assign(logp_policy=-1.0, len_tokens=1)


def test_mix_iteration_weighs_the_older_rewards_by_zero_unless_lambda_is_given():
    offline = selected_offline(4, [True, False, True, False])
    scores = two_prompt_scores()
    prev2 = scores.assign(reward=[5.0, 0.0, 0.0, 5.0])  # would flip both prompts' pairs
    mixed, counts = sera.mix_iteration(
        offline, scores, proportion=0.5, generated=None, seed=0, scores_prev2=prev2
    )
    generated = mixed[mixed["source"] == "generated"].sort_values("prompt_id")
    assert generated["chosen"].tolist() == ["a response 1!!!", "b response 0"]
    assert counts["bootstrap_ensemble_lambda"] == 0.0
    _, counts = sera.mix_iteration(offline, scores, proportion=0.5, generated=None, seed=0, lam=0.3)
    assert (counts["bootstrap_ensemble"], counts["bootstrap_ensemble_lambda"]) == (False, 0.0)


def test_mix_iteration_names_the_given_files_in_every_error():
    offline = selected_offline(4, [True, False, True, False])
    scores = two_prompt_scores()
    kwargs = dict(
        proportion=0.5,
        generated=None,
        seed=0,
        offline_source="sel.parquet",
        scores_source="s.parquet",
        scores_prev2_source="s2.parquet",
        candidates_source="c.parquet",
    )
    with pytest.raises(DatasetError, match=r"^s.parquet: column 'len_tokens' holds token counts"):
        sera.mix_iteration(offline, scores.assign(len_tokens=0), reward="simpo", beta=1.0, **kwargs)
    with pytest.raises(
        DatasetError, match=r"^sel.parquet: missing column\(s\) \['len_tokens_chosen'"
    ):
        sera.mix_iteration(offline, scores, ref_logps="logp_policy", **kwargs)
    with pytest.raises(DatasetError, match=r"^s.parquet: repeated \(prompt_id, sample_idx\)"):
        twice = pd.concat([scores, scores.iloc[[0]]], ignore_index=True)
        sera.mix_iteration(offline, twice, scores_prev2=scores, **kwargs)
    with pytest.raises(DatasetError, match=r"^s2.parquet: repeated \(prompt_id, sample_idx\)"):
        twice = pd.concat([scores, scores.iloc[[0]]], ignore_index=True)
        sera.mix_iteration(offline, scores, scores_prev2=twice, **kwargs)
    with pytest.raises(
        DatasetError, match=r"^c.parquet: the chosen response of 1 pair\(s\) is not in s.parquet"
    ):
        sera.mix_iteration(offline, scores, candidates=candidate_pairs([("a", 7, 0)]), **kwargs)
    with pytest.raises(ValueError, match=r"^s.parquet: asked for 3 bootstrapped pairs"):
        sera.mix_iteration(offline, scores, **{**kwargs, "generated": 0.75})
    clash = offline.assign(prompt_id=["a", "x", "y", "z"])  # "a" names another prompt there
    with pytest.raises(DatasetError, match=r"^s.parquet and sel.parquet: 1 prompt_id value"):
        sera.mix_iteration(clash, scores, **kwargs)


def test_the_offline_rows_of_the_mixture_carry_no_row_numbers_of_the_selection():
    # DICE's pairs with a column "index" (a frame written with its index): the mixture keeps the
    # columns both sides have, and the selected offline rows have no such column: it is left out
    offline = selected_offline(4, [False, True, False, True])
    scores = two_prompt_scores()
    candidates = candidate_pairs([("a", 1, 0), ("b", 0, 1)]).assign(index=[7, 8])
    mixed, _ = sera.mix_iteration(
        offline, scores, proportion=0.5, generated=None, seed=0, candidates=candidates
    )
    assert "index" not in mixed.columns and len(mixed) == 4


def test_the_dpo_margin_is_a_float_array_for_integer_log_probs_and_beta():
    integers = IRM_PAIRS.astype({c: "int64" for c in [*sera.POLICY_LOGPS, *sera.REF_LOGPS]})
    margin = sera.implicit_reward_margin(integers, 1)
    assert margin.dtype == np.float64 and margin.tolist() == [2.0, 3.0, -3.0]


def test_swapping_refuses_a_missing_earlier_mark():
    marks = pd.array([True, pd.NA, False, False], dtype="boolean")
    with pytest.raises(ValueError, match="missing values"):
        sera.swap_labels(offline_pairs(4).assign(label_swapped=marks), 0.5, seed=0)
