"""The paper's datasets, read from local snapshots of their hub repositories.

Each function takes the folder a ``download_dataset`` job produced (``hub.download`` of
``hf://datasets/ORG/NAME``) and returns plain frames that satisfy :data:`dicewf.io.SCHEMAS`:

* ``HuggingFaceH4/ultrafeedback_binarized`` -> D_offline (``pairs``) and the prompt set
  (``prompts``). Layout: ``data/{split}-NNNNN-of-NNNNN.parquet`` with columns ``prompt``,
  ``prompt_id``, ``chosen`` and ``rejected`` (lists of ``{role, content}`` messages: the user
  turn, then the assistant's reply), ``messages``, ``score_chosen`` and ``score_rejected``.
  The paper draws "a subset of around 10k preference pairs" from it (Section 5.1).
* ``tatsu-lab/alpaca_eval`` -> the AlpacaEval 2 prompts with their references
  (``eval_prompts`` plus ``reference_generator`` and ``dataset``). The repository's loading
  script maps its ``alpaca_eval_gpt4_baseline`` config ("Official AlpacaEval 2.0 evaluation
  set") to the root file ``alpaca_eval_gpt4_baseline.json``: a JSON list of 805 records
  ``{instruction, output, generator, dataset}`` whose ``output`` is the baseline
  (``generator == "gpt4_turbo"``) reply every model is compared against.
  (``alpaca_eval.json`` is the AlpacaEval 1 set, with text-davinci-003 outputs.)
* Arena-Hard v0.1 -> its 500 questions joined with the baseline model's answers
  (``eval_prompts`` plus ``category``, ``cluster`` and ``reference_generator``). Two layouts are
  read, both as ``<bench>/question.jsonl`` and ``<bench>/model_answer/<baseline>.jsonl``:

  - the hub dataset ``lmarena-ai/arena-hard-auto`` (``data/arena-hard-v0.1/...``, current
    format): questions ``{uid, category, cluster, prompt}``, answers ``{uid, model,
    messages: [user turn, {role: "assistant", content: {answer}}]}``;
  - the GitHub repository lmarena/arena-hard-auto as of 2024 (``data/arena-hard-v0.1/...``,
    the format of the paper's time): questions ``{question_id, category, cluster,
    turns: [{content}]}``, answers ``{question_id, model_id, choices: [{turns: [{content}]}]}``.

  (``lmarena-ai/arena-hard-auto-v0.1`` on the hub holds the questions only, as parquet, and no
  baseline answers, so it is not enough on its own.)

Every error names the file, and the column (or field) and rows (or lines) at fault.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .io import DatasetError, check_frame

log = logging.getLogger(__name__)

ULTRAFEEDBACK_COLUMNS = (
    "prompt",
    "prompt_id",
    "chosen",
    "rejected",
    "score_chosen",
    "score_rejected",
)
ALPACA_EVAL_FILE = "alpaca_eval_gpt4_baseline.json"
ALPACA_EVAL_FIELDS = ("instruction", "output", "generator", "dataset")
ALPACA_EVAL_SIZE = 805
ARENA_HARD_BENCH = "arena-hard-v0.1"
ARENA_HARD_SIZE = 500


# ---------------------------------------------------------------------------------------------
# UltraFeedback (binarized)


def split_files(snapshot_dir: str | os.PathLike, split: str) -> list[Path]:
    """The parquet shards of ``split``: ``data/{split}-*.parquet`` (or ``{split}-*.parquet``
    anywhere in the snapshot), sorted by name."""
    root = Path(snapshot_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset snapshot folder does not exist")
    files = sorted((root / "data").glob(f"{split}-*.parquet"))
    if not files:
        files = sorted(p for p in root.rglob(f"{split}-*.parquet") if ".cache" not in p.parts)
    if not files:
        found = sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))[:10]
        raise DatasetError(
            f"{root}: no parquet file of split {split!r} (expected data/{split}-*.parquet); "
            f"parquet files found: {found}"
        )
    return files


def _messages(value: Any, path: Path, column: str, row: int) -> list[Mapping[str, Any]]:
    """A list of ``{role, content}`` messages, or a :class:`DatasetError` naming the cell."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in value
    ):
        raise DatasetError(
            f"{path}: column {column!r} at row {row} should be a list of {{role, content}} "
            f"messages, found {type(value).__name__}: {str(value)[:80]!r}"
        )
    return list(value)


