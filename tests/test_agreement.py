"""Table 5's agreement computation: tuples from iteration-1 data, judge labels, rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dicewf import agreement, toyworld


def scores(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["prompt_id", "sample_idx", "response", "reward"])
    return df.assign(
        prompt=df["prompt_id"] + "?",
        finish_reason="stop",
        len_chars=df["response"].str.len(),
        len_tokens=df["response"].str.len(),
    )


def test_tuples_take_two_different_responses_of_distinct_prompts_with_their_rewards():
    df = scores(
        [
            ("a", 0, "x", 1.0),
            ("a", 1, "x", 2.0),
            ("a", 2, "yy", 3.0),
            ("b", 0, "z", 0.5),
            ("b", 1, "z", 0.7),  # one distinct text: skipped
            ("c", 0, "p", -1.0),
            ("c", 1, "q", -2.0),
        ]
    )
    t = agreement.sample_tuples(df, n=10, seed=0)
    assert sorted(t["prompt_id"]) == ["a", "c"]
    assert (t["response_1"] != t["response_2"]).all()
    reward = {
        (r.prompt_id, r.response): r.reward
        for r in df.drop_duplicates(["prompt_id", "response"]).itertuples()
    }
    for r in t.itertuples():
        assert reward[(r.prompt_id, r.response_1)] == r.reward_1
        assert reward[(r.prompt_id, r.response_2)] == r.reward_2


def test_tuples_are_seeded_and_capped_at_n():
    df = scores([(f"p{i}", k, f"r{k}", float(k)) for i in range(50) for k in range(4)])
    a, b = (agreement.sample_tuples(df, n=20, seed=3) for _ in range(2))
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 20 and a["prompt_id"].is_unique
    c = agreement.sample_tuples(df, n=20, seed=4)
    assert not a.equals(c)


def test_tuples_need_a_prompt_with_two_different_responses():
    with pytest.raises(ValueError, match="two different responses"):
        agreement.sample_tuples(
            scores([("a", 0, "x", 1.0), ("a", 1, "x", 2.0)]), 5, 0, source="it1/scores.parquet"
        )


def test_rate_counts_agreement_ties_as_half_and_skips_unlabelled():
    r1 = [1.0, 0.0, 2.0, 5.0, 3.0]
    r2 = [0.0, 1.0, 2.0, 1.0, 0.0]
    labels = [1.0, 1.0, 0.0, np.nan, 0.0]  # agree, disagree, tie, unlabelled, disagree
    assert agreement.rate(r1, r2, labels) == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    with pytest.raises(ValueError, match="no labelled"):
        agreement.rate([1.0], [0.0], [np.nan])


def test_no_labelled_tuple_names_the_judge_and_the_count():
    agreement.check_labelled([np.nan, 1.0], "judge 'gpt-4o'")
    with pytest.raises(
        ValueError,
        match=r"judge 'gpt-4o' at http://x/v1 \(replies in c.jsonl\) "
        r"labelled none of the 3 tuples",
    ):
        agreement.check_labelled([np.nan] * 3, "judge 'gpt-4o' at http://x/v1 (replies in c.jsonl)")


def test_gold_labels_follow_the_gold_judges_preference():
    task = toyworld.Task("t0", "add", "What is 2 + 3?", "5", "2 3")
    judge = toyworld.JudgeSpec(temperature=0.1, length_bias=0.0, length_scale=40.0)
    right, wrong = toyworld.render(task, "5", "plain"), toyworld.render(task, "7", "plain")
    tuples = pd.DataFrame(
        {
            "prompt_id": ["t0", "t0"],
            "prompt": [task.prompt] * 2,
            "response_1": [right, wrong],
            "response_2": [wrong, right],
            "reward_1": [0.0, 0.0],
            "reward_2": [0.0, 0.0],
        }
    )
    assert agreement.gold_labels(tuples, {"t0": task}, judge).tolist() == [1.0, 0.0]
    with pytest.raises(KeyError, match="t0"):
        agreement.gold_labels(tuples, {}, judge)


def test_judge_labels_come_from_both_orders_of_the_pairwise_judge(monkeypatch):
    from dicewf import arena

    seen = []

    def fake_judge(questions, responses, baseline, client, **kwargs):
        seen.append((responses["response"].tolist(), baseline["reference"].tolist()))
        rows = []
        for pid, mine, other in zip(
            questions["prompt_id"], responses["response"], baseline["reference"]
        ):
            model_better = "good" in mine and "good" not in other
            tie = ("good" in mine) == ("good" in other)
            for game, pos in ((1, "B"), (2, "A")):
                verdict = (
                    "A=B"
                    if tie
                    else (
                        f"{pos}>{'A' if pos == 'B' else 'B'}"
                        if model_better
                        else f"{'A' if pos == 'B' else 'B'}>{pos}"
                    )
                )
                rows.append(
                    {"prompt_id": pid, "game": game, "model_position": pos, "verdict": verdict}
                )
        return pd.DataFrame(rows)

    monkeypatch.setattr(arena, "judge", fake_judge)
    tuples = pd.DataFrame(
        {
            "prompt_id": ["a", "b", "c"],
            "prompt": ["?"] * 3,
            "response_1": ["good", "bad", "good"],
            "response_2": ["bad", "good", "good too"],
            "reward_1": [0.0] * 3,
            "reward_2": [0.0] * 3,
        }
    )
    labels = agreement.judge_labels(tuples, client=object())
    assert labels[:2].tolist() == [1.0, 0.0] and np.isnan(labels[2])
    assert seen == [(["good", "bad", "good"], ["bad", "good", "good too"])]


def test_table5_scores_both_responses_with_each_reward_model_and_rates_them_in_order():
    tuples = agreement.sample_tuples(
        scores([(f"p{i}", k, "r" * (k + i % 3 + 1), float(k)) for i in range(6) for k in range(2)]),
        n=6,
        seed=0,
    )
    labels = np.array([1.0, 0.0, np.nan, 1.0, 0.0, 1.0])
    seen = []

    def longer(frame):  # prefers the longer response
        seen.append(list(frame.columns))
        return frame["response"].str.len().astype(float).to_numpy()

    def shorter(frame):
        return -longer(frame)

    out, result = agreement.table5(
        tuples,
        labels,
        longer,
        [("ERM-a", shorter), ("ERM-b", longer)],
        judge="gold judge (toy world)",
        setting="zephyr",
    )
    assert seen[0] == ["prompt", "response"]
    assert list(out.columns) == [
        *tuples.columns,
        "label",
        "rm_reward_1",
        "rm_reward_2",
        "erm0_reward_1",
        "erm0_reward_2",
        "erm1_reward_1",
        "erm1_reward_2",
    ]
    assert list(out["rm_reward_2"]) == list(tuples["response_2"].str.len().astype(float))
    assert list(out["erm0_reward_1"]) == list(-tuples["response_1"].str.len().astype(float))
    lengths = [tuples[f"response_{k}"].str.len() for k in (1, 2)]
    assert result == {
        "n_tuples": 6,
        "n_labelled": 5,
        "judge": "gold judge (toy world)",
        "setting": "zephyr",
        "rates": {
            "IntlRM": agreement.rate(*lengths, labels),
            "ERM-a": agreement.rate(*(-x for x in lengths), labels),
            "ERM-b": agreement.rate(*lengths, labels),
            "DPO Implicit Reward": agreement.rate(tuples["reward_1"], tuples["reward_2"], labels),
        },
    }
    assert list(result["rates"]) == ["IntlRM", "ERM-a", "ERM-b", "DPO Implicit Reward"]
    assert result["rates"]["IntlRM"] + result["rates"]["ERM-a"] == pytest.approx(1.0)


# --- edges the mutation benchmark (benchmarks/mutation.py) showed untested -------------------------


def test_rate_is_one_when_the_model_always_agrees_and_zero_when_it_never_does():
    r1, r2 = [2.0, 0.0, 5.0], [1.0, 3.0, 4.0]  # prefers 1, 2, 1
    assert agreement.rate(r1, r2, [1.0, 0.0, 1.0]) == 1.0
    assert agreement.rate(r1, r2, [0.0, 1.0, 0.0]) == 0.0
    assert agreement.rate([1.0, 1.0], [1.0, 1.0], [1.0, 0.0]) == 0.5  # ties only


def test_rate_and_check_labelled_take_none_as_unlabelled_and_say_so_exactly():
    # labels read back from JSON carry null for an unlabelled tuple
    assert agreement.rate([1, 0, 3], [0, 1, 3], [1, None, 0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"^no labelled tuple$"):
        agreement.rate([1.0], [0.0], [None])
    with pytest.raises(
        ValueError,
        match=r"^no labelled tuple: judge 'j' labelled none of the 2 tuples \(each judged a tie, "
        r"or without a verdict in both orders\)$",
    ):
        agreement.check_labelled([None, None], "judge 'j'")
    with pytest.raises(ValueError, match=r"^lengths differ: 2, 1, 2$"):
        agreement.rate([1.0, 2.0], [0.0], [1.0, 0.0])


def test_one_tuple_can_be_asked_for_and_none_cannot():
    df = scores([(f"p{i}", k, f"r{k}", float(k)) for i in range(5) for k in range(3)])
    assert len(agreement.sample_tuples(df, n=1, seed=0)) == 1
    with pytest.raises(ValueError, match=r"^n must be at least 1, got 0$"):
        agreement.sample_tuples(df, n=0, seed=0)


def test_only_a_missing_reward_keeps_a_response_out_of_the_tuples():
    df = scores([("a", 0, "x", 1.0), ("a", 1, "y", np.nan), ("b", 0, "z", 0.5), ("b", 1, "w", 0.7)])
    df["judgement"] = [None, None, None, "fine"]  # NaN in another column does not matter
    t = agreement.sample_tuples(df, n=10, seed=0)
    assert t["prompt_id"].tolist() == ["b"]
    assert sorted([*t["response_1"], *t["response_2"]]) == ["w", "z"]


def test_a_bad_scores_or_tuples_frame_is_named_by_its_source_or_default_name():
    df = scores([("a", 0, "x", 1.0), ("a", 1, "y", 2.0)]).drop(columns="reward")
    with pytest.raises(ValueError, match=r"^<scores>: missing column\(s\) \['reward'\]"):
        agreement.sample_tuples(df, 5, 0)
    with pytest.raises(ValueError, match=r"^it1/scores.parquet: missing column\(s\) \['reward'\]"):
        agreement.sample_tuples(df, 5, 0, source="it1/scores.parquet")
    no_reward_2 = pd.DataFrame(
        {"prompt_id": ["a"], "prompt": ["?"], "response_1": ["x"], "response_2": ["y"]}
    ).assign(reward_1=0.0)
    with pytest.raises(ValueError, match=r"^<tuples>: missing column\(s\) \['reward_2'\]"):
        agreement.judge_labels(no_reward_2, client=object())
    with pytest.raises(ValueError, match=r"^<tuples>: missing column\(s\) \['reward_2'\]"):
        agreement.table5(no_reward_2, [1.0], len, [], judge="j", setting="s")


def test_gold_labels_leave_an_exact_tie_unlabelled():
    task = toyworld.Task("t0", "add", "What is 2 + 3?", "5", "2 3")
    judge = toyworld.JudgeSpec(temperature=0.1, length_bias=0.0, length_scale=40.0)
    wrong_7, wrong_8 = (toyworld.render(task, a, "plain") for a in ("7", "8"))  # quality 0 both
    right = toyworld.render(task, "5", "plain")
    tuples = pd.DataFrame(
        {
            "prompt_id": ["t0", "t0"],
            "prompt": [task.prompt] * 2,
            "response_1": [wrong_7, wrong_8],
            "response_2": [wrong_8, right],
            "reward_1": [0.0, 0.0],
            "reward_2": [0.0, 0.0],
        }
    )
    labels = agreement.gold_labels(tuples, {"t0": task}, judge)
    assert np.isnan(labels[0]) and labels[1] == 0.0


def test_judge_labels_weigh_both_orders_pass_the_client_and_the_judges_options(monkeypatch):
    from dicewf import arena

    calls = []

    def fake_judge(questions, responses, baseline, client, **kwargs):
        calls.append((client, kwargs))
        # "a": a strong win of response 1 in game 1 (weight 3) outweighs its plain loss in game 2;
        # "b": a strong loss of response 1 in game 1 outweighs its plain win in game 2
        return pd.DataFrame(
            {
                "prompt_id": ["a", "a", "b", "b"],
                "game": [1, 2, 1, 2],
                "model_position": ["B", "A", "B", "A"],
                "verdict": ["B>>A", "B>A", "A>>B", "A>B"],
            }
        )

    monkeypatch.setattr(arena, "judge", fake_judge)
    tuples = pd.DataFrame(
        {
            "prompt_id": ["a", "b"],
            "prompt": ["?"] * 2,
            "response_1": ["x", "y"],
            "response_2": ["z", "w"],
            "reward_1": [0.0] * 2,
            "reward_2": [0.0] * 2,
        }
    )
    client = object()
    labels = agreement.judge_labels(tuples, client, model="gpt-4o", max_workers=3)
    assert labels.tolist() == [1.0, 0.0]
    assert calls == [(client, {"model": "gpt-4o", "max_workers": 3})]


def test_table5_stores_the_intl_rm_reward_of_response_1():
    tuples = agreement.sample_tuples(
        scores([(f"p{i}", k, "r" * (k + 1), float(k)) for i in range(3) for k in range(2)]),
        n=3,
        seed=0,
    )
    out, _ = agreement.table5(
        tuples,
        [1.0, 0.0, 1.0],
        lambda frame: frame["response"].str.len().astype(float).to_numpy(),
        [],
        judge="j",
        setting="s",
    )
    assert list(out["rm_reward_1"]) == list(tuples["response_1"].str.len().astype(float))
    assert list(out["rm_reward_2"]) == list(tuples["response_2"].str.len().astype(float))
