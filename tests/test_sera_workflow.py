"""SeRA as configuration over the workflow's rules (`method: sera`, workflow/rules/sera.smk):
the experiment block's resolution and sharing, the library functions behind the rules, the
planned DAG. The SeRA runs end to end on the reduced toy world are in tests/test_workflow.py
(test_the_sera_runs_end_to_end), on the one run its other end-to-end tests read."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from dicewf import config as cfg
from dicewf import mixing, reflogps, sera
from dicewf.io import DatasetError
from test_workflow import REPO, load, planned_jobs, snakemake, workdir


def toy_config(**experiments) -> dict:
    """The reduced toy world (.test/config.yaml) with these experiments alone, validated (the
    schema's defaults filled in, as the workflow sees it)."""
    from snakemake.utils import validate

    config = load(REPO / ".test" / "config.yaml")
    config["experiments"] = experiments
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


# --- the experiment block -----------------------------------------------------------------------


def test_a_sera_experiment_takes_its_decoding_and_beta_from_the_sera_block():
    config = toy_config(
        dice={},
        sera_dpo={"method": "sera"},
        sera_ipo={"method": "sera", "train": {"loss_type": "ipo"}, "sera": {"sampling": {"n": 6}}},
    )
    dpo, ipo, dice = (cfg.experiment(config, e) for e in ("sera_dpo", "sera_ipo", "dice"))
    # Appendix B.2's K, temperature and top_p over the experiment's sampling (max_tokens kept)
    assert dpo["sampling"] == {"n": 4, "temperature": 0.7, "top_p": 0.95, "max_tokens": 24}
    assert ipo["sampling"]["n"] == 6
    # Table 4's beta of the loss; the rest of the train block as defaults has it
    assert (dpo["train"]["beta"], ipo["train"]["beta"]) == (0.2, 1.0)
    assert dpo["train"]["learning_rate"] == dice["train"]["learning_rate"]
    # DICE is the default method and resolves without a sera block, as before
    assert dice["method"] == "dice" and "sera" not in dice
    assert dice["sampling"]["n"] == 4 and dice["sampling"]["temperature"] == 1.0


def test_a_simpo_sera_experiment_selects_by_simpos_reward_with_its_beta():
    config = toy_config(
        sera_simpo={"method": "sera", "trainer": "cpo", "train": {"loss_type": "simpo"}},
        sera_dpo={"method": "sera"},
    )
    simpo, dpo = (cfg.experiment(config, e) for e in ("sera_simpo", "sera_dpo"))
    assert simpo["train"]["beta"] == 2.0 and simpo["trainer"] == "cpo"
    assert (cfg.sera_reward(simpo), cfg.sera_reward(dpo)) == ("simpo", "dpo")
    # reference-free: no reference log-probs are carried for its training
    assert not reflogps.reuse_planned(config, "sera_simpo")


@pytest.mark.parametrize(
    ("block", "named"),
    [
        ({"method": "sera", "mix": {"gamma": 0.0}}, "['mix'] belong to DICE"),
        ({"method": "sera", "alpha": {"fixed": 0.0}}, "['alpha'] belong to DICE"),
        ({"method": "sera", "train": {"beta": 0.5}}, "sera.beta.<loss_type>"),
        ({"method": "sera", "train": {"loss_type": "robust"}}, "add sera.beta.robust"),
        ({"method": "sera", "score": {"method": "judge"}}, "score.method 'judge'"),
        ({"method": "sera", "trainer": "kto", "train": {"loss_type": "kto"}}, "trainer 'kto'"),
        # CPO's own losses have no implicit reward SeRA could select by; SimPO's has
        ({"method": "sera", "trainer": "cpo", "train": {"loss_type": "sigmoid"}}, "trainer 'cpo'"),
        (
            {
                "method": "sera",
                "trainer": "cpo",
                "train": {"loss_type": "simpo"},
                "sera": {"bootstrap": "dice_alpha"},
            },
            "sera.bootstrap dice_alpha with SimPO",
        ),
        ({"sera": {"ensemble_lambda": 0.2}}, "method is 'dice'"),
    ],
)
def test_what_sera_cannot_run_is_refused_naming_the_experiment_and_key(block, named):
    config = toy_config(x=block)
    with pytest.raises(ValueError, match="experiments.x") as err:
        cfg.experiment(config, "x")
    assert named in str(err.value)


def test_sera_shares_samples_and_scores_with_dice_but_never_a_run():
    # a DICE experiment with SeRA's decoding and beta: equal samples and scores, other pairs
    same = {"sampling": {"n": 4, "temperature": 0.7, "top_p": 0.95}, "train": {"beta": 0.2}}
    config = toy_config(
        dice=same,
        sera_a={"method": "sera", "description": "one"},
        sera_b={"method": "sera", "description": "the same run"},
        sera_noisy={"method": "sera", "noise_fraction": 0.2},
    )
    owners = cfg.owners(config)
    assert owners["sera_a", 1] == cfg.Owners(
        samples="dice", scores="dice", run="sera_a", offline="sera_a"
    )
    assert owners["sera_b", 1].run == "sera_a" and owners["sera_b", 2].run == "sera_a"
    # noisy offline data: its own start policy, so its own samples, scores and run throughout
    assert owners["sera_noisy", 1] == cfg.Owners(*["sera_noisy"] * 4)
    assert owners["sera_noisy", 2].samples == "sera_noisy"
    # DICE's alpha and mix blocks do not split two equal SeRA runs
    config["defaults"]["mix"]["gamma"] = 0.25
    assert cfg.owners(config)["sera_b", 1].run == "sera_a"


def test_runs_scoring_the_same_offline_pairs_under_the_same_models_share_one_job():
    config = toy_config(
        sera_dpo={"method": "sera", "iterations": 2},
        sera_ipo={"method": "sera", "train": {"loss_type": "ipo"}},  # another beta and run
        sera_lam={"method": "sera", "iterations": 2, "sera": {"ensemble_lambda": 0.7}},
        sera_lam0={"method": "sera", "iterations": 2, "sera": {"ensemble_lambda": 0.0}},
        sera_fixed={"method": "sera", "iterations": 2, "reference": "fixed"},
        sera_bf16={"method": "sera", "score": {"dtype": "bfloat16"}},
        sera_n20={"method": "sera", "noise_fraction": 0.2},
        sera_n20b={"method": "sera", "noise_fraction": 0.2, "train": {"loss_type": "ipo"}},
        sera_n40={"method": "sera", "noise_fraction": 0.4},
        dice={},
    )
    owners = cfg.owners(config)
    offline = {e: owners[e, 1].offline for e in ("sera_ipo", "sera_lam", "sera_lam0", "dice")}
    # iteration 1: D_offline under pi_theta^(0) and the SFT model, whatever the loss or lambda
    assert offline == {"sera_ipo": "sera_dpo", "sera_lam": "sera_dpo", "sera_lam0": "sera_dpo"} | {
        "dice": "dice"  # DICE scores no D_offline: its own run's
    }
    # iteration 2: the same pi_theta^(1) (lambda only enters at 2); with lambda > 0 Eq. 7
    # scores under the pair before too, whatever lambda (0.3, 0.7), and with 0 it does not
    assert owners["sera_lam", 2].run == "sera_lam" and owners["sera_lam", 2].offline == "sera_dpo"
    assert owners["sera_lam0", 2].offline == "sera_lam0"
    # Eq. 7's older pair is pi_theta^(0) and the SFT reference, whatever trains at iteration 2:
    # a fixed reference trains another pi_theta^(2) but scores D_offline under the same models
    assert (
        owners["sera_fixed", 2].run == "sera_fixed"
        and owners["sera_fixed", 2].offline == "sera_dpo"
    )
    # other scoring settings, other noise: their own; the same noise: one copy, one job
    assert owners["sera_bf16", 1].offline == "sera_bf16"
    assert owners["sera_n20b", 1].offline == "sera_n20"
    assert owners["sera_n40", 1].offline == "sera_n40"
    assert cfg.shared(config, "sera_ipo")["iter1"]["offline"] == "sera_dpo"
    assert "offline" not in cfg.shared(config, "dice").get("iter1", {})


def test_a_noisy_sera_run_starts_from_its_own_policy_trained_on_the_noisy_pairs():
    config = toy_config(
        sera_dpo={"method": "sera"}, sera_noisy={"method": "sera", "noise_fraction": 0.2}
    )
    # pi_theta^(0) is DPO of the SFT model on D_offline: on the noisy copy for a noisy run
    # (noisy_start_policy), the setting's start policy for a clean one
    own = "results/sera_noisy/iter0/policy"
    assert cfg.policy_path(config, "sera_noisy", 0) == own
    assert cfg.reference_path(config, "sera_noisy", 1) == own  # what iteration 1 trains against
    assert cfg.reference_path(config, "sera_noisy", 0) == config["base"]["reference"]
    assert cfg.policy_path(config, "sera_dpo", 0) == config["base"]["policy"]
    assert cfg.trains_own_start(cfg.experiment(config, "sera_noisy"))
    assert not cfg.trains_own_start(cfg.experiment(config, "sera_dpo"))
    # it is trained with the start policy's recipe, which a config must then have
    del config["start_policy"]
    with pytest.raises(ValueError, match=r"experiments.sera_noisy.noise_fraction: .*"):
        cfg.experiment(config, "sera_noisy")
    assert cfg.experiment(config, "sera_dpo")["method"] == "sera"


def test_every_sera_training_row_carries_the_train_references_logps():
    config = toy_config(dice={}, sera_dpo={"method": "sera"})
    for t in (1, 2):
        # the train reference pi_theta^(t-1) is the score stage's policy: no ref_logps job
        assert reflogps.reused_column(config, "sera_dpo", t) == "logp_policy"
        assert not reflogps.needs_fill(config, "sera_dpo", t)
    assert reflogps.needs_fill(config, "dice", 1)  # DICE's offline share is filled


# --- the library behind sera_mix --------------------------------------------------------------


def scored_offline(**extra) -> pd.DataFrame:
    """Five offline pairs with log-probs under the previous policy and its reference."""
    frame = pd.DataFrame(
        {
            "prompt_id": [f"id{i}" for i in range(5)],
            "prompt": [f"p{i}" for i in range(5)],
            "chosen": [f"c{i}" for i in range(5)],
            "rejected": [f"r{i}" for i in range(5)],
            # IRM / beta = (pc - rc) - (pr - rr): 3, -1, 2, 2, 0
            "logp_policy_chosen": [-1.0, -5.0, -2.0, -3.0, -4.0],
            "logp_policy_rejected": [-6.0, -4.0, -5.0, -5.0, -4.0],
            "logp_ref_chosen": [-2.0, -4.0, -3.0, -3.0, -4.0],
            "logp_ref_rejected": [-4.0, -4.0, -4.0, -3.0, -4.0],
            "len_tokens_chosen": [3, 4, 5, 6, 7],
            "len_tokens_rejected": [2, 2, 2, 2, 2],
        }
    )
    return frame.assign(**extra)


def test_select_offline_keeps_the_highest_margins_by_hand():
    swapped = [False, True, False, False, True]
    out, report = sera.select_offline(
        scored_offline(label_swapped=swapped), beta=0.5, proportion=0.6, source="off.parquet"
    )
    np.testing.assert_allclose(out["irm"], [1.5, -0.5, 1.0, 1.0, 0.0])
    assert out["margin"].tolist() == out["irm"].tolist()  # no second pair: lambda counts as 0
    # round(0.6 x 5) = 3: margins 1.5, 1.0, 1.0 (the tie at 1.0 keeps both: they are 2nd, 3rd)
    assert out["selected"].tolist() == [True, False, True, True, False]
    assert report["n_selected"] == 3 and report["ensemble"] is False
    assert report["ensemble_lambda"] == 0.0 and report["lowest_selected_margin"] == 1.0
    # both swapped pairs dropped, and nothing else: precision 1, recall 1
    assert report["label_swapped"]["precision"] == report["label_swapped"]["recall"] == 1.0
    assert "irm_prev2" not in out.columns and "gold_worse_chosen" not in report


def test_select_offline_mixes_the_second_pair_by_eq7_and_scores_gold_labels():
    pairs = scored_offline(
        # IRM / beta under the (t-2) pair: 0, 0, 0, 0, 10
        logp_policy2_chosen=[0.0, 0.0, 0.0, 0.0, 10.0],
        logp_policy2_rejected=0.0,
        logp_ref2_chosen=0.0,
        logp_ref2_rejected=0.0,
        chosen_quality=[1.0, 0.0, 1.0, 0.0, 1.0],
        rejected_quality=[0.0, 1.0, 0.0, 1.0, 0.0],
    )
    out, report = sera.select_offline(pairs, beta=1.0, proportion=0.4, lam=0.3)
    np.testing.assert_allclose(out["irm_prev2"], [0, 0, 0, 0, 10])
    # 0.3 x IRM(t-2) + 0.7 x IRM(t-1)
    np.testing.assert_allclose(out["margin"], [2.1, -0.7, 1.4, 1.4, 3.0])
    assert out["selected"].tolist() == [True, False, False, False, True]  # round(0.4 x 5) = 2
    assert report["ensemble"] is True and report["ensemble_lambda"] == 0.3
    # pairs 1 and 3 have the worse answer chosen: both dropped, with one of the three dropped
    gold = report["gold_worse_chosen"]
    assert (gold["recall"], gold["precision"], gold["n_dropped"]) == (1.0, 2 / 3, 3)


def test_select_offline_names_the_file_of_a_missing_logp_column():
    with pytest.raises(DatasetError, match=r"off\.parquet.*logp_ref_rejected"):
        sera.select_offline(
            scored_offline().drop(columns="logp_ref_rejected"), 1.0, 0.6, source="off.parquet"
        )


def scores_frame() -> pd.DataFrame:
    """K = 3 scored responses for the five prompts, as the score stage writes them."""
    rows = []
    for pid in range(5):
        for k, reward in enumerate([0.1 * pid, 1.0 + pid, -1.0]):
            rows.append(
                {
                    "prompt_id": f"id{pid}",
                    "prompt": f"p{pid}",
                    "sample_idx": k,
                    "response": f"s{pid}-{k}",
                    "reward": reward,
                    "logp_policy": -10.0 * pid - k,
                    "logp_ref": -1.0,
                    "len_chars": 5 + k,
                    "len_tokens": 2 + k,
                }
            )
    return pd.DataFrame(rows)


def test_mix_iteration_puts_the_train_references_logps_on_every_row():
    selection, _ = sera.select_offline(scored_offline(), beta=1.0, proportion=0.6)
    mixed, counts = sera.mix_iteration(
        selection, scores_frame(), proportion=0.6, generated=None, seed=3, ref_logps="logp_policy"
    )
    # SeRA: N_off + N_gen = N = 5; the two bootstrapped pairs with the highest margins, each
    # the best (sample 1) against the worst (sample 2) response of its prompt
    assert counts == {
        "n_offline_all": 5,
        "n_offline": 3,
        "n_generated": 2,
        "n_candidates": 5,
        "n_mixed": 5,
        "bootstrap_ensemble": False,
        "bootstrap_ensemble_lambda": 0.0,
        "bootstrap": "implicit",
        "bootstrap_reward": "dpo",
    }
    assert not reflogps.missing(mixed).any()
    generated = mixed[mixed["source"] == "generated"].set_index("prompt_id").sort_index()
    assert generated.index.tolist() == ["id3", "id4"]  # margins 1 + pid + 1 - 0: the largest pids
    assert generated["chosen"].tolist() == ["s3-1", "s4-1"]
    assert generated["ref_chosen_logps"].tolist() == [-31.0, -41.0]  # logp_policy of sample 1
    assert generated["ref_rejected_tokens"].tolist() == [4, 4]
    offline = mixed[mixed["source"] == "offline"].set_index("prompt_id").sort_index()
    assert offline.index.tolist() == ["id0", "id2", "id3"]
    assert offline["ref_chosen_logps"].tolist() == [-1.0, -2.0, -3.0]  # logp_policy_chosen
    assert offline["ref_rejected_tokens"].tolist() == [2, 2, 2]
    # the same inputs and seed give the same file; another iteration's seed shuffles otherwise
    again, _ = sera.mix_iteration(
        selection, scores_frame(), proportion=0.6, generated=None, seed=3, ref_logps="logp_policy"
    )
    pd.testing.assert_frame_equal(mixed, again)


def test_simpo_selects_and_bootstraps_by_the_length_normalised_reward_by_hand():
    # no reference log-probs at all: SimPO's reward is beta / |y| log pi_theta
    offline = scored_offline().drop(columns=["logp_ref_chosen", "logp_ref_rejected"])
    out, report = sera.select_offline(offline, beta=0.5, proportion=0.4, reward="simpo")
    # 0.5 x (pc / |yc| - pr / |yr|) = 0.5 x (-1/3 + 3, -5/4 + 2, -2/5 + 5/2, -3/6 + 5/2, -4/7 + 2)
    np.testing.assert_allclose(out["irm"], [4 / 3, 0.375, 1.05, 1.0, 5 / 7])
    assert out["selected"].tolist() == [True, False, True, False, False]
    assert report["reward"] == "simpo"
    # the samples: SimPO's reward of sample k of prompt p is -(10 p + k) / (2 + k), so from p = 1
    # on the best response is sample 2 and the worst sample 0 (by DPO's reward: 1 and 2); the
    # margins 0.5, 2, 4.5, 7, 9.5 keep prompts 3 and 4
    mixed, counts = sera.mix_iteration(
        out, scores_frame(), proportion=0.4, generated=0.4, seed=0, reward="simpo", beta=1.0
    )
    generated = mixed[mixed["source"] == "generated"].set_index("prompt_id").sort_index()
    assert generated.index.tolist() == ["id3", "id4"]
    assert generated["chosen"].tolist() == ["s3-2", "s4-2"]
    assert generated["rejected"].tolist() == ["s3-0", "s4-0"]
    np.testing.assert_allclose(generated["irm"], [7.0, 9.5])
    assert counts["bootstrap_reward"] == "simpo"
    assert not set(mixing.REF_COLUMNS) & set(mixed.columns)  # reference-free: nothing carried


def test_simpos_reward_names_the_file_of_a_bad_token_count_and_refuses_dices_pairs():
    bad = scores_frame().assign(len_tokens=0)
    with pytest.raises(DatasetError, match=r"scores\.parquet.*len_tokens.*below 1"):
        sera.response_rewards(bad, "simpo", 1.0, "scores.parquet")
    pd.testing.assert_frame_equal(sera.response_rewards(bad, "dpo", 1.0), bad)  # as it is
    selection, _ = sera.select_offline(scored_offline(), beta=1.0, proportion=0.6)
    with pytest.raises(ValueError, match=r"pairs\.parquet: DICE's pairs.*'simpo'"):
        sera.mix_iteration(
            selection,
            scores_frame(),
            proportion=0.6,
            generated=None,
            seed=0,
            candidates=pd.DataFrame(),
            candidates_source="pairs.parquet",
            reward="simpo",
            beta=1.0,
        )


def test_mix_iteration_best_sera_and_a_stale_selection():
    selection, _ = sera.select_offline(scored_offline(), beta=1.0, proportion=0.6)
    mixed, counts = sera.mix_iteration(
        selection, scores_frame(), proportion=0.6, generated=0.8, seed=0, ref_logps=None
    )
    assert (counts["n_offline"], counts["n_generated"], len(mixed)) == (3, 4, 7)
    assert not set(mixing.REF_COLUMNS) & set(mixed.columns)  # nothing to carry
    with pytest.raises(ValueError, match=r"sel\.parquet: 3 pairs are selected.*keeps 4"):
        sera.mix_iteration(
            selection,
            scores_frame(),
            proportion=0.8,
            generated=None,
            seed=0,
            offline_source="sel.parquet",
        )


def test_eq7_bootstraps_by_the_ensemble_of_the_two_policies_rewards_by_hand():
    scores = scores_frame()  # r_(t-1) of prompt i: 0.1 i, 1 + i, -1 (samples 0, 1, 2)
    # the same responses under the (t-2) pair, in another order: r_(t-2) of prompt i is
    # 4 + i, 0, 0 for prompts 0-2 and 0, 0, 0 for prompts 3 and 4
    prev2 = scores.assign(reward=0.0).iloc[::-1].reset_index(drop=True)
    prev2.loc[(prev2["sample_idx"] == 0) & (prev2["prompt_id"] < "id3"), "reward"] += [6, 5, 4]
    selection, _ = sera.select_offline(scored_offline(), beta=1.0, proportion=0.6)
    mixed, counts = sera.mix_iteration(
        selection,
        scores,
        proportion=0.6,
        generated=1.0,  # all five bootstrapped pairs, ranked by margin
        seed=0,
        ref_logps="logp_policy",
        scores_prev2=prev2,
        lam=0.5,
    )
    assert (counts["bootstrap_ensemble"], counts["bootstrap_ensemble_lambda"]) == (True, 0.5)
    generated = mixed[mixed["source"] == "generated"].set_index("prompt_id").sort_index()
    # R = 0.5 r_(t-2) + 0.5 r_(t-1): prompt 0: 2, 0.5, -0.5; prompt 1: 2.55, 1, -0.5; prompt 2:
    # 3.1, 1.5, -0.5, so sample 0 wins there (r_(t-1) alone picks sample 1); prompts 3 and 4:
    # 0.15 i, (1 + i) / 2, -0.5, sample 1 against sample 2
    assert generated["chosen"].tolist() == ["s0-0", "s1-0", "s2-0", "s3-1", "s4-1"]
    assert generated["rejected"].tolist() == [f"s{i}-2" for i in range(5)]
    # the train reference's log-probs are still those of the score stage's policy
    assert generated["ref_chosen_logps"].tolist() == [0.0, -10.0, -20.0, -31.0, -41.0]
    # lambda 0: the previous policy's rewards alone, as without the (t-2) scores
    alone, _ = sera.mix_iteration(
        selection, scores, proportion=0.6, generated=1.0, seed=0, scores_prev2=prev2, lam=0.0
    )
    assert set(alone.loc[alone["source"] == "generated", "chosen"]) == {f"s{i}-1" for i in range(5)}
    # the kept pairs: the highest ensemble margins, 3.6 (prompt 2) and 3.05 (prompt 1)
    boot = sera.bootstrap_pairs(
        sera.ensemble_rewards(scores, prev2, 0.5), count=2, score="ensemble_reward"
    )
    assert boot["prompt_id"].tolist() == ["id1", "id2"]
    np.testing.assert_allclose(boot["irm"], [3.05, 3.6])


def test_eq7_refuses_scores_of_other_responses_naming_the_file():
    scores = scores_frame()
    with pytest.raises(DatasetError, match=r"prev2\.parquet: no reward for 1 response.*'id4', 2"):
        sera.ensemble_rewards(
            scores, scores.iloc[:-1], 0.3, source="s.parquet", source_prev2="prev2.parquet"
        )
    with pytest.raises(DatasetError, match=r"s\.parquet: no reward for 1 response.*'id9', 0"):
        extra = pd.concat([scores, scores.iloc[:1].assign(prompt_id="id9")], ignore_index=True)
        sera.ensemble_rewards(scores, extra, 0.3, source="s.parquet", source_prev2="prev2.parquet")
    with pytest.raises(DatasetError, match=r"prev2\.parquet: .*'reward'"):
        sera.ensemble_rewards(
            scores, scores.assign(reward=np.nan), 0.3, source_prev2="prev2.parquet"
        )


def test_dice_alpha_bootstraps_from_dices_length_regularised_pairs_by_hand():
    from dicewf import alpha

    scores = scores_frame()  # reward of prompt i: 0.1 i, 1 + i, -1; 5, 6, 7 characters
    # D(alpha) at 3 per character, as search_alpha writes it: shaped 0.1 i - 15, i - 17, -22,
    # so sample 0 wins for prompts 0-2 and sample 1 for prompts 3 and 4 (sample 2 loses)
    dice = alpha.build_pairs(scores, 3.0, score="reward", ref_logps="logp_policy")
    selection, _ = sera.select_offline(scored_offline(), beta=1.0, proportion=0.6)
    mixed, counts = sera.mix_iteration(
        selection,
        scores,
        proportion=0.6,
        generated=0.6,  # round(0.6 x 5) = 3 bootstrapped pairs
        seed=0,
        ref_logps="logp_policy",
        candidates=dice,
        candidates_source="pairs.parquet",
    )
    assert counts["bootstrap"] == "dice_alpha" and counts["n_candidates"] == 5
    generated = mixed[mixed["source"] == "generated"].set_index("prompt_id").sort_index()
    # margins by implicit reward: 1, 1.1, 1.2, 5, 6; the three highest kept. Bootstrapping at
    # alpha = 0 would pair sample 1 of prompt 2 instead (its highest reward)
    assert generated.index.tolist() == ["id2", "id3", "id4"]
    assert generated["chosen"].tolist() == ["s2-0", "s3-1", "s4-1"]
    assert generated["ref_chosen_logps"].tolist() == [-20.0, -31.0, -41.0]
    implicit, _ = sera.mix_iteration(
        selection, scores, proportion=0.6, generated=0.6, seed=0, ref_logps="logp_policy"
    )
    assert "s2-1" in set(implicit["chosen"]) and "s2-1" not in set(mixed["chosen"])
    # pairs that are not the iteration's scored responses are refused, naming the file
    with pytest.raises(DatasetError, match=r"pairs\.parquet: the chosen response of 1 pair.*9"):
        sera.bootstrap_pairs(
            scores,
            count=1,
            candidates=dice.assign(chosen_sample_idx=[9, 0, 0, 1, 1]),
            candidates_source="pairs.parquet",
        )


def test_pair_logps_scores_each_model_once_as_the_train_job_tokenizes(tiny_model, monkeypatch):
    from dicewf import scoring
    from test_training import PAIRS

    loads, load = [], scoring.load_model
    monkeypatch.setattr(scoring, "load_model", lambda p, d="auto": loads.append(p) or load(p, d))
    # pi_theta^(t-1)'s reference is pi_theta^(t-2) under `reference: previous`: one folder, two
    # roles, loaded and scored once
    out = reflogps.pair_logps(PAIRS, tiny_model, {"policy": tiny_model, "ref": tiny_model})
    assert loads == [tiny_model]
    assert list(out.columns) == [
        "logp_policy_chosen",
        "logp_policy_rejected",
        "logp_ref_chosen",
        "logp_ref_rejected",
        "len_tokens_chosen",
        "len_tokens_rejected",
    ]
    np.testing.assert_array_equal(out["logp_policy_rejected"], out["logp_ref_rejected"])
    # the values and token counts the ref_logps job gives the train job (TRL's tokenization)
    filled = reflogps.fill(PAIRS, tiny_model, tiny_model)
    np.testing.assert_allclose(out["logp_ref_chosen"], filled["ref_chosen_logps"], rtol=1e-6)
    assert out["len_tokens_rejected"].tolist() == filled["ref_rejected_tokens"].tolist()


# --- the DAG and a real run ---------------------------------------------------------------------


@pytest.mark.slow
def test_eq7_and_dice_alpha_are_planned_only_where_they_apply(tmp_path):
    config = load(REPO / ".test" / "config.yaml")
    config["experiments"] = {
        "dice": {"iterations": 1},
        "sera_dpo": {"method": "sera", "iterations": 2},  # lambda 0.3 (the default)
        "sera_l07": {"method": "sera", "iterations": 2, "sera": {"ensemble_lambda": 0.7}},
        "sera_l0": {"method": "sera", "iterations": 2, "sera": {"ensemble_lambda": 0.0}},
        "sera_alpha": {
            "method": "sera",
            "iterations": 1,
            "sera": {"bootstrap": "dice_alpha"},
            "alpha": {"fixed": 0.01},
        },
    }
    out = snakemake("-n", cwd=workdir(tmp_path, config)).stdout
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out[out.index("Job stats") :], re.MULTILINE))
    # the samples of iteration 2 scored under pi_theta^(0) against the SFT model, once: the
    # lambda runs share the iteration's scores, and so these
    assert stats["sera_scores_prev2"] == "1"
    prev2 = out[out.index("rule sera_scores_prev2:") :].split("\n\n")[0]
    assert "results/sera_dpo/iter2/scores.parquet, results/toy/models/start_policy, " in prev2
    assert "results/toy/models/sft" in prev2 and "output: results/sera_dpo/iter2/" in prev2
    mixes = {}
    for block in out.split("rule sera_mix:")[1:]:
        inputs = re.search(r"input: (.*)", block)[1]
        mixes[re.search(r"output: results/(\w+/iter\d)/", block)[1]] = inputs
    # Eq. 7 for the bootstrapped pairs where the offline selection mixes two pairs too: lambda
    # > 0 and pi_theta^(t-2) there (iteration 2)
    ensemble = {run for run, inputs in mixes.items() if "scores_prev2" in inputs}
    assert ensemble == {"sera_dpo/iter2", "sera_l07/iter2"}, mixes
    # DICE's D(alpha*) for the dice_alpha run alone (and DICE's own search)
    assert stats["search_alpha"] == "2"
    assert {run for run, inputs in mixes.items() if "pairs.parquet" in inputs} == {
        "sera_alpha/iter1"
    }
    assert "results/sera_alpha/iter1/pairs.parquet" in mixes["sera_alpha/iter1"]


