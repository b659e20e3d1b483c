"""Atomic outputs and dataset contracts.

Every file a rule writes goes through this module: it is written under a temporary name in the
destination folder and renamed into place, so a job killed half-way leaves nothing that looks
complete. Every dataset a rule reads is checked against a column contract, so a wrong file fails
with its path and the offending column or row named.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd


class DatasetError(ValueError):
    """A dataset does not satisfy its contract; the message names file, column and rows."""


# Column contracts: column -> kind. Kinds are checked loosely by pandas dtype family.
KINDS = {"str", "int", "float", "bool"}

SCHEMAS: dict[str, dict[str, str]] = {
    "prompts": {"prompt_id": "str", "prompt": "str"},
    "eval_prompts": {"prompt_id": "str", "prompt": "str", "reference": "str"},
    "samples": {
        "prompt_id": "str",
        "prompt": "str",
        "sample_idx": "int",
        "response": "str",
        "finish_reason": "str",
        "seed": "int",
    },
    "scores": {
        "prompt_id": "str",
        "prompt": "str",
        "sample_idx": "int",
        "response": "str",
        "finish_reason": "str",
        "logp_policy": "float",
        "logp_ref": "float",
        "logratio": "float",
        "beta": "float",
        "reward": "float",
        "len_chars": "int",
        "len_tokens": "int",
    },
    # what the alpha search reads: implicit-reward scores and LLM-as-a-Judge scores both have it
    "rewards": {
        "prompt_id": "str",
        "prompt": "str",
        "sample_idx": "int",
        "response": "str",
        "finish_reason": "str",
        "reward": "float",
        "len_chars": "int",
        "len_tokens": "int",
    },
    "pairs": {
        "prompt_id": "str",
        "prompt": "str",
        "chosen": "str",
        "rejected": "str",
    },
    "mixed": {
        "prompt_id": "str",
        "prompt": "str",
        "chosen": "str",
        "rejected": "str",
        "source": "str",
    },
}


# LLM-as-a-Judge scores: the rewards columns and the judge's own text
SCHEMAS["judge_scores"] = {**SCHEMAS["rewards"], "judgement": "str"}

# How many offending values or rows an error message lists (it always gives the count)
SHOWN = 5


def _kind_ok(series: pd.Series, kind: str) -> bool:
    if kind == "str":
        return pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series)
    if kind == "int":
        return pd.api.types.is_integer_dtype(series)
    if kind == "float":
        return pd.api.types.is_float_dtype(series) or pd.api.types.is_integer_dtype(series)
    if kind == "bool":
        return pd.api.types.is_bool_dtype(series)
    raise ValueError(f"unknown column kind {kind!r}; expected one of {sorted(KINDS)}")


def check_frame(
    df: pd.DataFrame,
    schema: str | Mapping[str, str],
    source: str | os.PathLike = "<frame>",
    *,
    allow_empty: bool = False,
    finite: tuple[str, ...] = (),
    one_prompt_per_id: bool | None = None,
) -> pd.DataFrame:
    """Check ``df`` against a column contract; raise :class:`DatasetError` naming what is wrong.

    ``schema`` is a name from :data:`SCHEMAS` or a mapping column -> kind. Columns listed in
    ``finite`` must hold no NaN or infinite value; the first offending rows are named. With
    ``one_prompt_per_id`` (the default for a named schema with ``prompt_id`` and ``prompt``)
    every ``prompt_id`` must carry a single prompt text (:func:`check_one_prompt_per_id`).
    """
    spec = SCHEMAS[schema] if isinstance(schema, str) else dict(schema)
    missing = [c for c in spec if c not in df.columns]
    if missing:
        raise DatasetError(f"{source}: missing column(s) {missing}; found {list(df.columns)}")
    if len(df) == 0:
        if allow_empty:
            return df  # an empty column's dtype says nothing (pandas makes it float64)
        raise DatasetError(f"{source}: dataset is empty")
    for col, kind in spec.items():
        if not _kind_ok(df[col], kind):
            raise DatasetError(
                f"{source}: column {col!r} should hold {kind} values, found dtype {df[col].dtype}"
            )
        # nullable dtypes (pandas' "boolean", "Int64", Arrow's) pass _kind_ok with NA in them
        if kind != "float" and df[col].isna().any():
            rows = df.index[df[col].isna()].tolist()[:5]
            raise DatasetError(f"{source}: column {col!r} has missing values at rows {rows}")
    for col in finite:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = ~pd.notna(values) | ~(abs(values) < math.inf)
        if bad.any():
            rows = df.index[bad].tolist()[:5]
            raise DatasetError(
                f"{source}: column {col!r} has NaN or infinite values at rows {rows} "
                f"({int(bad.sum())} in all)"
            )
    if one_prompt_per_id is None:
        one_prompt_per_id = isinstance(schema, str) and {"prompt_id", "prompt"} <= spec.keys()
    if one_prompt_per_id:
        check_one_prompt_per_id(df, source)
    return df


def check_one_prompt_per_id(df: pd.DataFrame, source: str | os.PathLike = "<frame>") -> None:
    """Refuse a ``prompt_id`` that carries two different prompt texts.

    Samples, rewards and pairs are grouped by ``prompt_id``, so such an id would pair a response
    to one prompt with a response to another. The error names ``source``, the first offending
    ids with their rows, and how many ids are affected.
    """
    if df["prompt_id"].is_unique:
        return
    texts = df[["prompt_id", "prompt"]].drop_duplicates()
    bad = pd.unique(texts.loc[texts["prompt_id"].duplicated(), "prompt_id"])
    if len(bad):
        shown = {pid: df.index[df["prompt_id"] == pid].tolist()[:SHOWN] for pid in bad[:SHOWN]}
        raise DatasetError(
            f"{source}: {len(bad)} prompt_id value(s) carry more than one prompt text (a "
            f"prompt_id must name one prompt); first ones with their rows: {shown}"
        )


def read_parquet(
    path: str | os.PathLike, schema: str | Mapping[str, str] | None = None, **check_kwargs: Any
) -> pd.DataFrame:
    """Read a parquet file and, when ``schema`` is given, check it (errors name ``path``)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: file does not exist")
    df = pd.read_parquet(path)
    if schema is not None:
        check_frame(df, schema, path, **check_kwargs)
    return df


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it is renamed onto ``path``.

    On an exception the temporary is removed and ``path`` is left untouched; an OSError (a full
    disk, a quota, a permission) is raised again naming ``path``, which the writer never sees.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create 0600/0700; give the output the modes a plain open/mkdir would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)
        if is_dir and path.exists():
            # move the old folder aside first, so a crash leaves it recoverable, never half-deleted
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        # an operating-system error of the write (errno set: a full disk, a quota, a permission)
        # is raised again as the same class, naming the destination; an error the writer raised
        # with its own message passes unchanged
        if isinstance(e, OSError) and e.errno is not None and str(path) not in str(e):
            raise type(e)(e.errno, f"{e.strerror or e} (writing {path})", e.filename) from e
        raise


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` to ``path`` atomically (no index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _jsonable(obj: Any) -> Any:
    # numpy scalars (e.g. scikit-optimize's res.x) are not JSON serialisable as such
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(obj: Any, path: str | os.PathLike, *, allow_nan: bool = True) -> None:
    """Write ``obj`` as indented JSON atomically; numpy scalars are cast to Python numbers.

    With ``allow_nan=False`` a NaN or infinite number is an error naming ``path`` rather than a
    bare ``NaN`` (which is not JSON); :func:`finite_or_none` turns them into null first.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=_jsonable, allow_nan=allow_nan)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc} (NaN and infinity are not JSON)") from exc
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (in nested dicts, lists, tuples) replaced by None,
    so that it writes as valid JSON (null)."""
    if isinstance(obj, Mapping):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_yaml(obj: Any, path: str | os.PathLike) -> None:
    """``obj`` as block-style YAML, keys in their order (atomic, as :func:`write_text`)."""
    import yaml

    write_text(yaml.safe_dump(obj, sort_keys=False), path)


def write_settings(settings: Mapping[str, Any], path: str | os.PathLike) -> str:
    """A block of settings to ``path``: YAML in the block's key order for ``.yaml``, indented
    JSON with sorted keys for ``.json`` (atomic either way). Returns the job's log line
    (``{path}: {n} keys``); any other suffix is a ValueError naming ``path``."""
    suffix = Path(path).suffix
    if suffix == ".yaml":
        write_yaml(dict(settings), path)
    elif suffix == ".json":
        write_json(dict(settings), path)
    else:
        raise ValueError(f"{path}: settings are written as .yaml or .json, not {suffix!r}")
    return f"{path}: {len(settings)} keys\n"


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: file does not exist")
    return json.loads(path.read_text())
