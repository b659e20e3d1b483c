"""Tests for dicewf.io: dataset contracts and atomic outputs."""

from __future__ import annotations

import json
import stat

import numpy as np
import pandas as pd
import pytest
from dicewf.io import (
    DatasetError,
    atomic_path,
    check_frame,
    check_one_prompt_per_id,
    finite_or_none,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
    write_settings,
    write_text,
    write_yaml,
)

SOURCE = "results/dice/iter1/pairs.parquet"


def pairs(n: int = 3) -> pd.DataFrame:
    """``n`` preference pairs (``n`` may be 0: the columns keep their string dtype)."""
    m = max(n, 1)
    return pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(m)],
            "prompt": [f"prompt {i}" for i in range(m)],
            "chosen": [f"good {i}" for i in range(m)],
            "rejected": [f"bad {i}" for i in range(m)],
        }
    ).iloc[:n]


def leftovers(path) -> list[str]:
    """Temporary siblings that atomic_path would have created for ``path``."""
    return sorted(
        p.name
        for pattern in (f".{path.name}.tmp-*", f".{path.name}.old-*")
        for p in path.parent.glob(pattern)
    )


# --- check_frame -------------------------------------------------------------------------------


def test_check_frame_returns_a_valid_frame_unchanged():
    df = pairs()
    assert check_frame(df, "pairs", SOURCE) is df


def test_missing_column_names_source_and_column():
    df = pairs().drop(columns="rejected")
    with pytest.raises(DatasetError) as err:
        check_frame(df, "pairs", SOURCE)
    message = str(err.value)
    assert SOURCE in message
    assert "'rejected'" in message
    # the columns that are there are listed too, so a renamed column is easy to spot
    assert "'chosen'" in message


def test_wrong_dtype_names_column_kind_and_dtype():
    df = pd.DataFrame({"sample_idx": [0.5, 1.5], "reward": [1.0, 2.0]})
    with pytest.raises(DatasetError) as err:
        check_frame(df, {"sample_idx": "int", "reward": "float"}, SOURCE)
    message = str(err.value)
    assert SOURCE in message
    assert "'sample_idx'" in message and "int" in message and "float64" in message


def test_integer_column_is_accepted_as_float():
    df = pd.DataFrame({"reward": [1, 2, 3]})
    assert check_frame(df, {"reward": "float"}) is df


def test_missing_strings_are_named_by_row():
    df = pairs(4)
    df.loc[2, "chosen"] = None
    with pytest.raises(DatasetError) as err:
        check_frame(df, "pairs", SOURCE)
    message = str(err.value)
    assert SOURCE in message and "'chosen'" in message and "[2]" in message


def test_non_finite_rows_are_named_with_a_count():
    df = pd.DataFrame({"x": [0.0, np.nan, 1.0, np.inf, -np.inf, 2.0]})
    with pytest.raises(DatasetError) as err:
        check_frame(df, {"x": "float"}, SOURCE, finite=("x",))
    message = str(err.value)
    assert SOURCE in message and "'x'" in message
    assert "[1, 3, 4]" in message
    assert "3 in all" in message


def test_non_finite_values_pass_when_the_column_is_not_listed_as_finite():
    df = pd.DataFrame({"x": [np.nan, np.inf], "y": [1.0, 2.0]})
    assert check_frame(df, {"x": "float", "y": "float"}, finite=("y",)) is df


def test_empty_frame_is_an_error_unless_allowed():
    empty = pairs(0)
    with pytest.raises(DatasetError, match="empty") as err:
        check_frame(empty, "pairs", SOURCE)
    assert SOURCE in str(err.value)
    assert check_frame(empty, "pairs", SOURCE, allow_empty=True) is empty


def test_empty_frame_still_needs_its_columns():
    with pytest.raises(DatasetError, match="'prompt'"):
        check_frame(pairs(0)[["prompt_id"]], "prompts", SOURCE, allow_empty=True)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown column kind 'text'"):
        check_frame(pd.DataFrame({"a": ["x"]}), {"a": "text"})


# --- read_parquet ------------------------------------------------------------------------------


