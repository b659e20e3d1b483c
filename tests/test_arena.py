"""Arena-Hard judging (verdict parsing, both orders, follow-ups) and scoring (Bradley-Terry, CI)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicewf import arena
from dicewf.io import DatasetError
from dicewf.judge_client import ChatClient, JudgeError
from fake_chat_server import FakeChatServer


# --------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Both are fine.\n\nMy final verdict is: [[B>A]]", "B>A"),
        ("**Final verdict: [[A>>B]]**", "A>>B"),
        ("Final verdict: [[ B >> A ]].", "B>>A"),
        ("Tie. [[A=B]]", "A=B"),
        ("[[A<B]]", "B>A"),  # equivalent spellings map onto the five labels
        ("[[B<<A]]", "A>>B"),
        ("[[B=A]]", "A=B"),
        ("I said [[A>B]] above and repeat it: [[A>B]]", "A>B"),
        ("First [[A>B]], then on reflection [[B>A]]", None),  # two verdicts: ambiguous
        ("No label here, A is better.", None),
        ("[A>B]", None),  # single brackets are not a label
        ("[[A>A]]", None),
        ("[[C>D]]", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verdict(text, expected):
    assert arena.parse_verdict(text) == expected


@pytest.mark.parametrize(
    "verdict, position, expected",
    [
        ("A>>B", "A", (1.0, 3)),
        ("A>B", "A", (1.0, 1)),
        ("A=B", "A", (0.5, 1)),
        ("B>A", "A", (0.0, 1)),
        ("B>>A", "A", (0.0, 3)),
        ("A>>B", "B", (0.0, 3)),
        ("B>A", "B", (1.0, 1)),
        ("B>>A", "B", (1.0, 3)),
    ],
)
def test_model_outcome_follows_the_models_position(verdict, position, expected):
    assert arena.model_outcome(verdict, position) == expected


def test_model_outcome_rejects_unknown_verdicts_and_positions():
    with pytest.raises(ValueError, match=r"^unknown verdict 'A>>>B'; expected one of \('A>>B', "):
        arena.model_outcome("A>>>B", "A")
    with pytest.raises(ValueError, match="^model_position must be 'A' or 'B', got 'a'$"):
        arena.model_outcome("A>B", "a")


@pytest.mark.parametrize(
    "p, as_a, as_b",
    [
        (1.0, "A>>B", "B>>A"),
        (0.9, "A>>B", "B>>A"),
        (0.89, "A>B", "B>A"),
        (0.6, "A>B", "B>A"),
        (0.59, "A=B", "A=B"),
        (0.5, "A=B", "A=B"),
        (0.41, "A=B", "A=B"),
        (0.4, "B>A", "A>B"),
        (0.11, "B>A", "A>B"),
        (0.1, "B>>A", "A>>B"),
        (0.0, "B>>A", "A>>B"),
    ],
)
def test_verdict_from_probability_thresholds(p, as_a, as_b):
    assert arena.verdict_from_probability(p, "A") == as_a
    assert arena.verdict_from_probability(p, "B") == as_b
    # the label always describes the model's result the same way, whatever its position
    assert arena.model_outcome(as_a, "A") == arena.model_outcome(as_b, "B")


def test_verdict_from_probability_rejects_non_probabilities():
    with pytest.raises(ValueError, match=r"probability must be in \[0, 1\], got 1.2"):
        arena.verdict_from_probability(1.2)
    with pytest.raises(ValueError, match="model_position must be 'A' or 'B', got 'C'"):
        arena.verdict_from_probability(0.5, "C")


def test_verdict_from_probability_writes_the_model_as_a_by_default():
    assert arena.verdict_from_probability(0.95) == "A>>B"
    assert arena.verdict_from_probability(0.05) == "B>>A"


def test_a_non_comparison_label_does_not_hide_a_later_verdict():
    assert arena.parse_verdict("Not [[A>A]]; my final verdict is [[B>A]]") == "B>A"


# --------------------------------------------------------------------------- score
def _judgments(rows):
    return pd.DataFrame(rows, columns=["prompt_id", "model_position", "verdict"])


def test_score_hand_computed():
    j = _judgments(
        [
            ("q1", "B", "B>>A"),  # model (B) much better: outcome 1, weight 3
            ("q1", "A", "A>B"),  # model (A) better: 1, weight 1
            ("q2", "B", "A=B"),  # tie: 0.5, weight 1
            ("q2", "A", "B>A"),  # baseline better: 0, weight 1
            ("q3", "B", "A>B"),  # baseline (A) better: 0, weight 1
            ("q3", "A", None),  # no verdict: left out
        ]
    )
    out = arena.score(j, n_bootstrap=200, seed=0)
    # (3*1 + 1*1 + 1*0.5 + 1*0 + 1*0) / (3 + 1 + 1 + 1 + 1) = 4.5 / 7
    assert out["arena_score"] == pytest.approx(100 * 4.5 / 7)
    assert (out["n"], out["n_battles"], out["n_invalid"]) == (3, 5, 1)
    # a resample of questions has a score between the per-question extremes
    per_question = [4 / 4, 0.5 / 2, 0 / 1]
    assert 100 * min(per_question) <= out["arena_ci_low"] <= out["arena_score"]
    assert out["arena_score"] <= out["arena_ci_high"] <= 100 * max(per_question)
    assert arena.score(j, n_bootstrap=200, seed=0) == out  # seeded
    assert arena.score(j, n_bootstrap=200, seed=1) != out


def test_question_bootstrap_matches_the_exact_resampling_distribution():
    # 2 questions: (sum w*y, sum w) = (3, 3) and (0, 1). Resampling 2 of 2 with replacement gives
    # {q1,q1}: 1.0 (p=1/4), {q1,q2}: 0.75 (p=1/2), {q2,q2}: 0.0 (p=1/4).
    j = _judgments([("q1", "B", "B>>A"), ("q2", "A", "B>A")])
    out = arena.score(j, n_bootstrap=4000, seed=0)
    assert out["arena_score"] == pytest.approx(75.0)
    assert out["arena_ci_low"] == pytest.approx(0.0)
    assert out["arena_ci_high"] == pytest.approx(100.0)


def test_bradley_terry_equals_the_benchmarks_logistic_regression_fit():
    """Fit BT the way Arena-Hard v0.1 does (battles expanded by weight, each battle duplicated,
    a tie counted as one win for each side, logistic regression without intercept on +-log(10)
    rating columns) and compare its predicted win rate with our closed form."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    verdicts = rng.choice(arena.VERDICTS, size=300, p=[0.1, 0.25, 0.2, 0.3, 0.15])
    positions = rng.choice(["A", "B"], size=300)
    pairs = [arena.model_outcome(v, p) for v, p in zip(verdicts, positions)]
    y = np.array([o for o, _ in pairs])
    w = np.array([k for _, k in pairs])

    outcome = np.repeat(y, w)  # expanded battles, model's outcome
    n = outcome.size
    x = np.zeros((2 * n, 2))  # columns: model, baseline
    x[:, 0], x[:, 1] = math.log(10), -math.log(10)  # model always "model_a" here
    target = np.concatenate([outcome == 1.0, (outcome == 1.0) | (outcome == 0.5)]).astype(float)
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=1000)
    lr.fit(x, target)
    rating = 400 * lr.coef_[0] + 1000
    p_lr = 1 / (1 + 10 ** ((rating[1] - rating[0]) / 400))
    assert arena.bradley_terry(y, w) == pytest.approx(p_lr, abs=1e-6)


