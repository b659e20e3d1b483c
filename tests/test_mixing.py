"""Tests for dicewf.mixing: experience replay of offline pairs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dicewf.io import DatasetError
from dicewf.mixing import counts, iteration_seed, mix


def pairs(n: int, tag: str, first_prompt: int = 0) -> pd.DataFrame:
    """``n`` pairs on prompts p{first_prompt}, p{first_prompt + 1}, ..."""
    ids = [f"p{first_prompt + i:04d}" for i in range(n)]
    return pd.DataFrame(
        {
            "prompt_id": ids,
            "prompt": [f"prompt {i}" for i in ids],
            "chosen": [f"{tag} chosen {i}" for i in ids],
            "rejected": [f"{tag} rejected {i}" for i in ids],
            "score_margin": [float(i) for i in range(n)],
        }
    )


# Both datasets cover the prompts p0000..p0199, as in DICE where D(alpha*) is built on the prompts
# of D_offline; the generated set also has 50 prompts of its own.
GENERATED = pairs(250, "gen")
OFFLINE = pairs(200, "off").assign(annotator="human")


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("n_pairs", [10, 40, 100])
def test_proportions_with_n_pairs(gamma, n_pairs):
    mixed = mix(GENERATED, OFFLINE, gamma, n_pairs, seed=0)
    n_offline = round(gamma * n_pairs)
    assert len(mixed) == n_pairs
    assert (mixed["source"] == "offline").sum() == n_offline
    assert (mixed["source"] == "generated").sum() == n_pairs - n_offline


def test_only_offline_with_gamma_one():
    mixed = mix(GENERATED, OFFLINE, 1.0, 30, seed=0)
    assert (mixed["source"] == "offline").all() and len(mixed) == 30
    assert mixed["chosen"].str.startswith("off").all()


def test_counts_rule():
    assert counts(0.25, 10, 999) == (8, 2)  # round(2.5) -> 2
    assert counts(0.5, None, 100) == (100, 100)
    assert counts(0.1, None, 90) == (90, 10)
    assert counts(0.0, None, 7) == (7, 0)


def test_without_n_pairs_uses_all_generated():
    generated = GENERATED.iloc[:120]
    mixed = mix(generated, pairs(300, "off"), 0.25, None, seed=3)
    assert len(mixed) == 160
    drawn = mixed[mixed["source"] == "generated"]
    assert sorted(drawn["prompt_id"]) == sorted(generated["prompt_id"])
    assert (mixed["source"] == "offline").sum() == 40  # 0.25 / 0.75 * 120
    with pytest.raises(ValueError, match="gamma = 1"):
        mix(GENERATED, OFFLINE, 1.0, None, seed=0)


@pytest.mark.parametrize("seed", range(5))
def test_offline_prompts_disjoint_from_generated(seed):
    mixed = mix(GENERATED, OFFLINE, 0.5, 200, seed=seed)
    generated = set(mixed.loc[mixed["source"] == "generated", "prompt_id"])
    offline = mixed.loc[mixed["source"] == "offline", "prompt_id"]
    assert generated.isdisjoint(offline)
    assert offline.is_unique and len(generated) == 100
    assert mixed.loc[mixed["source"] == "offline", "chosen"].str.startswith("off").all()
    assert mixed.loc[mixed["source"] == "generated", "chosen"].str.startswith("gen").all()


def test_same_seed_same_output_other_seed_other_draw():
    first = mix(GENERATED, OFFLINE, 0.5, 60, seed=7)
    pd.testing.assert_frame_equal(first, mix(GENERATED, OFFLINE, 0.5, 60, seed=7))
    other = mix(GENERATED, OFFLINE, 0.5, 60, seed=8)
    assert set(first["chosen"]) != set(other["chosen"])


def test_columns_sources_and_shuffle():
    mixed = mix(GENERATED, OFFLINE, 0.5, 100, seed=1)
    # score_margin is in both inputs, annotator only in the offline one
    assert mixed.columns.tolist() == [
        "prompt_id",
        "prompt",
        "chosen",
        "rejected",
        "source",
        "score_margin",
    ]
    assert set(mixed["source"]) == {"generated", "offline"}
    assert mixed.index.tolist() == list(range(100))
    head = mixed["source"].iloc[:50]
    assert 0 < (head == "offline").sum() < 50  # sources are interleaved


def test_too_few_rows_states_asked_and_available():
    with pytest.raises(ValueError, match="asked for 300 generated pairs .* only 250"):
        mix(GENERATED, OFFLINE, 0.0, 300, seed=0)
    with pytest.raises(ValueError, match="asked for 150 offline pairs .* only 50"):
        # every generated pair is used, leaving the 50 offline prompts p0250.. free
        mix(GENERATED, pairs(300, "off"), 0.375, 400, seed=0)
    with pytest.raises(ValueError, match="asked for 40 offline pairs .* only 0"):
        mix(GENERATED.iloc[:40], OFFLINE.iloc[:40], 0.5, 80, seed=0)


@pytest.mark.parametrize("gamma", [-0.1, 1.5, float("nan")])
def test_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        mix(GENERATED, OFFLINE, gamma, 10, seed=0)


def test_bad_inputs_name_their_file():
    with pytest.raises(DatasetError, match="gen.parquet.*rejected"):
        mix(
            GENERATED.drop(columns="rejected"),
            OFFLINE,
            0.5,
            10,
            seed=0,
            generated_source="gen.parquet",
        )
    with pytest.raises(ValueError, match="n_pairs"):
        mix(GENERATED, OFFLINE, 0.5, 0, seed=0)


def test_a_shortfall_of_generated_pairs_shrinks_the_mixture_when_asked():
    generated = pairs(12, "g")
    offline = pairs(200, "o", first_prompt=1000)
    with pytest.raises(ValueError, match="only 12 are available"):
        mix(generated, offline, gamma=0.5, n_pairs=100, seed=0)
    mixed = mix(generated, offline, gamma=0.5, n_pairs=100, seed=0, shortfall="shrink")
    assert (mixed["source"] == "generated").sum() == 12
    assert (mixed["source"] == "offline").sum() == 12  # gamma kept: 12 offline for 12 generated
    mixed = mix(generated, offline, gamma=0.25, n_pairs=100, seed=0, shortfall="shrink")
    assert (mixed["source"] == "offline").sum() == 4
    # enough pairs: shrink changes nothing
    pd.testing.assert_frame_equal(
        mix(generated, offline, 0.5, 10, 0, shortfall="shrink"), mix(generated, offline, 0.5, 10, 0)
    )
    with pytest.raises(ValueError, match="shortfall"):
        mix(generated, offline, 0.5, 10, 0, shortfall="drop")


# --- a new split every iteration ------------------------------------------------------------------


def test_the_iteration_seed_is_stable_and_differs_across_iterations_and_seeds():
    # pinned: a changed derivation would silently redraw every mixture
    assert [iteration_seed(0, t) for t in (1, 2, 3)] == [1137831782, 815816514, 596236757]
    assert iteration_seed(1, 1) == 1742381738
    seeds = {(s, t): iteration_seed(s, t) for s in range(5) for t in range(1, 11)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2**31 - 1 for v in seeds.values())
    assert iteration_seed(0, "2") == iteration_seed(0, 2)  # a wildcard's string works too
    with pytest.raises(ValueError, match="iteration must be >= 1, got 0"):
        iteration_seed(0, 0)


def run_mix_adapter(tmp_path: Path, iteration: int, name: str) -> pd.DataFrame:
    import runpy
    import types

    from dicewf.io import read_parquet
    from snakemake.iocontainers import Namedlist

    GENERATED.to_parquet(tmp_path / "pairs.parquet", index=False)
    OFFLINE.to_parquet(tmp_path / "offline.parquet", index=False)
    snakemake = types.SimpleNamespace(
        input=Namedlist(
            fromdict={
                "pairs": str(tmp_path / "pairs.parquet"),
                "offline": str(tmp_path / "offline.parquet"),
            }
        ),
        output=Namedlist(fromdict={"mixed": str(tmp_path / name)}),
        params=Namedlist(
            fromdict={
                "mix": {"gamma": 0.5, "n_pairs": 60, "seed": 0, "shortfall": "error"},
                "iteration": iteration,
            }
        ),
        log=[str(tmp_path / "mix.log")],
    )
    script = Path(__file__).parents[1] / "workflow" / "scripts" / "mix.py"
    runpy.run_path(str(script), init_globals={"snakemake": snakemake})
    return read_parquet(tmp_path / name)


def test_the_mix_rule_draws_a_new_split_each_iteration_and_the_same_one_again(
    tmp_path, restore_logging
):
    first = run_mix_adapter(tmp_path, 1, "iter1.parquet")
    second = run_mix_adapter(tmp_path, 2, "iter2.parquet")
    again = run_mix_adapter(tmp_path, 1, "iter1_again.parquet")
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, mix(GENERATED, OFFLINE, 0.5, 60, iteration_seed(0, 1)))
    assert set(first["chosen"]) != set(second["chosen"])
    assert (second["source"] == "offline").sum() == 30


def test_the_offline_pairs_are_a_seeded_draw_not_the_first_rows():
    # offline prompts disjoint from the generated ones: every offline pair is eligible, so only
    # the draw decides which 20 of the 200 come in
    offline = pairs(200, "off", first_prompt=1000)
    first_rows = set(offline["prompt_id"].iloc[:20])
    drawn = {}
    for seed in range(4):
        mixed = mix(GENERATED, offline, 0.5, 40, seed=seed)
        drawn[seed] = set(mixed.loc[mixed["source"] == "offline", "prompt_id"])
        assert len(drawn[seed]) == 20
        assert drawn[seed] != first_rows
    assert len({frozenset(d) for d in drawn.values()}) == 4  # each seed draws its own 20
    # the drawn ids span the whole offline set, not its head
    assert max(max(d) for d in drawn.values()) > "p1100"


# --- edges the mutation benchmark (benchmarks/mutation.py) showed untested -------------------------


def test_one_pair_is_a_valid_mixture_size():
    assert counts(0.0, 1, 5) == (1, 0)
    assert counts(1.0, 1, 0) == (0, 1)


def test_an_empty_side_is_allowed_when_the_mixture_takes_nothing_from_it():
    no_generated = GENERATED.iloc[:0]
    mixed = mix(no_generated, OFFLINE, 1.0, 30, seed=0)
    assert (mixed["source"] == "offline").sum() == 30 and len(mixed) == 30
    mixed = mix(GENERATED, OFFLINE.iloc[:0], 0.0, 30, seed=0)
    assert (mixed["source"] == "generated").sum() == 30 and len(mixed) == 30


def test_exactly_as_many_fresh_offline_pairs_as_asked_is_enough():
    generated = pairs(10, "gen")
    offline = pairs(10, "off", first_prompt=100)  # all 10 on prompts of their own
    mixed = mix(generated, offline, 0.5, 20, seed=0)
    assert sorted(mixed.loc[mixed["source"] == "offline", "prompt_id"]) == sorted(
        offline["prompt_id"]
    )


def test_errors_name_the_default_sources_and_the_counts_exactly():
    with pytest.raises(
        ValueError,
        match=r"^<generated>: asked for 300 generated pairs \(gamma=0.0, n_pairs=300\) but only "
        r"250 are available$",
    ):
        mix(GENERATED, OFFLINE, 0.0, 300, seed=0)
    with pytest.raises(
        ValueError, match=r"^gamma = 1 leaves no room for generated pairs; pass n_pairs$"
    ):
        counts(1.0, None, 10)
    with pytest.raises(DatasetError, match=r"^<offline>: missing column\(s\) \['rejected'\]"):
        mix(GENERATED, OFFLINE.drop(columns="rejected"), 0.5, 10, seed=0)
    with pytest.raises(DatasetError, match=r"^off.parquet: missing column\(s\) \['rejected'\]"):
        mix(GENERATED, OFFLINE.drop(columns="rejected"), 0.5, 10, 0, offline_source="off.parquet")


def test_an_id_naming_two_prompts_across_the_files_is_refused_naming_both_files_and_the_id():
    offline = OFFLINE.copy()
    offline.loc[offline["prompt_id"] == "p0003", "prompt"] = "another prompt"
    with pytest.raises(
        DatasetError,
        match=r"^gen.parquet and off.parquet: 1 prompt_id value\(s\) name different prompts in "
        r"the two files, e.g. \['p0003'\]; the mixture keeps generated and offline pairs apart "
        r"by prompt_id, so an id must name one prompt$",
    ):
        mix(
            GENERATED,
            offline,
            0.5,
            10,
            0,
            generated_source="gen.parquet",
            offline_source="off.parquet",
        )


def test_shrink_with_no_generated_pair_is_an_error_and_one_pair_shrinks(caplog):
    offline = pairs(20, "o", first_prompt=1000)
    with pytest.raises(ValueError, match=r"^g.parquet: no generated pair to mix$"):
        mix(pairs(0, "g"), offline, 0.5, 10, 0, shortfall="shrink", generated_source="g.parquet")
    with caplog.at_level("WARNING", logger="dicewf.mixing"):
        mixed = mix(
            pairs(1, "g"), offline, 0.5, 10, 0, shortfall="shrink", generated_source="g.parquet"
        )
    assert mixed["source"].tolist().count("generated") == 1 and len(mixed) == 2
    assert caplog.messages == [
        "g.parquet: 1 generated pairs of the 5 asked for; the mixture shrinks to keep gamma=0.5"
    ]


def test_shrink_leaves_a_mixture_alone_when_the_generated_pairs_just_suffice(caplog):
    # 8 generated pairs for n_pairs=10, gamma=0.25: round(2.5) = 2 offline and 8 generated;
    # shrinking would recount the offline side as round(0.25 / 0.75 * 8) = 3
    with caplog.at_level("WARNING", logger="dicewf.mixing"):
        mixed = mix(pairs(8, "g"), pairs(20, "o", 1000), 0.25, 10, 0, shortfall="shrink")
    assert (mixed["source"] == "offline").sum() == 2 and len(mixed) == 10
    assert caplog.messages == []


def test_reference_logps_of_one_side_are_kept_and_nan_on_the_other():
    ref = {
        "ref_chosen_logps": -1.0,
        "ref_rejected_logps": -2.0,
        "ref_chosen_tokens": 3,
        "ref_rejected_tokens": 4,
    }
    offline = pairs(100, "off", first_prompt=1000).assign(**ref)
    mixed = mix(GENERATED, offline, 0.5, 40, seed=0)
    assert mixed.columns.tolist() == [
        "prompt_id",
        "prompt",
        "chosen",
        "rejected",
        "source",
        "score_margin",
        *ref,
    ]
    from_offline = mixed["source"] == "offline"
    for column, value in ref.items():
        assert (mixed.loc[from_offline, column] == value).all()
        assert mixed.loc[~from_offline, column].isna().all()


def test_an_input_source_column_is_replaced_by_the_mixtures_own():
    mixed = mix(GENERATED.assign(source="old"), OFFLINE.assign(source="old"), 0.5, 40, seed=0)
    assert mixed.columns.tolist().count("source") == 1
    assert sorted(set(mixed["source"])) == ["generated", "offline"]
