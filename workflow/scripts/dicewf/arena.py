"""Arena-Hard: pairwise judging against a baseline's answers, and the benchmark's score.

Arena-Hard-Auto v0.1 (Li et al., 2024) has 500 hard prompts from Chatbot Arena. A judge model
compares the evaluated model's answer with the baseline's (gpt-4-0314) twice per prompt, once in
each order, and ends each judgment with one of five labels: ``[[A>>B]]``, ``[[A>B]]``, ``[[A=B]]``,
``[[B>A]]``, ``[[B>>A]]``. The paper behind this workflow used Mistral-Large-Instruct-2407 as the
judge.

The judge prompt. The benchmark's own prompt is part of its GitHub repository's configuration, not
of the hub dataset (``lmarena-ai/arena-hard-auto-v0.1`` holds only the 500 questions), so this
module ships its own prompt, :data:`SYSTEM_PROMPT` and :data:`PROMPT_TEMPLATE`, written for this
workflow: it asks for the same procedure in outline (answer the prompt yourself, check both
answers for mistakes, weigh helpfulness, relevance, concision and missing information) and for the
same verdict labels. Scores from it are comparable between models judged here, not to the
published leaderboard. To reproduce the benchmark's exact prompt, pass its text at run time as
``system_prompt`` / ``prompt_template`` (placeholders ``{question}``, ``{answer_a}``,
``{answer_b}``). As in the benchmark, a judgment without any verdict label is continued once with
a follow-up message asking for one (``follow_ups``); the verdict is read from the whole judgment,
and a judgment that still has none, or names two different ones, is left out of the score.

The score (:func:`score`). Game 1 shows the baseline as assistant A and the model as B; game 2
swaps them. Each game with a verdict is a battle with the model's outcome 1 (win), 0.5 (tie) or 0
(loss); a strong verdict (``>>``) counts as three battles. Arena-Hard fits a Bradley-Terry model to
the battles (a logistic regression on rating differences, a tie counting as half a win for each
side) and reports the model's predicted win rate against the baseline. When every battle is
between the model and the baseline, the maximum-likelihood Bradley-Terry win probability equals
the weighted fraction of battles won, ``sum(w * outcome) / sum(w)``, which :func:`bradley_terry`
computes in closed form (the tests check it against a numerical logistic-regression fit done the
benchmark's way). The 95 % interval is the 2.5th and 97.5th percentile of the score over
``n_bootstrap`` resamples. We resample questions (both games of a question together), because the
two games and the three copies of a strong verdict are not independent; the benchmark resampled
the expanded battles, available as ``unit="battle"``.

The length-controlled score (:func:`length_controlled`; Tables 9/10 of the paper report it, their
footnote 11). Arena-Hard-Auto's length control (``show_result.py --length-control-only``, 2024)
adds one covariate to the Bradley-Terry regression, the normalised length difference of a battle's
two answers, ``(|y_model| - |y_baseline|) / (|y_model| + |y_baseline| + 1)``, divided by its
standard deviation over the battles, and reports the win rate predicted from the rating
difference alone (the covariate's term left out). The fit is the benchmark's: battles expanded by
weight and duplicated (a tie counting once as a win and once as a loss), no intercept, the rating
columns at +-log(10), and scikit-learn's default L2 penalty (``C = 1``) on the coefficients
(``reg``); we solve it by Newton's method on its two free parameters (the tests check it against
scikit-learn's fit). Two deviations, both because we score one model at a time: the benchmark
also subtracts the covariate's mean over all battles of its leaderboard (so its LC score is the
win rate at the leaderboard's mean length ratio), while ours leaves the covariate uncentred, so
the LC score is the win rate at equal length (centred on a single model, the covariate would leave
that model's own length advantage in its rating); and lengths are characters (the judgments'
``len_model``/``len_baseline``), not the benchmark's tiktoken tokens. The interval resamples as
the plain score does, with the same draws, refitting each resample.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .io import DatasetError, check_frame
from .judge_client import ChatClient, JudgeError

log = logging.getLogger(__name__)

__all__ = [
    "FOLLOW_UP",
    "LC_REG",
    "PROMPT_TEMPLATE",
    "STRONG_WEIGHT",
    "SYSTEM_PROMPT",
    "VERDICTS",
    "bradley_terry",
    "judge",
    "judge_and_score",
    "judgments_from_probabilities",
    "length_controlled",
    "length_feature",
    "model_outcome",
    "parse_verdict",
    "score",
    "verdict_from_probability",
]

#: The five verdict labels, from "A much better" to "B much better".
VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
#: How many battles a strong verdict (``>>``) counts for, as in Arena-Hard.
STRONG_WEIGHT = 3
#: L2 penalty of the length-controlled fit: 1 / C of scikit-learn's default LogisticRegression.
LC_REG = 1.0

# Equivalent spellings a judge sometimes uses, mapped onto VERDICTS.
_SYNONYMS = {
    "A<<B": "B>>A",
    "A<B": "B>A",
    "B<A": "A>B",
    "B<<A": "A>>B",
    "B=A": "A=B",
    "A==B": "A=B",
    "B==A": "A=B",
}
_LABEL = re.compile(r"\[\[\s*([AB]\s*(?:>>|<<|>|<|==|=)\s*[AB])\s*\]\]")

SYSTEM_PROMPT = """\
You are judging two AI assistants. You will see a user's prompt and the two assistants' answers, \
labelled A and B, and you decide which answer is better.

