"""bonjax.verifiers."""
