"""SeRA's evaluation (Ko et al., 2024, Section 4.1 and Appendix B.3): an LLM judge's 1-10 grades
and pairwise weighted win rates, on AlpacaEval, Vicuna, Evol-Instruct and UltraFeedback's test
prompts.

The paper asks Claude 3 (temperature 0.7) with the prompts of Zheng et al. (2023), its Figs. 8
and 9: the MT-Bench "single-v1" prompt (one answer, a rating in ``[[rating]]``) and the "pair-v2"
prompt (two answers, a verdict ``[[A]]``, ``[[B]]`` or ``[[C]]`` for a tie). Their texts are
:data:`SINGLE_SYSTEM` / :data:`SINGLE_TEMPLATE` and :data:`PAIR_SYSTEM` / :data:`PAIR_TEMPLATE`
(FastChat's ``judge_prompts.jsonl``, Apache-2.0). Any OpenAI-compatible endpoint can judge
(:class:`dicewf.judge_client.ChatClient`).

Pairwise: the weighted win rate of Zheng et al., (wins + 0.5 ties) / games, as FastChat's
``win_rate_adjusted``. With ``both_orders`` (the default; the paper does not say, Zheng et al.
judge both orders) each prompt is judged with the model's answer as A and again as B; the same
winner twice is a win or a loss, anything else (two ties, or a win and a loss or a tie) a tie,
as FastChat counts an inconsistent pair. A prompt with an unparsable verdict in either order is
left out of the rate and counted in ``unparsable``.

Single: the mean of the parsed 1-10 ratings; replies without a rating, or one outside 1-10, are
counted in ``unparsable`` and left out of the mean.

The benchmarks' preparation reads each one's real layout (:func:`prepare_benchmark`); every
error names the file and the line or record at fault.
"""

from __future__ import annotations

import logging
import math
import os
import re
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import datasets
from .io import DatasetError, check_frame
from .judge_client import ChatClient, JudgeError

log = logging.getLogger(__name__)

SINGLE_SYSTEM = "You are a helpful assistant."
SINGLE_TEMPLATE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response "
    "provided by an AI assistant to the user question displayed below. Your evaluation should "
    "consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level "
    "of detail of the response. Begin your evaluation by providing a short explanation. Be as "
    "objective as possible. After providing your explanation, you must rate the response on a "
    'scale of 1 to 10 by strictly following this format: "[[rating]]", for example: "Rating: '
    "[[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]"
)
PAIR_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two "
    "AI assistants to the user question displayed below. You should choose the assistant that "
    "follows the user's instructions and answers the user's question better. Your evaluation "
    "should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, "
    "and level of detail of their responses. Begin your evaluation by comparing the two "
    "responses and provide a short explanation. Avoid any position biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow "
    "the length of the responses to influence your evaluation. Do not favor certain names of the "
    "assistants. Be as objective as possible. After providing your explanation, output your "
    'final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]" '
    'if assistant B is better, and "[[C]]" for a tie.'
)
PAIR_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
    "[The End of Assistant B's Answer]"
)

BENCHMARKS = ("alpaca_eval", "vicuna", "evol_instruct", "ultrafeedback")
SIZES = {"alpaca_eval": 805, "vicuna": 80, "evol_instruct": 218, "ultrafeedback": 2000}
# AlpacaEval's reference answers: column -> (file of tatsu-lab/alpaca_eval, its generator)
ALPACA_REFERENCES = {
    "gpt4_turbo": ("alpaca_eval_gpt4_baseline.json", "gpt4_turbo"),  # G4 of Tables 1-2
    "text_davinci_003": ("alpaca_eval.json", "text_davinci_003"),  # G3.5 of Tables 1-2
}

_RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+(?:\.\d+)?)\]")
_VERDICT = re.compile(r"\[\[([ABC])\]\]")


# ---------------------------------------------------------------------------------------------
# Verdicts


def parse_rating(text: str | None) -> float | None:
    """The 1-10 rating of a single-answer judgment: the last ``[[x]]`` (FastChat's pattern; a
    single ``[x]`` when no double bracket is found), None when there is none, when two different
    ratings are given, or when it lies outside 1-10."""
    if not text:
        return None
    found = _RATING.findall(text) or _RATING_BACKUP.findall(text)
    values = {float(v) for v in found}
    if len(values) != 1:
        return None
    value = values.pop()
    return value if 1.0 <= value <= 10.0 else None


