"""Training throughput: the policy-gradient step against a jnp.dot roofline, the share of the BoN
weights in a step, and one whole RL iteration with a code verifier, all measured in one run.

    PYTHONPATH=. python benchmarks/train_step.py
    PYTHONPATH=. python benchmarks/train_step.py --sizes=small --repeats=3

Work: 4 prompts of 16 tokens x M = 16 samples x 64 new tokens (rows of 79 tokens), float32.
Models (random weights): small: 4 layers, d_model 256; large: 8 layers, d_model 512 (as in
benchmarks/sampling.py). Reported:
  1. step FLOP/s: `bonjax.train.make_train_step` with PolicyGradient('bon_rl_s', bon_n=4) on one
     device, against the FLOP/s of the fastest 1024^3 jnp.dot of this run (target >= 60% at
     d >= 256); each prompt run once as its samples' shared prefix (what training runs) and, for
     the ratio, repeated before each sample (`Policy(share_prompt=False)`). FLOPs are those each
     program executes (`step_flops`): `models.flops_per_token` (forward + backward) of the tokens
     it runs at the context they attend to, the vocabulary projection at the scored positions.
  2. BoN weights at M = 32: `objectives.bon_rl_weights` jitted alone, as a share of the step on
     the same batch (target < 2%).
  3. one RL iteration (rollout + update) with the sandboxed code verifier on 64 programs, the
     rollout in 4 chunks whose verification overlaps the next chunk's decoding: the time split
     into sampling / verifying / updating and the share of the iteration the device is idle,
     waiting for the host's scores (target < 20%); with the update streamed over the chunks
     (each differentiated while the next is verified, as `bonjax train` does when
     train.microbatches is a multiple of Rollout.chunks) and, for the ratio, waiting for all;
     and, for the ratio, streamed with an interpreter started per program instead of the
     sandbox's fork server (`Sandbox(fork_server=False)`).
The whole iteration against Tunix's GRPOLearner (same model, weights and workload, in its own
venv) is benchmarks/rl_iteration.py.
Times are medians of --repeats runs after a warm-up (compile); ratios are within this run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import sampling as sampling_bench
from bonjax import data, models, objectives, sampling, sharding, verifiers
from bonjax import train as train_lib

NUM_PROMPTS, PROMPT_LEN, NUM_SAMPLES, NEW_TOKENS = 4, 16, 16, 64
CHUNKS = 4


def config_of(size: str) -> models.TransformerConfig:
  return sampling_bench.bonjax_config(size)


def rollout_batch(config, num_samples=NUM_SAMPLES, seed=0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  shape = (NUM_PROMPTS, num_samples)
  return {'prompts': rng.integers(4, config.vocab_size, (NUM_PROMPTS, PROMPT_LEN), np.int32),
          'prompt_lengths': np.full(NUM_PROMPTS, PROMPT_LEN, np.int32),
          'tokens': rng.integers(4, config.vocab_size, shape + (NEW_TOKENS,), np.int32),
          'lengths': np.full(shape, NEW_TOKENS, np.int32),
          'logprobs': -rng.random(shape + (NEW_TOKENS,), np.float32),
          'scores': rng.random(shape, np.float32),
          'rewards': (rng.random(shape) > 0.5).astype(np.float32)}


def make_step(config, method=None, sampler=sampling.Temperature(1.0), share_prompt=True,
              microbatches=1):
  model = models.Transformer(config)
  mesh = sharding.make_mesh('data:1', jax.devices()[:1])
  tx = train_lib.optimizer('adam', 1e-5)
  policy = train_lib.Policy(model, sampler, share_prompt=share_prompt)
  step = train_lib.make_train_step(policy, tx, method or train_lib.PolicyGradient('bon_rl_s',
                                                                                  bon_n=4),
                                   mesh=mesh, microbatches=microbatches)
  state = train_lib.create_state(model, tx, jax.random.key(0), mesh)
  return model, step, state


def time_step(step, state, batch, repeats) -> tuple[float, object]:
  holder = {'state': state}

  def run():
    holder['state'], metrics = step(holder['state'], batch)
    jax.block_until_ready(metrics)

  return sampling_bench.timed(run, repeats), holder['state']


def step_flops(config, batch, share_prompt: bool) -> float:
  """Forward + backward FLOPs of the step's program (its prompts shared or repeated)."""
  prompts, samples, length = batch['tokens'].shape
  rows, fed, context = prompts * samples, length - 1, PROMPT_LEN + length - 1
  head = 6 * config.vocab_size * config.embed_dim  # projected at the `length` scored positions
  body = lambda seq: models.flops_per_token(config, seq) - head
  if share_prompt:
    tokens = prompts * PROMPT_LEN * body(PROMPT_LEN) + rows * fed * body(context)
  else:
    tokens = rows * context * body(context)
  return tokens + rows * length * head


def weights_share(config, repeats) -> tuple[float, float]:
  batch = rollout_batch(config, num_samples=32)
  _, step, state = make_step(config)
  step_s, _ = time_step(step, state, batch, repeats)
  scores, rewards = jnp.asarray(batch['scores']), jnp.asarray(batch['rewards'])
  weights_s = sampling_bench.timed(
      lambda: objectives.bon_rl_weights(scores, rewards, 4).block_until_ready(), max(repeats, 20))
  return weights_s, step_s


