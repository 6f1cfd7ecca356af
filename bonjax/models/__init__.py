"""bonjax.models: the decoder (Gemma 1/2/3, Llama 3, Qwen3), its configs, KV cache and imports."""

from bonjax.models.cache import (cache_logical_axes, grow_cache, init_cache, repeat_cache,
                                 share_prefix)
from bonjax.models.config import PRESET_NAMES, RopeScaling, TransformerConfig, get_config
from bonjax.models.gemma_import import load_gemma_checkpoint
from bonjax.models.hf_import import load_hf_checkpoint
from bonjax.models.params import (TreeDiff, abstract_params, compare_trees, init_params,
                                  param_shardings, params_logical_axes, path_name)
from bonjax.models.transformer import Transformer, flops_per_token, param_count, unembed

__all__ = [
    'PRESET_NAMES',
    'RopeScaling',
    'TreeDiff',
    'abstract_params',
    'compare_trees',
    'init_params',
    'param_shardings',
    'params_logical_axes',
    'path_name',
    'Transformer',
    'TransformerConfig',
    'unembed',
    'cache_logical_axes',
    'flops_per_token',
    'get_config',
    'grow_cache',
    'init_cache',
    'load_gemma_checkpoint',
    'load_hf_checkpoint',
    'param_count',
    'repeat_cache',
    'share_prefix',
]
