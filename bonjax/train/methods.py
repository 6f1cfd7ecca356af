"""Training methods: small frozen objects that turn a batch into a loss.

    method.loss(policy, params, batch, ref_params) -> (scalar loss, {metric: scalar})

A method says what its batch must hold (`needs_rollouts`: M policy samples per prompt with their
verifier scores s and task rewards R; `needs_expert`: the dataset's reference solutions) and
computes its loss with `bonjax.objectives`. The one train step (`bonjax.train.steps`)
differentiates it; the loop fills the batch. A new method is a new class here and a gin file.

    Sft()                         -log pi(y*)                               docs/bon_math.md §5.1
    Dco(n)                        -log(1 - (1 - pi(y*))^n)                  §5.5
    BonSft(n, form)               imitation of y* under the BoN policy      §5.4
    PolicyGradient(weights, n)    -sum_i stop_grad(w_i) log pi(y_i), w from the named estimator:
        rloo       RLOO on the task reward R (standard RL)                  §5.1
        grpo       group-normalized advantages on R                          §5.1
        rl_v       RLOO on the verifier score s (standard RL against a verifier)
        bon_rl_v   BoN-RL-V: the verifier both selects and rewards           §5.2
        bon_rl_s   BoN-RL-S: the verifier selects, the task reward credits   §5.2
        bon_rlb    BoN-RLB, binary R, the paper's closed form                §5.3
        bon_rlb_p  BoN-RLB(P): positive samples only                         §5.3
        pkpo       PKPO pass@n / max@n on R                                  §5.5
    RewardBce()                   BCE(r(x, y), correct): the learned verifier's reward model,
                                  not a policy (`bonjax.train.reward_model` trains it)

Batch layouts (dicts of arrays, leading axis the batch):
  SFT:      inputs, targets, loss_mask, positions, input_mask, segment_ids   [B, L]
            (as `bonjax.data.sft_batches` makes them), valid [B]
  rollout:  prompts [B, P], prompt_lengths [B], tokens, logprobs [B, M, T], lengths [B, M],
            scores, rewards [B, M] (as `bonjax.train.rollout` makes them)
  expert:   expert_tokens [B, 1, T'], expert_lengths [B, 1], expert_scores [B] (with a rollout)
  graded:   tokens [B, L] (BOS prompt completion EOS, right-padded), lengths [B], labels [B]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bonjax import objectives, sampling
from bonjax.train import logprobs as logprobs_lib

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
PyTree = Any


@dataclasses.dataclass(frozen=True)
class Policy:
  """The model and the law it samples from: what is sampled is what is differentiated."""

  model: nn.Module
  sampler: sampling.Sampler = sampling.Temperature(1.0)
  # Each prompt's forward shared by its completions (`bonjax.train.logprobs`); same values.
  share_prompt: bool = True

  def completion_logprobs(self, params: PyTree, batch: Batch, prefix: str = '') -> jax.Array:
    """log pi of batch[prefix + 'tokens'] [B, M, T] given batch['prompts']: f32 [B, M, T]."""
    return logprobs_lib.completion_logprobs(
        self.model, params, batch['prompts'], batch['prompt_lengths'], batch[prefix + 'tokens'],
        completion_lengths=batch[prefix + 'lengths'], sampler=self.sampler,
        share_prompt=self.share_prompt)

  def sft_logprobs(self, params: PyTree, batch: Batch) -> jax.Array:
    """log pi(targets) of an SFT batch under the model's own softmax: f32 [B, L]."""
    return logprobs_lib.token_logprobs(
        self.model, params, batch['inputs'], batch['targets'], positions=batch['positions'],
        input_mask=batch['input_mask'], segment_ids=batch.get('segment_ids'))


def completion_mask(batch: Batch, prefix: str = '') -> jax.Array:
  """bool [B, M, T]: True on the generated tokens of each completion."""
  length = batch[prefix + 'tokens'].shape[-1]
  return jnp.arange(length) < batch[prefix + 'lengths'][..., None]


class Method:
  """Base class. Subclasses are frozen dataclasses (hashable: they are static in the jitted step)."""

  needs_rollouts: ClassVar[bool] = False
  needs_expert: ClassVar[bool] = False
  # Which of the rollout's signals the loss reads; the loop checks they are configured.
  uses_scores: ClassVar[bool] = False
  uses_rewards: ClassVar[bool] = False

  @property
  def n(self) -> int:
    """The BoN size the method optimizes for (1: the single-sample objective)."""
    return 1

  def loss(self, policy: Policy, params: PyTree, batch: Batch,
           ref_params: PyTree | None = None) -> tuple[jax.Array, Metrics]:
    raise TypeError(f'{type(self).__name__} must define loss')