def test_planted_win_rate_is_recovered_with_calibrated_intervals():
    truth = 0.7
    covered = 0
    for rep in range(40):
        rng = np.random.default_rng(100 + rep)
        wins = rng.random((500, 2)) < truth  # two games per question, no ties, no strong verdicts
        rows = []
        for q in range(500):
            rows.append((f"q{q}", "B", "B>A" if wins[q, 0] else "A>B"))
            rows.append((f"q{q}", "A", "A>B" if wins[q, 1] else "B>A"))
        out = arena.score(_judgments(rows), n_bootstrap=100, seed=rep)
        assert out["arena_score"] == pytest.approx(100 * wins.mean())
        assert abs(out["arena_score"] - 100 * truth) < 5
        assert 1.0 < out["arena_ci_high"] - out["arena_ci_low"] < 8.0
        covered += out["arena_ci_low"] <= 100 * truth <= out["arena_ci_high"]
    assert covered >= 34  # about 95 % of 40 expected


def test_battle_bootstrap_is_available_and_narrower_with_strong_verdicts():
    rows = [(f"q{i}", "B", "B>>A" if i % 3 else "A>>B") for i in range(300)]
    by_question = arena.score(_judgments(rows), n_bootstrap=300, seed=0)
    by_battle = arena.score(_judgments(rows), n_bootstrap=300, seed=0, unit="battle")
    assert by_battle["arena_score"] == by_question["arena_score"]
    # copies of a strong verdict are not independent; treating them so understates the spread
    width = lambda r: r["arena_ci_high"] - r["arena_ci_low"]
    assert width(by_battle) < width(by_question)


def test_judgments_from_probabilities_score_like_any_judge():
    ids = [f"q{i}" for i in range(10)]
    j = arena.judgments_from_probabilities(ids, [0.95] * 5 + [0.5] * 5)
    assert list(j["model_position"][:2]) == ["B", "A"]
    assert list(j["verdict"][:2]) == ["B>>A", "A>>B"]
    # 5 questions won strongly in both games (weight 3 each), 5 tied in both (weight 1 each)
    assert arena.score(j, n_bootstrap=10)["arena_score"] == pytest.approx(
        100 * (5 * 2 * 3 + 5 * 2 * 0.5) / (5 * 2 * 3 + 5 * 2)
    )


def test_score_needs_some_verdict():
    with pytest.raises(DatasetError, match="no game has a verdict"):
        arena.score(_judgments([("q1", "A", None)]))


def test_score_checks_its_arguments_and_defaults_to_100_resamples_seed_0():
    j = _judgments([("q1", "A", "A>B"), ("q2", "B", "A>B"), ("q3", "A", "A=B")])
    with pytest.raises(ValueError, match="^n_bootstrap must be >= 1, got 0$"):
        arena.score(j, n_bootstrap=0)
    with pytest.raises(ValueError, match="^unit must be 'question' or 'battle', got 'game'$"):
        arena.score(j, unit="game")
    with pytest.raises(DatasetError, match="^judgments: no game has a verdict; nothing to score$"):
        arena.score(j.assign(verdict=None))
    out = arena.score(j)
    assert (out["n_bootstrap"], out["seed"], out["unit"]) == (100, 0, "question")
    assert out == arena.score(j, n_bootstrap=100, seed=0, unit="question")
    one = arena.score(j, n_bootstrap=1, unit="battle")  # a single resample: a point interval
    assert one["arena_ci_low"] == one["arena_ci_high"] and one["unit"] == "battle"


