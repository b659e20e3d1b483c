import numpy as np
import pandas as pd
import pytest
from dicewf import toyeval
from dicewf import toyworld as tw
from dicewf.io import check_frame


def task(kind="add"):
    rng = np.random.default_rng(0)
    return tw.make_task(kind, "t-0", rng, tw.WorldSpec())


def test_build_world_is_deterministic_and_disjoint():
    spec = tw.WorldSpec(seed=7, n_train_prompts=50, n_eval_prompts=20, n_agreement_pairs=10)
    a, b = tw.build_world(spec), tw.build_world(spec)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert not set(a["train_prompts"]["prompt"]) & set(a["eval_prompts"]["prompt"])
    assert a["train_prompts"]["prompt"].is_unique
    other = tw.build_world(
        tw.WorldSpec(seed=8, n_train_prompts=50, n_eval_prompts=20, n_agreement_pairs=10)
    )
    assert not a["offline"].equals(other["offline"])


def test_world_frames_meet_the_dataset_contracts():
    data = tw.build_world(tw.WorldSpec(n_train_prompts=25, n_eval_prompts=10, n_agreement_pairs=5))
    check_frame(data["train_prompts"], "prompts")
    check_frame(data["eval_prompts"], "eval_prompts")
    check_frame(data["offline"], "pairs")
    assert set(data["train_prompts"]["kind"]) == set(tw.TASK_KINDS)


@pytest.mark.parametrize("kind", tw.TASK_KINDS)
def test_every_style_of_the_right_answer_scores_one(kind):
    t = task(kind)
    for style in tw.STYLES:
        assert tw.quality(t, tw.render(t, t.answer, style)) == 1.0
    wrong = tw.wrong_answer(t, np.random.default_rng(1))
    assert wrong != t.answer
    assert tw.quality(t, tw.render(t, wrong, "plain")) < 0.5


def test_extract_answer():
    assert tw.extract_answer("Adding 3 and 4 gives 7. The answer is 7.") == "7"
    assert tw.extract_answer("The answer is 6. No wait, the answer is 8. Happy!") == "8"
    assert tw.extract_answer("kab.") == "kab"


def test_preference_follows_quality_and_prefers_length_among_equals():
    t = task("add")
    judge = tw.JudgeSpec()
    short, long = tw.render(t, t.answer, "concise"), tw.render(t, t.answer, "chatty")
    wrong_long = tw.render(t, tw.wrong_answer(t, np.random.default_rng(0)), "chatty")
    assert tw.preference(t, long, short, judge) > 0.6  # deliberate length bias
    assert tw.preference(t, short, wrong_long, judge) > 0.99  # quality dominates
    assert tw.preference(t, short, long, judge) == pytest.approx(
        1 - tw.preference(t, long, short, judge)
    )
    unbiased = tw.JudgeSpec(length_bias=0.0)
    assert tw.preference(t, long, short, unbiased) == pytest.approx(0.5)


def test_offline_chosen_longer_and_better_on_average():
    spec = tw.WorldSpec(n_train_prompts=400)
    off = tw.build_world(spec)["offline"]
    assert off["len_diff"].mean() > 0
    assert (off["chosen_quality"] >= off["rejected_quality"]).mean() > 0.9


def test_agreement_pairs_have_different_quality_and_judge_labels():
    spec = tw.WorldSpec(n_train_prompts=30, n_eval_prompts=20, n_agreement_pairs=40)
    pairs = tw.build_world(spec)["agreement_pairs"]
    assert len(pairs) == 40
    assert (pairs["quality_a"] != pairs["quality_b"]).all()
    assert ((pairs["preference"] > 0.5).astype(int) == pairs["label"]).all()


def test_judge_responses_rejects_unknown_prompt():
    spec = tw.WorldSpec(n_train_prompts=5, n_eval_prompts=5, n_agreement_pairs=2)
    ev = tw.build_world(spec)["eval_prompts"]
    tasks = tw.tasks_from_frame(ev)
    df = pd.DataFrame({"prompt_id": ["nope"], "response": ["1."], "reference": ["x"]})
    with pytest.raises(KeyError, match="nope"):
        tw.judge_responses(tasks, df, tw.JudgeSpec())
    ok = ev.assign(response=ev["reference"])
    judged = tw.judge_responses(tasks, ok, tw.JudgeSpec())
    assert np.allclose(judged["preference"], 0.5)
    assert (judged["quality"] == 1.0).all()


def test_evaluate_scores_both_benchmarks_from_the_gold_judge():
    from dicewf import arena
    from dicewf.lcwinrate import win_rates

    spec = tw.WorldSpec(n_train_prompts=5, n_eval_prompts=20, n_agreement_pairs=2)
    prompts = tw.build_world(spec)["eval_prompts"]
    tasks = tw.tasks_from_frame(prompts)
    rng = np.random.default_rng(0)
    samples = pd.DataFrame(
        {
            "prompt_id": prompts["prompt_id"],
            "response": [
                tw.render(tasks[p], tasks[p].answer if i % 2 else tw.wrong_answer(tasks[p], rng), s)
                for i, (p, s) in enumerate(zip(prompts["prompt_id"], ["chatty", "concise"] * 10))
            ],
            "finish_reason": ["length"] * 3 + ["stop"] * 17,
        }
    )
    judge = tw.JudgeSpec()
    responses, judged, metrics = toyeval.evaluate(
        prompts, samples, judge, l2=0.0, n_bootstrap=20, seed=3, policy="results/x/policy"
    )
    assert list(responses["reference"]) == list(prompts["reference"])
    pd.testing.assert_frame_equal(judged, tw.judge_responses(tasks, responses, judge))
    wr = win_rates(judged["preference"], judged["len_model"], judged["len_baseline"], l2=0.0)
    scored = arena.score(
        arena.judgments_from_probabilities(
            judged["prompt_id"],
            judged["preference"],
            len_model=judged["len_model"],
            len_baseline=judged["len_baseline"],
        ),
        n_bootstrap=20,
        seed=3,
    )
    # the keys in the order metrics.json has them: win rates, arena_*, then ours
    assert list(metrics) == [
        *wr.to_dict(),
        *(k if k.startswith("arena_") else f"arena_{k}" for k in scored),
        "gold_quality",
        "truncated",
        "policy",
    ]
    assert metrics["arena_score"] == scored["arena_score"]
    assert metrics["arena_n_bootstrap"] == 20
    assert metrics["gold_quality"] == judged["quality"].mean() < 1.0
    assert metrics["truncated"] == 3
    assert metrics["policy"] == "results/x/policy"
    again = toyeval.evaluate(prompts, samples, judge, l2=0.0, n_bootstrap=20, seed=3, policy="p")[2]
    assert {k: v for k, v in again.items() if k != "policy"} == {
        k: v for k, v in metrics.items() if k != "policy"
    }
