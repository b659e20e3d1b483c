"""SeRA's evaluation (dicewf.sera_eval): verdict parsing, the weighted win rate against
hand-computed cases, judging through a fake client, and each benchmark's preparation from a
test double with the real layout (FastChat's vicuna_bench/question.jsonl, WizardLM's
WizardLM_testset.jsonl, tatsu-lab/alpaca_eval's two JSON files, ultrafeedback_binarized's
test_prefs parquet)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from dicewf import sera_eval
from dicewf.io import DatasetError
from dicewf.judge_client import JudgeError
from test_datasets import FakeAlpacaEval, FakeUltraFeedback

# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    "text, rating",
    [
        ("Good answer. Rating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ("[[10]]", 10.0),
        ("[[1]]", 1.0),
        ("no double brackets, but Rating: [6]", 6.0),  # FastChat's backup pattern
        ("Rating: [[7]] ... so again [[7]]", 7.0),  # the same rating twice
        ("first [[3]] then [[9]]", None),  # two different ratings
        ("Rating: [[0]]", None),  # outside 1-10
        ("Rating: [[11]]", None),
        ("Rating: 7/10", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_rating(text, rating):
    assert sera_eval.parse_rating(text) == rating


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("A is clearer. [[A]]", "A"),
        ("[[B]]", "B"),
        ("Both fine: [[C]]", "tie"),
        ("[[A]] ... final verdict [[A]]", "A"),
        ("[[A]] or maybe [[B]]", None),  # two different verdicts
        ("[A]", None),  # single brackets are not a verdict
        ("[[D]]", None),
        ("Assistant A is better.", None),
        (None, None),
    ],
)
def test_parse_verdict(text, verdict):
    assert sera_eval.parse_verdict(text) == verdict


def test_game_outcome_from_the_models_position():
    assert sera_eval.game_outcome("A", "A") == 1.0
    assert sera_eval.game_outcome("B", "A") == 0.0
    assert sera_eval.game_outcome("B", "B") == 1.0
    assert sera_eval.game_outcome("A", "B") == 0.0
    assert sera_eval.game_outcome("tie", "B") == 0.5
    assert sera_eval.game_outcome(None, "A") is None
    with pytest.raises(ValueError, match="model_position"):
        sera_eval.game_outcome("A", "C")
    with pytest.raises(ValueError, match="verdict"):
        sera_eval.game_outcome("C", "A")


@pytest.mark.parametrize(
    "first, second, combined",
    [
        (1.0, 1.0, 1.0),  # a win in both orders
        (0.0, 0.0, 0.0),
        (1.0, 0.0, 0.5),  # inconsistent: a tie
        (0.0, 1.0, 0.5),
        (1.0, 0.5, 0.5),  # a win and a tie: a tie
        (0.5, 0.5, 0.5),
        (None, 1.0, None),  # an unparsable game: the prompt is unparsable
        (1.0, None, None),
    ],
)
def test_combine_orders(first, second, combined):
    assert sera_eval.combine_orders(first, second) == combined


def test_weighted_win_rate_by_hand():
    # 3 wins, 2 ties, 1 loss, 2 unparsable: (3 + 0.5 * 2) / 6 = 66.67 %
    got = sera_eval.weighted_win_rate([1.0, 1.0, 0.5, None, 0.0, 1.0, 0.5, None])
    assert got == {
        "win_rate": pytest.approx(100 * 4 / 6),
        "wins": 3,
        "ties": 2,
        "losses": 1,
        "n": 6,
        "unparsable": 2,
    }
    assert sera_eval.weighted_win_rate([0.5, 0.5])["win_rate"] == 50.0
    assert sera_eval.weighted_win_rate([0.0, float("nan")])["unparsable"] == 1
    empty = sera_eval.weighted_win_rate([None, None])
    assert empty["win_rate"] is None and empty["unparsable"] == 2
    with pytest.raises(ValueError, match="0, 0.5, 1"):
        sera_eval.weighted_win_rate([0.7])


def test_mean_rating_counts_the_unparsable():
    assert sera_eval.mean_rating([7.0, None, 8.0, 6.0]) == {
        "score": 7.0,
        "n": 3,
        "unparsable": 1,
    }
    assert sera_eval.mean_rating([None]) == {"score": None, "n": 0, "unparsable": 1}


# ---------------------------------------------------------------------------------------------
# Judging


class ScriptedJudge:
    """A ChatClient double: ``reply(system, user)`` answers each conversation; it records the
    conversations and the ``valid`` callback it was given."""

    name = "scripted judge"
    cache_path = None

    def __init__(self, reply):
        self.reply = reply
        self.asked = []
        self.valid = []

    def complete_records(self, messages_list, valid=None):
        self.valid.append(valid)
        out = []
        for messages in messages_list:
            self.asked.append(messages)
            text = self.reply(messages[0]["content"], messages[1]["content"])
            out.append({"response": text, "key": str(len(self.asked))})
        return out


QUESTIONS = pd.DataFrame({"prompt_id": ["q1", "q2", "q3"], "prompt": ["One?", "Two?", "Three?"]})
MODEL = pd.DataFrame({"prompt_id": ["q3", "q1", "q2"], "response": ["m3", "m1", "m2"]})
SFT = pd.DataFrame({"prompt_id": ["q1", "q2", "q3"], "response": ["s1", "s2", "s3"]})


def _answers(user):
    a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
    b = user.split("[The Start of Assistant B's Answer]\n")[1].split("\n")[0]
    return a, b


def _planted(system, user):
    """q1: the model wins in both orders; q2: the judge always picks A (inconsistent: a tie);
    q3: no verdict when the model is B. Grades: m1 8, m2 unparsable, m3 6."""
    if system == sera_eval.SINGLE_SYSTEM:
        answer = user.split("[The Start of Assistant's Answer]\n")[1].split("\n")[0]
        return {"m1": "[[8]]", "m2": "a fine answer", "m3": "Rating: [[6]]"}.get(answer, "[[5]]")
    a, b = _answers(user)
    if "m1" in (a, b):
        return "[[A]]" if a == "m1" else "[[B]]"
    if "m2" in (a, b):
        return "[[A]]"
    return "[[C]]" if a == "m3" else "cannot decide"


def test_grade_and_compare_with_a_planted_judge():
    judge = ScriptedJudge(_planted)
    graded = sera_eval.grade(QUESTIONS, MODEL, judge)
    assert list(graded["prompt_id"]) == ["q1", "q2", "q3"]
    assert graded["rating"].tolist()[0] == 8.0 and graded["rating"].isna().tolist()[1]
    assert sera_eval.mean_rating(list(graded["rating"]))["score"] == 7.0
    assert "[Question]\nOne?" in judge.asked[0][1]["content"]

    games = sera_eval.compare(QUESTIONS, MODEL, SFT, judge)
    assert games["verdict1"].tolist() == ["A", "A", "tie"]
    assert games["verdict2"].tolist()[:2] == ["B", "A"] and games["verdict2"].isna().tolist()[2]
    assert games["outcome"].tolist()[:2] == [1.0, 0.5]
    assert games["outcome"].isna().tolist()[2]
    metrics = sera_eval.weighted_win_rate(list(games["outcome"]))
    assert metrics["win_rate"] == 75.0 and metrics["unparsable"] == 1
    # the client asks again, on a rerun, replies without a verdict
    assert judge.valid[-1]({"response": "[[B]]"}) and not judge.valid[-1]({"response": "?"})


def test_compare_in_one_order_only():
    games = sera_eval.compare(QUESTIONS, MODEL, SFT, ScriptedJudge(_planted), both_orders=False)
    assert "verdict2" not in games and games["outcome"].tolist() == [1.0, 1.0, 0.5]


def test_a_judge_that_never_answers_in_format_is_an_error():
    judge = ScriptedJudge(lambda system, user: "I prefer not to say.")
    with pytest.raises(JudgeError, match="no usable rating in 3 of 3"):
        sera_eval.grade(QUESTIONS, MODEL, judge)
    with pytest.raises(JudgeError, match="no usable verdict in 6 of 6"):
        sera_eval.compare(QUESTIONS, MODEL, SFT, judge)


def test_a_missing_or_repeated_answer_names_the_prompt():
    judge = ScriptedJudge(_planted)
    with pytest.raises(DatasetError, match=r"opponent: no response for prompt_id \['q3'\]"):
        sera_eval.compare(QUESTIONS, MODEL, SFT.iloc[:2], judge)
    twice = pd.concat([MODEL, MODEL.iloc[:1]])
    with pytest.raises(DatasetError, match=r"responses: more than one row for prompt_id \['q3'\]"):
        sera_eval.grade(QUESTIONS, twice, judge)


def test_evaluate_alpaca_compares_with_sft_and_both_references(tmp_path):
    questions = sera_eval.prepare_alpaca(FakeAlpacaEval(tmp_path / "alpaca", n=3).root)
    responses = pd.DataFrame({"prompt_id": questions["prompt_id"], "response": ["x", "y", "z"]})

    def judge(system, user):  # the model wins against SFT, ties G4, loses to G3.5
        if system == sera_eval.SINGLE_SYSTEM:
            return "[[4]]"
        a, b = _answers(user)
        other = b if a in "xyz" else a
        if other.startswith("Turbo"):
            return "[[C]]"
        if other.startswith("Davinci"):
            return "[[A]]" if other == a else "[[B]]"
        return "[[A]]" if a in "xyz" else "[[B]]"

    sft = responses.assign(response=["s", "t", "u"])
    judgments, metrics = sera_eval.evaluate(
        "alpaca_eval", questions, responses, ScriptedJudge(judge), sft=sft
    )
    assert metrics["single"]["score"] == 4.0
    assert metrics["vs_sft"]["win_rate"] == 100.0
    assert metrics["vs_gpt4_turbo"]["win_rate"] == 50.0
    assert metrics["vs_text_davinci_003"]["win_rate"] == 0.0
    assert sorted(judgments["kind"].unique()) == [
        "gpt4_turbo",
        "sft",
        "single",
        "text_davinci_003",
    ]
    # the SFT model itself is compared with the references only
    _, own = sera_eval.evaluate("vicuna", questions, sft, ScriptedJudge(judge))
    assert set(own) == {"benchmark", "single"}


# ---------------------------------------------------------------------------------------------
# The benchmarks


def _jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fake_vicuna(root: Path, n: int = 4) -> Path:
    """FastChat's fastchat/llm_judge/data/vicuna_bench/question.jsonl."""
    rows = [
        {"question_id": i + 1, "category": "generic", "turns": [f"Vicuna question {i + 1}?"]}
        for i in range(n)
    ]
    return _jsonl(root / "vicuna_bench" / "question.jsonl", rows)


