"""SeRA (Ko et al., 2024): Self-Reviewing and Alignment with implicit reward margins.

The pieces of one SeRA iteration t, as pure functions on frames and arrays (docs/sera.md has
the method, each formula with its section of the paper, and what the paper leaves open):

- :func:`implicit_reward_margin` - the IRM of preference pairs (Eq. 5; SimPO's reward, Eq. 17);
- :func:`ensemble_margin` - Eq. 7, the IRM of the last two policies mixed by lambda
  (:func:`ensemble_rewards`: per sampled response, for the bootstrapped pairs);
- :func:`select_by_margin` - IRM-based off-policy sample selection (Section 3.2): the offline
  pairs with the highest margins, a share ``proportion`` (Table 4: 0.7) of them;
- :func:`bootstrap_pairs` - IRM-based preference bootstrapping (Section 3.3): per prompt the
  (highest, lowest) implicit reward among the K sampled responses, which is DICE's pair builder
  :func:`dicewf.alpha.build_pairs` at alpha = 0, then the pairs with the highest margins;
- :func:`sera_counts` and :func:`mix_sera` - D_t, the selected offline pairs and the
  bootstrapped ones (Section 4.1: N_off + N_gen = N for SeRA, N_gen free for best-SeRA);
- :func:`swap_labels` and :func:`selection_quality` - the noisy-preference experiment (Section
  4.2) and how well a selection removes the swapped (or any "bad") pairs;
- :func:`jaccard` and :func:`jaccard_matrix` - similarity of selected sets (Figure 6).

Counts from shares use Python's ``round`` (halves go to the even neighbour), as
:func:`dicewf.mixing.counts` does; ties in a margin go to the earlier row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

from dicewf import alpha
from dicewf.io import SHOWN, DatasetError, check_frame
from dicewf.mixing import REF_COLUMNS, _check_shared_ids, combine
from dicewf.rewards import implicit_reward, simpo_reward
from dicewf.seeds import derive_seed

log = logging.getLogger(__name__)

REWARDS = ("dpo", "simpo")
# Per-pair log-probabilities (summed over the completion tokens) and completion token counts,
# named after the score stage's per-response columns logp_policy, logp_ref and len_tokens
POLICY_LOGPS = ("logp_policy_chosen", "logp_policy_rejected")
REF_LOGPS = ("logp_ref_chosen", "logp_ref_rejected")
TOKENS = ("len_tokens_chosen", "len_tokens_rejected")
# The same under the second (policy, reference) pair of Eq. 7: the policy before the previous
# one and its reference (the workflow's offline log-probs, workflow/rules/sera.smk)
POLICY2_LOGPS = ("logp_policy2_chosen", "logp_policy2_rejected")
REF2_LOGPS = ("logp_ref2_chosen", "logp_ref2_rejected")
# The margin column of bootstrap_pairs' output and the noise experiment's gold label
IRM = "irm"
SWAPPED = "label_swapped"
# select_offline's columns: the IRM under the second pair, the margin selected by, the mask
IRM_PREV2, MARGIN, SELECTED = "irm_prev2", "margin", "selected"
# ensemble_rewards' columns: a sampled response's implicit reward under the (t-2) pair, and
# Eq. 7's mixture of the two per response, which bootstraps by where the ensemble applies
REWARD_PREV2, ENSEMBLE_REWARD = "reward_prev2", "ensemble_reward"
RESPONSE_KEY = ["prompt_id", "sample_idx"]
# Columns whose sign flips when chosen and rejected swap (chosen minus rejected)
ANTISYMMETRIC = ("len_diff", IRM)
# The offline selection's criteria (sera.selection; Figure 2): the IRM (SeRA), none (every pair
# kept), the train reference's log-probability margin, an external score (the toy world's gold
# quality: the columns the world writes on D_offline)
SELECTIONS = ("irm", "none", "reference", "gold")
# How the bootstrapped pairs are built (sera.bootstrap): per prompt the best and worst response
# by implicit reward (alpha = 0), or DICE's length-regularised D(alpha*) (search_alpha's pairs)
BOOTSTRAPS = ("implicit", "dice_alpha")
QUALITY = ("chosen_quality", "rejected_quality")


# --- checks ------------------------------------------------------------------------------------


def _positions(bad: np.ndarray) -> list[int]:
    return np.flatnonzero(bad)[:SHOWN].tolist()


def _finite(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D float array; NaN or infinite entries are an error naming them."""
    try:
        out = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected numbers ({e})") from None
    if out.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of margins, got shape {out.shape}")
    bad = ~np.isfinite(out)
    if bad.any():
        raise ValueError(
            f"{name}: {int(bad.sum())} of {len(out)} values are NaN or infinite, at positions "
            f"{_positions(bad)}"
        )
    return out


