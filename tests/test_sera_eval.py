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


# ---------------------------------------------------------------------------------------------
# Exact behaviour: messages, edge cases, what each call passes on


def test_parse_rating_prefers_double_brackets_over_a_single_bracket_elsewhere():
    # [[7]] is found, so the single-bracket [3] is never read
    assert sera_eval.parse_rating("Rating: [[7]], not [3]") == 7.0


def test_game_outcome_errors_quote_the_bad_value():
    with pytest.raises(ValueError, match=r"^model_position should be 'A' or 'B', got 'C'$"):
        sera_eval.game_outcome("A", "C")
    with pytest.raises(ValueError, match=r"^verdict should be 'A', 'B', 'tie' or None, got 'C'$"):
        sera_eval.game_outcome("C", "B")


def test_weighted_win_rate_error_names_the_first_three_bad_outcomes():
    with pytest.raises(
        ValueError, match=r"^outcomes should be 0, 0\.5, 1 or None, got \[0\.7, 0\.2, 2\.0\]$"
    ):
        sera_eval.weighted_win_rate([1.0, 0.7, 0.2, 2.0, 3.0])


def test_mean_rating_leaves_nan_out_as_unparsable():
    assert sera_eval.mean_rating([float("nan"), 4.0, 6.0, None]) == {
        "score": 5.0,
        "n": 2,
        "unparsable": 2,
    }


def test_repeated_prompt_ids_are_named_once_and_at_most_five():
    judge = ScriptedJudge(_planted)
    thrice = pd.concat([MODEL, MODEL.iloc[:1], MODEL.iloc[:1]])
    with pytest.raises(
        DatasetError, match=r"^responses: more than one row for prompt_id \['q3'\]$"
    ):
        sera_eval.grade(QUESTIONS, thrice, judge)
    ids = list("abcdef")
    many = pd.DataFrame({"prompt_id": ids + ids, "response": ["r"] * 12})
    with pytest.raises(
        DatasetError,
        match=r"^responses: more than one row for prompt_id \['a', 'b', 'c', 'd', 'e'\]$",
    ):
        sera_eval.grade(QUESTIONS, many, judge)
    assert judge.asked == []


def test_questions_with_a_repeated_id_are_refused_by_name():
    questions = pd.DataFrame({"prompt_id": ["q1", "q1"], "prompt": ["One?", "Again?"]})
    with pytest.raises(
        DatasetError, match=r"^questions: more than one row for prompt_id \['q1'\]$"
    ):
        sera_eval.grade(questions, MODEL, ScriptedJudge(_planted))


def test_answers_without_a_response_column_are_refused_naming_the_source():
    judge = ScriptedJudge(_planted)
    with pytest.raises(DatasetError, match=r"^opponent: missing column\(s\) \['response'\]"):
        sera_eval.compare(QUESTIONS, MODEL, SFT.rename(columns={"response": "text"}), judge)
    with pytest.raises(DatasetError, match=r"^responses: column 'response' should hold str"):
        sera_eval.grade(QUESTIONS, MODEL.assign(response=[1, 2, 3]), judge)
    with pytest.raises(DatasetError, match=r"^questions: missing column\(s\) \['prompt'\]"):
        sera_eval.grade(QUESTIONS[["prompt_id"]], MODEL, judge)


def test_missing_answers_are_named_at_most_five_with_the_count():
    ids = [f"p{i}" for i in range(7)]
    questions = pd.DataFrame({"prompt_id": ids, "prompt": ["?"] * 7})
    responses = pd.DataFrame({"prompt_id": ["p3"], "response": ["r"]})
    with pytest.raises(
        DatasetError,
        match=r"^responses: no response for prompt_id \['p0', 'p1', 'p2', 'p4', 'p5'\] "
        r"\(6 of 7 prompts\)$",
    ):
        sera_eval.grade(questions, responses, ScriptedJudge(_planted))


