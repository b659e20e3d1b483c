"""LLM-as-a-Judge: the policy pi_theta^(t-1) scores its own responses (Section 5.1, Appendix E).

The baseline of the paper prompts the previous policy with a judge template g(x, y) (Figure 6,
after Yuan et al., 2024) that asks for an additive 0-5 score, and ranks each prompt's sampled
responses by that score instead of by the implicit reward. Here:

* :func:`load_template` reads a template with the placeholders ``{instruction}`` and
  ``{response}`` (``workflow/prompts/llm_as_judge.txt`` is the paper's);
* :func:`judge` renders one judge prompt per sampled (prompt, response), generates ``n``
  judgements of it with :func:`dicewf.sampling.sample` (chat template applied, vLLM or
  transformers, each judgement its own request with a seed derived from :func:`request_id`),
  and parses each rating with :func:`parse_score`;
* :func:`aggregate` makes the ratings one reward, as the DICE code does (its
  ``generate_scores.py`` samples 7 ratings at temperature 0.2, top_p 0.9 and averages the parsed
  ones when at least 3 parse): the mean of the parsed ratings when at least ``min_ratings``
  parse, else NaN (the response is unrated and drops out). One greedy rating (``n`` 1,
  temperature 0, ``min_ratings`` 1) is the reward of that single rating;
* the result has the columns of :data:`JUDGE_SCORES` plus the ratings (:func:`parsed` keeps the
  rated rows).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import sampling as _sampling
from .io import SCHEMAS, check_frame

log = logging.getLogger(__name__)

PLACEHOLDERS = ("instruction", "response")
SCORE_RANGE = (0.0, 5.0)

# Column contract of a judge_scores dataset (registered in io.SCHEMAS)
JUDGE_SCORES: dict[str, str] = SCHEMAS["judge_scores"]

_PLACEHOLDER = re.compile(r"\{(instruction|response)\}")


def check_template(template: str, source: str | os.PathLike = "<template>") -> str:
    """Raise ``ValueError`` naming ``source`` unless both placeholders occur in ``template``."""
    missing = [p for p in PLACEHOLDERS if "{" + p + "}" not in template]
    if missing:
        names = ", ".join("{" + p + "}" for p in missing)
        raise ValueError(
            f"{source}: judge template lacks the placeholder(s) {names}; it needs both "
            "{instruction} and {response}"
        )
    return template


def load_template(path: str | os.PathLike) -> str:
    """Read a judge template and check it holds ``{instruction}`` and ``{response}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: judge template file does not exist")
    return check_template(path.read_text(), path)


def render(template: str, instruction: str, response: str) -> str:
    """Fill the placeholders in one pass: braces or placeholder names inside the instruction or
    the response are left as they are, and other braces of the template are kept."""
    values = {"instruction": instruction, "response": response}
    return _PLACEHOLDER.sub(lambda m: values[m[1]], template)


# ---------------------------------------------------------------------------------------------
# Parsing a judgement

_NUMBER = r"(?P<num>\d+(?:\.\d+)?)(?![\w]|\.\d)"
_DENOMINATOR = r"(?P<den>\s*[*_`]*\s*(?:/|out\s+of)\s*(?P<d>\d+(?:\.\d+)?))?"
_RANGE = r"(?P<range>\s*(?:to|-|\u2013)\s*\d)?"
# "Score: 4", "**Score:** 4", "Score - 4.5", "score of 4", "Score: <4>", "Final score = 4/5" ...
_SCORE = re.compile(
    r"\bscore\b\s*(?:of|is|was|=|:|-|\u2013)?\s*[*_`\s]*[:=]?[*_`\s<\[(]*"
    + _NUMBER
    + _DENOMINATOR
    + _RANGE,
    re.IGNORECASE,
)
# "4/5", "4 out of 5" without the word score
_OUT_OF_FIVE = re.compile(
    r"(?<![\w.])" + _NUMBER + r"\s*(?:/|out\s+of)\s*5(?:\.0)?(?![\d.]\d|\d)", re.IGNORECASE
)
# "0 to 5", "0-5", "between 0 and 5": a scale, not a score
_SCALE = re.compile(
    r"\bbetween\s+\d+(?:\.\d+)?\s+and\s+\d+(?:\.\d+)?"
    r"|(?<![\w.])\d+(?:\.\d+)?\s*(?:to|-|\u2013)\s*\d+(?:\.\d+)?(?![\w.]\d)",
    re.IGNORECASE,
)
# a number on its own: not part of a word, a decimal, "5-point", "-1", "3/10" or "50%"
_STANDALONE = re.compile(r"(?<![\w.\-/])(\d+(?:\.\d+)?)(?![\w\-/%]|\.\d)")