def test_bradley_terry_needs_a_positive_total_weight():
    assert arena.bradley_terry([1.0], [1]) == 1.0
    with pytest.raises(ValueError, match="^no battles to fit$"):
        arena.bradley_terry([1.0, 0.0], [0, 0])


def test_battle_bootstrap_matches_the_exact_resampling_distribution():
    # 2 unit battles, won and lost: resampling 2 of 2 gives a mean of 0, 0.5 or 1
    j = _judgments([("q1", "B", "B>A"), ("q2", "A", "B>A")])
    out = arena.score(j, n_bootstrap=4000, seed=0, unit="battle")
    assert (out["arena_ci_low"], out["arena_score"], out["arena_ci_high"]) == (0.0, 50.0, 100.0)


@pytest.mark.parametrize("unit", ["question", "battle"])
def test_the_intervals_are_percentiles_of_the_seeded_resamples(unit):
    """The documented procedure replayed: draws from numpy.random.default_rng(seed), the
    2.5th/97.5th percentiles of the resampled scores and length-controlled refits (the length
    scale fixed at the full sample's weighted std)."""
    rng = np.random.default_rng(11)
    n = 15  # questions, one game each, in order
    verdicts = rng.choice(arena.VERDICTS, size=n)
    positions = rng.choice(["A", "B"], size=n)
    len_model, len_base = rng.integers(1, 900, size=n), rng.integers(1, 900, size=n)
    j = pd.DataFrame(
        {
            "prompt_id": [f"q{i:02d}" for i in range(n)],
            "model_position": positions,
            "verdict": verdicts,
            "len_model": len_model,
            "len_baseline": len_base,
        }
    )
    pairs = [arena.model_outcome(v, p) for v, p in zip(verdicts, positions)]
    y = np.array([o for o, _ in pairs])
    w = np.array([k for _, k in pairs], dtype=float)
    f = arena.length_feature(len_model, len_base)
    scale = np.repeat(f, w.astype(int)).std()
    draws_rng = np.random.default_rng(4)
    if unit == "question":
        draws = draws_rng.integers(0, n, size=(200, n))
        counts = [np.bincount(d, minlength=n) for d in draws]
    else:
        owner = np.repeat(np.arange(n), w.astype(int))  # the weight-expanded battles
        draws = draws_rng.integers(0, owner.size, size=(200, owner.size))
        counts = [np.bincount(owner[d], minlength=n) / w for d in draws]
    boot = [(c * w * y).sum() / (c * w).sum() for c in counts]
    lc_boot = [arena.length_controlled(y, c * w, f, scale=scale)[0] for c in counts]
    out = arena.score(j, n_bootstrap=200, seed=4, unit=unit)
    expected = {
        "arena_ci_low": np.percentile(boot, 2.5),
        "arena_ci_high": np.percentile(boot, 97.5),
        "arena_lc_score": arena.length_controlled(y, w, f, scale=scale)[0],
        "arena_lc_ci_low": np.percentile(lc_boot, 2.5),
        "arena_lc_ci_high": np.percentile(lc_boot, 97.5),
    }
    assert {k: out[k] for k in expected} == pytest.approx(
        {k: 100 * v for k, v in expected.items()}, abs=1e-9
    )


def test_score_names_the_judgments_missing_columns():
    j = _judgments([("q1", "A", "A>B")])
    with pytest.raises(DatasetError, match=r"^judgments: missing column\(s\) \['model_position'\]"):
        arena.score(j.drop(columns=["model_position"]))
    with pytest.raises(
        DatasetError,
        match=r"^judgments: missing column 'verdict'; found \['prompt_id', 'model_position'\]$",
    ):
        arena.score(j.drop(columns=["verdict"]))


# --------------------------------------------------------------------------- judging
QUESTIONS = pd.DataFrame(
    {
        "prompt_id": ["q1", "q2", "q3", "q4"],
        "prompt": [f"Question {i}: explain topic {i}." for i in range(1, 5)],
        "reference": [f"BASELINE answer {i}" for i in range(1, 5)],
    }
)
RESPONSES = pd.DataFrame(
    {
        "prompt_id": ["q4", "q3", "q2", "q1"],  # order does not matter
        "prompt": QUESTIONS["prompt"][::-1].tolist(),
        "sample_idx": [0] * 4,
        "response": [f"MODEL answer {i}" for i in (4, 3, 2, 1)],
        "finish_reason": ["stop"] * 4,
        "seed": [0] * 4,
    }
)
# what the fake judge thinks of the model's answer, per question
PLAN = {"1": "much better", "2": "better", "3": "worse", "4": "no verdict"}


def fake_arena_judge(body):
    """Reads which assistant holds the model's answer and replies with the planned verdict.
    q2 needs the follow-up to give its label; q4 never gives one."""
    user = body["messages"][1]["content"]
    q = re.search(r"Question (\d)", user).group(1)
    model_is = "A" if user.index("MODEL answer") < user.index("BASELINE answer") else "B"
    other = "B" if model_is == "A" else "A"
    plan = PLAN[q]
    followed_up = len(body["messages"]) > 2
    if plan == "no verdict" or (plan == "better" and not followed_up):
        return "Let me think about both answers carefully."
    label = {
        "much better": f"{model_is}>>{other}",
        "better": f"{model_is}>{other}",
        "worse": f"{other}>{model_is}",
    }[plan]
    return f"Assessment of question {q}.\n\nFinal verdict: [[{label}]]"