Proceed as follows.
1. Before reading the answers closely, write your own answer to the prompt. Use it as a \
yardstick, not as the only acceptable answer.
2. Go through each assistant's answer and point out any mistakes or inaccurate statements, with \
the correction.
3. Assess each answer for helpfulness (does it do what the user asked? If the prompt is \
ambiguous or admits several readings, asking the user to clarify is better than building on a \
guess), relevance (does every part bear on the request?) and concision (is it clear and to the \
point, without padding?). Consider creativity and novelty where the task calls for them.
4. Note important information that an answer leaves out and that the user would need.

Do not let the order in which the answers appear, their length or the assistants' names sway you.

Finish with exactly one of these verdict labels, in double square brackets:
[[A>>B]] if A is much better than B;
[[A>B]] if A is slightly better;
[[A=B]] if they are about equally good;
[[B>A]] if B is slightly better;
[[B>>A]] if B is much better.
End your reply with a line such as "Final verdict: [[A=B]]"."""

PROMPT_TEMPLATE = """\
<user_prompt>
{question}
</user_prompt>

<answer_of_assistant_A>
{answer_a}
</answer_of_assistant_A>

<answer_of_assistant_B>
{answer_b}
</answer_of_assistant_B>"""

FOLLOW_UP = (
    "Please complete your evaluation and end it with your final verdict as one label "
    "in double square brackets, e.g. [[A=B]]."
)


def parse_verdict(text: str | None) -> str | None:
    """Return the verdict label in a judge's reply, or None if there is none or it is ambiguous.

    Labels are found anywhere in the text (``[[B>A]]``, ``**[[ B > A ]]**``, ...); equivalent
    spellings (``A<B``, ``B=A``, ...) are mapped onto :data:`VERDICTS`. A reply that names two
    different verdicts is ambiguous (None); repeating the same one is fine.
    """
    found = _labels(text)
    return next(iter(found)) if len(found) == 1 else None


def _labels(text: str | None) -> set[str]:
    """The distinct verdict labels (normalised onto :data:`VERDICTS`) named in ``text``."""
    found = set()
    for raw in _LABEL.findall(text or ""):
        label = re.sub(r"\s+", "", raw)
        if label[0] == label[-1]:  # "A>A": not a comparison
            continue
        found.add(_SYNONYMS.get(label, label))
    return found & set(VERDICTS)


def _has_verdict(record: Mapping[str, Any]) -> bool:
    """Whether a judge reply (a :class:`ChatClient` record) names exactly one verdict label."""
    return len(_labels(record.get("response"))) == 1


def model_outcome(verdict: str, model_position: Literal["A", "B"]) -> tuple[float, int]:
    """The model's (outcome, weight) for ``verdict`` when it was assistant ``model_position``.

    Outcome is 1 for a win, 0.5 for a tie and 0 for a loss; weight is :data:`STRONG_WEIGHT` for a
    strong verdict and 1 otherwise.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {VERDICTS}")
    if model_position not in ("A", "B"):
        raise ValueError(f"model_position must be 'A' or 'B', got {model_position!r}")
    weight = STRONG_WEIGHT if ">>" in verdict else 1
    if verdict == "A=B":
        return 0.5, weight
    winner = verdict[0]
    return (1.0 if winner == model_position else 0.0), weight