def fake_evol(root: Path, n: int = 4) -> Path:
    """WizardLM's WizardLM/data/WizardLM_testset.jsonl."""
    rows = [
        {"idx": i + 1, "Skill": "Math", "Difficulty": 3, "Instruction": f"Evol instruction {i}"}
        for i in range(n)
    ]
    return _jsonl(root / "WizardLM_testset.jsonl", rows)


def test_vicuna_questions(tmp_path, caplog):
    df = sera_eval.prepare_benchmark("vicuna", fake_vicuna(tmp_path))
    assert df.to_dict("records")[0] == {
        "prompt_id": "1",
        "prompt": "Vicuna question 1?",
        "category": "generic",
    }
    assert len(df) == 4 and "4 prompts (vicuna has 80)" in caplog.text


def test_evol_instruct_instructions(tmp_path):
    df = sera_eval.prepare_benchmark("evol_instruct", fake_evol(tmp_path))
    assert df["prompt_id"].tolist() == ["1", "2", "3", "4"]
    assert df["prompt"].iloc[2] == "Evol instruction 2" and df["category"].iloc[0] == "Math"


def test_alpaca_eval_carries_both_reference_answers(tmp_path):
    fake = FakeAlpacaEval(tmp_path / "alpaca", n=5)
    df = sera_eval.prepare_benchmark("alpaca_eval", fake.root)
    assert df["prompt"].tolist() == [r["instruction"] for r in fake.records]
    assert df["reference_gpt4_turbo"].iloc[1] == "Turbo reference 1"
    assert df["reference_text_davinci_003"].iloc[1] == "Davinci 1"


