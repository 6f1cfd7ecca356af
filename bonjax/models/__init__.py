"""bonjax.models."""
