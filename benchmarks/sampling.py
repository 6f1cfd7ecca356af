"""Sampling throughput: bonjax.sampling.generate vs a naive JAX sampler vs Hugging Face, one run.

    PYTHONPATH=. python benchmarks/sampling.py        # both model sizes, N = 16 and 64
    PYTHONPATH=. python benchmarks/sampling.py --sizes=small --num_samples=16 --repeats=2
    PYTHONPATH=. python benchmarks/sampling.py --prompt_len=256   # long prompts (few-shot MATH)

Work: 4 prompts of 16 tokens (--prompt_len) x N samples x 64 new tokens, temperature 1, no filter.
Models (random weights, float32):
  small: 4 layers, d_model 256, 4 heads of 64, vocab 512;  large: 8 layers, d_model 512, 8 heads.
  bonjax: GeGLU MLP (three matrices) of width ~8/3 d_model rounded to a multiple of 64 (704, 1344),
    so that its FLOPs match GPT-2's two matrices of width 4 d_model within 3%.
  Hugging Face: GPT2LMHeadModel with the same layers / d_model / heads / vocab and n_inner =
    4 * d_model, `generate(do_sample=True, num_return_sequences=N, min_new_tokens=64,
    max_new_tokens=64, top_k=0)` in PyTorch on the CPU, in its own process, the best of torch
    threads = CPU cores and torch threads = 1.
Baselines:
  naive: the same model and sampler in JAX, but it prefills every sample (B * N prefills) and always
    runs all 64 steps (a jitted fori_loop).
Reported: tokens/s (B * N * 64 / wall time, median of --repeats runs after a warm-up), speed-ups,
and achieved FLOP/s (forward FLOPs of the prefill and of every decode step, counting attention over
the filled context) as a fraction of the FLOP/s of a large jnp.dot measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bonjax import models
from bonjax.sampling import Temperature, generate
from bonjax.sampling.samplers import categorical

NUM_PROMPTS, NEW_TOKENS = 4, 64
EOS, PAD = 1, 0

SIZES = {
    'small': dict(num_layers=4, embed_dim=256, num_heads=4),
    'large': dict(num_layers=8, embed_dim=512, num_heads=8),
}


def bonjax_config(size: str) -> models.TransformerConfig:
  shape = SIZES[size]
  return models.TransformerConfig(
      vocab_size=512, num_layers=shape['num_layers'], embed_dim=shape['embed_dim'],
      num_heads=shape['num_heads'], num_kv_heads=shape['num_heads'], head_dim=64,
      mlp_dim=64 * round(8 * shape['embed_dim'] / 3 / 64))


def forward_flops(config: models.TransformerConfig, num_tokens: int, context: float) -> float:
  """Forward FLOPs of `num_tokens` tokens that each attend to `context` tokens on average."""
  matmuls = 2 * models.param_count(config)  # Every weight once per token (the tied unembedding).
  attention = 4 * config.num_layers * config.num_heads * config.head_dim * context
  return num_tokens * (matmuls + attention)


def generation_flops(config: models.TransformerConfig, num_samples: int, prompt_len: int) -> float:
  """Useful FLOPs of one benchmark generation: the prompts' prefill and every decode step."""
  prefill = NUM_PROMPTS * forward_flops(config, prompt_len, (prompt_len + 1) / 2)
  decode = NUM_PROMPTS * num_samples * sum(
      forward_flops(config, 1, prompt_len + t + 1) for t in range(NEW_TOKENS - 1))
  return prefill + decode


def timed(run, repeats: int) -> float:
  """Median wall time of `run()` (which must block until its result is ready) after a warm-up."""
  run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def peak_flops(repeats: int, n: int = 1024) -> float:
  """FLOP/s of the fastest of many n x n x n float32 jnp.dots: the compute roofline of this machine.

  The best run, not the median: one dot is short enough that a busy moment on a shared machine
  would otherwise lower the peak and inflate every fraction of it.
  """
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  best = float('inf')
  for _ in range(max(repeats, 30)):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best


@functools.partial(jax.jit, static_argnames=('model', 'num_samples', 'max_new_tokens'))
def naive_generate(model, params, prompts, rng, *, num_samples, max_new_tokens):
  """The baseline: each sample prefills its own copy of the prompt; no early stop, no EOS."""
  batch, prompt_len = prompts.shape
  rows = jnp.repeat(prompts, num_samples, axis=0)
  cache = models.init_cache(model.config, batch * num_samples, prompt_len + max_new_tokens)
  logits, cache = model.apply({'params': params}, rows, cache=cache)
  keys = jax.random.split(rng, rows.shape[0])
  sampler = Temperature(1.0)

  def step(t, carry):
    tokens, logits, cache = carry
    token, _ = sampler.sample(jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t), logits)
    tokens = tokens.at[:, t].set(token)
    logits, cache = model.apply({'params': params}, token[:, None], cache=cache)
    return tokens, logits[:, 0], cache

  tokens = jnp.zeros((rows.shape[0], max_new_tokens), jnp.int32)
  tokens, logits, _ = jax.lax.fori_loop(0, max_new_tokens - 1, step,
                                        (tokens, logits[:, -1], cache))
  last = categorical(jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, max_new_tokens - 1),
                     jax.nn.log_softmax(logits))
  return tokens.at[:, -1].set(last)