def test_alpaca_eval_files_that_disagree_are_refused(tmp_path):
    fake = FakeAlpacaEval(tmp_path / "alpaca", n=5)
    v1 = json.loads((fake.root / "alpaca_eval.json").read_text())
    v1[3]["instruction"] = "something else"
    (fake.root / "alpaca_eval.json").write_text(json.dumps(v1))
    with pytest.raises(DatasetError, match="differ at record 3"):
        sera_eval.prepare_benchmark("alpaca_eval", fake.root)
    v1[3]["instruction"], v1[2]["generator"] = fake.records[3]["instruction"], "gpt4"
    (fake.root / "alpaca_eval.json").write_text(json.dumps(v1))
    with pytest.raises(DatasetError, match=r"alpaca_eval.json: generator \['gpt4'\]"):
        sera_eval.prepare_benchmark("alpaca_eval", fake.root)


def test_ultrafeedback_test_prompts(tmp_path):
    fake = FakeUltraFeedback(tmp_path / "HuggingFaceH4--ultrafeedback_binarized")
    df = sera_eval.prepare_benchmark("ultrafeedback", fake.root)
    assert df.to_dict("records") == [{"prompt_id": "test0", "prompt": "Held out?"}]


@pytest.mark.parametrize(
    "bench, row, message",
    [
        ("vicuna", {"question_id": 1, "turns": ["a", "b"]}, "line 2: field 'turns' should hold"),
        ("vicuna", {"question_id": 1, "turns": ["  "]}, "line 2: the question text is empty"),
        ("vicuna", {"turns": ["a"]}, r"line 2 has none of the fields \['question_id'\]"),
        ("evol_instruct", {"idx": 9, "Instruction": ""}, "line 2: field 'Instruction' is empty"),
        ("evol_instruct", {"idx": 9}, r"line 2 has none of the fields \['Instruction'\]"),
        ("evol_instruct", {"idx": 1, "Instruction": "again"}, r"repeated ids \['1'\]"),
    ],
)
def test_a_bad_benchmark_line_is_named(tmp_path, bench, row, message):
    good = {
        "vicuna": {"question_id": 1, "turns": ["q"]},
        "evol_instruct": {"idx": 1, "Instruction": "q"},
    }
    path = _jsonl(tmp_path / "bench.jsonl", [good[bench], row])
    with pytest.raises(DatasetError, match=message):
        sera_eval.prepare_benchmark(bench, path)


def test_an_unknown_benchmark_is_refused():
    with pytest.raises(ValueError, match="unknown SeRA benchmark 'mt_bench'"):
        sera_eval.prepare_benchmark("mt_bench", "x")


def test_fetch_reads_a_url_into_place(tmp_path):
    source = fake_evol(tmp_path / "src")
    got = sera_eval.fetch(source.as_uri(), tmp_path / "out" / "evol.jsonl")
    assert got.read_text() == source.read_text() and not list((tmp_path / "out").glob("*.part"))