def parse_verdict(text: str | None) -> str | None:
    """``A``, ``B`` or ``tie`` (``[[C]]``) from a pairwise judgment; None when it names no
    verdict or two different ones."""
    labels = set(_VERDICT.findall(text or ""))
    if len(labels) != 1:
        return None
    label = labels.pop()
    return "tie" if label == "C" else label


def game_outcome(verdict: str | None, model_position: str) -> float | None:
    """The model's outcome of one game: 1 win, 0.5 tie, 0 loss; None without a verdict."""
    if model_position not in ("A", "B"):
        raise ValueError(f"model_position should be 'A' or 'B', got {model_position!r}")
    if verdict is None:
        return None
    if verdict == "tie":
        return 0.5
    if verdict not in ("A", "B"):
        raise ValueError(f"verdict should be 'A', 'B', 'tie' or None, got {verdict!r}")
    return 1.0 if verdict == model_position else 0.0


def combine_orders(first: float | None, second: float | None) -> float | None:
    """One prompt's outcome from its two games: the same winner twice counts, anything else is a
    tie (FastChat's "inconsistent"); None when either game has no verdict."""
    if first is None or second is None:
        return None
    if first == second and first in (0.0, 1.0):
        return first
    return 0.5


def weighted_win_rate(outcomes: Sequence[float | None]) -> dict[str, Any]:
    """(wins + 0.5 ties) / decided prompts, in percent, with the counts; ``win_rate`` is None
    when no prompt was decided. ``unparsable`` counts the prompts left out (None)."""
    decided = [o for o in outcomes if o is not None and not _isnan(o)]
    bad = [o for o in decided if o not in (0.0, 0.5, 1.0)]
    if bad:
        raise ValueError(f"outcomes should be 0, 0.5, 1 or None, got {bad[:3]}")
    wins, ties = decided.count(1.0), decided.count(0.5)
    n = len(decided)
    return {
        "win_rate": 100.0 * (wins + 0.5 * ties) / n if n else None,
        "wins": wins,
        "ties": ties,
        "losses": decided.count(0.0),
        "n": n,
        "unparsable": len(outcomes) - n,
    }


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def mean_rating(ratings: Sequence[float | None]) -> dict[str, Any]:
    """The mean of the parsed ratings, with how many were rated and how many were unparsable."""
    good = [r for r in ratings if r is not None and not _isnan(r)]
    return {
        "score": sum(good) / len(good) if good else None,
        "n": len(good),
        "unparsable": len(ratings) - len(good),
    }


# ---------------------------------------------------------------------------------------------
# Judging


