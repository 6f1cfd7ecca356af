"""Transformer configuration: one frozen dataclass and the named presets.

A config fully describes the architecture (and the dtypes it runs in); it holds no weights and no
mesh. Change a preset with `dataclasses.replace(get_config('tiny'), num_kv_heads=1)`: every field is
validated again, so a bad combination fails at construction with a message that says what is valid.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# Attention types, one per layer (the config's `attention_types` pattern repeats over the layers).
GLOBAL = 'global'  # attends to every earlier token
LOCAL = 'local'  # sliding window: attends only to the last `sliding_window` positions
ATTENTION_TYPES = (GLOBAL, LOCAL)


def _dtype_name(value: Any, field: str) -> str:
  try:
    return jnp.dtype(value).name
  except TypeError as e:
    raise TypeError(f'{field}={value!r} is not a dtype (use e.g. "float32" or jnp.bfloat16)') from e


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and options of a Gemma-family decoder-only transformer.

  Attributes:
    vocab_size: rows of the (tied) embedding table.
    num_layers: number of transformer blocks.
    embed_dim: model width d_model (the residual stream).
    num_heads: query heads.
    num_kv_heads: key/value heads: num_heads -> multi-head, 1 -> multi-query, in between -> grouped.
    head_dim: width of each attention head.
    mlp_dim: hidden width of the GeGLU MLP (each of the gate and up projections).
    rope_base: RoPE wavelength base.
    query_pre_attn_scalar: queries are scaled by query_pre_attn_scalar**-0.5; None -> head_dim.
    attn_logits_softcap: if set, attention logits become cap * tanh(logits / cap) (Gemma 2).
    final_logits_softcap: if set, output logits become cap * tanh(logits / cap) (Gemma 2).
    attention_types: per-layer pattern of 'global' / 'local', repeated to num_layers layers.
    sliding_window: window of 'local' layers: a query at position q sees keys at q - window < k <= q.
    use_post_attn_norm: RMSNorm the attention output before the residual add (Gemma 2).
    use_post_ffw_norm: RMSNorm the MLP output before the residual add (Gemma 2).
    norm_eps: RMSNorm epsilon.
    dtype: activation / computation dtype (e.g. 'bfloat16'); logits are always returned in float32.
    param_dtype: dtype the parameters are created in.
    remat: rematerialize each block in the backward pass (saves activation memory).
  """

  vocab_size: int
  num_layers: int
  embed_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope_base: float = 10_000.0
  query_pre_attn_scalar: float | None = None
  attn_logits_softcap: float | None = None
  final_logits_softcap: float | None = None
  attention_types: tuple[str, ...] = (GLOBAL,)
  sliding_window: int | None = None
  use_post_attn_norm: bool = False
  use_post_ffw_norm: bool = False
  norm_eps: float = 1e-6
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  remat: bool = False

  def __post_init__(self):
    # Normalize so that equal configs compare (and hash) equal and serialize as plain text.
    object.__setattr__(self, 'dtype', _dtype_name(self.dtype, 'dtype'))
    object.__setattr__(self, 'param_dtype', _dtype_name(self.param_dtype, 'param_dtype'))
    if isinstance(self.attention_types, str):
      object.__setattr__(self, 'attention_types', (self.attention_types,))
    object.__setattr__(self, 'attention_types', tuple(self.attention_types))
    self._validate()

  def _validate(self):
    for name in ('vocab_size', 'num_layers', 'embed_dim', 'num_heads', 'num_kv_heads', 'head_dim',
                 'mlp_dim'):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f'num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads}):'
          f' each key/value head serves num_heads // num_kv_heads query heads')
    if self.head_dim % 2:
      raise ValueError(f'head_dim must be even for RoPE, got {self.head_dim}')
    if not self.attention_types:
      raise ValueError('attention_types must name at least one attention type')
    unknown = [t for t in self.attention_types if t not in ATTENTION_TYPES]
    if unknown:
      raise ValueError(f'unknown attention types {unknown}; valid: {list(ATTENTION_TYPES)}')
    if LOCAL in self.attention_types and (self.sliding_window is None or self.sliding_window <= 0):
      raise ValueError(
          f"'{LOCAL}' attention layers need a positive sliding_window, got {self.sliding_window!r}")
    for name in ('query_pre_attn_scalar', 'attn_logits_softcap', 'final_logits_softcap'):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ValueError(f'{name} must be positive or None, got {value!r}')

  @property
  def layer_attention_types(self) -> tuple[str, ...]:
    """The attention type of every layer: `attention_types` repeated to `num_layers`."""
    pattern = self.attention_types
    return tuple(pattern[i % len(pattern)] for i in range(self.num_layers))

  @property
  def query_scale(self) -> float:
    """The factor queries are multiplied by before the dot product with keys."""
    scalar = self.head_dim if self.query_pre_attn_scalar is None else self.query_pre_attn_scalar
    return float(scalar) ** -0.5


# Gemma 1 (https://huggingface.co/google/gemma-2b/blob/main/config.json and gemma-7b): MQA on 2B,
# MHA on 7B, no soft-capping, no post-norms.
# Gemma 2 (https://huggingface.co/google/gemma-2-2b/blob/main/config.json and gemma-2-9b): GQA,
# local (4096-token sliding window) and global layers alternating starting with local, attention
# logits capped at 50 and final logits at 30, post-attention and post-FFW norms,
# query_pre_attn_scalar = 256 (= head_dim for both sizes).
_GEMMA2_COMMON = dict(
    vocab_size=256_000,
    head_dim=256,
    query_pre_attn_scalar=256,
    attn_logits_softcap=50.0,
    final_logits_softcap=30.0,
    attention_types=(LOCAL, GLOBAL),
    sliding_window=4096,
    use_post_attn_norm=True,
    use_post_ffw_norm=True,
)

_PRESETS: dict[str, dict[str, Any]] = {
    # For unit tests: small enough to compile and run in well under a second on a CPU; GQA.
    'tiny': dict(vocab_size=256, num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2,
                 head_dim=16, mlp_dim=128),
    # For CPU experiments: 14.6M parameters, vocabulary sized for a small sentencepiece model.
    'small': dict(vocab_size=4096, num_layers=6, embed_dim=384, num_heads=6, num_kv_heads=2,
                  head_dim=64, mlp_dim=1536),
    'gemma_2b': dict(vocab_size=256_000, num_layers=18, embed_dim=2048, num_heads=8,
                     num_kv_heads=1, head_dim=256, mlp_dim=16_384),
    'gemma_7b': dict(vocab_size=256_000, num_layers=28, embed_dim=3072, num_heads=16,
                     num_kv_heads=16, head_dim=256, mlp_dim=24_576),
    'gemma2_2b': dict(_GEMMA2_COMMON, num_layers=26, embed_dim=2304, num_heads=8, num_kv_heads=4,
                      mlp_dim=9216),
    'gemma2_9b': dict(_GEMMA2_COMMON, num_layers=42, embed_dim=3584, num_heads=16,
                      num_kv_heads=8, mlp_dim=14_336),
}

PRESET_NAMES = tuple(_PRESETS)


def get_config(name: str) -> TransformerConfig:
  """Returns the preset config `name` (one of PRESET_NAMES)."""
  if name not in _PRESETS:
    raise ValueError(f'unknown model preset {name!r}; valid presets: {", ".join(PRESET_NAMES)}')
  return TransformerConfig(**_PRESETS[name])
