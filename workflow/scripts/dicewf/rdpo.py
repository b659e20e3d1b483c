"""Length-regularised DPO (R-DPO; Park et al. 2024, "Disentangling length from quality in
direct preference optimization"), the ablation of paper Table 7 that
:func:`dicewf.training.train_dpo` trains with ``length_penalty`` > 0:
:class:`LengthRegularisedDPOTrainer`, a TRL ``DPOTrainer`` whose loss adds
lambda * (|y_w| - |y_l|) to the DPO margin, and :func:`check_length_penalty`.

Importing this module does not import TRL: the trainer class is built on first use.
"""

from __future__ import annotations

import functools
import math
from typing import Any


def check_length_penalty(cfg, length_penalty: float) -> None:
    """Length-regularised DPO is defined for the sigmoid (Bradley-Terry) DPO loss: refuse a
    penalty with any other loss type or with TRL options that change what the margin is."""
    if not math.isfinite(length_penalty) or length_penalty < 0:
        raise ValueError(f"length_penalty must be a finite number >= 0, got {length_penalty}")
    if not length_penalty:
        return
    loss_types = [cfg.loss_type] if isinstance(cfg.loss_type, str) else list(cfg.loss_type)
    if loss_types != ["sigmoid"]:
        raise ValueError(
            f"length_penalty ({length_penalty}) is defined for DPO's sigmoid loss only "
            f"(length-regularised DPO); got loss_type {loss_types}. Use loss_type: sigmoid, "
            "or length_penalty 0"
        )
    if cfg.f_divergence_type != "reverse_kl" or cfg.ld_alpha is not None:
        raise ValueError(
            f"length_penalty ({length_penalty}) needs the plain DPO margin: f_divergence_type "
            f"must be reverse_kl (got {cfg.f_divergence_type!r}) and ld_alpha unset "
            f"(got {cfg.ld_alpha!r})"
        )


def __getattr__(name: str) -> Any:
    # the trainer subclass is built on first use, so importing this module does not import TRL
    if name == "LengthRegularisedDPOTrainer":
        return length_regularised_dpo_trainer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def length_regularised_dpo_trainer() -> type:
    """:class:`LengthRegularisedDPOTrainer` (defined here, on first use, to import TRL lazily)."""
    from trl import DPOTrainer

    class LengthRegularisedDPOTrainer(DPOTrainer):
        """DPO with the length regularisation of Park et al. (2024), "Disentangling length from
        quality in direct preference optimization" (R-DPO):

            loss = -log sigmoid(beta * (logratio_w - logratio_l) + lambda * (|y_w| - |y_l|))

        with logratio = log pi_theta(y|x) - log pi_ref(y|x) summed over the response tokens and
        |y| the number of response tokens (EOS included, after TRL's truncation). lambda > 0
        penalises length. The loss is the Bradley-Terry likelihood of the preferences under the
        reward r = beta * logratio + lambda * |y|, so the length term takes up the part of a
        preference that length explains: a pair whose winner is longer needs a smaller log-ratio
        margin, one whose winner is shorter a larger one, and the policy's implicit reward
        beta * logratio = r - lambda * |y| learns less of a length bias in the data.

        The term is exactly DPO against a reference whose log-probability of each response is
        lowered by (lambda / beta) per token, and that is how it is implemented: the reference
        log-probs of the batch are computed with TRL's own ``compute_ref_log_probs``, shifted,
        and handed to TRL's loss as precomputed reference log-probs, so everything else
        (tokenisation, truncation, logging, distributed gathering) is TRL's. The logged
        ``rewards/*`` are therefore the length-regularised rewards beta * logratio + lambda *
        |y| (what the loss compares); ``rewards/length_margins`` logs the mean lambda * (|y_w| -
        |y_l|), so the plain implicit-reward margin is ``rewards/margins`` minus it.

        Only ``loss_type`` sigmoid (see :func:`check_length_penalty`).
        """

        def __init__(self, *args: Any, length_penalty: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            check_length_penalty(self.args, length_penalty)
            self.length_penalty = float(length_penalty)

        def _compute_loss(self, model, inputs, return_outputs):
            mode = "train" if self.model.training else "eval"
            # response tokens of each sequence: those the (summed) log-probs run over
            lengths = inputs["completion_mask"][:, 1:].sum(dim=1)
            len_chosen, len_rejected = lengths.chunk(2, dim=0)  # the batch is [chosen, rejected]
            if self.precompute_ref_logps:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                reference = self.ref_model if self.ref_model is not None else self.model
                ref_chosen, ref_rejected = self.compute_ref_log_probs(reference, inputs)
            shift = self.length_penalty / self.beta
            shifted = dict(inputs)
            shifted["ref_chosen_logps"] = ref_chosen - shift * len_chosen.to(ref_chosen.dtype)
            shifted["ref_rejected_logps"] = ref_rejected - shift * len_rejected.to(
                ref_rejected.dtype
            )
            length_margins = self.length_penalty * (len_chosen - len_rejected).float()
            self._metrics[mode]["rewards/length_margins"].append(
                self.accelerator.gather_for_metrics(length_margins).mean().item()
            )
            precompute = self.precompute_ref_logps
            self.precompute_ref_logps = True  # TRL reads the reference log-probs off the batch
            try:
                return super()._compute_loss(model, shifted, return_outputs)
            finally:
                self.precompute_ref_logps = precompute

    LengthRegularisedDPOTrainer.__module__ = __name__
    LengthRegularisedDPOTrainer.__qualname__ = "LengthRegularisedDPOTrainer"
    return LengthRegularisedDPOTrainer