def _mask(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D boolean array; anything but booleans (0/1, NA) is an error."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    missing = series.isna().to_numpy()
    if not pd.api.types.is_bool_dtype(series) or missing.any():
        where = f" with missing values at positions {_positions(missing)}" if missing.any() else ""
        raise ValueError(
            f"{name}: expected booleans (one per pair), got dtype {series.dtype}{where}"
        )
    return series.to_numpy(dtype=bool)


def _proportion(value: float, name: str, *, zero: bool) -> float:
    inside = isinstance(value, Real) and (value >= 0 if zero else value > 0) and value <= 1
    if not inside:
        interval = "[0, 1]" if zero else "(0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return float(value)


# --- Eq. 5 and Eq. 7: the implicit reward margin -------------------------------------------------


def implicit_reward_margin(
    pairs: pd.DataFrame,
    beta: float,
    *,
    reward: str = "dpo",
    policy: Sequence[str] = POLICY_LOGPS,
    reference: Sequence[str] = REF_LOGPS,
    tokens: Sequence[str] = TOKENS,
    source: str = "<pairs>",
) -> np.ndarray:
    """The IRM of each pair, r(x, y_chosen) - r(x, y_rejected), as a float array.

    ``reward`` dpo (Eq. 5): r = beta * (log pi_theta(y|x) - log pi_ref(y|x)) from the columns
    ``policy`` (chosen, rejected) and ``reference`` (chosen, rejected), via
    :func:`dicewf.rewards.implicit_reward` as DICE's score stage computes it. simpo (Appendix
    C.3, Eq. 17): r = beta / |y| * log pi_theta(y|x), no reference, |y| the completion tokens of
    the columns ``tokens`` (chosen, rejected). A missing column, a NaN or infinite value or a
    token count below 1 is a :class:`~dicewf.io.DatasetError` naming ``source``, the column and
    the rows.
    """
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    if not (isinstance(beta, Real) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    chosen, rejected = policy
    if reward == "dpo":
        ref_chosen, ref_rejected = reference
        columns = (chosen, rejected, ref_chosen, ref_rejected)
        check_frame(pairs, dict.fromkeys(columns, "float"), source, finite=columns)
        margin = implicit_reward(pairs[chosen], pairs[ref_chosen], beta) - implicit_reward(
            pairs[rejected], pairs[ref_rejected], beta
        )
    else:
        n_chosen, n_rejected = tokens
        columns = (chosen, rejected, n_chosen, n_rejected)
        check_frame(pairs, dict.fromkeys(columns, "float"), source, finite=columns)
        for column in (n_chosen, n_rejected):
            short = pairs[column].to_numpy(dtype=float) < 1
            if short.any():
                raise DatasetError(
                    f"{source}: column {column!r} holds token counts below 1 at rows "
                    f"{pairs.index[short].tolist()[:SHOWN]}; SimPO's reward divides by them"
                )
        margin = simpo_reward(pairs[chosen], pairs[n_chosen], beta) - simpo_reward(
            pairs[rejected], pairs[n_rejected], beta
        )
    return np.asarray(margin, dtype=float)


def ensemble_margin(irm_prev: Any, irm_prev2: Any | None, lam: float) -> np.ndarray:
    """Eq. 7: ``lam * irm_prev2 + (1 - lam) * irm_prev``.

    ``irm_prev`` is the margin under pi_theta^(t-1) against its reference, ``irm_prev2`` under
    pi_theta^(t-2) against its own; None where no (t-2) policy exists (iterations 1 and 2, see
    :func:`margin_policies`): lambda is then 0 and ``irm_prev`` is returned. The formula is
    linear, so it mixes per-response implicit rewards the same way (the bootstrapped pairs'
    ensemble: mix the rewards, then :func:`bootstrap_pairs` on the mixed column).
    """
    if not (isinstance(lam, Real) and 0.0 <= lam <= 1.0):
        raise ValueError(f"the ensemble coefficient lambda must lie in [0, 1], got {lam!r}")
    prev = _finite(irm_prev, "irm_prev")
    if irm_prev2 is None:
        return prev.copy()
    prev2 = _finite(irm_prev2, "irm_prev2")
    if prev2.shape != prev.shape:
        raise ValueError(
            f"irm_prev2 has {len(prev2)} margins and irm_prev {len(prev)}: one margin per pair "
            "under each policy, in the same order"
        )
    return lam * prev2 + (1.0 - lam) * prev


def margin_policies(t: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """The (policy, reference) iterations whose IRM builds D_t: (t-1 against t-2, t-2 against
    t-3), iteration 0 being the SFT model (Section 3.4: the reference is the previous policy).

    D_1 is the offline data alone (no aligned model yet): (None, None). At t = 2 only
    pi_theta^(1) against pi_theta^(0) exists: lambda counts as 0 (second entry None).
    """
    t = int(t)
    if t < 1:
        raise ValueError(f"iteration must be >= 1, got {t}")
    prev = (t - 1, t - 2) if t >= 2 else None
    prev2 = (t - 2, t - 3) if t >= 3 else None
    return prev, prev2


# --- Section 3.2: IRM-based off-policy sample selection ------------------------------------------


def selection_count(n: int, proportion: float) -> int:
    """How many of ``n`` pairs a share ``proportion`` in (0, 1] keeps: ``round(proportion * n)``
    with Python's round (halves to the even neighbour, as :func:`dicewf.mixing.counts`).

    The paper gives the share only (Table 4: 0.7). A share that keeps no pair of a non-empty
    set is an error.
    """
    proportion = _proportion(proportion, "the selection proportion", zero=False)
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    k = round(proportion * int(n))
    if n and k == 0:
        raise ValueError(f"a selection proportion of {proportion} keeps none of {n} pairs")
    return k


def top_mask(margin: Any, k: int, name: str = "margin") -> np.ndarray:
    """Boolean mask of the ``k`` highest margins; a tie goes to the earlier position."""
    values = _finite(margin, name)
    if not 0 <= int(k) <= len(values):
        raise ValueError(f"cannot keep {k} of {len(values)} pairs")
    mask = np.zeros(len(values), dtype=bool)
    mask[np.argsort(-values, kind="stable")[: int(k)]] = True
    return mask


def _margin_of(pairs: pd.DataFrame, margin: str | Any, source: str) -> np.ndarray:
    if isinstance(margin, str):
        check_frame(pairs, {margin: "float"}, source, finite=(margin,), allow_empty=True)
        return pairs[margin].to_numpy(dtype=float)
    values = _finite(margin, f"{source}: margin")
    if len(values) != len(pairs):
        raise ValueError(f"{source}: {len(values)} margins for {len(pairs)} pairs")
    return values


def select_by_margin(
    pairs: pd.DataFrame,
    margin: str | Any,
    proportion: float | None = None,
    *,
    count: int | None = None,
    source: str = "<pairs>",
) -> tuple[pd.DataFrame, np.ndarray]:
    """The pairs with the highest implicit reward margins, and the mask that picks them.

    ``margin`` is a column of ``pairs`` or one value per row. Keeps :func:`selection_count`
    (``proportion``) or ``count`` pairs: sorted by margin, highest first, ties broken by row
    order (the earlier row is kept). The kept rows come back in their original order,
    re-indexed; ``mask`` is True on them (positions in ``pairs``).
    """
    if (proportion is None) == (count is None):
        raise ValueError("give exactly one of proportion and count")
    values = _margin_of(pairs, margin, source)
    k = selection_count(len(pairs), proportion) if count is None else int(count)
    if not 0 <= k <= len(pairs):
        raise ValueError(f"{source}: asked for {k} pairs but only {len(pairs)} are available")
    mask = top_mask(values, k, f"{source}: margin")
    return pairs[mask].reset_index(drop=True), mask


# --- Section 3.3: IRM-based preference bootstrapping ----------------------------------------------


def bootstrap_pairs(
    scores: pd.DataFrame,
    proportion: float | None = None,
    *,
    count: int | None = None,
    score: str = "reward",
    min_responses: int = 2,
    length_unit: str = "chars",
    ref_logps: str | None = None,
    candidates: pd.DataFrame | None = None,
    source: str = "<scores>",
    candidates_source: str = "<pairs>",
) -> pd.DataFrame:
    """Bootstrapped pairs from K scored responses per prompt, the highest margins kept.

    Per prompt the pair that maximises the IRM, (highest, lowest) ``score`` (the implicit reward
    of the score stage; a column of ensemble rewards for Eq. 7), is
    :func:`dicewf.alpha.build_pairs` at alpha = 0: ties go to the earlier ``sample_idx``,
    prompts whose responses all tie give no pair, prompts with fewer than ``min_responses``
    are dropped, and ``ref_logps`` carries the train reference's log-probs as for DICE. Column
    ``irm`` is the margin, score(chosen) - score(rejected). Then :func:`select_by_margin` keeps
    a share ``proportion`` or ``count`` of them (exactly one), in prompt_id order. ``attrs``
    holds build_pairs' counts and ``n_candidates``, the pairs before the cut.

    ``candidates`` (``sera.bootstrap: dice_alpha``) are per-prompt pairs built otherwise: DICE's
    D(alpha*) of the search_alpha stage (:func:`dicewf.alpha.run_search`, the length-regularised
    reward with alpha*, its reference log-probs carried already), from the same ``scores``.
    Their margin is still score(chosen) - score(rejected), looked up by (prompt_id,
    ``chosen_sample_idx`` / ``rejected_sample_idx``); a pair whose response ``scores`` lacks is an
    error naming ``candidates_source``.
    """
    if (proportion is None) == (count is None):
        raise ValueError("give exactly one of proportion and count")
    if candidates is None:
        pairs = alpha.build_pairs(
            scores,
            0.0,
            length_unit,
            min_responses=min_responses,
            source=source,
            score=score,
            ref_logps=ref_logps,
        )
    else:
        kinds = {"prompt_id": "str", "chosen_sample_idx": "int", "rejected_sample_idx": "int"}
        check_frame(candidates, kinds, candidates_source, allow_empty=True)
        check_frame(candidates, "pairs", candidates_source, allow_empty=True)
        if ref_logps is not None:
            ref = dict.fromkeys(REF_COLUMNS[:2], "float") | dict.fromkeys(REF_COLUMNS[2:], "int")
            check_frame(candidates, ref, candidates_source, allow_empty=True)
        pairs = candidates.reset_index(drop=True)
    check_frame(scores, {score: "float"}, source, finite=(score,))
    by_response = scores.set_index(RESPONSE_KEY)[score]
    margins = []
    for side in ("chosen", "rejected"):
        keys = pd.MultiIndex.from_arrays([pairs["prompt_id"], pairs[f"{side}_sample_idx"]])
        absent = ~keys.isin(by_response.index)
        if absent.any():
            raise DatasetError(
                f"{candidates_source}: the {side} response of {int(absent.sum())} pair(s) is not "
                f"in {source} (prompt_id, sample_idx) {keys[absent].tolist()[:SHOWN]}; the pairs "
                "must come from the iteration's scores"
            )
        margins.append(by_response.reindex(keys).to_numpy(dtype=float))
    pairs[IRM] = margins[0] - margins[1]
    if count is not None and count > len(pairs):
        raise ValueError(
            f"{source}: asked for {count} bootstrapped pairs but only {len(pairs)} prompt(s) "
            f"give a pair ({pairs.attrs.get('n_degenerate', '?')} with tied responses, "
            f"{pairs.attrs.get('n_dropped', '?')} with fewer than {min_responses} responses)"
        )
    attrs = dict(pairs.attrs, n_candidates=len(pairs))
    kept, _ = select_by_margin(pairs, IRM, proportion, count=count, source=source)
    kept.attrs.update(attrs)
    log.info("%s: kept %d of %d bootstrapped pairs by IRM", source, len(kept), len(pairs))
    return kept


def ensemble_rewards(
    scores: pd.DataFrame,
    scores_prev2: pd.DataFrame,
    lam: float,
    *,
    source: str = "<scores>",
    source_prev2: str = "<scores prev2>",
) -> pd.DataFrame:
    """Eq. 7 per sampled response: ``scores`` with ``reward_prev2``, the implicit reward under
    pi_theta^(t-2) against its reference (the ``reward`` of ``scores_prev2``: the same samples
    scored under that pair), and ``ensemble_reward`` = lam r_(t-2)(y) + (1 - lam) r_(t-1)(y)
    (:func:`ensemble_margin` on the rewards of ``scores``).

    Eq. 7 is linear, so the margin of a pair of responses under the ensemble is
    R(y_i) - R(y_j), and :func:`bootstrap_pairs` with ``score="ensemble_reward"`` gives each
    prompt's max-margin pair. Responses are matched by (prompt_id, sample_idx): both frames
    must hold the same responses, each once; a response missing from either, or a missing or
    non-finite reward, is an error naming the file and the responses.
    """
    kinds = {"prompt_id": "str", "sample_idx": "int", "reward": "float"}
    for frame, name in ((scores, source), (scores_prev2, source_prev2)):
        check_frame(frame, kinds, name, finite=("reward",))
        repeated = frame.duplicated(RESPONSE_KEY)
        if repeated.any():
            raise DatasetError(
                f"{name}: repeated (prompt_id, sample_idx) at rows "
                f"{frame.index[repeated].tolist()[:SHOWN]}"
            )
    prev2 = scores_prev2.set_index(RESPONSE_KEY)["reward"]
    wanted = pd.MultiIndex.from_frame(scores[RESPONSE_KEY])
    for keys, have, name, other in (
        (wanted, prev2.index, source_prev2, source),
        (prev2.index, wanted, source, source_prev2),
    ):
        absent = ~keys.isin(have)
        if absent.any():
            raise DatasetError(
                f"{name}: no reward for {int(absent.sum())} response(s) of {other} "
                f"(prompt_id, sample_idx) {keys[absent].tolist()[:SHOWN]}; Eq. 7 scores the "
                "same samples under both (policy, reference) pairs"
            )
    out = scores.copy()
    out[REWARD_PREV2] = prev2.reindex(wanted).to_numpy(dtype=float)
    out[ENSEMBLE_REWARD] = ensemble_margin(
        out["reward"].to_numpy(dtype=float), out[REWARD_PREV2].to_numpy(dtype=float), lam
    )
    return out


# --- Section 4.1 / 5.1: the training set D_t ------------------------------------------------------


def sera_counts(n_total: int, proportion: float, generated: float | None = None) -> tuple[int, int]:
    """(N_off, N_gen) of D_t for an offline set of ``n_total`` = N pairs.

    N_off = :func:`selection_count` (N, ``proportion``). SeRA (``generated`` None) keeps the
    size of the offline set, N_off + N_gen = N; best-SeRA relaxes that sum constraint with
    N_gen = round(``generated`` * N), ``generated`` >= 0 (Section 5.1).
    """
    n_offline = selection_count(n_total, proportion)
    if generated is None:
        return n_offline, int(n_total) - n_offline
    if not (isinstance(generated, Real) and math.isfinite(generated) and generated >= 0):
        raise ValueError(f"the generated proportion must be >= 0, got {generated!r}")
    return n_offline, round(generated * int(n_total))


def mix_sera(
    selected_offline: pd.DataFrame,
    bootstrapped: pd.DataFrame,
    n_generated: int,
    seed: int,
    *,
    offline_source: str = "<selected offline>",
    generated_source: str = "<bootstrapped>",
) -> pd.DataFrame:
    """D_t: every selected offline pair and the ``n_generated`` bootstrapped pairs with the
    highest ``irm`` (ties to the earlier row), shuffled with a generator seeded by ``seed``
    (per iteration: :func:`dicewf.mixing.iteration_seed`).

    The columns and the ``source`` tag (offline, generated) of :func:`dicewf.mixing.mix`,
    through the same :func:`dicewf.mixing.combine`; unlike DICE's mixture both parts are
    chosen by margin, not drawn, and a prompt may appear in both. Fewer bootstrapped pairs
    than ``n_generated``, or a prompt_id naming two prompts across the inputs, is an error
    naming the file.
    """
    check_frame(selected_offline, "pairs", offline_source, allow_empty=True)
    check_frame(bootstrapped, "pairs", generated_source, allow_empty=True)
    if int(n_generated) < 0:
        raise ValueError(f"n_generated must be >= 0, got {n_generated}")
    if n_generated > len(bootstrapped):
        raise ValueError(
            f"{generated_source}: asked for {n_generated} bootstrapped pairs but only "
            f"{len(bootstrapped)} are available"
        )
    _check_shared_ids(bootstrapped, selected_offline, generated_source, offline_source)
    top, _ = select_by_margin(bootstrapped, IRM, count=n_generated, source=generated_source)
    mixed = combine(top, selected_offline, np.random.default_rng(seed))
    if mixed.empty:
        raise ValueError(f"{offline_source} and {generated_source}: the mixture is empty")
    return mixed


# --- Section 4.2: noisy preferences ---------------------------------------------------------------


def swap_columns(columns: Iterable[str], source: str = "<pairs>") -> list[tuple[str, str]]:
    """The (chosen, rejected) column pairs that swap with the labels: every column whose name
    holds ``chosen`` with its counterpart, ``chosen`` replaced by ``rejected`` (chosen/rejected,
    ref_chosen_logps/ref_rejected_logps, logp_policy_chosen/logp_policy_rejected, ...). A
    column of one side without its counterpart is an error naming it."""
    columns = list(columns)
    present = set(columns)
    out = []
    for column in columns:
        for side, other in (("chosen", "rejected"), ("rejected", "chosen")):
            if side in column:
                counterpart = column.replace(side, other)
                if counterpart not in present:
                    raise DatasetError(
                        f"{source}: column {column!r} has no counterpart {counterpart!r}; "
                        "swapping labels would leave it on the wrong side"
                    )
        if "chosen" in column:
            out.append((column, column.replace("chosen", "rejected")))
    return out


def swap_labels(
    pairs: pd.DataFrame, fraction: float, seed: int, *, source: str = "<pairs>"
) -> pd.DataFrame:
    """``pairs`` with chosen and rejected swapped on exactly round(``fraction`` * n) rows.

    The rows are drawn without replacement by a generator seeded with
    :func:`dicewf.seeds.derive_seed` ("swap_labels", ``seed``): the same seed swaps the same
    rows. Every column pair of :func:`swap_columns` swaps with them; chosen-minus-rejected
    columns (:data:`ANTISYMMETRIC`: len_diff, irm) change sign. Column ``label_swapped``
    records the rows whose label is now the opposite of the input's original: a present one
    is XORed, so swapping twice with one seed gives back the original pairs, none marked.
    """
    fraction = _proportion(fraction, "the noise fraction", zero=True)
    check_frame(pairs, "pairs", source)
    if SWAPPED in pairs.columns and not pd.api.types.is_bool_dtype(pairs[SWAPPED]):
        raise DatasetError(
            f"{source}: column {SWAPPED!r} should hold booleans, found dtype {pairs[SWAPPED].dtype}"
        )
    n = len(pairs)
    k = round(fraction * n)
    rng = np.random.default_rng(derive_seed("swap_labels", int(seed)))
    swapped = np.zeros(n, dtype=bool)
    swapped[rng.choice(n, k, replace=False)] = True
    keep = pd.Series(~swapped, index=pairs.index)
    out = pairs.copy()
    for chosen, rejected in swap_columns(pairs.columns, source):
        out[chosen] = pairs[chosen].where(keep, pairs[rejected])
        out[rejected] = pairs[rejected].where(keep, pairs[chosen])
    for column in ANTISYMMETRIC:
        if column in pairs.columns:
            out[column] = pairs[column].where(keep, -pairs[column])
    before = pairs[SWAPPED].to_numpy(dtype=bool) if SWAPPED in pairs.columns else False
    out[SWAPPED] = before ^ swapped
    log.info("%s: swapped chosen and rejected on %d of %d pairs", source, k, n)
    return out


def selection_quality(selected: Any, bad: Any) -> dict[str, float | int | None]:
    """How well a selection removes bad pairs (``bad``: e.g. ``label_swapped``, or pairs the
    gold judge calls length-biased), one boolean per pair in both.

    A dropped pair is one not selected. recall = bad pairs dropped / bad pairs (the share of
    the bad pairs the selection removes); precision = bad pairs dropped / pairs dropped (the
    share of the removed pairs that were bad); None where the denominator is 0.
    ``bad_share_selected`` and ``bad_share_all`` are the bad shares of the selection and of
    all pairs.
    """
    kept = _mask(selected, "selected")
    noisy = _mask(bad, "bad")
    if len(kept) != len(noisy):
        raise ValueError(f"selected has {len(kept)} entries and bad {len(noisy)}: one per pair")
    dropped = ~kept
    hits = int((dropped & noisy).sum())
    n_bad, n_dropped, n_kept = int(noisy.sum()), int(dropped.sum()), int(kept.sum())
    return {
        "n_pairs": len(kept),
        "n_bad": n_bad,
        "n_dropped": n_dropped,
        "n_dropped_bad": hits,
        "precision": hits / n_dropped if n_dropped else None,
        "recall": hits / n_bad if n_bad else None,
        "bad_share_selected": int((kept & noisy).sum()) / n_kept if n_kept else None,
        "bad_share_all": n_bad / len(kept) if len(kept) else None,
    }


# --- Figure 6: similarity of selected sets --------------------------------------------------------


def jaccard(a: Iterable[Hashable], b: Iterable[Hashable]) -> float:
    """|A & B| / |A | B| of two selected sets, given by their keys (pair ids, or row positions:
    ``np.flatnonzero(mask)``); 1.0 for two empty sets. A boolean key (a mask passed by mistake)
    is an error."""
    sets = []
    for name, keys in (("a", a), ("b", b)):
        keys = list(keys)
        if any(isinstance(k, (bool, np.bool_)) for k in keys):
            raise ValueError(
                f"jaccard: {name} holds booleans; pass the selected keys (np.flatnonzero(mask) "
                "for a mask)"
            )
        sets.append(set(keys))
    union = sets[0] | sets[1]
    return len(sets[0] & sets[1]) / len(union) if union else 1.0


def jaccard_matrix(selections: Mapping[str, Iterable[Hashable]]) -> pd.DataFrame:
    """Pairwise :func:`jaccard` of named selections (Figure 6c/d), rows and columns by name."""
    keys = {name: list(v) for name, v in selections.items()}
    names = list(keys)
    return pd.DataFrame(
        [[jaccard(keys[r], keys[c]) for c in names] for r in names], index=names, columns=names
    )


# --- Figure 3: what the learned implicit rewards follow -----------------------------------------


def pearson_interval(x: Any, y: Any, level: float = 0.95) -> tuple[float, float, float]:
    """Pearson's r of ``x`` and ``y`` with its Fisher-z interval at ``level``:
    tanh(atanh(r) -+ z_q / sqrt(n - 3)). NaN (all three) with fewer than 4 points or a constant
    side; the bounds are r itself where |r| = 1."""
    from statistics import NormalDist

    a, b = _finite(x, "x"), _finite(y, "y")
    if len(a) != len(b):
        raise ValueError(f"x has {len(a)} values and y {len(b)}: one pair per point")
    if len(a) < 4 or a.std() == 0 or b.std() == 0:
        return math.nan, math.nan, math.nan
    r = float(np.clip(np.corrcoef(a, b)[0, 1], -1.0, 1.0))
    if abs(r) == 1.0:
        return r, r, r
    half = NormalDist().inv_cdf(0.5 + level / 2) / math.sqrt(len(a) - 3)
    z = math.atanh(r)
    return r, math.tanh(z - half), math.tanh(z + half)


def reward_correlations(
    pairs: pd.DataFrame, beta: float, *, level: float = 0.95, source: str = "<pairs>"
) -> dict[str, float | int]:
    """How a trained model's implicit rewards relate to an external score and to length (Figure
    3; Appendix C.4, Figure 11, for the margins).

    ``pairs``: the offline pairs scored under the trained policy (:data:`POLICY_LOGPS`) and its
    train reference (:data:`REF_LOGPS`), with the external score (:data:`QUALITY`: the toy
    world's gold quality) and the texts ``chosen`` and ``rejected``. Per response (chosen and
    rejected of every pair, 2N points) r = beta (log pi_theta - log pi_ref); returns Pearson's
    correlation of r with the quality (``quality``) and with the length in characters
    (``length``), and per pair of the IRM with the quality gap (``margin_quality``) and the
    length difference (``margin_length``), each with its Fisher-z interval (``*_low``,
    ``*_high``; :func:`pearson_interval`). The two responses of a pair share a prompt, so the
    per-response interval is narrower than an independent sample's would be.
    """
    columns = (*POLICY_LOGPS, *REF_LOGPS, *QUALITY)
    check_frame(pairs, dict.fromkeys(columns, "float"), source, finite=columns)
    check_frame(pairs, "pairs", source)
    rewards = [
        np.asarray(implicit_reward(pairs[p], pairs[r], beta), dtype=float)
        for p, r in zip(POLICY_LOGPS, REF_LOGPS, strict=True)
    ]
    quality = [pairs[c].to_numpy(dtype=float) for c in QUALITY]
    length = [pairs[c].astype(str).str.len().to_numpy(dtype=float) for c in ("chosen", "rejected")]
    out: dict[str, float | int] = {"n_pairs": len(pairs), "n_responses": 2 * len(pairs)}
    series = {
        "quality": (np.concatenate(rewards), np.concatenate(quality)),
        "length": (np.concatenate(rewards), np.concatenate(length)),
        "margin_quality": (rewards[0] - rewards[1], quality[0] - quality[1]),
        "margin_length": (rewards[0] - rewards[1], length[0] - length[1]),
    }
    for name, (x, y) in series.items():
        out[name], out[f"{name}_low"], out[f"{name}_high"] = pearson_interval(x, y, level)
    return out


# --- one workflow iteration: D_offline selected, pairs bootstrapped, D_t mixed -------------------


def kept_share(selection: str, proportion: float) -> float:
    """The share of D_offline a selection keeps: ``proportion``, or 1 for ``none``."""
    if selection not in SELECTIONS:
        raise ValueError(f"sera.selection must be one of {SELECTIONS}, got {selection!r}")
    return 1.0 if selection == "none" else float(proportion)


def selection_margin(
    pairs: pd.DataFrame, selection: str, irm: np.ndarray, source: str = "<offline pairs>"
) -> np.ndarray:
    """The per-pair score a selection ranks by (Figure 2's criteria, ``sera.selection``).

    irm and none: ``irm`` itself (none keeps every pair, so its order does not matter);
    reference: log pi_ref(y_w|x) - log pi_ref(y_l|x) under the train reference of the iteration,
    pi_theta^(t-1) (the columns :data:`POLICY_LOGPS`; the paper's "log probability of the
    reference model", Pattnaik et al. 2024); gold: the external score's margin,
    chosen_quality - rejected_quality (the toy world's gold judge, on its D_offline). A column
    the criterion needs that is missing or not finite is an error naming ``source``.
    """
    kept_share(selection, 1.0)  # the name checked
    if selection in ("irm", "none"):
        return np.asarray(irm, dtype=float)
    columns = POLICY_LOGPS if selection == "reference" else QUALITY
    try:
        check_frame(pairs, dict.fromkeys(columns, "float"), source, finite=columns)
    except DatasetError as e:
        raise DatasetError(f"{e} (sera.selection: {selection} ranks by {list(columns)})") from None
    chosen, rejected = columns
    return pairs[chosen].to_numpy(dtype=float) - pairs[rejected].to_numpy(dtype=float)


def select_offline(
    pairs: pd.DataFrame,
    beta: float,
    proportion: float,
    lam: float = 0.0,
    *,
    selection: str = "irm",
    reward: str = "dpo",
    source: str = "<offline pairs>",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """IRM selection of scored offline pairs (Section 3.2) and its report.

    ``reward`` is the implicit reward of the margins (:func:`implicit_reward_margin`: dpo, or
    simpo, which reads the policies' log-probs and :data:`TOKENS` alone).

    ``pairs`` carry the log-probs of the previous policy and its reference (:data:`POLICY_LOGPS`,
    :data:`REF_LOGPS`) and, for the Eq. 7 ensemble, of the policy before it and its reference
    (:data:`POLICY2_LOGPS`, :data:`REF2_LOGPS`; without them lambda counts as 0). Returns every
    pair with the columns ``irm`` (previous pair), ``irm_prev2`` (where scored), ``margin``
    (what the selection ranks by: :func:`ensemble_margin` for ``selection`` irm, else
    :func:`selection_margin`) and ``selected`` (:func:`select_by_margin`: the round(proportion
    x N) highest margins; every pair for ``selection`` none), and a report: the criterion, the
    counts, the lowest selected margin, and the selection's precision and recall
    (:func:`selection_quality`) against ``label_swapped`` (the noise experiment) and, where the
    pairs carry the gold judge's ``chosen_quality`` and ``rejected_quality``, against the pairs
    whose chosen answer is the worse one.
    """
    share = kept_share(selection, proportion)
    irm = implicit_reward_margin(pairs, beta, reward=reward, source=source)
    prev2 = None
    if any(c in pairs.columns for c in POLICY2_LOGPS + REF2_LOGPS):
        prev2 = implicit_reward_margin(
            pairs, beta, reward=reward, policy=POLICY2_LOGPS, reference=REF2_LOGPS, source=source
        )
    ensemble = ensemble_margin(irm, prev2, lam)
    margin = ensemble if selection == "irm" else selection_margin(pairs, selection, irm, source)
    _, mask = select_by_margin(pairs, margin, share, source=source)
    out = pairs.copy()
    out[IRM] = irm
    if prev2 is not None:
        out[IRM_PREV2] = prev2
    out[MARGIN] = margin
    out[SELECTED] = mask
    report: dict[str, Any] = {
        "selection": selection,
        "n_pairs": len(out),
        "n_selected": int(mask.sum()),
        "selection_proportion": share,
        "ensemble": prev2 is not None and selection == "irm",
        "ensemble_lambda": float(lam) if prev2 is not None and selection == "irm" else 0.0,
        "beta": float(beta),
        "reward": reward,
        "lowest_selected_margin": float(margin[mask].min()) if mask.any() else None,
    }
    if SWAPPED in out.columns:
        report["label_swapped"] = selection_quality(mask, out[SWAPPED])
    if set(QUALITY) <= set(out.columns):
        worse = out[QUALITY[0]].to_numpy(dtype=float) < out[QUALITY[1]].to_numpy(dtype=float)
        report["gold_worse_chosen"] = selection_quality(mask, worse)
    return out, report


def response_rewards(
    scores: pd.DataFrame, reward: str, beta: float, source: str = "<scores>"
) -> pd.DataFrame:
    """The score stage's ``scores`` with ``reward`` holding the implicit reward the IRM takes:
    dpo - the score stage's beta * (log pi_theta - log pi_ref), as it is; simpo - SimPO's
    beta / |y| * log pi_theta (Eq. 17) from ``logp_policy`` and ``len_tokens``. A missing or
    non-finite column, or a token count below 1, is an error naming ``source``."""
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    if reward == "dpo":
        return scores
    check_frame(
        scores, {"logp_policy": "float", "len_tokens": "int"}, source, finite=("logp_policy",)
    )
    short = scores["len_tokens"].to_numpy() < 1
    if short.any():
        raise DatasetError(
            f"{source}: column 'len_tokens' holds token counts below 1 at rows "
            f"{scores.index[short].tolist()[:SHOWN]}; SimPO's reward divides by them"
        )
    return scores.assign(reward=simpo_reward(scores["logp_policy"], scores["len_tokens"], beta))


def with_reference_logps(pairs: pd.DataFrame, column: str, source: str = "<pairs>") -> pd.DataFrame:
    """``pairs`` with the train reference's log-probs in :mod:`dicewf.reflogps`' columns
    (``ref_chosen_logps``, ``ref_rejected_logps`` and the token counts ``ref_chosen_tokens``,
    ``ref_rejected_tokens``), taken from ``{column}_chosen`` / ``{column}_rejected`` and
    :data:`TOKENS`: ``column`` is the score stage's name of the train reference
    (:func:`dicewf.reflogps.reused_column`: ``logp_policy`` where it is the previous policy)."""
    chosen, rejected = f"{column}_chosen", f"{column}_rejected"
    kinds = {chosen: "float", rejected: "float", TOKENS[0]: "int", TOKENS[1]: "int"}
    check_frame(pairs, kinds, source, finite=(chosen, rejected), allow_empty=True)
    out = pairs.copy()
    out["ref_chosen_logps"] = pairs[chosen].astype(float)
    out["ref_rejected_logps"] = pairs[rejected].astype(float)
    out["ref_chosen_tokens"] = pairs[TOKENS[0]].astype("int64")
    out["ref_rejected_tokens"] = pairs[TOKENS[1]].astype("int64")
    return out


def mix_iteration(
    offline: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    proportion: float,
    generated: float | None,
    seed: int,
    ref_logps: str | None = None,
    selection: str = "irm",
    scores_prev2: pd.DataFrame | None = None,
    lam: float = 0.0,
    candidates: pd.DataFrame | None = None,
    reward: str = "dpo",
    beta: float | None = None,
    offline_source: str = "<offline selection>",
    scores_source: str = "<scores>",
    scores_prev2_source: str = "<scores prev2>",
    candidates_source: str = "<pairs>",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """D_t of one SeRA iteration from :func:`select_offline`'s output and the score stage's
    rewards of the sampled responses: the ``selected`` offline pairs and N_gen bootstrapped
    pairs (:func:`sera_counts`, :func:`bootstrap_pairs`, :func:`mix_sera`), shuffled by ``seed``.

    ``ref_logps``, the score stage's name of the train reference (``logp_policy`` where it is
    the previous policy, :func:`dicewf.reflogps.reused_column`), puts its log-probs on every
    row (:func:`with_reference_logps` for the offline ones, as DICE's pairs carry them for the
    generated ones), so the train job runs no reference model; None carries none. Returns D_t
    and the counts (N, N_off, N_gen, the bootstrapped candidates). ``selection`` none keeps
    every offline pair (:func:`kept_share`: N_off = N, so SeRA's sum constraint leaves no
    bootstrapped pair and only ``generated`` adds some). ``scores_prev2``, the same samples
    scored under pi_theta^(t-2) and its reference, bootstraps by Eq. 7's ensemble with ``lam``
    (:func:`ensemble_rewards`): best and worst response by lam r_(t-2) + (1 - lam) r_(t-1),
    the margin ``irm`` theirs; None bootstraps by the previous policy's reward alone.
    ``candidates``, DICE's D(alpha*) (``sera.bootstrap: dice_alpha``), are the per-prompt pairs
    instead of each prompt's best and worst response (:func:`bootstrap_pairs`); the highest
    margins are kept from them as from those. ``reward`` simpo bootstraps by SimPO's reward with
    ``beta`` (:func:`response_rewards`; not with ``candidates``, which DICE built by the DPO
    reward).
    """
    check_frame(offline, {SELECTED: "bool"}, offline_source)
    if reward != "dpo":
        if candidates is not None:
            raise ValueError(
                f"{candidates_source}: DICE's pairs are built by the DPO implicit reward; "
                f"they cannot be bootstrapped by {reward!r}'s"
            )
        if beta is None:
            raise ValueError(f"reward {reward!r} needs the beta of its reward")
        scores = response_rewards(scores, reward, beta, scores_source)
        if scores_prev2 is not None:
            scores_prev2 = response_rewards(scores_prev2, reward, beta, scores_prev2_source)
    proportion = kept_share(selection, proportion)
    n_offline, n_generated = sera_counts(len(offline), proportion, generated)
    selected = offline[offline[SELECTED].to_numpy(dtype=bool)].reset_index(drop=True)
    if len(selected) != n_offline:
        raise ValueError(
            f"{offline_source}: {len(selected)} pairs are selected, but a selection proportion "
            f"of {proportion} keeps {n_offline} of {len(offline)}: the selection was made with "
            "another proportion"
        )
    if ref_logps is not None:
        selected = with_reference_logps(selected, ref_logps, offline_source)
    score = "reward"
    if scores_prev2 is not None:
        scores = ensemble_rewards(
            scores, scores_prev2, lam, source=scores_source, source_prev2=scores_prev2_source
        )
        score = ENSEMBLE_REWARD
    boot = bootstrap_pairs(
        scores,
        count=n_generated,
        score=score,
        ref_logps=ref_logps,
        candidates=candidates,
        source=scores_source,
        candidates_source=candidates_source,
    )
    mixed = mix_sera(
        selected,
        boot,
        n_generated,
        seed,
        offline_source=offline_source,
        generated_source=scores_source,
    )
    counts = {
        "n_offline_all": len(offline),
        "n_offline": n_offline,
        "n_generated": n_generated,
        "n_candidates": int(boot.attrs["n_candidates"]),
        "n_mixed": len(mixed),
        # Eq. 7 on the bootstrapped pairs (the offline selection's is select_offline's report)
        "bootstrap_ensemble": scores_prev2 is not None,
        "bootstrap_ensemble_lambda": float(lam) if scores_prev2 is not None else 0.0,
        "bootstrap": "implicit" if candidates is None else "dice_alpha",
        "bootstrap_reward": reward,
    }
    return mixed, counts