def test_judge_plays_both_orders_and_follows_up_once(tmp_path, caplog):
    caplog.clear()
    with FakeChatServer(fake_arena_judge) as server:
        client = ChatClient(
            server.base_url, "judge", api_key_env=None, cache=tmp_path / "cache.jsonl"
        )
        with caplog.at_level(logging.WARNING, logger="dicewf.arena"):
            judgments = arena.judge(QUESTIONS, RESPONSES, QUESTIONS, client)
    # q4's two games have no verdict: named with the judge's cache, not an error
    assert [r.getMessage() for r in caplog.records if r.name == "dicewf.arena"] == [
        f"{client.name} gave no verdict in 2 of 8 games (4 questions, 1 follow-ups); its replies are in "
        f"{tmp_path / 'cache.jsonl'}: they count as no battle; a rerun asks them again"
    ]
    j = judgments.set_index(["prompt_id", "game"])
    assert len(judgments) == 8
    assert j.loc[("q1", 1), "verdict"] == "B>>A" and j.loc[("q1", 2), "verdict"] == "A>>B"
    assert j.loc[("q3", 1), "verdict"] == "A>B" and j.loc[("q3", 2), "verdict"] == "B>A"
    assert j.loc[("q2", 1), "verdict"] == "B>A" and j.loc[("q2", 1), "attempts"] == 2
    assert pd.isna(j.loc[("q4", 2), "verdict"]) and j.loc[("q4", 2), "attempts"] == 2
    assert (j.xs(1, level="game")["model_position"] == "B").all()
    assert j.loc[("q1", 1), "len_model"] == len("MODEL answer 1")
    # game 1 shows the baseline first, game 2 the model first, both under our system prompt
    first = [
        r["body"] for r in server.requests if "Question 1" in r["body"]["messages"][1]["content"]
    ]
    assert {b["messages"][0]["content"] for b in first} == {arena.SYSTEM_PROMPT}
    orders = sorted(
        b["messages"][1]["content"].index("MODEL") < b["messages"][1]["content"].index("BASELINE")
        for b in first
    )
    assert orders == [False, True]
    # 8 first attempts + follow-ups for q2 and q4 (2 games each)
    assert len(server.requests) == 12
    follow = [r["body"]["messages"] for r in server.requests if len(r["body"]["messages"]) > 2]
    thinking = "Let me think about both answers carefully."
    assert all(
        m[-1] == {"role": "user", "content": arena.FOLLOW_UP}
        and m[-2] == {"role": "assistant", "content": thinking}
        for m in follow
    )
    # the judgment is the whole conversation's replies; the reason is the last reply's
    assert j.loc[("q1", 1), "judgment"] == "Assessment of question 1.\n\nFinal verdict: [[B>>A]]"
    assert j.loc[("q2", 1), "judgment"] == (
        f"{thinking}\n\nAssessment of question 2.\n\nFinal verdict: [[B>A]]"
    )
    assert j.loc[("q4", 2), "judgment"] == f"{thinking}\n\n{thinking}"
    assert (judgments["finish_reason"] == "stop").all()

    out = arena.score(judgments, n_bootstrap=50, seed=0)
    # q1: 2 strong wins (w 3+3), q2: 2 wins, q3: 2 losses, q4: none -> 8 / 10
    assert out["arena_score"] == pytest.approx(80.0)
    assert (out["n"], out["n_battles"], out["n_invalid"]) == (3, 6, 2)

    # the rerun replays every reply from the cache: no server, no key
    replay = ChatClient(
        "http://127.0.0.1:9/v1",
        "judge",
        api_key_env="DICE_TEST_UNSET_KEY",
        cache=tmp_path / "cache.jsonl",
        replay_only=True,
    )
    pd.testing.assert_frame_equal(arena.judge(QUESTIONS, RESPONSES, QUESTIONS, replay), judgments)


def test_judge_and_score_reports_lengths_and_judge(tmp_path):
    with FakeChatServer(fake_arena_judge) as server:
        client = ChatClient(server.base_url, "judge", api_key_env=None)
        judgments, metrics = arena.judge_and_score(
            QUESTIONS, RESPONSES, client, judge_kwargs={"system_prompt": "SYS"}
        )
    assert {r["body"]["messages"][0]["content"] for r in server.requests} == {"SYS"}
    assert metrics["arena_score"] == pytest.approx(80.0)
    assert metrics["mean_len_model"] == len("MODEL answer 1")
    assert metrics["mean_len_baseline"] == len("BASELINE answer 1")
    assert metrics["judge_model"] == "judge"
    # the score's defaults: 100 resamples drawn with seed 0
    assert (metrics["n_bootstrap"], metrics["seed"]) == (100, 0)
    extra = {"mean_len_model", "mean_len_baseline", "judge_model"}
    assert {k: v for k, v in metrics.items() if k not in extra} == arena.score(judgments)


def test_a_cached_verdict_is_replayed_not_asked_again(tmp_path):
    cache = tmp_path / "cache.jsonl"
    for run in range(2):
        with FakeChatServer(lambda body: "Final verdict: [[A=B]]") as server:
            client = ChatClient(server.base_url, "judge", api_key_env=None, cache=cache)
            judgments = arena.judge(QUESTIONS[:1], RESPONSES, QUESTIONS, client)
        assert len(server.requests) == (2 if run == 0 else 0)
        assert (judgments["verdict"] == "A=B").all()


