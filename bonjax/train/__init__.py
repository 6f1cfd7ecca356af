"""bonjax.train: methods, the one sharded train step, rollouts, the resumable loop, checkpoints.

    from bonjax import train
    train.train(workdir, model=..., method=train.PolicyGradient('bon_rl_s', bon_n=4), task=...,
                rollout=train.Rollout(num_samples=8), verifier=..., reward=..., num_steps=100,
                batch_size=16)
"""

from bonjax.train.init import HfCheckpoint, InitFrom, WarmStart
from bonjax.train.loop import RunDirectoryError, train
from bonjax.train.metrics import read_metrics
from bonjax.train.methods import (METHODS, WEIGHTS, BonSft, Dco, Method, PolicyGradient, Policy,
                                  RewardBce, Sft)
from bonjax.train.optimizers import optimizer
from bonjax.train.rollout import Rollout, Scorer, rollout_metrics
from bonjax.train.state import TrainState, abstract_state, create_state, state_shardings
from bonjax.train.steps import make_train_step, train_step

__all__ = ['BonSft', 'Dco', 'HfCheckpoint', 'InitFrom', 'METHODS', 'Method', 'Policy',
           'PolicyGradient', 'RewardBce', 'Rollout', 'RunDirectoryError', 'Scorer', 'Sft',
           'TrainState', 'WEIGHTS', 'WarmStart', 'abstract_state', 'create_state',
           'make_train_step', 'optimizer', 'read_metrics', 'rollout_metrics', 'state_shardings',
           'train', 'train_step']
