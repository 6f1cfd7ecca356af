"""Building blocks of the transformer: embedding, RMSNorm, RoPE, soft-capping and the gated MLP.

Every parameter is created with logical axis names (`nn.with_logical_partitioning`) so that
`bonjax.sharding` can place it on a mesh; the model itself never sees a mesh.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from bonjax.models.config import GELU_TANH, LINEAR, SILU, RopeScaling


def kernel_init(in_axes: tuple[int, ...], out_axes: tuple[int, ...]) -> nn.initializers.Initializer:
  """LeCun-normal initializer for an einsum kernel whose fan-in spans `in_axes`."""
  return nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal', in_axis=in_axes,
                                          out_axis=out_axes)


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
  """Squashes x smoothly into (-cap, cap): cap * tanh(x / cap). Identity when cap is None."""
  if cap is None:
    return x
  return cap * jnp.tanh(x / cap)


def rope_inv_freq(head_dim: int, base: float, scaling: RopeScaling | None = None) -> jax.Array:
  """The head_dim // 2 inverse frequencies of RoPE, base**(-2i / head_dim), rescaled by `scaling`.

  Without scaling this is the original RoPE. 'linear' divides them all by the factor; 'llama3'
  (Llama 3.1's long-context recipe) divides those of wavelength above original_context_len /
  low_freq_factor, keeps those below original_context_len / high_freq_factor and interpolates
  linearly in original_context_len / wavelength between the two.
  """
  half = head_dim // 2
  inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) * 2 / head_dim)
  if scaling is None:
    return inv_freq
  if scaling.kind == LINEAR:
    return inv_freq / scaling.factor
  wavelength = 2 * math.pi / inv_freq
  context = scaling.original_context_len
  long_wavelength = context / scaling.low_freq_factor  # beyond it: divided by the factor
  short_wavelength = context / scaling.high_freq_factor  # below it: unchanged
  smooth = ((context / wavelength - scaling.low_freq_factor)
            / (scaling.high_freq_factor - scaling.low_freq_factor))
  ramp = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
  scaled = jnp.where(wavelength > long_wavelength, inv_freq / scaling.factor, inv_freq)
  return jnp.where((wavelength >= short_wavelength) & (wavelength <= long_wavelength), ramp,
                   scaled)


def apply_rope(x: jax.Array, positions: jax.Array, base: float,
               scaling: RopeScaling | None = None) -> jax.Array:
  """Rotary position embedding of x [B, L, heads, head_dim] at positions [B, L].

  The head dimension is split in two halves (x1, x2) that rotate as the real and imaginary parts
  of complex numbers; pair i turns by angle position * rope_inv_freq(...)[i]. This is the
  half-split convention of Gemma (and of Hugging Face's `rotate_half`), not the interleaved one.
  """
  inv_freq = rope_inv_freq(x.shape[-1], base, scaling)
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, L, half]
  sin = jnp.sin(angles)[:, :, None, :]  # broadcast over heads
  cos = jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


class RMSNorm(nn.Module):
  """Root-mean-square norm over the last axis, with a learned gain per feature.

  unit_offset=True: Gemma's (1 + scale) gain, scale initialized to zero (identity). False: the
  Llama / Qwen gain `scale`, initialized to one, applied after casting back to the input dtype
  as they do. `axis_name` is the logical name of the normalized axis (for sharding).
  """

  eps: float = 1e-6
  param_dtype: jnp.dtype = jnp.float32
  unit_offset: bool = True
  axis_name: str = 'embed'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.zeros_init() if self.unit_offset else nn.initializers.ones_init()
    scale = self.param('scale', nn.with_logical_partitioning(init, (self.axis_name,)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    if self.unit_offset:
      return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)
    return scale.astype(x.dtype) * normed.astype(x.dtype)


class Embedder(nn.Module):
  """Token embedding: `encode` looks tokens up, `decode` maps activations to vocab logits.

  Tied (the default) decodes through the embedding table itself; untied through its own
  'unembedding' table [V, D], laid out like the embedding so both decode the same way.
  """

  vocab_size: int
  embed_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  scale_inputs: bool = True
  tied: bool = True

  def setup(self):
    # Std 1/sqrt(D): the input (scaled by sqrt(D)) then has unit-scale entries and the tied
    # output logits start with unit variance, so a fresh model starts near loss log(V).
    init = nn.with_logical_partitioning(nn.initializers.normal(stddev=self.embed_dim ** -0.5),
                                        ('vocab', 'embed'))
    shape = (self.vocab_size, self.embed_dim)
    self.embedding = self.param('embedding', init, shape, self.param_dtype)
    if not self.tied:
      self.unembedding = self.param('unembedding', init, shape, self.param_dtype)

  def encode(self, tokens: jax.Array) -> jax.Array:
    """tokens [B, L] -> activations [B, L, D], scaled by sqrt(D) as in Gemma if scale_inputs."""
    x = jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)
    if not self.scale_inputs:
      return x
    # Gemma rounds the normalizer to the activation dtype; do the same so bf16 runs match it.
    return x * jnp.sqrt(self.embed_dim).astype(self.dtype)

  def decode(self, x: jax.Array) -> jax.Array:
    """Activations [B, L, D] -> logits [B, L, V] through the (transposed) output table."""
    table = self.embedding if self.tied else self.unembedding
    return jnp.einsum('BLD,VD->BLV', x, table.astype(self.dtype))


class FeedForward(nn.Module):
  """Gated MLP: down(act(x @ gate) * (x @ up)); GeGLU with gelu_tanh, SwiGLU with silu."""

  embed_dim: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  activation: str = GELU_TANH

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    def kernel(name, shape, names):
      init = nn.with_logical_partitioning(kernel_init((0,), (1,)), names)
      return self.param(name, init, shape, self.param_dtype).astype(self.dtype)

    gate = kernel('gate', (self.embed_dim, self.mlp_dim), ('embed', 'mlp'))
    up = kernel('up', (self.embed_dim, self.mlp_dim), ('embed', 'mlp'))
    down = kernel('down', (self.mlp_dim, self.embed_dim), ('mlp', 'embed'))
    act = nn.silu if self.activation == SILU else functools.partial(nn.gelu, approximate=True)
    if x.shape[1] == 1:
      # A decode step: XLA would rebuild the stacked kernels below at every step of the loop.
      hidden = act(x @ gate) * (x @ up)
    else:
      # One [B*L, D] x [D, 2F] product for both projections, not two of [D, F]: on CPU the
      # train step runs 1.2x faster (benchmarks/train_step.py), and stacking on a new axis
      # keeps each kernel's 'mlp' sharding where a concatenation along it would reshuffle them.
      both = jnp.einsum('bld,kdf->blkf', x, jnp.stack([gate, up]))
      hidden = act(both[..., 0, :]) * both[..., 1, :]
    hidden = nn.with_logical_constraint(hidden, ('batch', 'length', 'mlp'))
    return hidden @ down