def test_read_parquet_names_a_missing_path(tmp_path):
    path = tmp_path / "nowhere" / "samples.parquet"
    with pytest.raises(DatasetError) as err:
        read_parquet(path, "samples")
    assert str(path) in str(err.value)


def test_read_parquet_checks_the_contract_and_names_the_file(tmp_path):
    path = tmp_path / "pairs.parquet"
    write_parquet(pairs().drop(columns="chosen"), path)
    with pytest.raises(DatasetError) as err:
        read_parquet(path, "pairs")
    assert str(path) in str(err.value) and "'chosen'" in str(err.value)


def test_read_parquet_passes_check_options(tmp_path):
    path = tmp_path / "pairs.parquet"
    write_parquet(pairs(0), path)
    with pytest.raises(DatasetError, match="empty"):
        read_parquet(path, "pairs")
    assert len(read_parquet(path, "pairs", allow_empty=True)) == 0


# --- atomic writes -----------------------------------------------------------------------------


def test_write_parquet_round_trip_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "folder" / "pairs.parquet"
    df = pairs(5)
    write_parquet(df, path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)
    assert leftovers(path) == []


def test_write_parquet_replaces_an_earlier_version(tmp_path):
    path = tmp_path / "pairs.parquet"
    write_parquet(pairs(2), path)
    write_parquet(pairs(7), path)
    assert len(pd.read_parquet(path)) == 7
    assert leftovers(path) == []


def test_failed_body_keeps_the_earlier_version(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(path) as tmp:
        assert tmp != path and tmp.parent == path.parent
        tmp.write_text("half-written")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert leftovers(path) == []


def test_failed_body_creates_nothing(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("half-written")
        raise KeyboardInterrupt
    assert not path.exists()
    assert leftovers(path) == []


def test_write_parquet_failure_leaves_the_destination_alone(tmp_path):
    path = tmp_path / "pairs.parquet"
    write_parquet(pairs(2), path)
    unwritable = pd.DataFrame({"obj": [object()]})
    with pytest.raises(ValueError, match="obj"):  # pyarrow's ArrowInvalid
        write_parquet(unwritable, path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), pairs(2))
    assert leftovers(path) == []


def test_directory_mode_replaces_an_existing_folder(tmp_path):
    path = tmp_path / "policy"
    path.mkdir()
    (path / "old_weights.bin").write_text("old")
    with atomic_path(path, is_dir=True) as tmp:
        assert tmp.is_dir() and tmp != path
        # while the body runs, the earlier folder is still complete
        assert (path / "old_weights.bin").read_text() == "old"
        (tmp / "model.safetensors").write_text("new")
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert (path / "model.safetensors").read_text() == "new"
    assert leftovers(path) == []


def test_directory_mode_failure_keeps_the_earlier_folder(tmp_path):
    path = tmp_path / "policy"
    path.mkdir()
    (path / "weights.bin").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path, is_dir=True) as tmp:
        (tmp / "weights.bin").write_text("partial")
        raise RuntimeError("out of memory")
    assert [p.name for p in path.iterdir()] == ["weights.bin"]
    assert (path / "weights.bin").read_text() == "old"
    assert leftovers(path) == []