def test_grade_sends_the_single_prompt_and_keeps_each_judgment():
    judge = ScriptedJudge(_planted)
    graded = sera_eval.grade(QUESTIONS, MODEL, judge)
    assert judge.asked[2] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": sera_eval.SINGLE_TEMPLATE.format(question="Three?", answer="m3"),
        },
    ]
    assert list(graded.columns) == ["prompt_id", "rating", "judgment"]
    assert graded["judgment"].tolist() == ["[[8]]", "a fine answer", "Rating: [[6]]"]
    assert graded["rating"].tolist()[2] == 6.0
    assert judge.valid[0]({"response": "[[3]]"}) and not judge.valid[0]({"response": "[[0]]"})


def test_grade_and_compare_use_a_given_system_prompt_and_template():
    judge = ScriptedJudge(lambda system, user: "[[2]]" if system == "S" else "[[B]]")
    graded = sera_eval.grade(
        QUESTIONS.iloc[:1], MODEL, judge, system_prompt="S", template="Q={question} A={answer}"
    )
    assert judge.asked[0] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q=One? A=m1"},
    ]
    assert graded["rating"].tolist() == [2.0]
    games = sera_eval.compare(
        QUESTIONS.iloc[:1],
        MODEL,
        SFT,
        judge,
        system_prompt="P",
        template="{question}|{answer_a}|{answer_b}",
    )
    assert judge.asked[1:] == [
        [{"role": "system", "content": "P"}, {"role": "user", "content": "One?|m1|s1"}],
        [{"role": "system", "content": "P"}, {"role": "user", "content": "One?|s1|m1"}],
    ]
    # B twice: a loss as A, a win as B, so a tie
    assert games["outcome"].tolist() == [0.5]


def test_compare_sends_the_pair_prompt_in_both_orders_and_keeps_the_judgments():
    judge = ScriptedJudge(_planted)
    games = sera_eval.compare(QUESTIONS, MODEL, SFT, judge)
    pair = sera_eval.PAIR_TEMPLATE.format
    assert judge.asked[:2] == [
        [
            {"role": "system", "content": sera_eval.PAIR_SYSTEM},
            {"role": "user", "content": pair(question="One?", answer_a="m1", answer_b="s1")},
        ],
        [
            {"role": "system", "content": sera_eval.PAIR_SYSTEM},
            {"role": "user", "content": pair(question="One?", answer_a="s1", answer_b="m1")},
        ],
    ]
    assert len(judge.asked) == 6
    assert list(games.columns) == [
        "prompt_id",
        "verdict1",
        "judgment1",
        "verdict2",
        "judgment2",
        "outcome",
    ]
    assert games["prompt_id"].tolist() == ["q1", "q2", "q3"]
    assert games["judgment1"].tolist() == ["[[A]]", "[[A]]", "[[C]]"]
    assert games["judgment2"].tolist() == ["[[B]]", "[[A]]", "cannot decide"]


def test_compare_in_one_order_shows_the_model_as_a_only():
    judge = ScriptedJudge(_planted)
    games = sera_eval.compare(QUESTIONS, MODEL, SFT, judge, both_orders=False)
    assert [m[1]["content"] for m in judge.asked] == [
        sera_eval.PAIR_TEMPLATE.format(question=q, answer_a=m, answer_b=s)
        for q, m, s in [("One?", "m1", "s1"), ("Two?", "m2", "s2"), ("Three?", "m3", "s3")]
    ]
    assert list(games.columns) == ["prompt_id", "verdict1", "judgment1", "outcome"]
    assert games["verdict1"].tolist() == ["A", "A", "tie"]


