"""Tests for dicewf.sera: SeRA's implicit reward margin, selection, bootstrapping and mixture."""

from __future__ import annotations

import itertools
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
