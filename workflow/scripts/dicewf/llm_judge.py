"""LLM-as-a-Judge: the policy pi_theta^(t-1) scores its own responses (Section 5.1, Appendix E).

The baseline of the paper prompts the previous policy with a judge template g(x, y) (Figure 6,
after Yuan et al., 2024) that asks for an additive 0-5 score, and ranks each prompt's sampled
responses by that score instead of by the implicit reward. Here:

* :func:`load_template` reads a template with the placeholders ``{instruction}`` and
  ``{response}`` (``workflow/prompts/llm_as_judge.txt`` is the paper's);
* :func:`judge` renders one judge prompt per sampled (prompt, response), generates one
  judgement each with :func:`dicewf.sampling.sample` (chat template applied, vLLM or
  transformers, a seed per request derived from ``"<prompt_id>#<sample_idx>"``), and parses
  the score with :func:`parse_score`;
* the result has the columns of :data:`JUDGE_SCORES`; ``reward`` is the parsed score, NaN when
  the judgement holds none (:func:`parsed` keeps the scored rows).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
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
    + _NUMBER + _DENOMINATOR + _RANGE,
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


def request_id(prompt_id: str, sample_idx: int) -> str:
    """The prompt_id of a judge request: unique per response, so each gets its own seed."""
    return f"{prompt_id}#{sample_idx}"


def judge(policy: str | os.PathLike, samples: pd.DataFrame, template: str,
          sampling: Mapping[str, Any], *, backend: str = "auto",
          engine: Mapping[str, Any] | None = None, drop_truncated: bool = True,
          source: str = "<samples>") -> pd.DataFrame:
    """Score each sampled response by prompting ``policy`` with ``template``.

    ``samples`` has the columns of ``io.SCHEMAS["samples"]``; ``sampling`` holds vLLM
    ``SamplingParams`` names for the judgement (``n`` must be 1; ``temperature``, ``top_p``,
    ``max_tokens``, ``seed``). Responses cut at the token limit (``finish_reason == "length"``)
    are dropped when ``drop_truncated``, as :func:`dicewf.scoring.score` does. Returns the
    columns of :data:`JUDGE_SCORES` (``finish_reason`` is the judged response's) plus
    ``judge_finish_reason``; ``len_tokens`` counts the response's tokens plus EOS under the
    policy's tokenizer, as in :func:`dicewf.scoring.score`.
    """
    from transformers import AutoTokenizer

    from .scoring import encode, finished

    check_frame(samples, "samples", source)
    check_template(template)
    params = dict(sampling)
    params.setdefault("n", 1)
    if params["n"] != 1:
        raise ValueError(f"judge sampling: n must be 1 (one judgement per response), "
                         f"got {params['n']}")
    df = finished(samples, drop_truncated, source, "judge")
    dup = df.index[df.duplicated(["prompt_id", "sample_idx"])].tolist()
    if dup:
        raise ValueError(f"{source}: repeated (prompt_id, sample_idx) at rows {dup[:5]}")
    ids = [request_id(p, k) for p, k in zip(df["prompt_id"], df["sample_idx"], strict=True)]
    requests = pd.DataFrame({
        "prompt_id": ids,
        "prompt": [render(template, p, r)
                   for p, r in zip(df["prompt"], df["response"], strict=True)],
    })
    out = _sampling.sample(policy, requests, params, backend=backend, engine=engine,
                          source=source)
    if out["prompt_id"].tolist() != ids:
        raise RuntimeError("the sampler returned judgements out of request order")
    judgements = out["response"].astype(str).tolist()
    tokenizer = AutoTokenizer.from_pretrained(policy)
    encoded = encode(tokenizer, df["prompt"].tolist(), df["response"].tolist())
    result = df[["prompt_id", "prompt", "sample_idx", "response", "finish_reason"]].copy()
    result["reward"] = np.array([parse_score(j) for j in judgements], dtype=np.float64)
    result["len_chars"] = result["response"].str.len().astype("int64")
    result["len_tokens"] = np.array([e.n_response for e in encoded], dtype=np.int64)
    result["judgement"] = judgements
    result["judge_finish_reason"] = out["finish_reason"].tolist()
    n_ok = int(result["reward"].notna().sum())
    log.info("parsed a score from %d of %d judgements (%.1f%%); score counts: %s", n_ok,
             len(result), 100.0 * n_ok / len(result),
             result["reward"].value_counts(dropna=False).sort_index().to_dict())
    return check_frame(result, JUDGE_SCORES, source)


def parsed(scores: pd.DataFrame, source: str = "<judge_scores>") -> pd.DataFrame:
    """The rows of a judge_scores frame whose judgement held a score (finite ``reward``)."""
    check_frame(scores, JUDGE_SCORES, source)
    keep = np.isfinite(scores["reward"].to_numpy(dtype=float))
    log.info("%s: %d of %d judgements hold a score", source, int(keep.sum()), len(scores))
    return scores[keep].reset_index(drop=True)
