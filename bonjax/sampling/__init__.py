"""Vectorized N-sample generation with a prefix-shared KV cache, and the token samplers."""

from bonjax.sampling.generation import Samples, generate, prompt_keys
from bonjax.sampling.samplers import (Greedy, MinP, Sampler, Temperature, TopK, TopP,
                                      ValidTokens, tempered_log_probs, token_log_probs)

__all__ = ['Greedy', 'MinP', 'Sampler', 'Samples', 'Temperature', 'TopK', 'TopP', 'ValidTokens',
           'generate', 'prompt_keys', 'tempered_log_probs', 'token_log_probs']