def verdict_from_probability(p: float, model_position: Literal["A", "B"] = "A") -> str:
    """Map a judge's probability that the model beats the baseline onto a verdict label.

    Thresholds (symmetric about 0.5): ``p >= 0.9`` a strong win, ``0.6 <= p < 0.9`` a win,
    ``0.4 < p < 0.6`` a tie, ``0.1 < p <= 0.4`` a loss, ``p <= 0.1`` a strong loss. The label is
    written from the positions of the game: with ``model_position="B"`` a strong win is
    ``"B>>A"``. Used where a judge gives probabilities (the toy world's gold judge), so that its
    Arena-style metric goes through the same :func:`score`.
    """
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"probability must be in [0, 1], got {p!r}")
    if model_position not in ("A", "B"):
        raise ValueError(f"model_position must be 'A' or 'B', got {model_position!r}")
    m, b = model_position, "B" if model_position == "A" else "A"
    if p >= 0.9:
        return f"{m}>>{b}"
    if p >= 0.6:
        return f"{m}>{b}"
    if p > 0.4:
        return "A=B"
    if p > 0.1:
        return f"{b}>{m}"
    return f"{b}>>{m}"


def judgments_from_probabilities(
    prompt_ids: Sequence[str],
    p_game1: Sequence[float],
    p_game2: Sequence[float] | None = None,
    *,
    len_model: Sequence[float] | None = None,
    len_baseline: Sequence[float] | None = None,
) -> pd.DataFrame:
    """A judgments frame (as :func:`judge` returns) from P(model beats baseline) per game.

    ``p_game1`` holds the probabilities with the baseline shown first (the model as B),
    ``p_game2`` those with the model first (as A); without ``p_game2`` game 2 reuses ``p_game1``
    (a judge without position bias). ``len_model``/``len_baseline`` (the answers' lengths, per
    question) add the columns the length-controlled score reads.
    """
    p2 = p_game1 if p_game2 is None else p_game2
    if not (len(prompt_ids) == len(p_game1) == len(p2)):
        raise ValueError("prompt_ids, p_game1 and p_game2 must have the same length")
    if (len_model is None) != (len_baseline is None):
        raise ValueError("give both len_model and len_baseline, or neither")
    lengths = None if len_model is None else list(zip(len_model, len_baseline, strict=True))
    if lengths is not None and len(lengths) != len(prompt_ids):
        raise ValueError("len_model and len_baseline must have one length per prompt_id")
    rows = []
    for i, (pid, q1, q2) in enumerate(zip(prompt_ids, p_game1, p2)):
        extra = (
            {}
            if lengths is None
            else {"len_model": float(lengths[i][0]), "len_baseline": float(lengths[i][1])}
        )
        rows.append(
            {
                "prompt_id": str(pid),
                "game": 1,
                "model_position": "B",
                "verdict": verdict_from_probability(float(q1), "B"),
                "p_model": float(q1),
                **extra,
            }
        )
        rows.append(
            {
                "prompt_id": str(pid),
                "game": 2,
                "model_position": "A",
                "verdict": verdict_from_probability(float(q2), "A"),
                "p_model": float(q2),
                **extra,
            }
        )
    return pd.DataFrame(rows)


