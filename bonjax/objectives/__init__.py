"""Best-of-N objectives: exact BoN math, unbiased metrics, per-sample weights and losses.

Imports only jax, numpy and the standard library, so other JAX code can import it alone:

    from bonjax import objectives as bo
    w = bo.bon_rl_weights(scores, rewards, n=8)          # [batch, M] -> [batch, M]
    loss = bo.policy_gradient_loss(token_logprobs, token_mask, w)

Formulas and their derivations: docs/bon_math.md (cited by section in every docstring) and
docs/objectives.md.
"""

from bonjax.objectives.bon_math import bon_probs, lambda_n, win_rate
from bonjax.objectives.losses import (bon_sft_loss, dco_loss, policy_gradient_loss, sft_loss)
from bonjax.objectives.metrics import bon_at_k, majority_at_k, max_at_k, pass_at_k
from bonjax.objectives.weights import (bon_rl_weights, bon_rlb_weights, grpo_weights, pkpo_weights,
                                       rloo_weights)

__all__ = [
    "bon_probs", "lambda_n", "win_rate",
    "pass_at_k", "bon_at_k", "max_at_k", "majority_at_k",
    "rloo_weights", "grpo_weights", "bon_rl_weights", "bon_rlb_weights", "pkpo_weights",
    "policy_gradient_loss", "sft_loss", "bon_sft_loss", "dco_loss",
]
