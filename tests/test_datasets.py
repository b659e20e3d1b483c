"""Preparing the paper's datasets from local snapshots laid out like their hub repositories.

The snapshots are test doubles (``Fake...``) written with the real file layouts and columns:
UltraFeedback's ``data/{split}-NNNNN-of-NNNNN.parquet`` with message-list columns, AlpacaEval's
``alpaca_eval_gpt4_baseline.json`` and Arena-Hard's ``question.jsonl`` + ``model_answer/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from dicewf import datasets
from dicewf.io import DatasetError, check_frame


def _conversation(prompt: str, reply: str) -> list[dict[str, str]]:
    return [{"content": prompt, "role": "user"}, {"content": reply, "role": "assistant"}]


class FakeUltraFeedback:
    """A snapshot of HuggingFaceH4/ultrafeedback_binarized: ``n_good`` usable pairs spread over
    two train_prefs shards, plus rows the preparation must drop, and a test_prefs shard."""

    def __init__(self, root: Path, n_good: int = 40):
        self.root = root
        self.good = {}  # prompt_id -> (prompt, chosen reply, rejected reply)
        rows = []
        for i in range(n_good):
            pid, prompt = f"id{i:03d}", f"Question number {i}?"
            chosen, rejected = f"Good answer {i}.", f"Bad answer {i}."
            self.good[pid] = (prompt, chosen, rejected)
            rows.append(self.row(pid, prompt, chosen, rejected, 8.0, 3.5))
        self.bad_ids = ["tie", "multi", "empty", "last_user"]
        rows.append(self.row("tie", "A tie?", "Same.", "Also same.", 5.0, 5.0))
        multi = self.row("multi", "Two turns?", "First.", "Other.", 7.0, 2.0)
        multi["chosen"] = multi["chosen"] + _conversation("And then?", "Second.")
        rows.append(multi)
        rows.append(self.row("empty", "Empty reply?", "  ", "Something.", 6.0, 1.0))
        last_user = self.row("last_user", "Who speaks last?", "Me.", "You.", 6.0, 1.0)
        last_user["rejected"] = last_user["rejected"][:1]
        rows.append(last_user)
        rows.append(dict(rows[0]))  # an exact repeat of the first good row
        again = dict(rows[1])  # the same prompt_id again, with other replies
        again.update(chosen=_conversation(rows[1]["prompt"], "Another good answer."))
        rows.append(again)
        half = len(rows) // 2
        self.write("train_prefs-00000-of-00002.parquet", rows[:half])
        self.write("train_prefs-00001-of-00002.parquet", rows[half:])
        self.write(
            "test_prefs-00000-of-00001.parquet",
            [self.row("test0", "Held out?", "Yes.", "No.", 9.0, 1.0)],
        )

    @staticmethod
    def row(pid, prompt, chosen, rejected, score_chosen, score_rejected):
        return {
            "prompt": prompt,
            "prompt_id": pid,
            "chosen": _conversation(prompt, chosen),
            "rejected": _conversation(prompt, rejected),
            "messages": _conversation(prompt, chosen),
            "score_chosen": score_chosen,
            "score_rejected": score_rejected,
        }

    def write(self, name: str, rows: list[dict]) -> Path:
        path = self.root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(path, index=False)
        return path


@pytest.fixture
def ultrafeedback(tmp_path):
    return FakeUltraFeedback(tmp_path / "HuggingFaceH4--ultrafeedback_binarized")


def test_ultrafeedback_subset_has_the_asked_size_and_the_assistant_replies(ultrafeedback):
    offline, prompts = datasets.prepare_ultrafeedback(ultrafeedback.root, n_pairs=15, seed=0)
    check_frame(offline, "pairs")
    check_frame(prompts, "prompts")
    assert len(offline) == 15 and offline["prompt_id"].is_unique
    assert prompts.equals(offline[["prompt_id", "prompt"]])
    for pid, prompt, chosen, rejected in offline.itertuples(index=False):
        assert (prompt, chosen, rejected) == ultrafeedback.good[pid]


def test_ultrafeedback_subset_is_seeded(ultrafeedback):
    a, _ = datasets.prepare_ultrafeedback(ultrafeedback.root, n_pairs=10, seed=1)
    b, _ = datasets.prepare_ultrafeedback(ultrafeedback.root, n_pairs=10, seed=1)
    c, _ = datasets.prepare_ultrafeedback(ultrafeedback.root, n_pairs=10, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["prompt_id"]) != set(c["prompt_id"])


def test_ultrafeedback_subset_keeps_the_file_order(tmp_path):
    """The drawn rows come in file order: shard by shard (by name), row by row within a shard;
    the ids are in no sorted order, so neither sorting them nor the draw's order passes."""
    snapshot = FakeUltraFeedback(tmp_path / "uf", n_good=0)  # its train shards replaced below
    order = [
        f"id{k:03d}"
        for k in (37, 5, 21, 2, 30, 11, 26, 8, 39, 14, 0, 33, 17, 24, 6, 29, 12, 35, 3, 19)
    ]
    rows = [snapshot.row(pid, f"Question {pid}?", "Good.", "Bad.", 8.0, 3.5) for pid in order]
    snapshot.write("train_prefs-00000-of-00002.parquet", rows[:12])
    snapshot.write("train_prefs-00001-of-00002.parquet", rows[12:])
    for seed in range(3):
        offline, prompts = datasets.prepare_ultrafeedback(snapshot.root, n_pairs=8, seed=seed)
        ids = offline["prompt_id"].tolist()
        assert len(ids) == 8
        assert ids == [pid for pid in order if pid in set(ids)]
        assert prompts["prompt_id"].tolist() == ids
    everything, _ = datasets.prepare_ultrafeedback(snapshot.root, n_pairs=None)
    assert everything["prompt_id"].tolist() == order