def _one_per_prompt(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    dup = df["prompt_id"][df["prompt_id"].duplicated()].unique().tolist()
    if dup:
        raise DatasetError(
            f"{source}: more than one row for prompt_id {dup[:5]} "
            f"({len(dup)} in all); expected one {column} per question"
        )
    return df.set_index("prompt_id")[column]


def judge(
    questions: pd.DataFrame,
    responses: pd.DataFrame,
    baseline: pd.DataFrame,
    client: ChatClient,
    *,
    system_prompt: str | None = None,
    prompt_template: str | None = None,
    follow_ups: int = 1,
) -> pd.DataFrame:
    """Judge the model's answer against the baseline's on every question, in both orders.

    ``questions`` has ``prompt_id`` and ``prompt``; ``responses`` has one ``response`` per
    ``prompt_id``; ``baseline`` has the baseline's answer per ``prompt_id`` in ``reference`` (the
    questions frame itself can serve). Every question needs a response and a baseline answer.
    ``follow_ups`` is how many times a judgment without any verdict label is continued with
    :data:`FOLLOW_UP`; the verdict is parsed from the whole judgment (all its turns).

    Returns one row per (question, game): ``prompt_id``, ``game`` (1: baseline as A; 2: model as
    A), ``model_position``, ``verdict`` (missing where none could be parsed), ``judgment``
    (the judge's text, follow-ups appended), ``attempts``, ``finish_reason``, ``len_model``,
    ``len_baseline`` (characters).

    A reply without exactly one verdict label is cached as such (``valid``), so a rerun asks it
    again rather than replaying it. Raises :class:`JudgeError` naming the judge, its cache and the
    count when no game has a verdict.
    """
    system_prompt = SYSTEM_PROMPT if system_prompt is None else system_prompt
    template = PROMPT_TEMPLATE if prompt_template is None else prompt_template
    check_frame(questions, {"prompt_id": "str", "prompt": "str"}, "questions")
    check_frame(responses, {"prompt_id": "str", "response": "str"}, "responses")
    check_frame(baseline, {"prompt_id": "str", "reference": "str"}, "baseline")
    ids = _one_per_prompt(questions, "prompt", "questions")
    answers = _one_per_prompt(responses, "response", "responses")
    base = _one_per_prompt(baseline, "reference", "baseline")
    for name, series in (("responses", answers), ("baseline", base)):
        missing = [p for p in ids.index if p not in series.index]
        if missing:
            raise DatasetError(
                f"{name}: no answer for prompt_id {missing[:5]} "
                f"({len(missing)} of {len(ids)} questions)"
            )

    games = []
    for pid, question in ids.items():
        model_answer, base_answer = answers[pid], base[pid]
        for game, (a, b, pos) in enumerate(
            ((base_answer, model_answer, "B"), (model_answer, base_answer, "A")), start=1
        ):
            user = template.format(question=question, answer_a=a, answer_b=b)
            games.append(
                {
                    "prompt_id": pid,
                    "game": game,
                    "model_position": pos,
                    "messages": [
                        {"role": "system", "content": system_prompt},
                        {"role": "user", "content": user},
                    ],
                    "len_model": len(model_answer),
                    "len_baseline": len(base_answer),
                }
            )

    pending = list(range(len(games)))
    for attempt in range(1 + follow_ups):
        records = client.complete_records(
            [games[i]["messages"] for i in pending], valid=_has_verdict
        )
        still = []
        for i, rec in zip(pending, records):
            g = games[i]
            g["messages"] = [*g["messages"], {"role": "assistant", "content": rec["response"]}]
            g["judgment"] = g.get("judgment", "") + ("\n\n" if attempt else "") + rec["response"]
            g["finish_reason"] = rec.get("finish_reason")
            g["attempts"] = attempt + 1
            labels = _labels(g["judgment"])  # the whole judgment so far, as the benchmark does
            g["verdict"] = next(iter(labels)) if len(labels) == 1 else None
            if not labels and attempt < follow_ups:  # no label at all (not: two labels)
                g["messages"] = [*g["messages"], {"role": "user", "content": FOLLOW_UP}]
                still.append(i)
        pending = still
        if not pending:
            break

    no_verdict = sum(g.get("verdict") is None for g in games)
    if no_verdict:
        where = f"; its replies are in {client.cache_path}" if client.cache_path else ""
        message = (
            f"{client.name} gave no verdict in {no_verdict} of {len(games)} games "
            f"({len(ids)} questions, {follow_ups} follow-ups){where}"
        )
        if no_verdict == len(games):
            raise JudgeError(
                f"{message}. Check its replies (a wrong model, prompt or "
                "server?); a rerun asks these games again"
            )
        log.warning("%s: they count as no battle; a rerun asks them again", message)
    columns = [
        "prompt_id",
        "game",
        "model_position",
        "verdict",
        "judgment",
        "attempts",
        "finish_reason",
        "len_model",
        "len_baseline",
    ]
    return pd.DataFrame([{c: g.get(c) for c in columns} for g in games], columns=columns)


def bradley_terry(outcomes: np.ndarray, weights: np.ndarray) -> float:
    """Maximum-likelihood Bradley-Terry probability that the model beats the baseline.

    With battles only between the model and the baseline, the likelihood
    ``prod_i sigmoid(d)^(w_i y_i) * (1 - sigmoid(d))^(w_i (1 - y_i))`` in the rating difference
    ``d`` is maximised at ``sigmoid(d) = sum(w * y) / sum(w)`` (a tie, ``y = 0.5``, contributing
    half a win to each side). Returns that probability in [0, 1] (0 or 1 when the model lost or
    won every battle: the rating difference is then infinite).
    """
    outcomes = np.asarray(outcomes, dtype=float)
    weights = np.asarray(weights, dtype=float)
    total = float(weights.sum())
    if total <= 0:
        raise ValueError("no battles to fit")
    return float((weights * outcomes).sum() / total)


def length_feature(len_model, len_baseline) -> np.ndarray:
    """Arena-Hard's length covariate of a battle: ``(|y_model| - |y_baseline|) /
    (|y_model| + |y_baseline| + 1)``, in (-1, 1)."""
    m = np.asarray(len_model, dtype=float)
    b = np.asarray(len_baseline, dtype=float)
    return (m - b) / (m + b + 1.0)


def length_controlled(
    outcomes,
    weights,
    feature,
    *,
    reg: float = LC_REG,
    scale: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[float, float]:
    """Bradley-Terry with a length covariate; returns (win probability at equal length, the
    covariate's coefficient).

    The model's log-odds of winning a battle are ``d + c * z`` with ``z = feature / scale``
    (``scale`` default: the weighted standard deviation of ``feature``; 1 when that is 0).
    Minimises the benchmark's objective (module docstring): ``2 * sum(w * CE(y, p))`` over the
    battles (duplicated, ties half a win) plus ``reg / 2 * (d**2 / (2 * log(10)**2) + c**2)``,
    the L2 penalty of its two +-log(10) rating columns and the covariate at their optimum for a
    given ``d``. Newton's method; the objective is strictly convex for ``reg > 0``. Returns
    ``(sigmoid(d), c)``.
    """
    y = np.asarray(outcomes, dtype=float)
    w = np.asarray(weights, dtype=float)
    f = np.asarray(feature, dtype=float)
    if not (y.shape == w.shape == f.shape):
        raise ValueError(
            f"outcomes, weights and feature differ in shape: {y.shape}, {w.shape}, {f.shape}"
        )
    if float(w.sum()) <= 0:
        raise ValueError("no battles to fit")
    if reg <= 0:
        raise ValueError(
            f"reg must be > 0 (an unpenalised fit diverges when the model wins or "
            f"loses every battle), got {reg}"
        )
    if scale is None:
        scale = _weighted_std(f, w)
    z = f / (scale if scale > 0 else 1.0)
    penalty = np.array([reg / (2.0 * math.log(10) ** 2), reg])
    theta = np.zeros(2)
    x = np.column_stack([np.ones_like(z), z])
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = 2.0 * x.T @ (w * (p - y)) + penalty * theta
        hess = 2.0 * (x * (w * p * (1.0 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < tol:
            break
    d, c = theta
    return float(1.0 / (1.0 + math.exp(-d))), float(c)


def _weighted_std(values: np.ndarray, weights: np.ndarray) -> float:
    mean = np.average(values, weights=weights)
    return float(np.sqrt(np.average((values - mean) ** 2, weights=weights)))


def _battles(judgments: pd.DataFrame) -> pd.DataFrame:
    check_frame(judgments, {"prompt_id": "str", "model_position": "str"}, "judgments")
    if "verdict" not in judgments.columns:
        raise DatasetError(f"judgments: missing column 'verdict'; found {list(judgments.columns)}")
    valid = judgments[judgments["verdict"].notna()]
    out = [model_outcome(v, p) for v, p in zip(valid["verdict"], valid["model_position"])]
    battles = pd.DataFrame(
        {
            "prompt_id": valid["prompt_id"].to_numpy(),
            "outcome": [o for o, _ in out],
            "weight": [w for _, w in out],
        }
    )
    if {"len_model", "len_baseline"} <= set(judgments.columns):
        lengths = valid[["len_model", "len_baseline"]].astype(float)
        bad = lengths.isna().any(axis=1) | (lengths < 0).any(axis=1)
        if bad.any():
            raise DatasetError(
                f"judgments: missing or negative len_model/len_baseline for "
                f"prompt_id {valid.loc[bad, 'prompt_id'].tolist()[:5]}"
            )
        battles["feature"] = length_feature(lengths["len_model"], lengths["len_baseline"])
    return battles


def score(
    judgments: pd.DataFrame,
    n_bootstrap: int = 100,
    seed: int = 0,
    unit: Literal["question", "battle"] = "question",
) -> dict[str, Any]:
    """Arena-Hard score of the model against the baseline, with a bootstrap 95 % interval.

    ``judgments`` has ``prompt_id``, ``model_position`` and ``verdict`` (None where the judge gave
    none; such games are left out and counted in ``n_invalid``). Returns ``arena_score`` (the
    Bradley-Terry win rate against the baseline, in percent), ``arena_ci_low`` and
    ``arena_ci_high`` (2.5th and 97.5th percentiles over ``n_bootstrap`` resamples drawn with
    ``numpy.random.default_rng(seed)``, resampling questions or, with ``unit="battle"``, the
    weight-expanded battles as the benchmark did); where ``judgments`` has ``len_model`` and
    ``len_baseline``, also the length-controlled score (:func:`length_controlled`)
    ``arena_lc_score`` with ``arena_lc_ci_low``/``arena_lc_ci_high`` over the same resamples and
    the covariate's coefficient ``arena_lc_length_coef``; ``n`` (questions with at least one
    verdict), ``n_battles`` (games with a verdict), ``n_invalid``, ``n_bootstrap``, ``seed`` and ``unit``.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if unit not in ("question", "battle"):
        raise ValueError(f"unit must be 'question' or 'battle', got {unit!r}")
    battles = _battles(judgments)
    if battles.empty:
        raise DatasetError("judgments: no game has a verdict; nothing to score")
    y = battles["outcome"].to_numpy(float)
    w = battles["weight"].to_numpy(float)
    point = bradley_terry(y, w)

    rng = np.random.default_rng(seed)
    if unit == "question":
        codes, uniques = pd.factorize(battles["prompt_id"])
        # per question: sum of w*y and of w; a resample is a multiset of questions
        wy = np.bincount(codes, weights=w * y, minlength=len(uniques))
        ww = np.bincount(codes, weights=w, minlength=len(uniques))
        draws = rng.integers(0, len(uniques), size=(n_bootstrap, len(uniques)))
        boot = wy[draws].sum(axis=1) / ww[draws].sum(axis=1)
        # battle weights of each resample: w times the number of draws of its question
        resampled = (w * np.bincount(d, minlength=len(uniques))[codes] for d in draws)
    else:
        expanded = np.repeat(y, w.astype(int))
        draws = rng.integers(0, expanded.size, size=(n_bootstrap, expanded.size))
        boot = expanded[draws].mean(axis=1)
        owner = np.repeat(np.arange(len(y)), w.astype(int))  # battle of each expanded unit
        resampled = (np.bincount(owner[d], minlength=len(y)).astype(float) for d in draws)
    low, high = np.percentile(boot, [2.5, 97.5])
    lc = {}
    if "feature" in battles.columns:
        f = battles["feature"].to_numpy(float)
        scale = _weighted_std(f, w)  # fixed over the resamples, as the benchmark's X is
        lc_point, coef = length_controlled(y, w, f, scale=scale)
        lc_boot = [length_controlled(y, weights, f, scale=scale)[0] for weights in resampled]
        lc_low, lc_high = np.percentile(lc_boot, [2.5, 97.5])
        lc = {
            "arena_lc_score": 100.0 * lc_point,
            "arena_lc_ci_low": 100.0 * float(lc_low),
            "arena_lc_ci_high": 100.0 * float(lc_high),
            "arena_lc_length_coef": coef,
        }
    return {
        "arena_score": 100.0 * point,
        "arena_ci_low": 100.0 * float(low),
        "arena_ci_high": 100.0 * float(high),
        **lc,
        "n": int(battles["prompt_id"].nunique()),
        "n_battles": len(battles),
        "n_invalid": int(judgments["verdict"].isna().sum()),
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
        "unit": unit,
    }


def judge_and_score(
    questions: pd.DataFrame,
    responses: pd.DataFrame,
    client: ChatClient,
    judge_kwargs: Mapping[str, Any] | None = None,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Judge ``responses`` against the baseline answers in ``questions['reference']``, then score.

    Returns the judgments frame and the metrics (:func:`score`'s, plus ``mean_len_model`` and
    ``mean_len_baseline`` in characters and the judge's ``judge_model``).
    """
    judgments = judge(questions, responses, questions, client, **(judge_kwargs or {}))
    metrics = score(judgments, n_bootstrap=n_bootstrap, seed=seed)
    per_question = judgments.drop_duplicates("prompt_id")
    metrics.update(
        {
            "mean_len_model": float(per_question["len_model"].mean()),
            "mean_len_baseline": float(per_question["len_baseline"].mean()),
            "judge_model": client.model,
        }
    )
    return judgments, metrics