def test_judge_accepts_the_benchmarks_prompt_at_run_time():
    seen = []

    def record(body):
        seen.append(body["messages"])
        return "[[A=B]]"

    with FakeChatServer(record) as server:
        client = ChatClient(server.base_url, "judge", api_key_env=None)
        arena.judge(
            QUESTIONS[:1],
            RESPONSES,
            QUESTIONS,
            client,
            system_prompt="SYS",
            prompt_template="Q={question}|A={answer_a}|B={answer_b}",
        )
    assert sorted(seen, key=str) == [
        [
            {"role": "system", "content": "SYS"},
            {"role": "user", "content": f"Q=Question 1: explain topic 1.|A={a}|B={b}"},
        ]
        for a, b in (
            ("BASELINE answer 1", "MODEL answer 1"),
            ("MODEL answer 1", "BASELINE answer 1"),
        )
    ]


def test_an_ambiguous_judgment_is_not_followed_up_and_not_counted():
    def reply(body):
        if "Question 1" in body["messages"][1]["content"]:
            return "Maybe [[A>B]]; on reflection [[B>A]]."
        return "[[A=B]]"

    with FakeChatServer(reply) as server:
        client = ChatClient(server.base_url, "judge", api_key_env=None)
        judgments = arena.judge(QUESTIONS[:2], RESPONSES, QUESTIONS, client)
    assert len(server.requests) == 4
    q1 = judgments[judgments["prompt_id"] == "q1"]
    assert q1["verdict"].isna().all() and (q1["attempts"] == 1).all()
    assert (judgments.loc[judgments["prompt_id"] == "q2", "verdict"] == "A=B").all()


def test_a_judge_without_verdicts_is_named_and_a_rerun_asks_it_again(tmp_path):
    """Issue 12: 240 replies without a verdict were cached and replayed by every rerun."""
    cache = tmp_path / "judge_cache.jsonl"
    with FakeChatServer(lambda body: "I am a chatbot, how can I help?") as broken:
        client = ChatClient(broken.base_url, "judge", api_key_env=None, cache=cache)
        with pytest.raises(JudgeError) as err:
            arena.judge(QUESTIONS, RESPONSES, QUESTIONS, client)
        assert len(broken.requests) == 16  # 8 games, each followed up once
    message = str(err.value)
    assert "'judge'" in message and broken.base_url in message and str(cache) in message
    assert "no verdict in 8 of 8 games" in message
    assert message.endswith("a rerun asks these games again")
    # without a cache, no file is named
    with FakeChatServer(lambda body: "No idea.") as broken:
        client = ChatClient(broken.base_url, "judge", api_key_env=None)
        with pytest.raises(JudgeError) as err:
            arena.judge(QUESTIONS[:1], RESPONSES, QUESTIONS, client)
    assert re.search(
        r"no verdict in 2 of 2 games \(1 questions, 1 follow-ups\)\. Check", str(err.value)
    )
    with FakeChatServer(fake_arena_judge) as fixed:  # the rerun asks again, not replays
        client = ChatClient(fixed.base_url, "judge", api_key_env=None, cache=cache)
        judgments = arena.judge(QUESTIONS, RESPONSES, QUESTIONS, client)
        assert len(fixed.requests) == 12  # 8 games asked again, 4 follow-ups
    assert judgments["verdict"].notna().sum() == 6  # q4 never gives one


def test_judge_needs_exactly_one_response_per_question():
    client = ChatClient(None, "judge", api_key_env=None)
    with pytest.raises(DatasetError, match=r"responses: no answer for prompt_id \['q4'\]"):
        arena.judge(QUESTIONS, RESPONSES[RESPONSES["prompt_id"] != "q4"], QUESTIONS, client)
    doubled = pd.concat([RESPONSES, RESPONSES.iloc[:1]])
    with pytest.raises(DatasetError, match=r"more than one row for prompt_id \['q4'\]"):
        arena.judge(QUESTIONS, doubled, QUESTIONS, client)


def test_judge_names_the_frame_that_lacks_a_column():
    client = ChatClient(None, "judge", api_key_env=None)
    for name, frame, column in (
        ("questions", QUESTIONS, "prompt"),
        ("responses", RESPONSES, "response"),
        ("baseline", QUESTIONS, "reference"),
    ):
        frames = {"questions": QUESTIONS, "responses": RESPONSES, "baseline": QUESTIONS}
        frames[name] = frame.drop(columns=[column])
        with pytest.raises(DatasetError, match=rf"^{name}: missing column\(s\) \['{column}'\]"):
            arena.judge(frames["questions"], frames["responses"], frames["baseline"], client)


def test_judge_names_the_frame_with_duplicate_or_missing_answers():
    client = ChatClient(None, "judge", api_key_env=None)
    doubled = pd.concat([QUESTIONS, QUESTIONS.iloc[1:2]])
    with pytest.raises(DatasetError, match=r"^questions: more than one row for prompt_id \['q2'\]"):
        arena.judge(doubled, RESPONSES, QUESTIONS, client)
    with pytest.raises(DatasetError, match=r"^baseline: more than one row for prompt_id \['q2'\]"):
        arena.judge(QUESTIONS, RESPONSES, doubled, client)
    with pytest.raises(DatasetError, match=r"^baseline: no answer for prompt_id \['q3'\] \(1 of 4"):
        arena.judge(QUESTIONS, RESPONSES, QUESTIONS[QUESTIONS["prompt_id"] != "q3"], client)
    # at most five ids are named, and the count
    ids = [f"q{i}" for i in range(7)]
    many = pd.DataFrame({"prompt_id": ids, "prompt": ids, "reference": ids, "response": ids})
    first5 = re.escape(str(ids[:5]))
    with pytest.raises(
        DatasetError, match=rf"^responses: more than one row for prompt_id {first5} \(6 in all\)"
    ):
        arena.judge(many, pd.concat([many, many.iloc[:6]]), many, client)
    with pytest.raises(
        DatasetError, match=rf"^responses: no answer for prompt_id {first5} \(6 of 7 questions\)"
    ):
        arena.judge(many, many.iloc[6:], many, client)