def _sft_token_metrics(token_logprobs: jax.Array, mask: jax.Array) -> Metrics:
  count = jnp.maximum(jnp.sum(mask), 1)
  return {'token_accuracy': jnp.sum(mask & (token_logprobs > jnp.log(0.5))) / count,
          'target_nll_per_token': -jnp.sum(jnp.where(mask, token_logprobs, 0.0)) / count}


@dataclasses.dataclass(frozen=True)
class Sft(Method):
  """Supervised fine-tuning on the dataset's reference solutions (§5.1).

  Attributes:
    reduce: 'token' (loss per target token: learning rates that do not depend on lengths) or
      'sequence' (the exact sequence NLL).
    packing: pack several examples per row (the model masks attention across them).
  """

  reduce: str = 'token'
  packing: bool = False

  def loss(self, policy, params, batch, ref_params=None):
    del ref_params
    token_logprobs = policy.sft_logprobs(params, batch)
    mask = batch['loss_mask'] > 0
    loss = objectives.sft_loss(token_logprobs, mask, reduce=self.reduce)
    return loss, _sft_token_metrics(token_logprobs, mask)


@dataclasses.dataclass(frozen=True)
class Dco(Method):
  """DCO: SFT that stops pushing targets the policy already finds within n tries (§5.5).

  One example per row (no packing), so that each row's sum is one sequence log-probability.
  """

  bon_n: int = 4
  packing: ClassVar[bool] = False

  @property
  def n(self) -> int:
    return self.bon_n

  def loss(self, policy, params, batch, ref_params=None):
    del ref_params
    token_logprobs = policy.sft_logprobs(params, batch)
    mask = batch['loss_mask'] > 0
    seq_logprob = jnp.sum(jnp.where(mask, token_logprobs, 0.0), axis=-1)
    # Rows without a target (padding of the last batch) have p = 1: their DCO loss is 0.
    loss = objectives.dco_loss(seq_logprob, self.bon_n)
    return loss, _sft_token_metrics(token_logprobs, mask)


@dataclasses.dataclass(frozen=True)
class BonSft(Method):
  """BoN-SFT: imitate the reference solution y* under the Best-of-n policy (§5.4).

  Needs M on-policy samples per prompt, scored by the verifier, for the win-rate estimates, and the
  verifier's score of y* itself.

  Attributes:
    bon_n: n.
    form: 'variational' (the paper's view, lambda_n) or 'exact' (gradient of log pi_bon(y*)).
  """

  bon_n: int = 4
  form: str = 'variational'
  needs_rollouts: ClassVar[bool] = True
  needs_expert: ClassVar[bool] = True
  uses_scores: ClassVar[bool] = True

  @property
  def n(self) -> int:
    return self.bon_n

  def loss(self, policy, params, batch, ref_params=None):
    del ref_params
    sample_lp = policy.completion_logprobs(params, batch).sum(-1)
    expert_lp = policy.completion_logprobs(params, batch, prefix='expert_').sum(-1)[:, 0]
    loss = objectives.bon_sft_loss(expert_lp, sample_lp, batch['expert_scores'], batch['scores'],
                                   self.bon_n, self.form)
    return loss, {'expert_logprob': jnp.mean(expert_lp)}


WeightsFn = Callable[[jax.Array, jax.Array, int], jax.Array]

# name -> (w(scores s, rewards R, n) [B, M], reads s, reads R). Weights are stop-gradient inputs.
WEIGHTS: dict[str, tuple[WeightsFn, bool, bool]] = {
    'rloo': (lambda s, r, n: objectives.rloo_weights(r), False, True),
    'grpo': (lambda s, r, n: objectives.grpo_weights(r), False, True),
    'rl_v': (lambda s, r, n: objectives.rloo_weights(s), True, False),
    'bon_rl_v': (lambda s, r, n: objectives.bon_rl_weights(s, s, n), True, False),
    'bon_rl_s': (lambda s, r, n: objectives.bon_rl_weights(s, r, n), True, True),
    'bon_rlb': (lambda s, r, n: objectives.bon_rlb_weights(r > 0.5, n, 'exact'), False, True),
    'bon_rlb_p': (lambda s, r, n: objectives.bon_rlb_weights(r > 0.5, n, 'positive_only'),
                  False, True),
    'pkpo': (lambda s, r, n: objectives.pkpo_weights(r, n), False, True),
}