def test_some_unusable_replies_are_logged_with_their_count(caplog):
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.sera_eval"):
        sera_eval.grade(QUESTIONS, MODEL, ScriptedJudge(_planted))
    assert [r.getMessage() for r in caplog.records] == [
        "scripted judge gave no usable rating in 1 of 3 replies: "
        "they are counted as unparsable and left out"
    ]
    caplog.clear()

    def first_game_unparsable_for_q1(system, user):  # q1's game 1 (model as A) has no verdict
        return "hmm" if _answers(user) == ("m1", "s1") else "[[A]]"

    with caplog.at_level("WARNING", logger="dicewf.sera_eval"):
        games = sera_eval.compare(
            QUESTIONS, MODEL, SFT, ScriptedJudge(first_game_unparsable_for_q1)
        )
    assert [r.getMessage() for r in caplog.records] == [
        "scripted judge gave no usable verdict in 1 of 6 replies: "
        "they are counted as unparsable and left out"
    ]
    assert games["verdict1"].isna().tolist() == [True, False, False]
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.sera_eval"):
        sera_eval.grade(QUESTIONS, MODEL, ScriptedJudge(lambda s, u: "[[5]]"))
    assert caplog.records == []


def test_a_judge_without_usable_replies_names_its_cache(tmp_path):
    judge = ScriptedJudge(lambda system, user: "no idea")
    judge.cache_path = tmp_path / "cache.jsonl"
    with pytest.raises(JudgeError) as err:
        sera_eval.grade(QUESTIONS, MODEL, judge)
    assert str(err.value) == (
        f"scripted judge gave no usable rating in 3 of 3 replies; its replies are in "
        f"{tmp_path / 'cache.jsonl'}. Check the judge (a wrong model, prompt or server?)"
    )
    judge.cache_path = None
    with pytest.raises(JudgeError) as err:
        sera_eval.compare(QUESTIONS, MODEL, SFT, judge, both_orders=False)
    assert str(err.value) == (
        "scripted judge gave no usable verdict in 3 of 3 replies. "
        "Check the judge (a wrong model, prompt or server?)"
    )


def test_opponents_are_the_sft_answers_and_on_alpaca_eval_the_two_references():
    questions = QUESTIONS.assign(
        reference_gpt4_turbo=["g1", "g2", "g3"], reference_text_davinci_003=["d1", "d2", "d3"]
    )
    assert sera_eval.opponents("vicuna", questions, None) == {}
    got = sera_eval.opponents("alpaca_eval", questions, SFT.assign(extra=1))
    assert list(got) == ["sft", "gpt4_turbo", "text_davinci_003"]
    assert got["sft"].to_dict("list") == {
        "prompt_id": ["q1", "q2", "q3"],
        "response": ["s1", "s2", "s3"],
    }
    assert got["gpt4_turbo"].to_dict("list") == {
        "prompt_id": ["q1", "q2", "q3"],
        "response": ["g1", "g2", "g3"],
    }
    assert got["text_davinci_003"].to_dict("list") == {
        "prompt_id": ["q1", "q2", "q3"],
        "response": ["d1", "d2", "d3"],
    }
    assert list(sera_eval.opponents("vicuna", questions, SFT)) == ["sft"]


def test_evaluate_returns_every_judgment_with_float_ratings_and_outcomes():
    judge = ScriptedJudge(_planted)
    judgments, metrics = sera_eval.evaluate("vicuna", QUESTIONS, MODEL, judge, sft=SFT)
    assert metrics == {
        "benchmark": "vicuna",
        "single": {"score": 7.0, "n": 2, "unparsable": 1},
        "vs_sft": {"win_rate": 75.0, "wins": 1, "ties": 1, "losses": 0, "n": 2, "unparsable": 1},
    }
    assert judgments["kind"].tolist() == ["single"] * 3 + ["sft"] * 3
    assert judgments.index.tolist() == list(range(6))
    assert judgments["rating"].dtype == float and judgments["outcome"].dtype == float
    assert judgments["outcome"].tolist()[3:5] == [1.0, 0.5]
    # without an opponent there is still an outcome column, all NaN
    alone, own = sera_eval.evaluate("vicuna", QUESTIONS, MODEL, ScriptedJudge(_planted))
    assert own == {"benchmark": "vicuna", "single": {"score": 7.0, "n": 2, "unparsable": 1}}
    assert alone["outcome"].dtype == float and alone["outcome"].isna().all()


