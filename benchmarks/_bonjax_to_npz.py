"""The weight bridge to Tunix: a bonjax model's shape, weights and reference logits in one .npz.

    PYTHONPATH=. python benchmarks/_bonjax_to_npz.py --out=/tmp/bonjax_model.npz --num_kv_heads=2

Runs in the bonjax environment; `benchmarks/tunix_grpo.py` reads the file in Tunix's own venv,
which has no bonjax. The file holds:
  config_json        the `bonjax.models.TransformerConfig` as JSON (every field).
  param/<path>       every parameter, the tree flattened with '/'-joined names
                     (param/embedder/embedding [V, D], param/layer_0/attn/q [D, N, H], ...).
  check_tokens       int32 [2, 24] random tokens, and
  check_logits       f32 [2, 24, V] bonjax's logits on them (positions arange, no padding): the
                     reader's model must reproduce them.
  prompts            int32 [num_prompts, prompt_len] the RL benchmark's prompts (no padding).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bonjax import models

CHECK_SHAPE = (2, 24)


def benchmark_config(vocab_size: int = 512, num_layers: int = 4, embed_dim: int = 256,
                     num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 64,
                     mlp_dim: int | None = None) -> models.TransformerConfig:
  """The RL benchmark's model (the 'small' size of benchmarks/sampling.py, with GQA by default).

  mlp_dim defaults to ~8/3 embed_dim rounded to a multiple of 64 (704 for 256), as there.
  """
  if mlp_dim is None:
    mlp_dim = 64 * round(8 * embed_dim / 3 / 64)
  return models.TransformerConfig(vocab_size=vocab_size, num_layers=num_layers,
                                  embed_dim=embed_dim, num_heads=num_heads,
                                  num_kv_heads=num_kv_heads, head_dim=head_dim, mlp_dim=mlp_dim)


def init_params(config: models.TransformerConfig, seed: int) -> Any:
  """Random parameters of `Transformer(config)` (unboxed), from `jax.random.key(seed)`.

  The norm scales, which the model initializes to zero, are drawn from N(0, 0.1^2) instead, so
  that the reader's logit check also tests that it applies them as (1 + scale).
  """
  model = models.Transformer(config)
  init_key, norm_key = jax.random.split(jax.random.key(seed))
  params = nn.unbox(model.init(init_key, jnp.zeros((1, 4), jnp.int32))['params'])
  flat = traverse_util.flatten_dict(params)
  norm_names = [name for name in flat if name[-1] == 'scale']
  for name, key in zip(norm_names, jax.random.split(norm_key, len(norm_names))):
    flat[name] = 0.1 * jax.random.normal(key, flat[name].shape, flat[name].dtype)
  return traverse_util.unflatten_dict(flat)


def benchmark_prompts(config: models.TransformerConfig, num_prompts: int, prompt_len: int,
                      seed: int) -> np.ndarray:
  """int32 [num_prompts, prompt_len] uniform random token ids."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, config.vocab_size, (num_prompts, prompt_len), dtype=np.int32)


def write_npz(path: str, config: models.TransformerConfig, params: Any,
              prompts: np.ndarray, seed: int = 0) -> None:
  """Writes the bridge file (see the module docstring) for `config` and `params`."""
  check_tokens = jax.random.randint(jax.random.key(seed + 1), CHECK_SHAPE, 0, config.vocab_size,
                                    jnp.int32)
  check_logits = models.Transformer(config).apply({'params': params}, check_tokens)
  arrays = {f'param/{name}': np.asarray(value)
            for name, value in traverse_util.flatten_dict(params, sep='/').items()}
  np.savez(path, config_json=np.array(json.dumps(dataclasses.asdict(config))),
           check_tokens=np.asarray(check_tokens), check_logits=np.asarray(check_logits),
           prompts=np.asarray(prompts, np.int32), **arrays)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
  """The flags `model_from_flags` reads: the model's shape, the prompts' shape and the seed."""
  parser.add_argument('--vocab_size', type=int, default=512)
  parser.add_argument('--num_layers', type=int, default=4)
  parser.add_argument('--embed_dim', type=int, default=256)
  parser.add_argument('--num_heads', type=int, default=4)
  parser.add_argument('--num_kv_heads', type=int, default=2)
  parser.add_argument('--head_dim', type=int, default=64)
  parser.add_argument('--mlp_dim', type=int, default=None, help='default: ~8/3 embed_dim')
  parser.add_argument('--num_prompts', type=int, default=4)
  parser.add_argument('--prompt_len', type=int, default=16)
  parser.add_argument('--seed', type=int, default=0)


def model_from_flags(args: argparse.Namespace
                     ) -> tuple[models.TransformerConfig, Any, np.ndarray]:
  """(config, random params, prompts) as the `add_model_flags` flags say."""
  config = benchmark_config(args.vocab_size, args.num_layers, args.embed_dim, args.num_heads,
                            args.num_kv_heads, args.head_dim, args.mlp_dim)
  prompts = benchmark_prompts(config, args.num_prompts, args.prompt_len, args.seed)
  return config, init_params(config, args.seed), prompts


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='the .npz to write')
  add_model_flags(parser)
  args = parser.parse_args()
  config, params, prompts = model_from_flags(args)
  write_npz(args.out, config, params, prompts, args.seed)
  print(f'wrote {args.out}: {config}')


if __name__ == '__main__':
  main()
