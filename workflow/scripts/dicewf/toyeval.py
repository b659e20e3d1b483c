"""The toy world's evaluation: both benchmarks (AlpacaEval-style win rates with our LC GLM, an
Arena-Hard-style score with its bootstrap interval) from one set of gold-judge preferences.

Apart from :mod:`dicewf.toyworld`, which the toy rules that build models import without the
evaluation's statistics stack (scipy, statsmodels)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from . import arena, toyworld, uncertainty
from .lcwinrate import win_rates


def evaluate(
    prompts: pd.DataFrame,
    responses: pd.DataFrame,
    judge: toyworld.JudgeSpec,
    *,
    l2: float,
    n_bootstrap: int,
    seed: int,
    policy: str,
    intervals: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The toy world's two benchmarks from one set of gold-judge preferences.

    ``prompts`` are the held-out prompts (prompt_id, kind, ..., reference) and ``responses`` the
    policy's samples of them (prompt_id, response, finish_reason). Returns the responses with
    their reference, the judgements (:func:`dicewf.toyworld.judge_responses`) and the metrics: AlpacaEval-style
    raw and length-controlled win rates (:func:`dicewf.lcwinrate.win_rates`, ridge ``l2``), an
    Arena-Hard-style score with a bootstrap 95% interval and its length-controlled variant (the
    gold judge's probabilities mapped to verdicts, :func:`dicewf.arena.score`), the mean gold
    quality, the count of truncated responses, ``policy`` (the model's path) and the
    percentile-bootstrap intervals over the prompts of LC, WR, gold quality and mean length
    (:func:`dicewf.uncertainty.prompt_intervals`; ``intervals``: its ``n_bootstrap``, ``level``
    and ``seed``, the config's eval.intervals; None: no intervals).
    """

    responses = responses.merge(prompts[["prompt_id", "reference"]], on="prompt_id", validate="m:1")
    judged = toyworld.judge_responses(toyworld.tasks_from_frame(prompts), responses, judge)
    wr = win_rates(judged["preference"], judged["len_model"], judged["len_baseline"], l2=l2)
    battles = arena.judgments_from_probabilities(
        judged["prompt_id"],
        judged["preference"],
        len_model=judged["len_model"],
        len_baseline=judged["len_baseline"],
    )
    arena_metrics = arena.score(battles, n_bootstrap=n_bootstrap, seed=seed)
    metrics = {
        **wr.to_dict(),
        **{k if k.startswith("arena_") else f"arena_{k}": v for k, v in arena_metrics.items()},
        "gold_quality": float(judged["quality"].mean()),
        "truncated": int((responses["finish_reason"] == "length").sum()),
        "policy": policy,
    }
    if intervals is not None:
        metrics |= uncertainty.prompt_intervals(
            judged,
            l2=l2,
            n_bootstrap=intervals["n_bootstrap"],
            level=intervals["level"],
            seed=intervals["seed"],
        )
    return responses, judged, metrics