def test_dice_alpha_reads_the_alpha_block_which_then_splits_runs():
    alpha_run = {"method": "sera", "sera": {"bootstrap": "dice_alpha"}}
    config = toy_config(
        a=alpha_run,
        b={**alpha_run, "alpha": {"fixed": 0.02}},
        c={"method": "sera"},
        d={"method": "sera", "sera": {"bootstrap": "implicit"}},
    )
    assert cfg.experiment(config, "b")["alpha"]["fixed"] == 0.02  # no longer refused
    owners = cfg.owners(config)
    # another alpha is another run; the bootstrap is part of the run; the default is implicit
    assert owners["b", 1].run == "b" and owners["c", 1].run == "c"
    assert owners["d", 1].run == "c" and owners["b", 1].scores == "a"
    assert cfg.sera_ensembles(cfg.experiment(config, "c"), 2)
    assert not cfg.sera_ensembles(cfg.experiment(config, "c"), 1)


@pytest.mark.slow
def test_a_dry_run_plans_seras_jobs_and_no_alpha_search_for_it(tmp_path):
    config = load(REPO / ".test" / "config.yaml")
    config["experiments"] = {
        "dice": {"iterations": 1},
        "sera_dpo": {"method": "sera", "iterations": 2, "noise_fraction": 0.2},
        "sera_ipo": {"method": "sera", "iterations": 1, "train": {"loss_type": "ipo"}},
    }
    wd = workdir(tmp_path, config)
    jobs = planned_jobs(wd)
    # three SeRA iterations: each scores D_offline and mixes; one noisy copy of D_offline, and
    # the noisy run's own pi_theta^(0) trained on it
    assert jobs["sera_offline_logps"] == jobs["sera_mix"] == 3
    assert jobs["noisy_offline"] == jobs["noisy_start_policy"] == 1
    # DICE's alpha search, mix and reference log-probs for DICE's one iteration alone
    assert jobs["search_alpha"] == jobs["mix"] == jobs["ref_logps"] == 1
    # clean SeRA-IPO samples from the shared start policy with its own decoding, the noisy
    # SeRA-DPO from its own start policy: each of its iterations samples
    assert jobs["sample"] == 1 + 1 + 2 and jobs["score"] == 1 + 1 + 2
    # four policies, the base model and the noisy run's own pi_theta^(0) evaluated
    assert jobs["train"] == 4 and jobs["eval"] == 4 + 1 + 1
    out = snakemake("-n", cwd=wd).stdout
    start = out[out.index("rule noisy_start_policy:") :].split("\n\n")[0]
    assert "results/toy/models/sft" in start and "offline_noisy.parquet" in start, start
