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
# MLP activations: the gate of a gated MLP. GeGLU (Gemma) or SwiGLU (Llama, Qwen).
GELU_TANH = 'gelu_tanh'
SILU = 'silu'
ACTIVATIONS = (GELU_TANH, SILU)
# RoPE frequency scalings (of the global layers) for long contexts.
LINEAR = 'linear'  # every frequency divided by `factor` (Gemma 3's global layers)
LLAMA3 = 'llama3'  # low frequencies divided by `factor`, high ones kept, a smooth ramp between
ROPE_SCALINGS = (LINEAR, LLAMA3)


def _dtype_name(value: Any, field: str) -> str:
  try:
    return jnp.dtype(value).name
  except TypeError as e:
    raise TypeError(f'{field}={value!r} is not a dtype (use e.g. "float32" or jnp.bfloat16)') from e


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """How RoPE frequencies are rescaled to stretch a model's context.

  Attributes:
    kind: 'linear' (every inverse frequency divided by factor, i.e. positions / factor) or
      'llama3' (wavelengths above original_context_len / low_freq_factor divided by factor,
      below original_context_len / high_freq_factor kept, interpolated in between).
    factor: the stretch factor.
    low_freq_factor, high_freq_factor, original_context_len: the llama3 ramp (unused by linear).
  """

  kind: str
  factor: float
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_context_len: int = 8192

  def __post_init__(self):
    if self.kind not in ROPE_SCALINGS:
      raise ValueError(f'unknown RoPE scaling {self.kind!r}; valid: {list(ROPE_SCALINGS)}')
    if not self.factor > 0:
      raise ValueError(f'RoPE scaling factor must be positive, got {self.factor!r}')
    if self.kind == LLAMA3 and not (0 < self.low_freq_factor < self.high_freq_factor
                                    and self.original_context_len > 0):
      raise ValueError(
          f'llama3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor and a positive'
          f' original_context_len, got {self.low_freq_factor}, {self.high_freq_factor},'
          f' {self.original_context_len}')


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and options of a decoder-only transformer (Gemma 1/2/3, Llama 3, Qwen3).

  Every option past `remat` defaults to Gemma 1/2 behaviour; the other families are the same
  decoder with other options (see the presets).

  Attributes:
    vocab_size: rows of the (tied) embedding table.
    num_layers: number of transformer blocks.
    embed_dim: model width d_model (the residual stream).
    num_heads: query heads.
    num_kv_heads: key/value heads: num_heads -> multi-head, 1 -> multi-query, in between -> grouped.
    head_dim: width of each attention head.
    mlp_dim: hidden width of the gated MLP (each of the gate and up projections).
    rope_base: RoPE wavelength base (of every layer, or of the global ones if local_rope_base).
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
    local_rope_base: RoPE base of the 'local' layers; None -> rope_base (Gemma 3: 10k local,
      1M global).
    rope_scaling: RopeScaling of the global layers' RoPE frequencies, or None (local layers are
      never scaled). A dict is accepted and converted, so configs round-trip through JSON.
    qk_norm: RMSNorm each query and key head (over head_dim, before RoPE) (Gemma 3, Qwen3).
    norm_unit_offset: every RMSNorm multiplies by (1 + scale), scale initialized to 0 (Gemma);
      False -> by scale, initialized to 1 (Llama, Qwen).
    activation: gate activation of the MLP: 'gelu_tanh' (GeGLU) or 'silu' (SwiGLU).
    scale_embeddings: multiply the input embeddings by sqrt(embed_dim) (Gemma).
    tie_embeddings: the output projection is the embedding table; False -> its own [V, D] table.
    attention_bias: biases on the q, k, v and output projections of attention.
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
  local_rope_base: float | None = None
  rope_scaling: RopeScaling | None = None
  qk_norm: bool = False
  norm_unit_offset: bool = True
  activation: str = GELU_TANH
  scale_embeddings: bool = True
  tie_embeddings: bool = True
  attention_bias: bool = False

  def __post_init__(self):
    # Normalize so that equal configs compare (and hash) equal and serialize as plain text.
    object.__setattr__(self, 'dtype', _dtype_name(self.dtype, 'dtype'))
    object.__setattr__(self, 'param_dtype', _dtype_name(self.param_dtype, 'param_dtype'))
    if isinstance(self.attention_types, str):
      object.__setattr__(self, 'attention_types', (self.attention_types,))
    object.__setattr__(self, 'attention_types', tuple(self.attention_types))
    if isinstance(self.rope_scaling, dict):
      object.__setattr__(self, 'rope_scaling', RopeScaling(**self.rope_scaling))
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
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'unknown activation {self.activation!r}; valid: {list(ACTIVATIONS)}')
    if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
      raise TypeError(f'rope_scaling must be a RopeScaling (or its dict) or None, got'
                      f' {self.rope_scaling!r}')
    for name in ('query_pre_attn_scalar', 'attn_logits_softcap', 'final_logits_softcap',
                 'local_rope_base'):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ValueError(f'{name} must be positive or None, got {value!r}')

  @property
  def layer_attention_types(self) -> tuple[str, ...]:
    """The attention type of every layer: `attention_types` repeated to `num_layers`."""
    pattern = self.attention_types
    return tuple(pattern[i % len(pattern)] for i in range(self.num_layers))

  def rope(self, attention_type: str) -> tuple[float, RopeScaling | None]:
    """(base, scaling) of the RoPE of layers of `attention_type`."""
    if attention_type == LOCAL:
      return (self.rope_base if self.local_rope_base is None else self.local_rope_base), None
    return self.rope_base, self.rope_scaling

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