def hugging_face_runner(size: str, prompts: np.ndarray, num_samples: int, threads: int):
  """A zero-argument function running HF generate on an equivalent GPT-2."""
  import torch
  import transformers

  torch.set_num_threads(threads)
  transformers.logging.set_verbosity_error()
  shape = SIZES[size]
  config = transformers.GPT2Config(
      vocab_size=512, n_positions=prompts.shape[1] + NEW_TOKENS, n_embd=shape['embed_dim'],
      n_layer=shape['num_layers'], n_head=shape['num_heads'], n_inner=4 * shape['embed_dim'],
      bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD)
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(config).eval()
  input_ids = torch.as_tensor(prompts, dtype=torch.long)

  def run():
    with torch.inference_mode():
      out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                           num_return_sequences=num_samples, min_new_tokens=NEW_TOKENS,
                           max_new_tokens=NEW_TOKENS, top_k=0, top_p=1.0, temperature=1.0)
    assert out.shape == (NUM_PROMPTS * num_samples, prompts.shape[1] + NEW_TOKENS), out.shape
  return run


def hugging_face_seconds(size: str, prompts: np.ndarray, num_samples: int, repeats: int) -> float:
  """Median seconds of HF generate, timed in a fresh process (no JAX threads competing).

  Best of torch threads = CPU cores and 1 thread: on a busy 2-core machine OpenMP's spin-waiting
  can make the multi-threaded run many times slower, which would flatter bonjax.
  """
  best = float('inf')
  for threads in sorted({os.cpu_count(), 1}, reverse=True):
    result = subprocess.run(
        [sys.executable, __file__, f'--hf_worker={size}:{num_samples}:{threads}',
         f'--prompt_len={prompts.shape[1]}',
         f'--repeats={repeats}'], input=prompts.tobytes(), capture_output=True, check=True)
    best = min(best, float(result.stdout.decode().split()[-1]))
  return best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='small,large')
  parser.add_argument('--num_samples', default='16,64')
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--prompt_len', type=int, default=16)
  parser.add_argument('--skip_hf', action='store_true', help='leave out the Hugging Face baseline')
  parser.add_argument('--hf_worker', default='', help='internal: SIZE:N:THREADS, prompts on stdin')
  args = parser.parse_args()
  if args.hf_worker:
    size, num_samples, threads = args.hf_worker.split(':')
    prompts = np.frombuffer(sys.stdin.buffer.read(), np.int32).reshape(NUM_PROMPTS, args.prompt_len)
    print(timed(hugging_face_runner(size, prompts, int(num_samples), int(threads)), args.repeats))
    return

  print(f'jax {jax.__version__} on {jax.devices()[0].platform}: {len(jax.devices())} device(s), '
        f'{os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.2f}')
  print(f'work: {NUM_PROMPTS} prompts of {args.prompt_len} tokens x N samples x {NEW_TOKENS} new '
        f'tokens')
  peak = peak_flops(args.repeats)
  print(f'roofline: 1024^3 float32 jnp.dot = {peak / 1e9:.1f} GFLOP/s\n')
  header = (f'{"model":6} {"N":>3} {"rows":>4} | {"bonjax tok/s":>12} {"naive tok/s":>11} '
            f'{"HF tok/s":>9} | {"x naive":>7} {"x HF":>6} | {"GFLOP/s":>7} {"roofline":>8}')
  print(header)
  print('-' * len(header))
  rng = np.random.default_rng(0)
  prompts = rng.integers(2, 512, (NUM_PROMPTS, args.prompt_len)).astype(np.int32)
  lengths = np.full((NUM_PROMPTS,), args.prompt_len, np.int32)
  for size in args.sizes.split(','):
    config = bonjax_config(size)
    model = models.Transformer(config)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    params = params['params']
    for num_samples in map(int, args.num_samples.split(',')):
      tokens = NUM_PROMPTS * num_samples * NEW_TOKENS
      ours = timed(lambda: generate(
          model, params, prompts, lengths, num_samples=num_samples, max_new_tokens=NEW_TOKENS,
          rng=jax.random.key(1), eos_id=EOS, pad_id=PAD).tokens.block_until_ready(),
                   args.repeats)
      naive = timed(lambda: naive_generate(
          model, params, jnp.asarray(prompts), jax.random.key(1), num_samples=num_samples,
          max_new_tokens=NEW_TOKENS).block_until_ready(), args.repeats)
      hf = float('nan')
      if not args.skip_hf:
        hf = hugging_face_seconds(size, prompts, num_samples, args.repeats)
      achieved = generation_flops(config, num_samples, args.prompt_len) / ours
      print(f'{size:6} {num_samples:>3} {NUM_PROMPTS * num_samples:>4} | {tokens / ours:>12.0f} '
            f'{tokens / naive:>11.0f} {tokens / hf:>9.0f} | {naive / ours:>7.2f} {hf / ours:>6.2f}'
            f' | {achieved / 1e9:>7.1f} {achieved / peak:>8.1%}')


if __name__ == '__main__':
  main()
