"""The implicit rewards (dicewf.rewards): DPO's and SimPO's, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dicewf import rewards


def test_the_dpo_reward_is_beta_times_the_policy_minus_the_reference_log_prob():
    # 0.1 * (-3 - (-5)) = 0.2: the policy makes the response more likely than the reference
    assert rewards.implicit_reward(-3.0, -5.0, 0.1) == pytest.approx(0.2)
    # and the other way round: 0.5 * (-7 - (-4)) = -1.5
    assert rewards.implicit_reward(-7.0, -4.0, 0.5) == pytest.approx(-1.5)


def test_the_dpo_reward_is_elementwise_over_columns():
    logp_policy = pd.Series([-3.0, -10.0, -2.0])
    logp_ref = pd.Series([-5.0, -8.0, -2.0])
    got = rewards.implicit_reward(logp_policy, logp_ref, pd.Series([0.1, 0.25, 2.0]))
    np.testing.assert_allclose(got, [0.2, -0.5, 0.0])


def test_the_simpo_reward_is_beta_times_the_mean_log_prob_per_token():
    # 2 * -6 / 3 = -4: the log-prob of 3 tokens averaged, times beta
    assert rewards.simpo_reward(-6.0, 3, 2.0) == pytest.approx(-4.0)
    got = rewards.simpo_reward(np.array([-6.0, -10.0]), np.array([3, 4]), 0.5)
    np.testing.assert_allclose(got, [-1.0, -1.25])