@dataclasses.dataclass(frozen=True)
class PolicyGradient(Method):
  """On-policy RL with the per-sample weights of a named estimator (module docstring).

  loss = -mean_prompts sum_i w_i sum_t log pi(y_it)   (+ kl_coef * KL(pi || pi_init))

  Attributes:
    weights: a key of `WEIGHTS`.
    bon_n: the n of the BoN estimators (ignored by rloo, grpo and rl_v); at most M.
    reduce: 'sequence' (exact scale) or 'token' (per mean completion length).
    kl_coef: weight of the k3 estimate of KL(pi || initial policy), needs the reference params.
    clip_eps: PPO ratio clipping against the sampling policy's log-probs, for rollouts reused
      for several updates (None: plain on-policy gradient).
  """

  weights: str = 'rloo'
  bon_n: int = 1
  reduce: str = 'sequence'
  kl_coef: float = 0.0
  clip_eps: float | None = None
  needs_rollouts: ClassVar[bool] = True

  def __post_init__(self):
    if self.weights not in WEIGHTS:
      raise ValueError(f'unknown weights {self.weights!r}; valid: {", ".join(WEIGHTS)}')
    if not isinstance(self.bon_n, int) or self.bon_n < 1:
      raise ValueError(f'bon_n must be a positive int, got {self.bon_n!r}')
    if self.kl_coef < 0:
      raise ValueError(f'kl_coef must be >= 0, got {self.kl_coef}')

  @property
  def n(self) -> int:
    return self.bon_n if self.weights not in ('rloo', 'grpo', 'rl_v') else 1

  @property
  def uses_scores(self) -> bool:  # type: ignore[override]
    return WEIGHTS[self.weights][1]

  @property
  def uses_rewards(self) -> bool:  # type: ignore[override]
    return WEIGHTS[self.weights][2]

  def sample_weights(self, scores: jax.Array, rewards: jax.Array) -> jax.Array:
    """The per-sample weights w [B, M] (no gradient flows through them)."""
    return jax.lax.stop_gradient(WEIGHTS[self.weights][0](scores, rewards, self.n))

  def loss(self, policy, params, batch, ref_params=None):
    w = self.sample_weights(batch['scores'], batch['rewards'])
    token_lp = policy.completion_logprobs(params, batch)
    mask = completion_mask(batch)
    ref_lp = None
    metrics = {'weights_abs_mean': jnp.mean(jnp.abs(w)),
               'weights_nonzero': jnp.mean((w != 0).astype(jnp.float32))}
    if ref_params is not None:
      ref_lp = jax.lax.stop_gradient(policy.completion_logprobs(ref_params, batch))
      delta = ref_lp - jax.lax.stop_gradient(token_lp)
      k3 = jnp.where(mask, jnp.exp(delta) - delta - 1.0, 0.0)
      metrics['kl_to_init'] = jnp.sum(k3) / jnp.maximum(jnp.sum(mask), 1)
    elif self.kl_coef:
      raise ValueError('kl_coef > 0 needs the initial policy: train with reference params')
    loss = objectives.policy_gradient_loss(
        token_lp, mask, w, reduce=self.reduce,
        old_logprobs=batch['logprobs'] if self.clip_eps is not None else None,
        clip_eps=self.clip_eps, ref_logprobs=ref_lp if self.kl_coef else None,
        kl_coef=self.kl_coef)
    return loss, metrics


@dataclasses.dataclass(frozen=True)
class RewardBce(Method):
  """Fits a reward model (`bonjax.verifiers.learned.RewardModel`, the `Policy`'s model here) to
  graded samples: the sigmoid binary cross-entropy of its logit on the label (1: correct)."""

  def loss(self, policy, params, batch, ref_params=None):
    del ref_params
    logits = policy.model.apply({'params': params}, batch['tokens'], batch['lengths'])
    loss = optax.sigmoid_binary_cross_entropy(logits, batch['labels']).mean()
    return loss, {'accuracy': jnp.mean((logits > 0) == (batch['labels'] > 0.5))}


# The methods `bonjax.train.train` trains a policy with (and gin configures as train.method).
METHODS: dict[str, type[Method]] = {cls.__name__: cls
                                    for cls in (Sft, Dco, BonSft, PolicyGradient)}