def test_outputs_follow_the_umask_like_an_ordinary_open(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    atomic = tmp_path / "atomic.json"
    write_json({}, atomic)
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    plain_dir = tmp_path / "plain_dir"
    plain_dir.mkdir()
    with atomic_path(tmp_path / "policy", is_dir=True):
        pass
    assert stat.S_IMODE((tmp_path / "policy").stat().st_mode) == stat.S_IMODE(
        plain_dir.stat().st_mode
    )


# --- JSON --------------------------------------------------------------------------------------


def test_write_json_casts_numpy_scalars_to_plain_numbers(tmp_path):
    path = tmp_path / "alpha.json"
    write_json(
        {
            "alpha": np.float64(0.0125),
            "n": np.int64(42),
            "x32": np.float32(0.5),
            "ok": np.bool_(True),
            "nested": [np.int64(1), {"v": np.float64(2.5)}],
        },
        path,
    )
    text = path.read_text()
    assert "np." not in text and "numpy" not in text
    loaded = json.loads(text)
    assert loaded == {"alpha": 0.0125, "n": 42, "x32": 0.5, "ok": True, "nested": [1, {"v": 2.5}]}
    assert type(loaded["n"]) is int and type(loaded["alpha"]) is float
    assert read_json(path) == loaded
    assert leftovers(path) == []


def test_write_json_failure_leaves_the_earlier_version(tmp_path):
    path = tmp_path / "metrics.json"
    write_json({"v": 1}, path)
    with pytest.raises(TypeError, match="not JSON serialisable: set"):
        write_json({"v": {1, 2}}, path)
    assert json.loads(path.read_text()) == {"v": 1}
    assert leftovers(path) == []


def test_read_json_names_a_missing_path(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(DatasetError, match="missing.json"):
        read_json(path)


def test_an_empty_frame_built_from_lists_is_accepted_when_allowed():
    empty = pd.DataFrame({"prompt_id": [], "prompt": []})  # pandas gives float64 columns
    assert check_frame(empty, "prompts", "e.parquet", allow_empty=True) is empty
    with pytest.raises(DatasetError, match="e.parquet: dataset is empty"):
        check_frame(empty, "prompts", "e.parquet")


# --- edges the mutation benchmark (benchmarks/mutation.py) showed untested -------------------------


def test_int_and_bool_columns_pass_as_their_kind_and_fail_as_the_other():
    df = pd.DataFrame({"n": [1, 2], "flag": [True, False], "x": [0.5, 1.5]})
    assert check_frame(df, {"n": "int", "flag": "bool"}) is df
    with pytest.raises(
        DatasetError, match=r"^<frame>: column 'x' should hold int values, found dtype float64$"
    ):
        check_frame(df, {"x": "int"})
    with pytest.raises(
        DatasetError, match=r"^<frame>: column 'n' should hold bool values, found dtype int64$"
    ):
        check_frame(df, {"n": "bool"})


def test_a_str_column_is_checked_by_dtype_family_so_any_object_column_passes():
    df = pd.DataFrame({"prompt_id": ["a", "b"], "prompt": [("tuple",), 3]})  # object dtype
    assert check_frame(df, {"prompt_id": "str", "prompt": "str"}) is df


def test_at_most_five_offending_rows_are_listed():
    df = pd.DataFrame({"prompt_id": [None] * 7, "reward": [float("nan")] * 7})
    with pytest.raises(
        DatasetError,
        match=r"^<frame>: column 'prompt_id' has missing values at rows \[0, 1, 2, 3, 4\]$",
    ):
        check_frame(df, {"prompt_id": "str"})
    with pytest.raises(
        DatasetError,
        match=r"^<frame>: column 'reward' has NaN or infinite values at rows \[0, 1, 2, 3, 4\] \(7 in all\)$",
    ):
        check_frame(df, {"reward": "float"}, finite=("reward",))


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("bool", pd.array([True, None, False], dtype="boolean")),
        ("int", pd.array([1, None, 3], dtype="Int64")),
    ],
)
def test_a_missing_value_in_a_nullable_bool_or_int_column_is_named_with_its_row(kind, values):
    df = pd.DataFrame({"label": values})
    with pytest.raises(
        DatasetError, match=r"^p.parquet: column 'label' has missing values at rows \[1\]$"
    ):
        check_frame(df, {"label": kind}, "p.parquet")
    assert check_frame(df.dropna(), {"label": kind}) is not None


def test_a_float_column_may_hold_nan_unless_it_must_be_finite():
    df = pd.DataFrame({"reward": [0.5, float("nan")]})
    assert check_frame(df, {"reward": "float"}) is df


def test_a_non_numeric_value_in_a_finite_column_is_named_as_not_finite():
    df = pd.DataFrame({"reward": ["1.5", "high"]})
    with pytest.raises(
        DatasetError, match=r"^s.parquet: column 'reward' has NaN or infinite values at rows \[1\]"
    ):
        check_frame(df, {"reward": "str"}, "s.parquet", finite=("reward",))


def two_prompts_for_p1() -> pd.DataFrame:
    return pd.DataFrame(
        {"prompt_id": ["p0", "p1", "p1", "p2", "p1"], "prompt": ["a", "b", "c", "d", "b"]}
    )