def _in_range(x: float) -> bool:
    return SCORE_RANGE[0] <= x <= SCORE_RANGE[1]


def parse_score(text: str | None) -> float:
    """The score a judgement gives, in [0, 5]; NaN when it gives none.

    In order of preference: the last "Score: N" (with optional markdown, "N/5" or "N out of 5";
    N an integer or a decimal; a range like "score of 0 to 5" or a scale other
    than 5 does not count), else the last "N/5" or "N out of 5", else the last standalone number.
    Values outside [0, 5] are skipped at every step.
    """
    if not isinstance(text, str) or not text:
        return math.nan
    scores = []
    for m in _SCORE.finditer(text):
        if m["range"] or (m["d"] is not None and float(m["d"]) != 5.0):
            continue
        scores.append(float(m["num"]))
    scores = [s for s in scores if _in_range(s)]
    if scores:
        return scores[-1]
    text = _SCALE.sub(" ", text)
    scores = [s for s in (float(m["num"]) for m in _OUT_OF_FIVE.finditer(text)) if _in_range(s)]
    if scores:
        return scores[-1]
    scores = [s for s in (float(m[1]) for m in _STANDALONE.finditer(text)) if _in_range(s)]
    return scores[-1] if scores else math.nan


# ---------------------------------------------------------------------------------------------
# Judging


def request_id(prompt_id: str, sample_idx: int, rating: int = 0) -> str:
    """The prompt_id of a judge request, unique per response and rating, so each rating gets its
    own seed: ``"<prompt_id>#<sample_idx>"`` for the first rating (so one rating per response
    is the judgement it always was) and ``"<prompt_id>#<sample_idx>#<rating>"`` after it."""
    base = f"{prompt_id}#{sample_idx}"
    return base if rating == 0 else f"{base}#{rating}"


def aggregate(ratings: Sequence[float], min_ratings: int) -> float:
    """The reward of a response from its ratings (NaN where a judgement held none): the mean of
    the parsed ratings when at least ``min_ratings`` parsed, else NaN."""
    if min_ratings < 1:
        raise ValueError(f"min_ratings must be at least 1, got {min_ratings}")
    values = np.asarray(ratings, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) >= min_ratings else math.nan


