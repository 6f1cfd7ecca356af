"""bonjax: inference-aware fine-tuning for Best-of-N sampling in JAX."""

__version__ = "0.1.0"
