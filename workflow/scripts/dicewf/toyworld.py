"""The embedded toy world: short instruction tasks whose truth is known.

Everything the default configuration needs is generated here from a seed: instruction prompts,
supervised demonstrations, an offline preference dataset labelled by the gold judge, held-out
evaluation prompts with reference responses, and held-out response pairs for measuring how well a
reward agrees with the judge (the analogue of the paper's Table 5).

The gold judge has two parts, as a human rater (or GPT-4) does in the paper's world:

* ``quality(task, response)``: the true quality, 1.0 for a correct final answer and partial
  credit (half the string similarity) otherwise. Length earns nothing.
* ``preference(task, a, b)``: the probability that a rater prefers ``a`` over ``b``. It follows
  quality, plus a deliberate length bias ``kappa * tanh((len(a) - len(b)) / length_scale)``:
  between equally good answers, the longer one is usually preferred. This bias is what makes
  D_offline's chosen responses longer on average (like UltraFeedback) and what the
  length-controlled win rate has to remove.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TASK_KINDS = ("add", "reverse", "count", "upper", "last")

_CONSONANTS = "bcdfghklmnprstvz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class Task:
    """One instruction with its checkable answer."""

    prompt_id: str
    kind: str
    prompt: str
    answer: str
    arg: str  # the word or "a+b" the task is about, used for explanations and wrong answers


@dataclass(frozen=True)
class JudgeSpec:
    """Parameters of the gold judge's pairwise preference."""

    temperature: float = 0.1  # quality difference scale
    length_bias: float = 1.0  # kappa
    length_scale: float = 40.0  # characters

    @classmethod
    def from_dict(cls, d: dict | None) -> JudgeSpec:
        return cls(**(d or {}))


@dataclass(frozen=True)
class WorldSpec:
    """What the world generator makes; mirrors the ``world`` block of config.yaml."""

    seed: int = 0
    n_train_prompts: int = 600
    n_eval_prompts: int = 100
    n_agreement_pairs: int = 300
    demos_per_prompt: int = 2
    max_number: int = 30
    word_min_len: int = 3
    word_max_len: int = 5
    p_correct_offline: float = 0.6
    style_weights_sft: dict[str, float] = field(
        default_factory=lambda: {"concise": 0.3, "plain": 0.4, "explained": 0.2, "chatty": 0.1}
    )
    judge: JudgeSpec = field(default_factory=JudgeSpec)

    @classmethod
    def from_dict(cls, d: dict) -> WorldSpec:
        d = dict(d)
        judge = JudgeSpec.from_dict(d.pop("judge", None))
        return cls(judge=judge, **d)


# ----------------------------------------------------------------------------- tasks


def _word(rng: np.random.Generator, lo: int, hi: int) -> str:
    n = int(rng.integers(lo, hi + 1))
    letters = []
    for i in range(n):
        pool = _CONSONANTS if i % 2 == 0 else _VOWELS
        letters.append(pool[int(rng.integers(len(pool)))])
    return "".join(letters)


def make_task(kind: str, prompt_id: str, rng: np.random.Generator, spec: WorldSpec) -> Task:
    """Draw one task of ``kind``."""
    if kind == "add":
        a, b = (int(x) for x in rng.integers(0, spec.max_number + 1, size=2))
        return Task(prompt_id, kind, f"What is {a} plus {b}?", str(a + b), f"{a}+{b}")
    w = _word(rng, spec.word_min_len, spec.word_max_len)
    if kind == "reverse":
        return Task(prompt_id, kind, f"Reverse the word {w}.", w[::-1], w)
    if kind == "count":
        return Task(prompt_id, kind, f"How many letters are in {w}?", str(len(w)), w)
    if kind == "upper":
        return Task(prompt_id, kind, f"Write {w} in capital letters.", w.upper(), w)
    if kind == "last":
        return Task(prompt_id, kind, f"What is the last letter of {w}?", w[-1], w)
    raise ValueError(f"unknown task kind {kind!r}; expected one of {TASK_KINDS}")


def make_tasks(
    n: int, seed: int, spec: WorldSpec, prefix: str, exclude: set[str] | None = None
) -> list[Task]:
    """``n`` tasks cycling through the kinds, ids ``{prefix}-{i:05d}``; no prompt repeats or is in
    ``exclude`` (so held-out prompts never appear in training)."""
    rng = np.random.default_rng(seed)
    tasks: list[Task] = []
    seen: set[str] = set(exclude or ())
    i = 0
    while len(tasks) < n:
        kind = TASK_KINDS[len(tasks) % len(TASK_KINDS)]
        task = make_task(kind, f"{prefix}-{len(tasks):05d}", rng, spec)
        i += 1
        if i > 100 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct {prefix} prompts from this world")
        if task.prompt in seen:
            continue
        seen.add(task.prompt)
        tasks.append(task)
    return tasks