def test_evaluate_passes_one_order_on_to_compare():
    judge = ScriptedJudge(_planted)
    judgments, metrics = sera_eval.evaluate(
        "vicuna", QUESTIONS, MODEL, judge, sft=SFT, both_orders=False
    )
    assert len(judge.asked) == 3 + 3 and "verdict2" not in judgments
    assert metrics["vs_sft"]["win_rate"] == pytest.approx(100 * 2.5 / 3)


def test_fetch_creates_missing_folders_and_writes_through_a_part_file(tmp_path, monkeypatch):
    seen = {}

    class Reply:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            seen["files"] = sorted(p.name for p in (tmp_path / "a" / "b").iterdir())
            return b"payload"

    def urlopen(url, timeout):
        seen["url"], seen["timeout"] = url, timeout
        return Reply()

    monkeypatch.setattr(sera_eval.urllib.request, "urlopen", urlopen)
    dest = tmp_path / "a" / "b" / "bench.jsonl"
    assert sera_eval.fetch("https://example.org/bench.jsonl", str(dest)) == dest
    assert seen == {
        "url": "https://example.org/bench.jsonl",
        "timeout": 60,
        "files": ["bench.jsonl.part"],
    }
    assert dest.read_bytes() == b"payload" and sorted(dest.parent.iterdir()) == [dest]
    # again into the folder that now exists
    assert sera_eval.fetch("https://example.org/bench.jsonl", dest).read_bytes() == b"payload"


def test_a_benchmark_of_its_full_size_logs_no_warning(tmp_path, caplog):
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.sera_eval"):
        df = sera_eval.prepare_benchmark("vicuna", fake_vicuna(tmp_path, n=80))
    assert len(df) == 80 and caplog.records == []


def test_a_short_benchmark_logs_its_size_against_the_papers(tmp_path, caplog):
    path = fake_evol(tmp_path, n=3)
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.sera_eval"):
        sera_eval.prepare_benchmark("evol_instruct", path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: 3 prompts (evol_instruct has 218)"
    ]


def test_benchmark_rows_without_a_category_get_an_empty_one(tmp_path):
    vicuna = _jsonl(tmp_path / "v.jsonl", [{"question_id": 7, "turns": ["Why?"]}])
    assert sera_eval.prepare_vicuna(vicuna).to_dict("records") == [
        {"prompt_id": "7", "prompt": "Why?", "category": ""}
    ]
    evol = _jsonl(tmp_path / "e.jsonl", [{"idx": 3, "Instruction": "Do."}])
    assert sera_eval.prepare_evol_instruct(evol).to_dict("records") == [
        {"prompt_id": "3", "prompt": "Do.", "category": ""}
    ]


@pytest.mark.parametrize(
    "bench, row, message",
    [
        (
            "vicuna",
            {"question_id": 1, "turns": "a"},
            "line 1: field 'turns' should hold exactly one text turn",
        ),
        (
            "vicuna",
            {"question_id": 1, "turns": []},
            "line 1: field 'turns' should hold exactly one text turn",
        ),
        (
            "vicuna",
            {"question_id": 1, "turns": [5]},
            "line 1: field 'turns' should hold exactly one text turn",
        ),
        ("vicuna", {"question_id": 1, "turns": [""]}, "line 1: the question text is empty"),
        ("evol_instruct", {"idx": 1, "Instruction": 5}, "line 1: field 'Instruction' is empty"),
        ("evol_instruct", {"idx": 1, "Instruction": " \n"}, "line 1: field 'Instruction' is empty"),
    ],
)
def test_a_bad_first_line_is_refused_with_the_exact_message(tmp_path, bench, row, message):
    path = _jsonl(tmp_path / "bench.jsonl", [row])
    with pytest.raises(DatasetError) as err:
        sera_eval.prepare_benchmark(bench, path)
    assert str(err.value) == f"{path}: {message}"