def test_ultrafeedback_drops_ties_multi_turn_empty_replies_and_repeats(ultrafeedback):
    offline, prompts = datasets.prepare_ultrafeedback(ultrafeedback.root, n_pairs=None)
    assert sorted(offline["prompt_id"]) == sorted(ultrafeedback.good)
    assert not set(ultrafeedback.bad_ids) & set(offline["prompt_id"])
    # the first occurrence of a repeated prompt_id is kept; the test split is not read
    assert offline.set_index("prompt_id").loc["id001", "chosen"] == "Good answer 1."
    assert "test0" not in set(prompts["prompt_id"])
    test, _ = datasets.prepare_ultrafeedback(ultrafeedback.root, split="test_prefs", n_pairs=None)
    assert test["prompt_id"].tolist() == ["test0"]


def test_ultrafeedback_asking_for_more_rows_than_usable_warns_and_takes_all(ultrafeedback):
    with pytest.warns(UserWarning, match="only 40 usable rows"):
        offline, _ = datasets.prepare_ultrafeedback(ultrafeedback.root, n_pairs=10000)
    assert len(offline) == 40
    with pytest.raises(ValueError, match="n_pairs"):
        datasets.prepare_ultrafeedback(ultrafeedback.root, n_pairs=0)


def test_ultrafeedback_errors_name_the_file_and_column(ultrafeedback):
    with pytest.raises(DatasetError, match="no parquet file of split 'train_gen'"):
        datasets.prepare_ultrafeedback(ultrafeedback.root, split="train_gen")
    row = FakeUltraFeedback.row("x", "Q?", "A.", "B.", 2.0, 1.0)
    broken = ultrafeedback.write(
        "train_prefs-00001-of-00002.parquet",
        [{k: v for k, v in row.items() if k != "score_rejected"}],
    )
    with pytest.raises(DatasetError, match=rf"{broken}: missing column\(s\) \['score_rejected'\]"):
        datasets.prepare_ultrafeedback(ultrafeedback.root)
    row["rejected"] = "B."  # a string, not a list of messages
    broken = ultrafeedback.write("train_prefs-00001-of-00002.parquet", [row, row])
    with pytest.raises(DatasetError, match=rf"{broken}: column 'rejected' at row 0"):
        datasets.prepare_ultrafeedback(ultrafeedback.root)
    with pytest.raises(DatasetError, match="does not exist"):
        datasets.prepare_ultrafeedback(ultrafeedback.root / "missing")