def test_snakemake_adapter_writes_judgments_and_metrics(tmp_path, restore_logging):
    import runpy
    import types

    from dicewf.io import read_json, read_parquet
    from snakemake.iocontainers import Namedlist

    QUESTIONS.to_parquet(tmp_path / "questions.parquet", index=False)
    RESPONSES.to_parquet(tmp_path / "responses.parquet", index=False)
    script = Path(__file__).parents[1] / "workflow" / "scripts" / "arena_hard_judge.py"
    with FakeChatServer(fake_arena_judge) as server:
        snakemake = types.SimpleNamespace(
            input=Namedlist(
                fromdict={
                    "responses": str(tmp_path / "responses.parquet"),
                    "questions": str(tmp_path / "questions.parquet"),
                }
            ),
            output=Namedlist(
                fromdict={
                    "judgments": str(tmp_path / "out" / "judgments.parquet"),
                    "metrics": str(tmp_path / "out" / "metrics.json"),
                    "judge_cache": str(tmp_path / "out" / "judge_cache.jsonl"),
                }
            ),
            params=Namedlist(
                fromdict={
                    "judge": {"base_url": server.base_url, "model": "judge", "api_key_env": None},
                    "n_bootstrap": 20,
                    "seed": 3,
                }
            ),
            log=[str(tmp_path / "log" / "arena.log")],
        )
        runpy.run_path(str(script), init_globals={"snakemake": snakemake})
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["arena_score"] == pytest.approx(80.0)
    assert metrics["n"] == 3 and metrics["judge_model"] == "judge"
    assert (metrics["n_bootstrap"], metrics["seed"]) == (20, 3)  # the rule's params
    assert len(read_parquet(tmp_path / "out" / "judgments.parquet")) == 8
    log = (tmp_path / "log" / "arena.log").read_text()
    assert f"judge 'judge' at {server.base_url}: 8 requests" in log
    assert "8/8 replies, 0 failed attempts" in log  # progress
    # the replies are in the declared cache; no resume file is left for --forcerun to miss
    cached = (tmp_path / "out" / "judge_cache.jsonl").read_text().splitlines()
    assert len(cached) == 12
    assert not (tmp_path / "out" / "judge_cache.partial.jsonl").exists()


# --------------------------------------------------------------------------- length control
def _length_biased_judgments(n=2000, base=0.35, bias=4.0, seed=0):
    """Battles whose judge favours the longer answer: P(model wins) = sigmoid(logit(base) +
    bias * f) with f Arena-Hard's normalised length difference; the model is longer on average.
    Both games of a question see the same lengths; outcomes are Bernoulli, no ties."""
    rng = np.random.default_rng(seed)
    len_base = rng.integers(200, 2000, size=n).astype(float)
    len_model = np.round(len_base * np.exp(rng.normal(0.4, 0.6, size=n)))
    f = arena.length_feature(len_model, len_base)
    p = 1 / (1 + np.exp(-(math.log(base / (1 - base)) + bias * f)))
    rows = []
    for i in range(n):
        for pos in ("B", "A"):
            win = rng.random() < p[i]
            other = "A" if pos == "B" else "B"
            rows.append(
                (
                    f"q{i}",
                    pos,
                    f"{pos}>{other}" if win else f"{other}>{pos}",
                    len_model[i],
                    len_base[i],
                )
            )
    return pd.DataFrame(
        rows, columns=["prompt_id", "model_position", "verdict", "len_model", "len_baseline"]
    )


def test_length_control_removes_a_planted_length_effect():
    j = _length_biased_judgments()
    out = arena.score(j, n_bootstrap=100, seed=0)
    assert out["arena_score"] > 45  # inflated by the judge's length bias
    assert out["arena_lc_score"] == pytest.approx(35, abs=2.5)  # the planted equal-length rate
    assert out["arena_lc_ci_low"] < 35 < out["arena_lc_ci_high"]
    assert out["arena_lc_length_coef"] > 0  # longer wins, as planted
    # without a length effect the two scores agree
    fair = arena.score(_length_biased_judgments(bias=0.0, seed=1), n_bootstrap=20, seed=0)
    assert fair["arena_lc_score"] == pytest.approx(fair["arena_score"], abs=2.0)
    assert arena.score(j, n_bootstrap=100, seed=0) == out  # seeded


