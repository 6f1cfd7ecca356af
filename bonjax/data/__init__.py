"""bonjax.data."""