# ----------------------------------------------------------------------------- responses

STYLES = ("concise", "plain", "explained", "chatty")


def _explanation(task: Task, answer: str) -> str:
    if task.kind == "add":
        a, b = task.arg.split("+")
        return f"Adding {a} and {b} gives {answer}."
    if task.kind == "reverse":
        return f"Reading {task.arg} backwards gives {answer}."
    if task.kind == "count":
        return f"The word {task.arg} is spelled {' '.join(task.arg)}, so it has {answer} letters."
    if task.kind == "upper":
        return f"In capitals, {task.arg} becomes {answer}."
    if task.kind == "last":
        return f"The word {task.arg} ends with {answer}."
    raise ValueError(task.kind)


def render(task: Task, answer: str, style: str) -> str:
    """A response to ``task`` stating ``answer`` in one of :data:`STYLES`."""
    if style == "concise":
        return f"{answer}."
    if style == "plain":
        return f"The answer is {answer}."
    if style == "explained":
        return f"{_explanation(task, answer)} The answer is {answer}."
    if style == "chatty":
        return f"Sure! {_explanation(task, answer)} The answer is {answer}. Happy to help!"
    raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


def wrong_answer(task: Task, rng: np.random.Generator) -> str:
    """A plausible wrong answer (never equal to the right one)."""
    for _ in range(50):
        if task.kind in ("add", "count"):
            delta = int(rng.choice([-2, -1, 1, 2, 10]))
            cand = str(max(0, int(task.answer) + delta))
        elif task.kind == "last":
            cand = task.arg[int(rng.integers(0, len(task.arg) - 1))]
        else:
            letters = list(task.answer)
            i, j = rng.choice(len(letters), size=2, replace=False)
            letters[i], letters[j] = letters[j], letters[i]
            if rng.random() < 0.5:
                letters.pop(int(rng.integers(len(letters))))
            cand = "".join(letters)
        if cand != task.answer:
            return cand
    return task.answer + task.answer[-1]


# ----------------------------------------------------------------------------- the gold judge

_ANSWER_RE = re.compile(r"answer is\s+(.+?)\s*(?:\.(?:\s|$)|$)", re.IGNORECASE)


def extract_answer(response: str) -> str:
    """The final answer a response states: after the last "answer is", else the bare text."""
    matches = _ANSWER_RE.findall(response)
    if matches:
        return matches[-1].strip()
    return response.strip().rstrip(".!").strip()


def quality(task: Task, response: str) -> float:
    """Gold quality in [0, 1]: 1 for the right answer, else half the string similarity."""
    got = extract_answer(response)
    if got == task.answer:
        return 1.0
    return 0.5 * difflib.SequenceMatcher(None, got, task.answer).ratio()


def preference(task: Task, a: str, b: str, judge: JudgeSpec) -> float:
    """P(rater prefers ``a`` over ``b``): quality with a deliberate bias towards length."""
    z = (quality(task, a) - quality(task, b)) / judge.temperature
    z += judge.length_bias * math.tanh((len(a) - len(b)) / judge.length_scale)
    return 1.0 / (1.0 + math.exp(-z))


# ----------------------------------------------------------------------------- datasets


def tasks_frame(tasks: list[Task]) -> pd.DataFrame:
    """Prompts as a DataFrame (prompt_id, prompt, kind, answer, arg)."""
    return pd.DataFrame(
        {
            "prompt_id": [t.prompt_id for t in tasks],
            "prompt": [t.prompt for t in tasks],
            "kind": [t.kind for t in tasks],
            "answer": [t.answer for t in tasks],
            "arg": [t.arg for t in tasks],
        }
    )


def tasks_from_frame(df: pd.DataFrame) -> dict[str, Task]:
    """Rebuild tasks keyed by prompt_id from :func:`tasks_frame` output."""
    return {
        r.prompt_id: Task(r.prompt_id, r.kind, r.prompt, r.answer, r.arg)
        for r in df.itertuples(index=False)
    }


def sft_demonstrations(tasks: list[Task], spec: WorldSpec, seed: int) -> pd.DataFrame:
    """Correct demonstrations in a mix of styles (prompt_id, prompt, completion, style)."""
    rng = np.random.default_rng(seed)
    styles = list(spec.style_weights_sft)
    weights = np.array([spec.style_weights_sft[s] for s in styles], dtype=float)
    weights /= weights.sum()
    rows = []
    for t in tasks:
        for _ in range(spec.demos_per_prompt):
            style = styles[int(rng.choice(len(styles), p=weights))]
            rows.append((t.prompt_id, t.prompt, render(t, t.answer, style), style))
    return pd.DataFrame(rows, columns=["prompt_id", "prompt", "completion", "style"])


def _candidate(task: Task, rng: np.random.Generator, p_correct: float) -> str:
    answer = task.answer if rng.random() < p_correct else wrong_answer(task, rng)
    return render(task, answer, STYLES[int(rng.integers(len(STYLES)))])


