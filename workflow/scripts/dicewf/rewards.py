"""The implicit rewards that DICE and SeRA rank responses by (numpy and pandas only).

DPO's implicit reward (DICE Eq. 4, SeRA Eq. 5's terms) is ``beta * (log pi_theta(y|x) - log
pi_ref(y|x))``; SimPO's (SeRA Appendix C.3, Eq. 17) is the length-normalised log-probability
``beta / |y| * log pi_theta(y|x)``, with no reference. :func:`dicewf.scoring.score` computes the
first for every sampled response, :mod:`dicewf.sera` the margins of pairs from both.
"""

from __future__ import annotations


def implicit_reward(logp_policy, logp_ref, beta):
    """DPO's implicit reward ``beta * (logp_policy - logp_ref)``, elementwise."""
    return beta * (logp_policy - logp_ref)


def simpo_reward(logp_policy, n_tokens, beta):
    """SimPO's reward ``beta * logp_policy / n_tokens`` (the mean log-prob per token), elementwise."""
    return beta * logp_policy / n_tokens