def _by_prompt(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    check_frame(frame, {"prompt_id": "str", column: "str"}, source)
    dup = frame["prompt_id"][frame["prompt_id"].duplicated()].unique().tolist()
    if dup:
        raise DatasetError(f"{source}: more than one row for prompt_id {dup[:5]}")
    return frame.set_index("prompt_id")[column]


def _aligned(questions: pd.DataFrame, answers: pd.DataFrame, column: str, source: str):
    series = _by_prompt(answers, column, source)
    missing = [p for p in questions["prompt_id"] if p not in series.index]
    if missing:
        raise DatasetError(
            f"{source}: no {column} for prompt_id {missing[:5]} "
            f"({len(missing)} of {len(questions)} prompts)"
        )
    return series


def _ask(client: ChatClient, messages: list, parse) -> list[tuple[str, Any]]:
    records = client.complete_records(messages, valid=lambda r: parse(r["response"]) is not None)
    return [(r["response"], parse(r["response"])) for r in records]


def _no_verdict_check(client: ChatClient, what: str, bad: int, total: int) -> None:
    if not bad:
        return
    where = f"; its replies are in {client.cache_path}" if client.cache_path else ""
    message = f"{client.name} gave no usable {what} in {bad} of {total} replies{where}"
    if bad == total:
        raise JudgeError(f"{message}. Check the judge (a wrong model, prompt or server?)")
    log.warning("%s: they are counted as unparsable and left out", message)


def grade(
    questions: pd.DataFrame,
    responses: pd.DataFrame,
    client: ChatClient,
    *,
    system_prompt: str = SINGLE_SYSTEM,
    template: str = SINGLE_TEMPLATE,
) -> pd.DataFrame:
    """Single-answer grading of each question's ``response``: one row per prompt with
    ``rating`` (None where unparsable) and the ``judgment``."""
    ids = _by_prompt(questions, "prompt", "questions")
    answers = _aligned(questions, responses, "response", "responses")
    messages = [
        [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": template.format(question=q, answer=answers[pid])},
        ]
        for pid, q in ids.items()
    ]
    replies = _ask(client, messages, parse_rating)
    out = pd.DataFrame(
        {
            "prompt_id": list(ids.index),
            "rating": [r for _, r in replies],
            "judgment": [t for t, _ in replies],
        }
    )
    _no_verdict_check(client, "rating", int(out["rating"].isna().sum()), len(out))
    return out


def compare(
    questions: pd.DataFrame,
    responses: pd.DataFrame,
    opponent: pd.DataFrame,
    client: ChatClient,
    *,
    both_orders: bool = True,
    system_prompt: str = PAIR_SYSTEM,
    template: str = PAIR_TEMPLATE,
) -> pd.DataFrame:
    """Pairwise judgments of the model's ``response`` against the opponent's ``response`` per
    question: game 1 shows the model as A, game 2 (with ``both_orders``) as B. One row per
    prompt: ``verdict1``, ``verdict2`` (A/B/tie/None), ``outcome`` (1/0.5/0, None when a game
    is unparsable), ``judgment1``, ``judgment2``."""
    ids = _by_prompt(questions, "prompt", "questions")
    mine = _aligned(questions, responses, "response", "responses")
    theirs = _aligned(questions, opponent, "response", "opponent")
    orders = (("A", True), ("B", False)) if both_orders else (("A", True),)
    messages, index = [], []
    for pid, q in ids.items():
        for game, (_, model_first) in enumerate(orders, start=1):
            a, b = (mine[pid], theirs[pid]) if model_first else (theirs[pid], mine[pid])
            content = template.format(question=q, answer_a=a, answer_b=b)
            messages.append(
                [{"role": "system", "content": system_prompt}, {"role": "user", "content": content}]
            )
            index.append((pid, game))
    replies = dict(zip(index, _ask(client, messages, parse_verdict)))
    rows = []
    for pid in ids.index:
        row: dict[str, Any] = {"prompt_id": pid}
        outcomes = []
        for game, (position, _) in enumerate(orders, start=1):
            text, verdict = replies[pid, game]
            row[f"verdict{game}"], row[f"judgment{game}"] = verdict, text
            outcomes.append(game_outcome(verdict, position))
        row["outcome"] = combine_orders(*outcomes) if both_orders else outcomes[0]
        rows.append(row)
    out = pd.DataFrame(rows)
    bad = sum(out[f"verdict{g}"].isna().sum() for g in range(1, len(orders) + 1))
    _no_verdict_check(client, "verdict", int(bad), len(messages))
    return out


def opponents(bench: str, questions: pd.DataFrame, sft: pd.DataFrame | None) -> dict:
    """The answers each model is compared with on ``bench``: the SFT model's (``sft``, absent
    for the SFT model itself) and, on AlpacaEval, the reference answers (G4: gpt4_turbo, G3.5:
    text_davinci_003), each as (prompt_id, response)."""
    out = {}
    if sft is not None:
        out["sft"] = sft[["prompt_id", "response"]]
    if bench == "alpaca_eval":
        for name in ALPACA_REFERENCES:
            column = f"reference_{name}"
            out[name] = questions[["prompt_id", column]].rename(columns={column: "response"})
    return out


def evaluate(
    bench: str,
    questions: pd.DataFrame,
    responses: pd.DataFrame,
    client: ChatClient,
    *,
    sft: pd.DataFrame | None = None,
    both_orders: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One model on one benchmark: the single grade and a weighted win rate per opponent
    (:func:`opponents`). Returns the judgments (one row per prompt and ``kind``: single, or
    the opponent's name) and the metrics."""
    graded = grade(questions, responses, client).assign(kind="single")
    metrics: dict[str, Any] = {"benchmark": bench, "single": mean_rating(list(graded["rating"]))}
    frames = [graded]
    for name, answers in opponents(bench, questions, sft).items():
        games = compare(questions, responses, answers, client, both_orders=both_orders)
        metrics[f"vs_{name}"] = weighted_win_rate(list(games["outcome"]))
        frames.append(games.assign(kind=name))
    judgments = pd.concat(frames, ignore_index=True)
    for column in ("rating", "outcome"):
        judgments[column] = judgments.get(column, pd.Series(dtype=float)).astype(float)
    return judgments, metrics


# ---------------------------------------------------------------------------------------------
# The benchmarks


def fetch(url: str, dest: str | os.PathLike) -> Path:
    """Download ``url`` (https, or file for tests) to ``dest``, through a temporary file."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as reply, tmp.open("wb") as fh:
        fh.write(reply.read())
    tmp.replace(dest)
    return dest


def _frame(bench: str, rows: list[dict[str, Any]], source: Any) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    dup = out.loc[out["prompt_id"].duplicated(), "prompt_id"].tolist()
    if dup:
        raise DatasetError(f"{source}: repeated ids {dup[:5]}")
    if len(out) != SIZES[bench]:
        log.warning("%s: %d prompts (%s has %d)", source, len(out), bench, SIZES[bench])
    return check_frame(out, "prompts", source)


def prepare_vicuna(path: str | os.PathLike) -> pd.DataFrame:
    """Vicuna's 80 questions: FastChat's ``vicuna_bench/question.jsonl``, lines
    ``{question_id, category, turns: [text]}`` (one turn each)."""
    path = Path(path)
    rows = []
    for row in datasets._read_jsonl(path):
        where = f"{path}: line {row['_line']}"
        turns = datasets._field(row, ["turns"], path)
        if not isinstance(turns, list) or len(turns) != 1 or not isinstance(turns[0], str):
            raise DatasetError(f"{where}: field 'turns' should hold exactly one text turn")
        if not turns[0].strip():
            raise DatasetError(f"{where}: the question text is empty")
        qid = datasets._field(row, ["question_id"], path)
        rows.append(
            {"prompt_id": str(qid), "prompt": turns[0], "category": str(row.get("category", ""))}
        )
    return _frame("vicuna", rows, path)


def prepare_evol_instruct(path: str | os.PathLike) -> pd.DataFrame:
    """Evol-Instruct's 218 test instructions: WizardLM's ``WizardLM_testset.jsonl``, lines
    ``{idx, Skill, Difficulty, Instruction}``."""
    path = Path(path)
    rows = []
    for row in datasets._read_jsonl(path):
        text = datasets._field(row, ["Instruction"], path)
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{path}: line {row['_line']}: field 'Instruction' is empty")
        rows.append(
            {
                "prompt_id": str(datasets._field(row, ["idx"], path)),
                "prompt": text,
                "category": str(row.get("Skill", "")),
            }
        )
    return _frame("evol_instruct", rows, path)


def prepare_alpaca(snapshot: str | os.PathLike) -> pd.DataFrame:
    """AlpacaEval's 805 instructions (``tatsu-lab/alpaca_eval``) with both reference answers,
    ``reference_gpt4_turbo`` and ``reference_text_davinci_003``; the two files must list the
    same instructions in the same order."""
    frames = {
        name: datasets.prepare_alpaca_eval(snapshot, filename=file)
        for name, (file, _) in ALPACA_REFERENCES.items()
    }
    first = next(iter(frames))
    out = frames[first][["prompt_id", "prompt", "dataset"]].copy()
    for name, frame in frames.items():
        file, generator = ALPACA_REFERENCES[name]
        if name != first and list(frame["prompt"]) != list(out["prompt"]):
            pairs = zip(frame["prompt"], out["prompt"])
            diff = next((i for i, (a, b) in enumerate(pairs) if a != b), len(out))
            raise DatasetError(
                f"{snapshot}: {file} and {ALPACA_REFERENCES[first][0]} differ at record {diff}: "
                "the two reference files should hold the same instructions in the same order"
            )
        wrong = sorted(set(frame["reference_generator"]) - {generator})
        if wrong:
            raise DatasetError(f"{snapshot}: {file}: generator {wrong}, expected {generator!r}")
        out[f"reference_{name}"] = list(frame["reference"])
    return _frame("alpaca_eval", out.to_dict("records"), snapshot)


def prepare_ultrafeedback_test(snapshot: str | os.PathLike, split: str = "test_prefs"):
    """UltraFeedback's test prompts (``HuggingFaceH4/ultrafeedback_binarized``, ``test_prefs``),
    with the filters of D_offline (:func:`dicewf.datasets.prepare_ultrafeedback`)."""
    _, prompts = datasets.prepare_ultrafeedback(snapshot, split=split, n_pairs=None)
    return _frame("ultrafeedback", prompts.to_dict("records"), f"{snapshot} ({split})")


def prepare_benchmark(bench: str, source: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """The prompt set of ``bench`` (one of :data:`BENCHMARKS`) from its downloaded source."""
    prepare = {
        "alpaca_eval": prepare_alpaca,
        "vicuna": prepare_vicuna,
        "evol_instruct": prepare_evol_instruct,
        "ultrafeedback": prepare_ultrafeedback_test,
    }
    if bench not in prepare:
        raise ValueError(f"unknown SeRA benchmark {bench!r}; have {list(prepare)}")
    return prepare[bench](source, **kwargs)
