import pandas as pd
import pytest
from dicewf.sharding import gather, parse_scatteritem, shard


def test_parse_scatteritem():
    assert parse_scatteritem("1-of-3") == (0, 3)
    assert parse_scatteritem("3-of-3") == (2, 3)
    for bad in ("0-of-3", "4-of-3", "1of3", "a-of-b"):
        with pytest.raises(ValueError, match="i-of-n"):
            parse_scatteritem(bad)


@pytest.mark.parametrize("n,count", [(10, 1), (10, 3), (7, 7), (5, 2), (100, 8)])
def test_shards_are_contiguous_balanced_and_cover_every_row_once(n, count):
    df = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(n)], "x": range(n)})
    parts = [shard(df, i, count) for i in range(count)]
    assert pd.concat(parts, ignore_index=True).equals(df)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="out of range"):
        shard(df, count, count)


def test_gather_restores_the_order_and_refuses_overlap():
    df = pd.DataFrame({"prompt_id": ["a", "a", "b", "c"], "sample_idx": [0, 1, 0, 0]})
    parts = [df.iloc[:2], df.iloc[2:]]
    assert gather(parts, ["s1", "s2"]).equals(df.reset_index(drop=True))
    with pytest.raises(ValueError, match="more than one shard.*s1.*s2"):
        gather([df.iloc[:3], df.iloc[2:]], ["s1", "s2"])
    with pytest.raises(ValueError, match="no shard"):
        gather([], [])


# --- edges the mutation benchmark (benchmarks/mutation.py) showed untested -------------------------


def test_gather_numbers_the_rows_afresh_when_each_shard_counts_from_zero():
    parts = [
        pd.DataFrame({"prompt_id": ["a", "b"], "sample_idx": [0, 0]}),
        pd.DataFrame({"prompt_id": ["c"], "sample_idx": [0]}),
    ]
    assert gather(parts, ["s1", "s2"]).index.tolist() == [0, 1, 2]


def test_gather_refuses_a_key_twice_even_when_the_rows_differ_elsewhere():
    parts = [
        pd.DataFrame({"prompt_id": ["a"], "sample_idx": [0], "response": ["x"]}),
        pd.DataFrame({"prompt_id": ["a"], "sample_idx": [0], "response": ["y"]}),
    ]
    with pytest.raises(
        ValueError,
        match=r"^\{'prompt_id': 'a', 'sample_idx': 0\} appears in more than one shard: "
        r"\['s1', 's2'\]$",
    ):
        gather(parts, ["s1", "s2"])
    with pytest.raises(ValueError, match=r"^no shard to gather$"):
        gather([], [])


def test_gather_names_the_first_row_in_shard_order_whose_key_repeats():
    # a (row 0) repeats in shard 3, b (row 1) in shard 2: the error names a and its two shards
    parts = [
        pd.DataFrame({"prompt_id": ["a", "b"], "sample_idx": [0, 0]}),
        pd.DataFrame({"prompt_id": ["b"], "sample_idx": [0]}),
        pd.DataFrame({"prompt_id": ["a"], "sample_idx": [0]}),
    ]
    with pytest.raises(ValueError, match=r"^\{'prompt_id': 'a', .*: \['s1', 's3'\]$"):
        gather(parts, ["s1", "s2", "s3"])


def test_gather_refuses_fewer_source_names_than_shards_rather_than_misname_owners():
    parts = [pd.DataFrame({"prompt_id": ["a"], "sample_idx": [0]})] * 2
    with pytest.raises(ValueError, match="zip"):  # zip(strict=True): a caller's bug
        gather(parts, ["s1"])
