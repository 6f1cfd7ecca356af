"""Building blocks of the transformer: embedding, RMSNorm, RoPE, soft-capping and the GeGLU MLP.

Every parameter is created with logical axis names (`nn.with_logical_partitioning`) so that
`bonjax.sharding` can place it on a mesh; the model itself never sees a mesh.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# Initializers: unit-variance embeddings (they are scaled by sqrt(embed_dim) on the way in) and
# fan-in scaled kernels.
embedding_init = nn.initializers.normal(stddev=1.0)


def kernel_init(in_axes: tuple[int, ...], out_axes: tuple[int, ...]) -> nn.initializers.Initializer:
  """LeCun-normal initializer for an einsum kernel whose fan-in spans `in_axes`."""
  return nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal', in_axis=in_axes,
                                          out_axis=out_axes)


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
  """Squashes x smoothly into (-cap, cap): cap * tanh(x / cap). Identity when cap is None."""
  if cap is None:
    return x
  return cap * jnp.tanh(x / cap)


def apply_rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  """Rotary position embedding of x [B, L, heads, head_dim] at positions [B, L].

  The head dimension is split in two halves (x1, x2) that rotate as the real and imaginary parts
  of complex numbers; pair i turns by angle position / base**(2i / head_dim). This is the
  half-split convention of Gemma (and of Hugging Face's `rotate_half`), not the interleaved one.
  """
  half = x.shape[-1] // 2
  inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) * 2 / x.shape[-1])
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, L, half]
  sin = jnp.sin(angles)[:, :, None, :]  # broadcast over heads
  cos = jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


class RMSNorm(nn.Module):
  """Root-mean-square norm with Gemma's (1 + scale) gain: a zero-initialized scale is identity."""

  eps: float = 1e-6
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                             ('embed',)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


class Embedder(nn.Module):
  """Tied token embedding: `encode` looks tokens up, `decode` maps activations to vocab logits."""

  vocab_size: int
  embed_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embedding = self.param(
        'embedding', nn.with_logical_partitioning(embedding_init, ('vocab', 'embed')),
        (self.vocab_size, self.embed_dim), self.param_dtype)

  def encode(self, tokens: jax.Array) -> jax.Array:
    """tokens [B, L] -> activations [B, L, D], scaled by sqrt(D) as in Gemma."""
    x = jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)
    # Gemma rounds the normalizer to the activation dtype; do the same so bf16 runs match it.
    return x * jnp.sqrt(self.embed_dim).astype(self.dtype)

  def decode(self, x: jax.Array) -> jax.Array:
    """Activations [B, L, D] -> logits [B, L, V] through the transposed embedding table."""
    return jnp.einsum('BLD,VD->BLV', x, self.embedding.astype(self.dtype))


class FeedForward(nn.Module):
  """GeGLU MLP: down(gelu_tanh(x @ gate) * (x @ up))."""

  embed_dim: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    def kernel(name, shape, names):
      init = nn.with_logical_partitioning(kernel_init((0,), (1,)), names)
      return self.param(name, init, shape, self.param_dtype).astype(self.dtype)

    gate = kernel('gate', (self.embed_dim, self.mlp_dim), ('embed', 'mlp'))
    up = kernel('up', (self.embed_dim, self.mlp_dim), ('embed', 'mlp'))
    down = kernel('down', (self.mlp_dim, self.embed_dim), ('mlp', 'embed'))
    hidden = nn.gelu(x @ gate, approximate=True) * (x @ up)
    hidden = nn.with_logical_constraint(hidden, ('batch', 'length', 'mlp'))
    return hidden @ down