def judge(
    policy: str | os.PathLike,
    samples: pd.DataFrame,
    template: str,
    sampling: Mapping[str, Any],
    *,
    min_ratings: int = 1,
    backend: str = "auto",
    engine: Mapping[str, Any] | None = None,
    drop_truncated: bool = True,
    strip_whitespace: bool = False,
    min_chars: int = 0,
    max_chars: int | None = None,
    max_prompt_tokens: int | None = None,
    source: str = "<samples>",
) -> pd.DataFrame:
    """Score each sampled response by prompting ``policy`` with ``template``, ``n`` times.

    ``samples`` has the columns of ``io.SCHEMAS["samples"]``; ``sampling`` holds vLLM
    ``SamplingParams`` names for the judgements: ``n`` ratings per response (default 1),
    ``temperature``, ``top_p``, ``max_tokens``, ``seed``. Each rating is its own request
    (:func:`request_id`). The reward is :func:`aggregate` of the ratings with ``min_ratings``.
    Responses are filtered first by :func:`dicewf.scoring.finished` (``drop_truncated``,
    ``strip_whitespace``, ``min_chars``, ``max_chars``), as :func:`dicewf.scoring.score`
    filters them, and, with ``max_prompt_tokens``, those whose judge prompt (chat template
    applied) has more tokens (the DICE code judges prompts of fewer than 4,096).

    Returns the columns of :data:`JUDGE_SCORES` (``finish_reason`` is the judged response's,
    ``judgement`` the first judgement) plus ``judge_finish_reason`` (the first judgement's),
    ``judgements`` and ``ratings`` (the ``n`` judgements and their parsed ratings, NaN where
    none parsed) and ``n_rated`` (how many parsed); ``len_tokens`` counts the response's tokens
    plus EOS under the policy's tokenizer, as in :func:`dicewf.scoring.score`.
    """
    from transformers import AutoTokenizer

    from .sampling import SamplingSpec
    from .scoring import encode, finished

    check_frame(samples, "samples", source)
    check_template(template)
    params = dict(sampling)
    n = int(params.pop("n", 1))
    if n < 1:
        raise ValueError(f"judge sampling: n (ratings per response) must be >= 1, got {n}")
    if not 1 <= min_ratings <= n:
        raise ValueError(f"judge: min_ratings must lie in [1, n={n}], got {min_ratings}")
    if n > 1 and params.get("temperature", SamplingSpec.temperature) == 0:
        raise ValueError(
            f"judge sampling: greedy decoding (temperature 0) gives one rating; set n to 1, not {n}"
        )
    df = finished(
        samples,
        drop_truncated,
        source,
        "judge",
        strip_whitespace=strip_whitespace,
        min_chars=min_chars,
        max_chars=max_chars,
    )
    dup = df.index[df.duplicated(["prompt_id", "sample_idx"])].tolist()
    if dup:
        raise ValueError(f"{source}: repeated (prompt_id, sample_idx) at rows {dup[:5]}")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    rendered = [render(template, x, y) for x, y in zip(df["prompt"], df["response"], strict=True)]
    if max_prompt_tokens is not None:
        lengths = np.array([len(t) for t in _sampling.prompt_token_ids(tokenizer, rendered)])
        keep = lengths <= max_prompt_tokens
        log.info(
            "dropping %d responses whose judge prompt has more than %d tokens, of %d",
            int((~keep).sum()),
            max_prompt_tokens,
            len(df),
        )
        if not keep.any():
            raise ValueError(
                f"{source}: every judge prompt has more than {max_prompt_tokens} "
                "tokens (score.judge.max_prompt_tokens)"
            )
        df = df[keep].reset_index(drop=True)
        rendered = [t for t, k in zip(rendered, keep, strict=True) if k]
    ids, prompts = [], []
    for p, k, text in zip(df["prompt_id"], df["sample_idx"], rendered, strict=True):
        for r in range(n):
            ids.append(request_id(p, k, r))
            prompts.append(text)
    requests = pd.DataFrame({"prompt_id": ids, "prompt": prompts})
    out = _sampling.sample(
        policy, requests, {**params, "n": 1}, backend=backend, engine=engine, source=source
    )
    if out["prompt_id"].tolist() != ids:
        raise RuntimeError("the sampler returned judgements out of request order")
    texts = np.array(out["response"].astype(str).tolist(), dtype=object).reshape(len(df), n)
    reasons = np.array(out["finish_reason"].tolist(), dtype=object).reshape(len(df), n)
    ratings = np.array([parse_score(t) for t in texts.ravel()], dtype=np.float64)
    ratings = ratings.reshape(len(df), n)
    encoded = encode(tokenizer, df["prompt"].tolist(), df["response"].tolist())
    result = df[["prompt_id", "prompt", "sample_idx", "response", "finish_reason"]].copy()
    result["reward"] = np.array([aggregate(row, min_ratings) for row in ratings], dtype=np.float64)
    result["len_chars"] = result["response"].str.len().astype("int64")
    result["len_tokens"] = np.array([e.n_response for e in encoded], dtype=np.int64)
    result["judgement"] = texts[:, 0].tolist()
    result["judge_finish_reason"] = reasons[:, 0].tolist()
    result["judgements"] = [list(row) for row in texts]
    result["ratings"] = [list(row) for row in ratings]
    result["n_rated"] = np.isfinite(ratings).sum(axis=1).astype("int64")
    n_ok = int(result["reward"].notna().sum())
    log.info(
        "parsed a rating from %d of %d judgements (%.1f%%); ratings parsed per response "
        "(of %d): %s",
        int(np.isfinite(ratings).sum()),
        ratings.size,
        100.0 * np.isfinite(ratings).mean(),
        n,
        result["n_rated"].value_counts().sort_index().to_dict(),
    )
    log.info(
        "rated %d of %d responses (at least %d parsed ratings); %d unrated drop out",
        n_ok,
        len(result),
        min_ratings,
        len(result) - n_ok,
    )
    log.info(
        "reward counts: %s",
        result["reward"].round(2).value_counts(dropna=False).sort_index().to_dict(),
    )
    return check_frame(result, JUDGE_SCORES, source)


def parsed(scores: pd.DataFrame, source: str = "<judge_scores>") -> pd.DataFrame:
    """The rows of a judge_scores frame that are rated (finite ``reward``)."""
    check_frame(scores, JUDGE_SCORES, source)
    keep = np.isfinite(scores["reward"].to_numpy(dtype=float))
    log.info("%s: %d of %d responses are rated", source, int(keep.sum()), len(scores))
    return scores[keep].reset_index(drop=True)