class FakeAlpacaEval:
    """A snapshot of tatsu-lab/alpaca_eval: the AlpacaEval 2 file with gpt4_turbo outputs, and
    the AlpacaEval 1 file (text_davinci_003 outputs) beside it, as in the repository."""

    def __init__(self, root: Path, n: int = 12):
        root.mkdir(parents=True)
        self.root = root
        sets = ["helpful_base", "oasst", "selfinstruct", "vicuna"]
        self.records = [
            {
                "instruction": f"Instruction {i}: explain {{braces}}.",
                "output": f"Turbo reference {i}",
                "generator": "gpt4_turbo",
                "dataset": sets[i % 4],
            }
            for i in range(n)
        ]
        (root / "alpaca_eval_gpt4_baseline.json").write_text(json.dumps(self.records))
        v1 = [
            dict(r, output=f"Davinci {i}", generator="text_davinci_003")
            for i, r in enumerate(self.records)
        ]
        (root / "alpaca_eval.json").write_text(json.dumps(v1))
        (root / "alpaca_eval.py").write_text("# the repository's loading script\n")


def test_alpaca_eval_reads_the_alpacaeval2_baseline_as_references(tmp_path):
    fake = FakeAlpacaEval(tmp_path / "tatsu-lab--alpaca_eval")
    df = datasets.prepare_alpaca_eval(fake.root)
    check_frame(df, "eval_prompts")
    assert list(df.columns) == [
        "prompt_id",
        "prompt",
        "reference",
        "reference_generator",
        "dataset",
    ]
    assert df["prompt_id"].tolist()[:3] == ["000", "001", "002"] and df["prompt_id"].is_unique
    assert df["prompt"].tolist() == [r["instruction"] for r in fake.records]
    assert df["reference"].tolist() == [r["output"] for r in fake.records]
    assert set(df["reference_generator"]) == {"gpt4_turbo"}
    assert df["dataset"].tolist() == [r["dataset"] for r in fake.records]
    v1 = datasets.prepare_alpaca_eval(fake.root, filename="alpaca_eval.json")
    assert set(v1["reference_generator"]) == {"text_davinci_003"}


def test_alpaca_eval_errors_name_the_file_and_record(tmp_path):
    fake = FakeAlpacaEval(tmp_path / "snap")
    path = fake.root / "alpaca_eval_gpt4_baseline.json"
    records = [dict(r) for r in fake.records]
    del records[3]["output"]
    path.write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=rf"{path}: record 3 lacks field\(s\) \['output'\]"):
        datasets.prepare_alpaca_eval(fake.root)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=f"{path}: not valid JSON"):
        datasets.prepare_alpaca_eval(fake.root)
    path.unlink()
    with pytest.raises(DatasetError, match="no file 'alpaca_eval_gpt4_baseline.json'"):
        datasets.prepare_alpaca_eval(fake.root)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class FakeArenaHard:
    """Arena-Hard v0.1 under ``data/arena-hard-v0.1/``: questions in cluster order, answers of
    the baseline and of another model sorted by id, in the GitHub 2024 format (``github``:
    question_id, turns, choices) or the hub dataset's format (uid, prompt, messages)."""

    def __init__(self, root: Path, layout: str, n: int = 6):
        self.root = root
        self.bench = root / "data" / "arena-hard-v0.1"
        self.questions = [
            (f"{'fedcba'[i % 6]}{i:02d}", f"Hard question {i}", f"Cluster {i // 2}")
            for i in range(n)
        ]
        if layout == "github":
            q = [
                {
                    "question_id": qid,
                    "category": "arena-hard-v0.1",
                    "cluster": cl,
                    "turns": [{"content": text}],
                }
                for qid, text, cl in self.questions
            ]
            answer = lambda qid, model: {
                "question_id": qid,
                "answer_id": "a" + qid,
                "model_id": model,
                "choices": [
                    {"index": 0, "turns": [{"content": f"{model} on {qid}", "token_len": 3}]}
                ],
                "tstamp": 1.0,
            }
        else:
            q = [
                {"uid": qid, "category": "arena-hard-v0.1", "cluster": cl, "prompt": text}
                for qid, text, cl in self.questions
            ]
            answer = lambda qid, model: {
                "uid": qid,
                "ans_id": "a" + qid,
                "model": model,
                "messages": [
                    {"role": "user", "content": "..."},
                    {"role": "assistant", "content": {"answer": f"{model} on {qid}"}},
                ],
                "tstamp": 1.0,
                "metadata": {},
            }
        self.question_file = _jsonl(self.bench / "question.jsonl", q)
        ids = sorted(qid for qid, _, _ in self.questions)
        for model in ("gpt-4-0314", "gpt-3.5-turbo-0125"):
            _jsonl(self.bench / "model_answer" / f"{model}.jsonl", [answer(i, model) for i in ids])