def candidate_pair(task: Task, rng: np.random.Generator, p_correct: float) -> tuple[str, str]:
    """Two different candidate responses for ``task``."""
    a = _candidate(task, rng, p_correct)
    for _ in range(100):
        b = _candidate(task, rng, p_correct)
        if b != a:
            return a, b
    raise RuntimeError(f"could not draw two different responses for {task.prompt_id}")


def offline_preferences(tasks: list[Task], spec: WorldSpec, seed: int) -> pd.DataFrame:
    """D_offline: one pair per prompt, labelled by sampling the gold judge's preference.

    Columns: prompt_id, prompt, chosen, rejected, chosen_quality, rejected_quality, len_diff.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for t in tasks:
        a, b = candidate_pair(t, rng, spec.p_correct_offline)
        p = preference(t, a, b, spec.judge)
        chosen, rejected = (a, b) if rng.random() < p else (b, a)
        rows.append(
            (
                t.prompt_id,
                t.prompt,
                chosen,
                rejected,
                quality(t, chosen),
                quality(t, rejected),
                len(chosen) - len(rejected),
            )
        )
    return pd.DataFrame(
        rows,
        columns=[
            "prompt_id",
            "prompt",
            "chosen",
            "rejected",
            "chosen_quality",
            "rejected_quality",
            "len_diff",
        ],
    )


def agreement_pairs(tasks: list[Task], n: int, spec: WorldSpec, seed: int) -> pd.DataFrame:
    """Held-out (x, y1, y2) tuples whose gold quality differs, with the judge's label.

    ``label`` is 1 when the judge prefers ``response_a`` (preference > 0.5), else 0.
    """
    rng = np.random.default_rng(seed)
    rows = []
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"cannot draw {n} agreement pairs with different quality")
        t = tasks[int(rng.integers(len(tasks)))]
        a, b = candidate_pair(t, rng, 0.5)
        qa, qb = quality(t, a), quality(t, b)
        if qa == qb:
            continue
        p = preference(t, a, b, spec.judge)
        rows.append(
            (f"agree-{len(rows):05d}", t.prompt_id, t.prompt, a, b, qa, qb, p, int(p > 0.5))
        )
    return pd.DataFrame(
        rows,
        columns=[
            "pair_id",
            "prompt_id",
            "prompt",
            "response_a",
            "response_b",
            "quality_a",
            "quality_b",
            "preference",
            "label",
        ],
    )


def eval_prompts(tasks: list[Task]) -> pd.DataFrame:
    """Held-out prompts with reference responses (the baseline the judge compares against)."""
    df = tasks_frame(tasks)
    df["reference"] = [render(t, t.answer, "plain") for t in tasks]
    return df


def judge_responses(
    tasks: dict[str, Task], responses: pd.DataFrame, judge: JudgeSpec
) -> pd.DataFrame:
    """Judge each model response against the prompt's reference.

    ``responses`` has prompt_id, response, reference. Returns prompt_id, preference (P(model beats
    reference)), len_model, len_baseline, quality (gold quality of the model's response).
    """
    out = []
    for r in responses.itertuples(index=False):
        if r.prompt_id not in tasks:
            raise KeyError(f"prompt_id {r.prompt_id!r} is not a task of this world")
        t = tasks[r.prompt_id]
        out.append(
            (
                r.prompt_id,
                preference(t, r.response, r.reference, judge),
                len(r.response),
                len(r.reference),
                quality(t, r.response),
            )
        )
    return pd.DataFrame(
        out, columns=["prompt_id", "preference", "len_model", "len_baseline", "quality"]
    )


def corpus(tasks: list[Task], rng_seed: int) -> list[str]:
    """Texts to train the tokenizer on: prompts and responses in every style."""
    rng = np.random.default_rng(rng_seed)
    texts = []
    for t in tasks:
        texts.append(t.prompt)
        for style in STYLES:
            texts.append(render(t, t.answer, style))
        texts.append(render(t, wrong_answer(t, rng), "plain"))
    return texts


def build_world(spec: WorldSpec) -> dict[str, pd.DataFrame]:
    """Every dataset of the toy world, each from its own child seed of ``spec.seed``."""
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(spec.seed).spawn(6)]
    train = make_tasks(spec.n_train_prompts, seeds[0], spec, "train")
    held_out = make_tasks(
        spec.n_eval_prompts, seeds[1], spec, "eval", exclude={t.prompt for t in train}
    )
    return {
        "train_prompts": tasks_frame(train),
        "eval_prompts": eval_prompts(held_out),
        "offline": offline_preferences(train, spec, seeds[2]),
        "agreement_pairs": agreement_pairs(held_out, spec.n_agreement_pairs, spec, seeds[3]),
        "sft_demos": sft_demonstrations(train, spec, seeds[4]),
    }