def test_a_named_schema_with_prompt_id_and_prompt_checks_one_prompt_per_id_by_default():
    with pytest.raises(
        DatasetError,
        match=r"^prompts.parquet: 1 prompt_id value\(s\) carry more than one prompt text \(a "
        r"prompt_id must name one prompt\); first ones with their rows: \{'p1': \[1, 2, 4\]\}$",
    ):
        check_frame(two_prompts_for_p1(), "prompts", "prompts.parquet")
    with pytest.raises(DatasetError, match=r"^<frame>: 1 prompt_id value\(s\)"):
        check_one_prompt_per_id(two_prompts_for_p1())
    # a repeated id with one text is fine
    check_frame(two_prompts_for_p1().iloc[[0, 1, 4]], "prompts")


def test_one_prompt_per_id_is_off_for_a_mapping_schema_or_when_turned_off():
    df = two_prompts_for_p1()
    assert check_frame(df, {"prompt_id": "str", "prompt": "str"}) is df
    assert check_frame(df, "prompts", one_prompt_per_id=False) is df
    with pytest.raises(DatasetError, match="carry more than one prompt text"):
        check_frame(df, {"prompt_id": "str", "prompt": "str"}, one_prompt_per_id=True)


def test_write_parquet_drops_the_index_of_a_filtered_frame(tmp_path):
    path = tmp_path / "pairs.parquet"
    write_parquet(pairs(5).iloc[[1, 3]], path)
    back = pd.read_parquet(path)
    assert back.index.tolist() == [0, 1]
    assert back.columns.tolist() == ["prompt_id", "prompt", "chosen", "rejected"]


def test_write_json_is_sorted_indented_by_two_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "m.json"
    write_json({"b": 1, "a": [2]}, path)
    assert path.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'


def test_write_json_writes_nan_unless_told_not_to_and_then_names_the_file(tmp_path):
    path = tmp_path / "m.json"
    write_json({"x": float("nan")}, path)
    assert path.read_text() == '{\n  "x": NaN\n}\n'
    with pytest.raises(
        ValueError,
        match=r"^.*bad.json: Out of range float values are not JSON compliant.* "
        r"\(NaN and infinity are not JSON\)$",
    ):
        write_json({"x": float("inf")}, tmp_path / "bad.json", allow_nan=False)
    assert not (tmp_path / "bad.json").exists()


def test_finite_or_none_replaces_nan_and_infinity_at_any_depth_and_keeps_the_rest():
    obj = {"a": [1.0, float("nan"), {"b": float("-inf")}], "c": 2, "d": "x", "e": (3.5,)}
    assert finite_or_none(obj) == {"a": [1.0, None, {"b": None}], "c": 2, "d": "x", "e": [3.5]}


def test_write_text_and_write_yaml_write_their_content_keys_in_order(tmp_path):
    write_text("hello\n", tmp_path / "t.txt")
    assert (tmp_path / "t.txt").read_text() == "hello\n"
    write_yaml({"z": 1, "a": {"y": [1, 2]}}, tmp_path / "c.yaml")
    assert (tmp_path / "c.yaml").read_text() == "z: 1\na:\n  y:\n  - 1\n  - 2\n"
    assert leftovers(tmp_path / "c.yaml") == []


# --- settings files (the experiment_config and train_args rules) -------------------------------
def test_write_settings_writes_yaml_in_the_blocks_order_and_json_sorted(tmp_path):
    import yaml

    block = {"max_steps": 60, "beta": 0.1, "nested": {"z": 1, "a": [1, 2]}}
    line = write_settings(block, tmp_path / "config.yaml")
    assert line == f"{tmp_path / 'config.yaml'}: 3 keys\n"
    text = (tmp_path / "config.yaml").read_text()
    assert yaml.safe_load(text) == block
    assert text.index("max_steps") < text.index("beta")  # the block's order, not sorted
    write_settings(block, tmp_path / "args.json")
    text = (tmp_path / "args.json").read_text()
    assert json.loads(text) == block
    assert text.index('"beta"') < text.index('"max_steps"')  # sorted keys


def test_write_settings_refuses_another_suffix_naming_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"args\.toml: settings are written as \.yaml or \.json"):
        write_settings({"beta": 0.1}, tmp_path / "args.toml")
    assert not (tmp_path / "args.toml").exists()