def test_length_control_equals_the_benchmarks_logistic_regression_fit():
    """Arena-Hard's length-controlled fit done its way (weight-expanded battles, duplicated, a
    tie one win and one loss; +-log(10) rating columns; the length covariate over its standard
    deviation; scikit-learn's default L2 penalty, C=1) - less the centring of the covariate,
    which our single-model score leaves out - predicts the same equal-length win rate."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    n = 400
    verdicts = rng.choice(arena.VERDICTS, size=n, p=[0.1, 0.25, 0.2, 0.3, 0.15])
    positions = rng.choice(["A", "B"], size=n)
    pairs = [arena.model_outcome(v, p) for v, p in zip(verdicts, positions)]
    y = np.array([o for o, _ in pairs])
    w = np.array([k for _, k in pairs])
    f = arena.length_feature(rng.integers(10, 900, size=n), rng.integers(10, 900, size=n))

    outcome, feat = np.repeat(y, w), np.repeat(f, w)
    m = outcome.size
    x = np.zeros((2 * m, 3))  # columns: baseline, model, length (a - b)
    x[:, 0], x[:, 1] = math.log(10), -math.log(10)  # the baseline is model_a, as there
    z = -feat / feat.std()  # (len_a - len_b) / (len_a + len_b + 1)
    x[:, 2] = np.concatenate([z, z])
    a_wins = outcome == 0.0
    target = np.concatenate([a_wins, a_wins | (outcome == 0.5)]).astype(float)
    lr = LogisticRegression(fit_intercept=False, C=1.0, tol=1e-12, max_iter=10000)
    lr.fit(x, target)
    c_base, c_model, c_len = lr.coef_[0]
    p_lr = 1 / (1 + 10 ** (c_base - c_model))
    p_ours, coef = arena.length_controlled(y, w, f)
    assert p_ours == pytest.approx(p_lr, abs=1e-5)
    # log-odds of the baseline winning: ... + c_len * (-f / sd); of the model: + c_len * f / sd
    assert coef == pytest.approx(c_len, abs=1e-4)


def test_length_control_is_only_reported_with_lengths():
    j = _length_biased_judgments(n=50)
    assert "arena_lc_score" not in arena.score(
        j.drop(columns=["len_model", "len_baseline"]), n_bootstrap=5
    )
    by_battle = arena.score(j, n_bootstrap=50, unit="battle")
    assert (
        by_battle["arena_lc_ci_low"] <= by_battle["arena_lc_score"] <= by_battle["arena_lc_ci_high"]
    )
    with pytest.raises(DatasetError, match="len_model/len_baseline.*q3"):
        arena.score(j.assign(len_model=np.where(j["prompt_id"] == "q3", np.nan, j["len_model"])))
    # only the questions with a negative length are named; an empty answer (0) is fine
    negative = j["prompt_id"].isin(["q3", "q4", "q5"])  # 6 games: the first 5 are named
    with pytest.raises(
        DatasetError,
        match=r"len_model/len_baseline for prompt_id \['q3', 'q3', 'q4', 'q4', 'q5'\]$",
    ):
        arena.score(j.assign(len_baseline=np.where(negative, -1, j["len_baseline"])))
    empty = arena.score(j.assign(len_model=np.where(j["prompt_id"] == "q3", 0, j["len_model"])))
    assert empty["arena_lc_score"] > 0


def test_judgments_from_probabilities_lay_out_both_games_per_question():
    j = arena.judgments_from_probabilities([7, "b"], [0.95, 0.2], [0.5, 0.65])
    assert j.to_dict("records") == [
        {"prompt_id": "7", "game": 1, "model_position": "B", "verdict": "B>>A", "p_model": 0.95},
        {"prompt_id": "7", "game": 2, "model_position": "A", "verdict": "A=B", "p_model": 0.5},
        {"prompt_id": "b", "game": 1, "model_position": "B", "verdict": "A>B", "p_model": 0.2},
        {"prompt_id": "b", "game": 2, "model_position": "A", "verdict": "A>B", "p_model": 0.65},
    ]


def test_judgments_from_probabilities_reject_mismatched_lengths():
    with pytest.raises(
        ValueError, match="^prompt_ids, p_game1 and p_game2 must have the same length$"
    ):
        arena.judgments_from_probabilities(["a", "b"], [0.5, 0.5], [0.5])
    with pytest.raises(ValueError, match="^give both len_model and len_baseline, or neither$"):
        arena.judgments_from_probabilities(["a"], [0.5], len_baseline=[1])
    with pytest.raises(
        ValueError, match="^len_model and len_baseline must have one length per prompt_id$"
    ):
        arena.judgments_from_probabilities(["a", "b"], [0.5, 0.5], len_model=[1], len_baseline=[2])
    # one length too many for the model is not silently dropped
    with pytest.raises(ValueError, match="zip"):
        arena.judgments_from_probabilities(
            ["a", "b"], [0.5, 0.5], len_model=[1, 2, 3], len_baseline=[4, 5]
        )


def test_length_feature_is_the_normalised_length_difference():
    # (10 - 30) / (10 + 30 + 1), (5 - 0) / (5 + 0 + 1)
    np.testing.assert_allclose(arena.length_feature([10, 5], [30, 0]), [-20 / 41, 5 / 6])


def test_length_controlled_checks_its_inputs():
    y, w, f = np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array([0.1, -0.1])
    with pytest.raises(ValueError, match=r"differ in shape: \(2,\), \(2,\), \(1,\)"):
        arena.length_controlled(y, w, f[:1])
    with pytest.raises(ValueError, match="^no battles to fit$"):
        arena.length_controlled(y, np.zeros(2), f)
    with pytest.raises(ValueError, match=r"^reg must be > 0 \(an unpenalised .*, got 0$"):
        arena.length_controlled(y, w, f, reg=0)


def test_length_controlled_fits_a_single_battle():
    # one win, no length difference: the penalised optimum of d alone, 2 * (1 - sigmoid(d)) =
    # d / (2 * log(10) ** 2), is a win rate above one half
    p, coef = arena.length_controlled([1.0], [1.0], [0.0])
    d = math.log(p / (1 - p))
    assert 2 * (1 - p) == pytest.approx(d / (2 * math.log(10) ** 2))
    assert 0.5 < p < 1 and coef == 0.0


def test_length_controlled_scales_the_feature_by_its_weighted_std():
    rng = np.random.default_rng(5)
    y = rng.choice([0.0, 0.5, 1.0], size=40)
    w = rng.choice([1.0, 3.0], size=40)
    f = rng.uniform(-0.5, 0.9, size=40)
    expanded_std = np.repeat(f, w.astype(int)).std()  # the std over weight-expanded battles
    assert arena.length_controlled(y, w, f) == pytest.approx(
        arena.length_controlled(y, w, f, scale=expanded_std), abs=1e-12
    )
    # a constant feature (all lengths in the same ratio) has no spread: it is left unscaled
    const = np.full(40, 0.25)
    fit = arena.length_controlled(y, w, const)
    assert all(map(math.isfinite, fit))
    assert fit == pytest.approx(arena.length_controlled(y, w, const, scale=1.0), abs=1e-12)
    # equal lengths everywhere: the plain Bradley-Terry rate, shrunk slightly by the penalty
    zero = arena.length_controlled(y, w, np.zeros(40))
    assert zero[1] == 0.0 and zero[0] == pytest.approx(arena.bradley_terry(y, w), abs=0.01)


def test_length_controlled_converges_like_newtons_method():
    rng = np.random.default_rng(6)
    y = rng.choice([0.0, 0.5, 1.0], size=200, p=[0.2, 0.2, 0.6])
    w = rng.choice([1.0, 3.0], size=200)
    f = rng.uniform(-0.5, 0.9, size=200)
    # quadratic convergence: a handful of steps reach the optimum to machine precision
    assert arena.length_controlled(y, w, f, max_iter=6) == pytest.approx(
        arena.length_controlled(y, w, f), abs=1e-12
    )


def test_judgments_from_probabilities_carry_the_lengths():
    j = arena.judgments_from_probabilities(
        ["a", "b"], [0.95, 0.2], len_model=[10, 30], len_baseline=[20, 20]
    )
    assert j["len_model"].tolist() == [10, 10, 30, 30]
    assert "arena_lc_score" in arena.score(j, n_bootstrap=5)
    with pytest.raises(ValueError, match="both"):
        arena.judgments_from_probabilities(["a"], [0.5], len_model=[1])


def _mixed_weight_judgments():
    """130 questions, one game each, every verdict kind: (verdict, model position, count)."""
    kinds = [
        ("B>>A", "B", 40),  # strong win: outcome 1, weight 3
        ("A>B", "A", 30),  # win: 1, weight 1
        ("A=B", "B", 20),  # tie: 0.5, weight 1
        ("B>A", "A", 30),  # loss: 0, weight 1
        ("A>>B", "B", 10),
    ]  # strong loss: 0, weight 3
    rows = []
    for verdict, position, count in kinds:
        for _ in range(count):
            rows.append((f"q{len(rows):03d}", position, verdict))
    outcome = {"B>>A": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "A>>B": 0.0}
    weight = {"B>>A": 3, "A>B": 1, "A=B": 1, "B>A": 1, "A>>B": 3}
    units = [(outcome[v], weight[v]) for _, _, v in rows]
    return _judgments(rows), np.array(units)


def _interval_by_resampling(y, w, unit, n=20000, seed=12345):
    """An independent bootstrap 95 % interval (percent) of the weighted win share: resample the
    questions (one game each here) with their weights, or the battles expanded into weight-many
    unit battles."""
    rng = np.random.default_rng(seed)
    if unit == "question":
        draws = rng.integers(0, len(y), size=(n, len(y)))
        boot = (w * y)[draws].sum(axis=1) / w[draws].sum(axis=1)
    else:
        expanded = np.repeat(y, w.astype(int))
        boot = expanded[rng.integers(0, expanded.size, size=(n, expanded.size))].mean(axis=1)
    return 100 * np.percentile(boot, [2.5, 97.5])


@pytest.mark.parametrize("unit", ["question", "battle"])
def test_the_bootstrap_interval_weighs_strong_verdicts_three_times(unit):
    j, units = _mixed_weight_judgments()
    y, w = units[:, 0], units[:, 1]
    out = arena.score(j, n_bootstrap=4000, seed=0, unit=unit)
    # weighted win share, a tie half a win: (3*40 + 30 + 0.5*20) / (3*40 + 30 + 20 + 30 + 3*10)
    assert out["arena_score"] == pytest.approx(100 * 160 / 230)
    low, high = _interval_by_resampling(y, w, unit)
    assert out["arena_ci_low"] == pytest.approx(low, abs=1.0)
    assert out["arena_ci_high"] == pytest.approx(high, abs=1.0)
    # weights ignored, the interval would centre on 80 / 130 = 61.5 %: far from these bounds
    unweighted = _interval_by_resampling(y, np.ones_like(w), unit)
    assert abs(unweighted[0] - low) > 4 and abs(unweighted[1] - high) > 4


@pytest.mark.slow
def test_the_judge_caches_are_declared_outputs_so_forcerun_clears_them(tmp_path):
    """Issue 12: an undeclared cache survived --forcerun. Both API judges' caches are outputs
    (a dry run of the paper config can build them), their resume files are not."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).parents[1]
    targets = [
        "results/eval/zephyr_base/arena_hard/judge_cache.jsonl",
        "results/paper/agreement/judge_cache.jsonl",
    ]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            "Snakefile",
            "-d",
            str(tmp_path),
            "-n",
            "--configfile",
            "config/paper.yaml",
            "--forcerun",
            "arena_hard_judge",
            "agreement",
            "--",
            *targets,
        ],
        cwd=repo,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert all(t in out for t in targets)
    assert "partial" not in out
