"""When the update can be streamed over a rollout's chunks, and the line saying why not."""

import pytest

from bonjax.train import methods, rollout

RLOO = methods.PolicyGradient('rloo')


@pytest.mark.parametrize('kwargs, chunks, why_not', [
    (dict(batch_size=64, microbatches=8, shards=16), 4, None),
    (dict(batch_size=64, microbatches=8, shards=64), 1,
     "make each chunk's prompts (batch_size / chunks = 16) a multiple of the 64 batch shards"),
    (dict(batch_size=64, microbatches=2, shards=16), 1,
     'make train.microbatches a multiple of 4 (it is 2)'),
    (dict(batch_size=64, microbatches=8, shards=2, processes=32), 1,
     "make each process's 2 prompts a multiple of 4"),
    (dict(batch_size=64, microbatches=8, shards=16, updates_per_rollout=2), 1, None),
])
def test_streamed_chunks(kwargs, chunks, why_not):
  got, why = rollout.streamed_chunks(rollout.Rollout(chunks=4), RLOO, **kwargs)
  assert got == chunks
  assert (why is None) == (why_not is None)
  if why_not:
    assert why.startswith('Rollout.chunks = 4: the update waits for the whole rollout') and (
        why.endswith(why_not)), why


def test_what_is_not_streamed():
  """One chunk, no rollout, or a method that also reads the expert's solution (BoN-SFT)."""
  sizes = dict(batch_size=64, microbatches=8, shards=16)
  assert rollout.streamed_chunks(rollout.Rollout(chunks=1), RLOO, **sizes) == (1, None)
  assert rollout.streamed_chunks(None, methods.Sft(), **sizes) == (1, None)
  assert rollout.streamed_chunks(rollout.Rollout(chunks=4), methods.BonSft(bon_n=2), **sizes) == (
      1, None)