def _assistant_reply(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The reply of a single-turn conversation ([user, assistant]); None if it is not one."""
    if len(messages) != 2:
        return None
    (user, reply) = messages
    if user["role"] != "user" or reply["role"] != "assistant":
        return None
    content = reply["content"]
    if not isinstance(content, str) or not content.strip():
        return None
    return content


def _read_ultrafeedback_file(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DatasetError(f"{path}: cannot read parquet file ({exc})") from exc
    missing = [c for c in ULTRAFEEDBACK_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    for col in ("prompt", "prompt_id"):
        bad = [i for i, v in enumerate(df[col]) if not isinstance(v, str)]
        if bad:
            raise DatasetError(f"{path}: column {col!r} should hold strings; not at rows {bad[:5]}")
    for col in ("score_chosen", "score_rejected"):
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise DatasetError(
                f"{path}: column {col!r} should hold numbers, found dtype {df[col].dtype}"
            )
    out = pd.DataFrame(
        {
            "prompt_id": df["prompt_id"].to_numpy(),
            "prompt": df["prompt"].to_numpy(),
            "score_chosen": df["score_chosen"].to_numpy(dtype=float),
            "score_rejected": df["score_rejected"].to_numpy(dtype=float),
        }
    )
    for col in ("chosen", "rejected"):
        out[col] = [_assistant_reply(_messages(v, path, col, i)) for i, v in enumerate(df[col])]
    return out


def prepare_ultrafeedback(
    snapshot_dir: str | os.PathLike,
    *,
    split: str = "train_prefs",
    n_pairs: int | None = 10000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """D_offline and its prompt set from a snapshot of ``HuggingFaceH4/ultrafeedback_binarized``.

    Keeps single-turn rows whose chosen and rejected conversations end with a non-empty
    assistant reply, drops ties (``score_chosen == score_rejected``) and rows without both
    scores, drops repeated rows and repeated ``prompt_id``s (first kept), then draws
    ``n_pairs`` rows at random with ``seed`` (all rows, with a warning, when fewer are left;
    ``None`` keeps all). Returns ``offline`` (prompt_id, prompt, chosen, rejected; the replies as
    strings, in file order) and ``prompts`` (prompt_id, prompt: the same prompts).
    """
    if n_pairs is not None and n_pairs < 1:
        raise ValueError(f"n_pairs must be at least 1 (or None for all rows), got {n_pairs}")
    files = split_files(snapshot_dir, split)
    df = pd.concat([_read_ultrafeedback_file(f) for f in files], ignore_index=True)
    n_read = len(df)
    multi_turn = df["chosen"].isna() | df["rejected"].isna()
    unscored = df["score_chosen"].isna() | df["score_rejected"].isna()
    tie = df["score_chosen"] == df["score_rejected"]
    df = df[~(multi_turn | unscored | tie)]
    n_valid = len(df)
    df = df.drop_duplicates(["prompt", "chosen", "rejected"])
    df = df.drop_duplicates("prompt_id")
    log.info(
        "%s (%d file(s)): %d rows; dropped %d not single-turn or with an empty reply, "
        "%d unscored, %d ties, %d repeated; %d left",
        split,
        len(files),
        n_read,
        int(multi_turn.sum()),
        int((unscored & ~multi_turn).sum()),
        int((tie & ~multi_turn & ~unscored).sum()),
        n_valid - len(df),
        len(df),
    )
    if df.empty:
        raise DatasetError(
            f"{Path(snapshot_dir)}: split {split!r} has no usable preference pair "
            f"(single-turn, non-empty replies, scores not tied) in {[f.name for f in files]}"
        )
    if n_pairs is None:
        pass
    elif n_pairs >= len(df):
        if n_pairs > len(df):
            warnings.warn(
                f"{Path(snapshot_dir)}: asked for {n_pairs} pairs but split {split!r} has only "
                f"{len(df)} usable rows; taking all of them",
                stacklevel=2,
            )
    else:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(df), size=n_pairs, replace=False))
        df = df.iloc[keep]
    offline = df[["prompt_id", "prompt", "chosen", "rejected"]].reset_index(drop=True)
    offline = offline.astype(str)
    prompts = offline[["prompt_id", "prompt"]].copy()
    check_frame(offline, "pairs", f"{Path(snapshot_dir)} ({split})")
    check_frame(prompts, "prompts", f"{Path(snapshot_dir)} ({split})")
    log.info("offline pairs: %d (seed %d)", len(offline), seed)
    return offline, prompts


# ---------------------------------------------------------------------------------------------
# AlpacaEval 2


def _find(root: Path, relative: str | Iterable[str]) -> Path:
    """The first of ``relative`` that exists under ``root``, else a search by file name."""
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset snapshot folder does not exist")
    candidates = [relative] if isinstance(relative, str) else list(relative)
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    name = Path(candidates[0]).name
    hits = sorted(p for p in root.rglob(name) if ".cache" not in p.parts)
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise DatasetError(f"{root}: no file {candidates[0]!r} in the dataset snapshot")
    raise DatasetError(
        f"{root}: several files named {name!r} ({[str(h.relative_to(root)) for h in hits]}); "
        f"expected {candidates}"
    )


def prepare_alpaca_eval(
    snapshot_dir: str | os.PathLike, *, filename: str = ALPACA_EVAL_FILE
) -> pd.DataFrame:
    """The AlpacaEval 2 prompts and baseline replies from a ``tatsu-lab/alpaca_eval`` snapshot.

    Reads ``filename`` (default ``alpaca_eval_gpt4_baseline.json``, the gpt4_turbo baseline of
    AlpacaEval 2) and returns prompt_id (the zero-padded row index), prompt (``instruction``),
    reference (``output``), reference_generator (``generator``) and dataset (the instruction's
    source set), in file order.
    """
    path = _find(Path(snapshot_dir), filename)
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(records, list) or not records:
        raise DatasetError(f"{path}: expected a non-empty JSON list of records")
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise DatasetError(f"{path}: record {i} is not an object: {str(rec)[:80]!r}")
        missing = [f for f in ALPACA_EVAL_FIELDS if f not in rec]
        if missing:
            raise DatasetError(f"{path}: record {i} lacks field(s) {missing}; has {sorted(rec)}")
        bad = [f for f in ALPACA_EVAL_FIELDS if not isinstance(rec[f], str)]
        if bad:
            raise DatasetError(f"{path}: record {i}: field(s) {bad} should be strings")
        if not rec["instruction"].strip():
            raise DatasetError(f"{path}: record {i}: field 'instruction' is empty")
    width = max(3, len(str(len(records) - 1)))
    out = pd.DataFrame(
        {
            "prompt_id": [f"{i:0{width}d}" for i in range(len(records))],
            "prompt": [r["instruction"] for r in records],
            "reference": [r["output"] for r in records],
            "reference_generator": [r["generator"] for r in records],
            "dataset": [r["dataset"] for r in records],
        }
    )
    if len(out) != ALPACA_EVAL_SIZE:
        log.warning("%s: %d instructions (AlpacaEval 2 has %d)", path, len(out), ALPACA_EVAL_SIZE)
    log.info(
        "%s: %d prompts, references by %s",
        path,
        len(out),
        sorted(out["reference_generator"].unique()),
    )
    return check_frame(out, "eval_prompts", path)


# ---------------------------------------------------------------------------------------------
# Arena-Hard v0.1


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: line {lineno} is not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}: line {lineno} is not a JSON object")
            row["_line"] = lineno
            rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: file is empty")
    return rows


def _field(row: Mapping[str, Any], names: Sequence[str], path: Path) -> Any:
    for name in names:
        if name in row:
            return row[name]
    fields = sorted(k for k in row if k != "_line")
    raise DatasetError(
        f"{path}: line {row['_line']} has none of the fields {list(names)}; has {fields}"
    )


def _question_text(row: Mapping[str, Any], path: Path) -> str:
    """The single user turn of a question (``prompt``, or ``turns[0].content``)."""
    if "prompt" in row:
        text = row["prompt"]
    else:
        turns = _field(row, ["prompt", "turns"], path)
        if not isinstance(turns, list) or len(turns) != 1 or not isinstance(turns[0], Mapping):
            raise DatasetError(
                f"{path}: line {row['_line']}: field 'turns' should hold exactly one "
                f"{{content}} turn, found {str(turns)[:80]!r}"
            )
        text = turns[0].get("content")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{path}: line {row['_line']}: the question text is empty or missing")
    return text


def _answer_text(row: Mapping[str, Any], path: Path) -> str:
    """The baseline's reply (``messages[-1].content[.answer]``, or
    ``choices[0].turns[0].content``)."""
    where = f"{path}: line {row['_line']}"
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], Mapping):
            raise DatasetError(f"{where}: field 'messages' should be a non-empty list of messages")
        last = messages[-1]
        if last.get("role") != "assistant":
            raise DatasetError(f"{where}: the last message is not the assistant's")
        text = last.get("content")
        if isinstance(text, Mapping):
            text = text.get("answer")
    else:
        choices = _field(row, ["messages", "choices"], path)
        try:
            text = choices[0]["turns"][0]["content"]
        except (IndexError, KeyError, TypeError):
            raise DatasetError(
                f"{where}: field 'choices' should look like [{{turns: [{{content}}]}}]"
            ) from None
    if not isinstance(text, str):
        raise DatasetError(f"{where}: the answer text is missing")
    return text


def prepare_arena_hard(
    snapshot_dir: str | os.PathLike, *, baseline: str = "gpt-4-0314", bench: str = ARENA_HARD_BENCH
) -> pd.DataFrame:
    """Arena-Hard questions joined with ``baseline``'s answers.

    Looks for ``data/<bench>/question.jsonl`` (or ``<bench>/question.jsonl``, or
    ``question.jsonl`` at the root) and ``model_answer/<baseline>.jsonl`` beside it. Returns
    prompt_id (the question id), prompt, category, cluster, reference (the baseline's answer)
    and reference_generator, in question-file order. Every question needs an answer.
    """
    root = Path(snapshot_dir)
    qpath = _find(
        root, [f"data/{bench}/question.jsonl", f"{bench}/question.jsonl", "question.jsonl"]
    )
    apath = qpath.parent / "model_answer" / f"{baseline}.jsonl"
    if not apath.is_file():
        have = sorted(p.stem for p in (qpath.parent / "model_answer").glob("*.jsonl"))
        raise DatasetError(f"{apath}: no answers of baseline {baseline!r}; answers found: {have}")
    questions = []
    for row in _read_jsonl(qpath):
        questions.append(
            {
                "prompt_id": str(_field(row, ["uid", "question_id"], qpath)),
                "prompt": _question_text(row, qpath),
                "category": str(row.get("category", "")),
                "cluster": str(row.get("cluster", "")),
                "_line": row["_line"],
            }
        )
    q = pd.DataFrame(questions)
    dup = q.loc[q["prompt_id"].duplicated(), "_line"].tolist()
    if dup:
        raise DatasetError(f"{qpath}: repeated question ids at lines {dup[:5]}")
    answers: dict[str, tuple[str, str]] = {}
    for row in _read_jsonl(apath):
        qid = str(_field(row, ["uid", "question_id"], apath))
        model = str(row.get("model", row.get("model_id", baseline)))
        if qid in answers:
            raise DatasetError(f"{apath}: line {row['_line']}: a second answer to question {qid}")
        answers[qid] = (_answer_text(row, apath), model)
    missing = [pid for pid in q["prompt_id"] if pid not in answers]
    if missing:
        raise DatasetError(
            f"{apath}: no answer for {len(missing)} question(s) of {qpath.name}, e.g. {missing[:3]}"
        )
    q["reference"] = [answers[pid][0] for pid in q["prompt_id"]]
    q["reference_generator"] = [answers[pid][1] for pid in q["prompt_id"]]
    out = q.drop(columns="_line")[
        ["prompt_id", "prompt", "category", "cluster", "reference", "reference_generator"]
    ]
    if len(out) != ARENA_HARD_SIZE:
        log.warning("%s: %d questions (Arena-Hard v0.1 has %d)", qpath, len(out), ARENA_HARD_SIZE)
    log.info("%s: %d questions with %s answers from %s", qpath, len(out), baseline, apath)
    return check_frame(out, "eval_prompts", qpath)