def test_many_repeated_ids_are_named_at_most_five(tmp_path):
    rows = [{"idx": i % 6, "Instruction": f"I{i}"} for i in range(13)]
    path = _jsonl(tmp_path / "evol.jsonl", rows)
    with pytest.raises(DatasetError) as err:
        sera_eval.prepare_evol_instruct(path)
    assert str(err.value) == f"{path}: repeated ids ['0', '1', '2', '3', '4']"


def test_alpaca_eval_prepared_columns_and_exact_errors(tmp_path):
    fake = FakeAlpacaEval(tmp_path / "alpaca", n=4)
    df = sera_eval.prepare_alpaca(fake.root)
    assert list(df.columns) == [
        "prompt_id",
        "prompt",
        "dataset",
        "reference_gpt4_turbo",
        "reference_text_davinci_003",
    ]
    assert df["dataset"].tolist() == ["helpful_base", "oasst", "selfinstruct", "vicuna"]
    assert df["reference_text_davinci_003"].tolist() == [f"Davinci {i}" for i in range(4)]
    v1_path = fake.root / "alpaca_eval.json"
    v1 = json.loads(v1_path.read_text())
    v1_path.write_text(json.dumps(v1 + [dict(v1[0], instruction="one more")]))
    with pytest.raises(DatasetError) as err:
        sera_eval.prepare_alpaca(fake.root)
    assert str(err.value) == (
        f"{fake.root}: alpaca_eval.json and alpaca_eval_gpt4_baseline.json differ at record 4: "
        "the two reference files should hold the same instructions in the same order"
    )
    v1[1]["generator"], v1[3]["generator"] = "zeta", "alpha"
    v1_path.write_text(json.dumps(v1))
    with pytest.raises(DatasetError) as err:
        sera_eval.prepare_alpaca(fake.root)
    assert str(err.value) == (
        f"{fake.root}: alpaca_eval.json: generator ['alpha', 'zeta'], expected 'text_davinci_003'"
    )


def test_alpaca_eval_checks_the_gpt4_turbo_files_generator_too(tmp_path):
    fake = FakeAlpacaEval(tmp_path / "alpaca", n=3)
    path = fake.root / "alpaca_eval_gpt4_baseline.json"
    records = json.loads(path.read_text())
    records[0]["generator"] = "gpt4"
    path.write_text(json.dumps(records))
    with pytest.raises(DatasetError) as err:
        sera_eval.prepare_alpaca(fake.root)
    assert str(err.value) == (
        f"{fake.root}: alpaca_eval_gpt4_baseline.json: generator ['gpt4'], expected 'gpt4_turbo'"
    )


def test_ultrafeedback_reads_the_split_it_is_given_and_names_it(tmp_path, caplog):
    fake = FakeUltraFeedback(tmp_path / "HuggingFaceH4--ultrafeedback_binarized")
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.sera_eval"):
        test = sera_eval.prepare_benchmark("ultrafeedback", fake.root)
        train = sera_eval.prepare_benchmark("ultrafeedback", fake.root, split="train_prefs")
    assert test["prompt_id"].tolist() == ["test0"]
    assert sorted(train["prompt_id"]) == sorted(fake.good)
    assert [r.getMessage() for r in caplog.records if r.name == "dicewf.sera_eval"] == [
        f"{fake.root} (test_prefs): 1 prompts (ultrafeedback has 2000)",
        f"{fake.root} (train_prefs): 40 prompts (ultrafeedback has 2000)",
    ]


def test_an_unknown_benchmark_error_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        sera_eval.prepare_benchmark("mt_bench", "x")
    assert str(err.value) == (
        "unknown SeRA benchmark 'mt_bench'; "
        "have ['alpaca_eval', 'vicuna', 'evol_instruct', 'ultrafeedback']"
    )


