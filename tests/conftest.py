"""Test-wide set-up: 8 fake CPU devices and a compilation cache for the run, before jax loads."""

import os
import shutil
import tempfile

from tests.compile_flags import FAST_COMPILE_XLA_FLAGS  # compile fast: see that module for why

# Must happen before the first `import jax`: XLA reads the flags once, at backend start-up.
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""),
                                    "--xla_force_host_platform_device_count=8",
                                    *FAST_COMPILE_XLA_FLAGS]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Most of the suite's time is XLA compiling the same tiny programs again: in other tests, and in
# the subprocesses of the CLI, notebook and multihost tests. A persistent cache compiles each once.
# It is made here, by the first pytest process of a run, and inherited through the environment by
# the xdist workers and every subprocess; it is removed when that process ends, so each run still
# compiles from scratch. A cache directory the user has set is used and left alone.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix="bonjax-tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402  (after the flags on purpose)

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_unconfigure(config):
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