def code_task(config) -> tuple[data.Tokenizer, dict]:
  """Prompts asking for a one-line function, with HumanEval-style tests, and their tokenizer."""
  texts = [f'def add_{i}(x):\n    return x + {i}\n' for i in range(200)]
  # These texts hold fewer pieces than the model's 512 ids (256 of them byte fallbacks): the
  # tokenizer is smaller and the model's vocabulary padded, which the rollout never samples.
  tokenizer = data.Tokenizer.train(texts, vocab_size=min(config.vocab_size, 300))
  prompts = [f'def add_{i}(x):\n' for i in range(NUM_PROMPTS)]
  metadata = [{'prompt': p, 'entry_point': f'add_{i}',
               'test': f'def check(candidate):\n    assert candidate(1) == {1 + i}\n'}
              for i, p in enumerate(prompts)]
  tokens, lengths = tokenizer.encode(prompts, max_len=PROMPT_LEN)
  batch = {'prompts': tokens, 'prompt_lengths': lengths, 'metadata': metadata,
           'index': np.arange(NUM_PROMPTS)}
  return tokenizer, batch


def rl_iteration(config, repeats, verifier, stream: bool) -> dict[str, float]:
  """The training loop's iteration: with `stream`, the update accumulates each rollout chunk as
  it is scored (4 chunks, 4 microbatches); without, it waits for the whole rollout."""
  tokenizer, batch = code_task(config)
  # As the training loop does for a padded vocabulary: sample, and differentiate, decodable ids.
  sampler = sampling.ValidTokens(sampling.Temperature(1.0), tokenizer.vocab_size)
  model, step, state = make_step(config, train_lib.PolicyGradient('bon_rlb_p', bon_n=4), sampler,
                                 microbatches=CHUNKS)
  # As experiments/base/humaneval.gin trains: the tests are the task reward and no separate
  # verifier scores (BoN-RLB(P) needs the binary reward only), so each program runs once.
  scorer = train_lib.Scorer(None, verifier, max_workers=4)
  rollout = train_lib.Rollout(num_samples=NUM_SAMPLES, max_new_tokens=NEW_TOKENS, chunks=CHUNKS,
                              sampler=sampler)
  runs = []
  try:
    for i in range(repeats + 1):
      total = None

      def accumulate(chunk):
        nonlocal total
        total = step.accumulate(state.params, total, chunk, microbatches=1)
        return total

      start = time.perf_counter()
      arrays, info = rollout(model, state.params, batch, step_key=jax.random.key(i),
                             tokenizer=tokenizer, scorer=scorer, prompt_format='{prompt}',
                             on_chunk=accumulate if stream else None)
      rolled = time.perf_counter()
      state, metrics = (step.apply(state, total, CHUNKS) if stream else step(state, arrays))
      jax.block_until_ready(metrics)
      done = time.perf_counter()
      seconds = info['seconds']
      runs.append({'iteration': done - start, 'sampling': seconds['sampling'],
                   'verifying': seconds['verifying'], 'device_idle': seconds['device_idle'],
                   'updating': done - rolled})
  finally:
    scorer.close()
  return {k: statistics.median(r[k] for r in runs[1:]) for k in runs[0]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='small,large')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  peak = sampling_bench.peak_flops(args.repeats)
  print(f'roofline: 1024^3 float32 jnp.dot = {peak / 1e9:.1f} GFLOP/s')
  for size in args.sizes.split(','):
    config = config_of(size)
    print(f'\n== {size}: {config.num_layers} layers, d_model {config.embed_dim}, '
          f'{models.param_count(config):,} parameters')
    batch = rollout_batch(config)
    print(f'1. policy-gradient step, {NUM_PROMPTS} prompts of {PROMPT_LEN} tokens x '
          f'{NUM_SAMPLES} samples of {NEW_TOKENS}:')
    times = {}
    for share_prompt, label in ((True, 'prompt shared  '), (False, 'prompt repeated')):
      _, step, state = make_step(config, share_prompt=share_prompt)
      times[share_prompt], _ = time_step(step, state, batch, args.repeats)
      flops = step_flops(config, batch, share_prompt)
      achieved = flops / times[share_prompt]
      print(f'   {label} {times[share_prompt] * 1e3:7.1f} ms, {flops / 1e9:6.1f} GFLOP, '
            f'{achieved / 1e9:5.1f} GFLOP/s = {achieved / peak:.0%} of the dot peak')
    print(f'   sharing the prompt: {times[False] / times[True]:.2f}x faster')
    weights_s, step_s = weights_share(config, args.repeats)
    print(f'2. bon_rl_weights at M = 32: {weights_s * 1e3:.3f} ms of a {step_s * 1e3:.1f} ms step '
          f'= {weights_s / step_s:.2%}')
    print(f'3. RL iteration with the code verifier ({NUM_PROMPTS * NUM_SAMPLES} programs, '
          f'{CHUNKS} chunks):')
    iterations = {}
    for stream, fork_server, label in ((True, True, 'update streamed   '),
                                       (False, True, 'update waits      '),
                                       (True, False, 'streamed, fresh interpreters')):
      verifier = verifiers.CodeExecution(timeout_s=5.0, fork_server=fork_server)
      it = iterations[stream, fork_server] = rl_iteration(config, args.repeats, verifier, stream)
      print(f'   {label} {it["iteration"]:.2f} s = sampling {it["sampling"]:.2f} s + the rest of '
            f'the update {it["updating"]:.2f} s; verifying {it["verifying"]:.2f} s of host '
            f'work; the device idle {it["device_idle"]:.2f} s '
            f'({it["device_idle"] / it["iteration"]:.0%})')
    print(f'   the fork server against an interpreter started per program: '
          f'{iterations[True, False]["iteration"] / iterations[True, True]["iteration"]:.2f}x '
          f'faster iteration')


if __name__ == '__main__':
  main()
