"""Table 5: how often a reward model agrees with a judge's preference labels.

The paper samples 500 (x, y1, y2) tuples from the first DICE iteration's generated data, asks a
judge (GPT-4o there; the gold judge in the toy world) which response is better, and reports for
each reward model the fraction of tuples where it prefers the same response. Here the DPO
implicit reward of a tuple's responses is read from the iteration-1 scores (pi_theta^(0) against
pi_ref^(0), exactly what DICE used to build its pairs) and any other reward model's rewards are
computed by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .io import check_frame

TUPLES = {
    "prompt_id": "str",
    "prompt": "str",
    "response_1": "str",
    "response_2": "str",
    "reward_1": "float",
    "reward_2": "float",
}


def sample_tuples(
    scores: pd.DataFrame, n: int, seed: int, source: str = "<scores>"
) -> pd.DataFrame:
    """Up to ``n`` tuples (x, y1, y2): distinct prompts, each with two different responses.

    Prompts are drawn without replacement among those with at least two distinct response
    texts (so at most one tuple per prompt), and the two responses uniformly among the prompt's
    distinct texts; ``reward_1``/``reward_2`` are the responses' implicit rewards.
    """
    check_frame(scores, "rewards", source)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    frame = scores.dropna(subset=["reward"]).drop_duplicates(["prompt_id", "response"])
    groups = {pid: g for pid, g in frame.groupby("prompt_id", sort=True) if len(g) >= 2}
    if not groups:
        raise ValueError(f"{source}: no prompt has two different responses")
    ids = sorted(groups)
    picked = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
    rows = []
    for i in sorted(picked):
        g = groups[ids[i]]
        a, b = rng.choice(len(g), size=2, replace=False)
        first, second = g.iloc[a], g.iloc[b]
        rows.append(
            {
                "prompt_id": first.prompt_id,
                "prompt": first.prompt,
                "response_1": first.response,
                "response_2": second.response,
                "reward_1": float(first.reward),
                "reward_2": float(second.reward),
            }
        )
    return pd.DataFrame(rows)


def gold_labels(tuples: pd.DataFrame, tasks: Mapping, judge) -> np.ndarray:
    """Toy-world labels: 1.0 where the gold judge prefers response 1 (P > 0.5), 0.0 where it
    prefers response 2, NaN on an exact tie."""
    from .toyworld import preference

    labels = []
    for r in tuples.itertuples(index=False):
        if r.prompt_id not in tasks:
            raise KeyError(f"prompt_id {r.prompt_id!r} of the tuples is not a task of the world")
        p = preference(tasks[r.prompt_id], r.response_1, r.response_2, judge)
        labels.append(np.nan if p == 0.5 else float(p > 0.5))
    return np.asarray(labels, dtype=float)


def check_labelled(labels, judge: str) -> None:
    """Raise ``ValueError`` naming ``judge`` and the counts unless some tuple has a label."""
    y = np.asarray(labels, dtype=float)
    if not (~np.isnan(y)).any():
        raise ValueError(
            f"no labelled tuple: {judge} labelled none of the {len(y)} tuples "
            "(each judged a tie, or without a verdict in both orders)"
        )


def rate(reward_1, reward_2, labels) -> float:
    """Agreement of a reward model with the labels, over labelled tuples: 1 when it prefers the
    labelled response, 1/2 when it rates both equally, 0 otherwise."""
    r1, r2, y = (np.asarray(v, dtype=float) for v in (reward_1, reward_2, labels))
    if not (len(r1) == len(r2) == len(y)):
        raise ValueError(f"lengths differ: {len(r1)}, {len(r2)}, {len(y)}")
    keep = ~np.isnan(y)
    if not keep.any():
        raise ValueError("no labelled tuple")
    prefers_1 = np.sign(r1 - r2)[keep]
    want = np.where(y[keep] == 1.0, 1.0, -1.0)
    return float(np.mean(np.where(prefers_1 == 0, 0.5, (prefers_1 == want).astype(float))))


def judge_labels(tuples: pd.DataFrame, client, **judge_kwargs) -> np.ndarray:
    """Labels from an LLM judge (the paper's GPT-4o): each tuple is judged in both orders with
    the pairwise prompt of :mod:`dicewf.arena`; the label is 1.0 where response 1 wins on
    balance (strong verdicts count three times), 0.0 where response 2 does, NaN on a tie or
    when no verdict could be read."""
    from .arena import judge, model_outcome

    check_frame(tuples, TUPLES, "<tuples>")
    questions = tuples[["prompt_id", "prompt"]]
    responses = tuples[["prompt_id"]].assign(response=tuples["response_1"])
    baseline = tuples[["prompt_id"]].assign(reference=tuples["response_2"])
    judged = judge(questions, responses, baseline, client, **judge_kwargs)
    balance = {pid: 0.0 for pid in tuples["prompt_id"]}
    for row in judged.itertuples(index=False):
        if isinstance(row.verdict, str):
            outcome, weight = model_outcome(row.verdict, row.model_position)
            balance[row.prompt_id] += weight * (outcome - 0.5)
    return np.array(
        [np.nan if balance[p] == 0 else float(balance[p] > 0) for p in tuples["prompt_id"]]
    )


def table5(
    tuples: pd.DataFrame,
    labels,
    intl_rm: Callable[[pd.DataFrame], Sequence[float]],
    external: Sequence[tuple[str, Callable[[pd.DataFrame], Sequence[float]]]],
    *,
    judge: str,
    setting: str,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Table 5's agreement rates with the judge's ``labels`` (one per tuple, NaN: unlabelled).

    ``intl_rm`` and each of ``external`` (label, scorer) score a frame of prompt and response;
    each scores response 1 and response 2 of every tuple. Returns the tuples with ``label``,
    ``rm_reward_{1,2}`` (the IntlRM) and ``erm{i}_reward_{1,2}`` (the i-th of ``external``), and
    the result: ``n_tuples``, ``n_labelled``, ``judge``, ``setting`` and ``rates`` (IntlRM, each
    external model by its label, and the DPO implicit reward read from the tuples' rewards).
    """
    check_frame(tuples, TUPLES, "<tuples>")
    frames = {k: tuples[["prompt"]].assign(response=tuples[f"response_{k}"]) for k in (1, 2)}
    rm = {k: intl_rm(frames[k]) for k in (1, 2)}
    tuples = tuples.assign(label=labels, rm_reward_1=rm[1], rm_reward_2=rm[2])
    rates = {"IntlRM": rate(rm[1], rm[2], labels)}
    for i, (label, scorer) in enumerate(external):
        erm = {k: scorer(frames[k]) for k in (1, 2)}
        tuples = tuples.assign(**{f"erm{i}_reward_1": erm[1], f"erm{i}_reward_2": erm[2]})
        rates[label] = rate(erm[1], erm[2], labels)
    rates["DPO Implicit Reward"] = rate(tuples["reward_1"], tuples["reward_2"], labels)
    result = {
        "n_tuples": len(tuples),
        "n_labelled": int(tuples["label"].notna().sum()),
        "judge": judge,
        "setting": setting,
        "rates": rates,
    }
    return tuples, result
