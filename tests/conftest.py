"""Test-wide set-up: 8 fake CPU devices, set before jax is imported anywhere."""

import os

# Must happen before the first `import jax`: XLA reads the flag once, at backend start-up.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after the flag on purpose)

jax.config.update("jax_default_matmul_precision", "highest")