@pytest.mark.parametrize("layout", ["github", "hub"])
def test_arena_hard_joins_questions_with_the_baseline_answers(tmp_path, layout):
    fake = FakeArenaHard(tmp_path / "lmarena-ai--arena-hard-auto", layout)
    df = datasets.prepare_arena_hard(fake.root)
    check_frame(df, "eval_prompts")
    assert list(df.columns) == [
        "prompt_id",
        "prompt",
        "category",
        "cluster",
        "reference",
        "reference_generator",
    ]
    assert df["prompt_id"].tolist() == [qid for qid, _, _ in fake.questions]  # question order
    assert df["prompt"].tolist() == [text for _, text, _ in fake.questions]
    assert df["cluster"].tolist() == [cl for _, _, cl in fake.questions]
    assert df["reference"].tolist() == [f"gpt-4-0314 on {qid}" for qid, _, _ in fake.questions]
    assert set(df["reference_generator"]) == {"gpt-4-0314"}
    other = datasets.prepare_arena_hard(fake.root, baseline="gpt-3.5-turbo-0125")
    assert other["reference"].iloc[0] == f"gpt-3.5-turbo-0125 on {fake.questions[0][0]}"


def test_arena_hard_errors_name_the_file_and_line(tmp_path):
    root = tmp_path / "snap"
    fake = FakeArenaHard(root, "github")
    with pytest.raises(
        DatasetError,
        match=r"gpt-4-turbo\.jsonl: no answers of baseline .*"
        r"'gpt-3.5-turbo-0125', 'gpt-4-0314'",
    ):
        datasets.prepare_arena_hard(root, baseline="gpt-4-turbo")
    answers = fake.bench / "model_answer" / "gpt-4-0314.jsonl"
    lines = answers.read_text().splitlines()
    answers.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DatasetError, match=rf"{answers}: no answer for 1 question\(s\)"):
        datasets.prepare_arena_hard(root)
    answers.write_text("\n".join(lines[:2] + ["{oops"] + lines[2:]) + "\n")
    with pytest.raises(DatasetError, match=rf"{answers}: line 3 is not valid JSON"):
        datasets.prepare_arena_hard(root)
    answers.write_text("\n".join(lines) + "\n")
    rows = [json.loads(x) for x in fake.question_file.read_text().splitlines()]
    rows[2]["turns"].append({"content": "a second turn"})
    _jsonl(fake.question_file, rows)
    with pytest.raises(DatasetError, match=rf"{fake.question_file}: line 3: field 'turns'"):
        datasets.prepare_arena_hard(root)
    del rows[2]["turns"]
    _jsonl(fake.question_file, rows)
    with pytest.raises(DatasetError, match=r"line 3 has none of the fields \['prompt', 'turns'\]"):
        datasets.prepare_arena_hard(root)
