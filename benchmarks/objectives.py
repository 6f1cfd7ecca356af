"""Times the per-sample weight functions of bonjax.objectives on [batch, M] = [256, 64] under jit.

Each function is compiled and warmed up, then timed over repeated calls (block_until_ready); the
median is reported with its ratio to rloo_weights measured in the same run.

    python benchmarks/objectives.py [--batch 256] [--samples 64] [--repeats 50]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bonjax import objectives as bo


def _median_seconds(fn, args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile
  for _ in range(3):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--samples", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=50)
  args = parser.parse_args()
  batch, num_samples = args.batch, args.samples

  rng = np.random.RandomState(0)
  scores = jnp.asarray(rng.randint(0, 16, (batch, num_samples)), jnp.float32)  # ties included
  rewards = jnp.asarray(rng.rand(batch, num_samples), jnp.float32)
  correct = rewards > 0.7
  candidates = {
      "rloo_weights": (jax.jit(bo.rloo_weights), (rewards,)),
      "grpo_weights": (jax.jit(bo.grpo_weights), (rewards,)),
      "bon_rl_weights n=4 loo": (jax.jit(lambda s, r: bo.bon_rl_weights(s, r, 4)), (scores, rewards)),
      "bon_rl_weights n=16 loo": (jax.jit(lambda s, r: bo.bon_rl_weights(s, r, 16)),
                                  (scores, rewards)),
      "bon_rl_weights n=16 none": (jax.jit(lambda s, r: bo.bon_rl_weights(s, r, 16, "none")),
                                   (scores, rewards)),
      "bon_rl_weights n=M loo": (jax.jit(lambda s, r: bo.bon_rl_weights(s, r, num_samples)),
                                 (scores, rewards)),
      "pkpo_weights k=8": (jax.jit(lambda r: bo.pkpo_weights(r, 8)), (rewards,)),
      "bon_rlb_weights n=8": (jax.jit(lambda c: bo.bon_rlb_weights(c, 8)), (correct,)),
  }
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; weights for [{batch}, "
        f"{num_samples}], median of {args.repeats} calls")
  baseline = None
  for name, (fn, fn_args) in candidates.items():
    seconds = _median_seconds(fn, fn_args, args.repeats)
    baseline = baseline or seconds
    print(f"  {name:<26s} {seconds * 1e6:10.1f} us   {seconds / baseline:6.2f}x rloo_weights")


if __name__ == "__main__":
  main()