# Gemma 3 text (https://huggingface.co/google/gemma-3-1b-pt/blob/main/config.json, and the
# text_config of gemma-3-4b-pt and gemma-3-12b-pt): Gemma 2's layer with RMSNorm on query and key
# heads and no soft-capping; 5 local layers then 1 global one (layer_types); local RoPE base 10k,
# global 1M, stretched linearly by 8 on the 4B and 12B. The 4B and 12B tables have 262,208 rows
# (the multimodal checkpoints' vocabulary, image tokens included), the 1B 262,144.
_GEMMA3_COMMON = dict(
    head_dim=256,
    query_pre_attn_scalar=256,
    attention_types=(LOCAL,) * 5 + (GLOBAL,),
    use_post_attn_norm=True,
    use_post_ffw_norm=True,
    rope_base=1_000_000.0,
    local_rope_base=10_000.0,
    qk_norm=True,
)
_GEMMA3_LONG = dict(_GEMMA3_COMMON, vocab_size=262_208, sliding_window=1024,
                    rope_scaling=RopeScaling(LINEAR, 8.0))
# Qwen3 (https://huggingface.co/Qwen/Qwen3-0.6B/blob/main/config.json, Qwen3-1.7B, Qwen3-4B and
# Qwen3-8B): SwiGLU, plain RMSNorm gains, query/key norms, no biases, RoPE base 1M; only the 8B
# has its own output table (tie_word_embeddings false).
_QWEN3_COMMON = dict(
    vocab_size=151_936,
    head_dim=128,
    num_kv_heads=8,
    rope_base=1_000_000.0,
    qk_norm=True,
    norm_unit_offset=False,
    activation=SILU,
    scale_embeddings=False,
)
# Llama 3.2 (https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json, Llama-3.2-3B)
# and 3.1 (https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json): SwiGLU, plain
# RMSNorm gains (eps 1e-5), RoPE base 500k with llama3 scaling (factor 32 on 3.2, 8 on 3.1; low 1,
# high 4, original context 8192); 3.2 ties the output head to the embeddings, 3.1 8B does not.
_LLAMA3_COMMON = dict(
    vocab_size=128_256,
    num_kv_heads=8,
    rope_base=500_000.0,
    norm_eps=1e-5,
    norm_unit_offset=False,
    activation=SILU,
    scale_embeddings=False,
)
_LLAMA3_2 = dict(_LLAMA3_COMMON, rope_scaling=RopeScaling(LLAMA3, 32.0))

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
    'gemma3_1b': dict(_GEMMA3_COMMON, vocab_size=262_144, num_layers=26, embed_dim=1152,
                      num_heads=4, num_kv_heads=1, mlp_dim=6912, sliding_window=512),
    'gemma3_4b': dict(_GEMMA3_LONG, num_layers=34, embed_dim=2560, num_heads=8, num_kv_heads=4,
                      mlp_dim=10_240),
    'gemma3_12b': dict(_GEMMA3_LONG, num_layers=48, embed_dim=3840, num_heads=16,
                       num_kv_heads=8, mlp_dim=15_360),
    'qwen3_0_6b': dict(_QWEN3_COMMON, num_layers=28, embed_dim=1024, num_heads=16, mlp_dim=3072),
    'qwen3_1_7b': dict(_QWEN3_COMMON, num_layers=28, embed_dim=2048, num_heads=16, mlp_dim=6144),
    'qwen3_4b': dict(_QWEN3_COMMON, num_layers=36, embed_dim=2560, num_heads=32, mlp_dim=9728),
    'qwen3_8b': dict(_QWEN3_COMMON, num_layers=36, embed_dim=4096, num_heads=32, mlp_dim=12_288,
                     tie_embeddings=False),
    'llama3_2_1b': dict(_LLAMA3_2, num_layers=16, embed_dim=2048, num_heads=32, head_dim=64,
                        mlp_dim=8192),
    'llama3_2_3b': dict(_LLAMA3_2, num_layers=28, embed_dim=3072, num_heads=24, head_dim=128,
                        mlp_dim=8192),
    'llama3_1_8b': dict(_LLAMA3_COMMON, num_layers=32, embed_dim=4096, num_heads=32,
                        head_dim=128, mlp_dim=14_336, rope_scaling=RopeScaling(LLAMA3, 8.0),
                        tie_embeddings=False),
}

PRESET_NAMES = tuple(_PRESETS)


def get_config(name: str) -> TransformerConfig:
  """Returns the preset config `name` (one of PRESET_NAMES)."""
  if name not in _PRESETS:
    raise ValueError(f'unknown model preset {name!r}; valid presets: {", ".join(PRESET_NAMES)}')
  return TransformerConfig(**_PRESETS[name])
