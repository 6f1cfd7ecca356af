"""bonjax.train."""
