"""Splitting a prompt set into shards and gathering the shards' results back.

Shards are contiguous, balanced slices of the prompt set in its file order. Because every
stochastic step is seeded per prompt (see :mod:`dicewf.sampling`), the gathered result is the same
for any number of shards.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd


def parse_scatteritem(item: str) -> tuple[int, int]:
    """Snakemake's ``{scatteritem}`` (``"2-of-3"``) as a 0-based index and a count."""
    m = re.fullmatch(r"(\d+)-of-(\d+)", item)
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise ValueError(f"not a scatter item of the form 'i-of-n' with 1 <= i <= n: {item!r}")
    return int(m[1]) - 1, int(m[2])


def shard(df: pd.DataFrame, index: int, count: int) -> pd.DataFrame:
    """Rows of shard ``index`` (0-based) of ``count`` contiguous, balanced slices."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} out of range for {count} shards")
    bounds = np.linspace(0, len(df), count + 1).round().astype(int)
    return df.iloc[bounds[index] : bounds[index + 1]].reset_index(drop=True)


def gather(
    frames: list[pd.DataFrame],
    sources: list[str],
    keys: tuple[str, ...] = ("prompt_id", "sample_idx"),
) -> pd.DataFrame:
    """Concatenate shard results in shard order; a key seen in two shards is an error."""
    if not frames:
        raise ValueError("no shard to gather")
    out = pd.concat(frames, ignore_index=True)
    dup = out.duplicated(list(keys), keep=False)
    if dup.any():
        # to_dict gives Python scalars: the message shows 0, not np.int64(0)
        first = list(out.loc[dup, list(keys)].iloc[:1].to_dict("records")[0].values())
        owners = [
            s
            for s, f in zip(sources, frames, strict=True)
            if (f[list(keys)] == first).all(axis=1).any()
        ]
        raise ValueError(f"{dict(zip(keys, first))} appears in more than one shard: {owners}")
    return out
