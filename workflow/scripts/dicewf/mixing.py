"""Experience replay (Algorithm 1 line 5): mix generated pairs with offline human pairs.

D_t draws a share ``1 - gamma`` of its pairs from the generated dataset D(alpha*) and ``gamma``
from D_offline. Offline pairs are only drawn for prompts that the drawn generated pairs do not
use, so no prompt appears from both sources.

Every iteration draws a new split, as the DICE code does (it samples without a fixed seed each
round): the generator of iteration t is seeded with :func:`iteration_seed` (mix.seed, t), so
iterations differ and the same config gives the same files.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from dicewf.io import SHOWN, DatasetError, check_frame
from dicewf.seeds import derive_seed

PAIR_COLUMNS = ["prompt_id", "prompt", "chosen", "rejected"]
# reused reference log-probs and the completion tokens they cover (dicewf.reflogps, which takes
# the names from here: it imports model code, which the mix rule's env does not have)
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "ref_chosen_tokens", "ref_rejected_tokens")

log = logging.getLogger(__name__)


def _with_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame``'s ``columns``; one it lacks is NaN (a reference log-prob not computed yet)."""
    return frame.reindex(columns=columns)


def iteration_seed(seed: int, iteration: int) -> int:
    """The mixing seed of iteration ``iteration`` (counted from 1) under config ``mix.seed``.

    A stable hash (SHA-256 of ``"mix"``, the seed and the iteration; see
    :func:`dicewf.seeds.derive_seed`) into [0, 2**31 - 1): independent of Python's hash
    randomisation, distinct across iterations and across config seeds.
    """
    if int(iteration) < 1:
        raise ValueError(f"iteration must be >= 1, got {iteration}")
    return derive_seed("mix", int(seed), int(iteration))


def counts(gamma: float, n_pairs: int | None, n_generated_available: int) -> tuple[int, int]:
    """(n_generated, n_offline) for a mixture with offline share ``gamma``.

    With ``n_pairs`` = N: n_offline = round(gamma * N) and n_generated = N - n_offline. Without
    it every generated pair is used and n_offline = round(gamma / (1 - gamma) * n_generated).
    ``round`` is Python's (halves go to the even neighbour).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    if n_pairs is None:
        if gamma == 1.0:
            raise ValueError("gamma = 1 leaves no room for generated pairs; pass n_pairs")
        return n_generated_available, round(gamma / (1.0 - gamma) * n_generated_available)
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be at least 1, got {n_pairs}")
    n_offline = round(gamma * n_pairs)
    return n_pairs - n_offline, n_offline


def _check_shared_ids(
    generated: pd.DataFrame, offline: pd.DataFrame, generated_source: str, offline_source: str
) -> None:
    """A prompt_id in both inputs must name the same prompt: the mixture keeps the two sources
    apart by prompt_id."""
    if generated.empty or offline.empty:
        return
    both = (
        generated[["prompt_id", "prompt"]]
        .drop_duplicates()
        .merge(
            offline[["prompt_id", "prompt"]].drop_duplicates(),
            on="prompt_id",
            suffixes=("_generated", "_offline"),
        )
    )
    bad = pd.unique(both.loc[both["prompt_generated"] != both["prompt_offline"], "prompt_id"])
    if len(bad):
        raise DatasetError(
            f"{generated_source} and {offline_source}: {len(bad)} prompt_id value(s) name "
            f"different prompts in the two files, e.g. {list(bad[:SHOWN])}; the mixture keeps "
            "generated and offline pairs apart by prompt_id, so an id must name one prompt"
        )


def mix(
    generated: pd.DataFrame,
    offline: pd.DataFrame,
    gamma: float,
    n_pairs: int | None,
    seed: int,
    *,
    shortfall: str = "error",
    generated_source: str = "<generated>",
    offline_source: str = "<offline>",
) -> pd.DataFrame:
    """Draw the mixed dataset D_t; rows are shuffled and tagged ``source`` = generated/offline.

    Both sides are drawn without replacement with a generator seeded by ``seed``, so the same
    inputs and seed give the same output. Columns: prompt_id, prompt, chosen, rejected, source,
    then any other column present in both inputs (an input ``source`` column is replaced), and
    the reference log-probs of :mod:`dicewf.reflogps` present in either (NaN on the rows of the
    other side: the ``ref_logps`` job computes those).
    Raises ValueError when a side has fewer rows than the mixture asks for, except that with
    ``shortfall="shrink"`` fewer generated pairs than asked (an LLM judge's ratings often tie)
    shrink the mixture: every generated pair is used and the offline share keeps ``gamma``.
    A ``prompt_id`` that names two different prompts, in one input or across both, is a
    :class:`~dicewf.io.DatasetError` naming the files and the ids.
    """
    if shortfall not in ("error", "shrink"):
        raise ValueError(f"shortfall must be 'error' or 'shrink', got {shortfall!r}")
    check_frame(generated, "pairs", generated_source, allow_empty=True)
    check_frame(offline, "pairs", offline_source, allow_empty=True)
    _check_shared_ids(generated, offline, generated_source, offline_source)
    n_generated, n_offline = counts(gamma, n_pairs, len(generated))
    if n_generated > len(generated) and shortfall == "shrink" and gamma < 1.0:
        if len(generated) == 0:
            raise ValueError(f"{generated_source}: no generated pair to mix")
        log.warning(
            "%s: %d generated pairs of the %d asked for; the mixture shrinks to keep gamma=%s",
            generated_source,
            len(generated),
            n_generated,
            gamma,
        )
        n_generated, n_offline = counts(gamma, None, len(generated))
    if n_generated > len(generated):
        raise ValueError(
            f"{generated_source}: asked for {n_generated} generated pairs "
            f"(gamma={gamma}, n_pairs={n_pairs}) but only {len(generated)} are available"
        )
    rng = np.random.default_rng(seed)
    drawn_generated = generated.iloc[rng.choice(len(generated), n_generated, replace=False)]
    fresh = offline[~offline["prompt_id"].isin(set(drawn_generated["prompt_id"]))]
    if n_offline > len(fresh):
        raise ValueError(
            f"{offline_source}: asked for {n_offline} offline pairs (gamma={gamma}, "
            f"n_pairs={n_pairs}) but only {len(fresh)} are available on prompts not among the "
            f"{n_generated} generated ones ({len(offline)} offline pairs in all)"
        )
    drawn_offline = fresh.iloc[rng.choice(len(fresh), n_offline, replace=False)]
    return combine(drawn_generated, drawn_offline, rng)


def combine(
    generated: pd.DataFrame, offline: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """``generated`` and ``offline`` rows in one frame, shuffled by ``rng``, tagged ``source``.

    The columns of :func:`mix` (SeRA's mixture, :func:`dicewf.sera.mix_sera`, uses it too).
    """
    drawn_generated, drawn_offline = generated, offline
    # reused reference log-probs (dicewf.reflogps) stay where one side has them, NaN elsewhere
    ref = [c for c in REF_COLUMNS if c in generated.columns or c in offline.columns]
    extra = [
        c
        for c in generated.columns
        if c in offline.columns and c not in PAIR_COLUMNS and c != "source" and c not in ref
    ] + ref
    mixed = pd.concat(
        [
            _with_columns(drawn_generated, [*PAIR_COLUMNS, *extra]).assign(source="generated"),
            _with_columns(drawn_offline, [*PAIR_COLUMNS, *extra]).assign(source="offline"),
        ],
        ignore_index=True,
    )
    mixed = mixed[[*PAIR_COLUMNS, "source", *extra]]
    return mixed.iloc[rng.permutation(len(mixed))].reset_index(drop=True)