def test_compare_names_the_questions_and_the_models_responses_in_its_errors():
    judge = ScriptedJudge(_planted)
    questions = pd.concat([QUESTIONS, QUESTIONS.iloc[1:2]])
    with pytest.raises(
        DatasetError, match=r"^questions: more than one row for prompt_id \['q2'\]$"
    ):
        sera_eval.compare(questions, MODEL, SFT, judge)
    with pytest.raises(
        DatasetError, match=r"^responses: no response for prompt_id \['q2'\] \(1 of 3 prompts\)$"
    ):
        sera_eval.compare(QUESTIONS, MODEL.iloc[:2], SFT, judge)  # MODEL lists q3, q1, q2


def test_evaluate_judgments_have_exactly_the_graded_and_compared_columns():
    judgments, _ = sera_eval.evaluate("vicuna", QUESTIONS, MODEL, ScriptedJudge(_planted), sft=SFT)
    assert list(judgments.columns) == [
        "prompt_id",
        "rating",
        "judgment",
        "kind",
        "verdict1",
        "judgment1",
        "verdict2",
        "judgment2",
        "outcome",
    ]


@pytest.mark.parametrize(
    "bench, row, fields",
    [
        ("vicuna", {"question_id": 1, "text": "a"}, "['turns']; has ['question_id', 'text']"),
        ("vicuna", {"turns": ["a"]}, "['question_id']; has ['turns']"),
        ("evol_instruct", {"idx": 1}, "['Instruction']; has ['idx']"),
        ("evol_instruct", {"Instruction": "a"}, "['idx']; has ['Instruction']"),
    ],
)
def test_a_line_without_a_field_is_named_with_its_file(tmp_path, bench, row, fields):
    path = _jsonl(tmp_path / "bench.jsonl", [row])
    with pytest.raises(DatasetError) as err:
        sera_eval.prepare_benchmark(bench, path)
    assert str(err.value) == f"{path}: line 1 has none of the fields {fields}"


def test_the_size_warning_names_the_file_or_snapshot(tmp_path, caplog):
    vicuna = fake_vicuna(tmp_path / "v", n=2)
    alpaca = FakeAlpacaEval(tmp_path / "alpaca", n=3)
    caplog.clear()
    with caplog.at_level("WARNING", logger="dicewf.sera_eval"):
        sera_eval.prepare_vicuna(vicuna)
        sera_eval.prepare_alpaca(alpaca.root)
    assert [r.getMessage() for r in caplog.records if r.name == "dicewf.sera_eval"] == [
        f"{vicuna}: 2 prompts (vicuna has 80)",
        f"{alpaca.root}: 3 prompts (alpaca_eval has 805)",
    ]


def test_frame_checks_the_prompts_against_the_schema_naming_the_source():
    rows = [{"prompt_id": "1", "prompt": "ok"}, {"prompt_id": "2", "prompt": None}]
    with pytest.raises(DatasetError) as err:
        sera_eval._frame("vicuna", rows, "src.jsonl")
    assert str(err.value) == "src.jsonl: column 'prompt' has missing values at rows [1]"


def test_ultrafeedback_test_prompts_are_all_kept_not_subsampled(tmp_path, monkeypatch):
    calls = []
    real = sera_eval.datasets.prepare_ultrafeedback

    def spy(snapshot, **kwargs):
        calls.append(kwargs)
        return real(snapshot, **kwargs)

    monkeypatch.setattr(sera_eval.datasets, "prepare_ultrafeedback", spy)
    fake = FakeUltraFeedback(tmp_path / "HuggingFaceH4--ultrafeedback_binarized")
    sera_eval.prepare_ultrafeedback_test(fake.root)
    assert calls == [{"split": "test_prefs", "n_pairs": None}]
