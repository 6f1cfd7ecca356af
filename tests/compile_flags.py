"""XLA flags that trade run time for compile time; jax-free, so conftest can import it first.

Tests compile many small programs and run each a few steps: LLVM's optimizations would cost more
compile time than they save (about a quarter of the suite's time on 2 cores). tests/conftest.py
sets them for the suite; the notebooks' kernels, which train for many steps, run without them.
"""

FAST_COMPILE_XLA_FLAGS = ("--xla_backend_optimization_level=0",
                          "--xla_llvm_disable_expensive_passes=true")


def without_fast_compile(xla_flags: str) -> str:
  """`xla_flags` with the flags above (whatever their values) removed."""
  names = {flag.split("=")[0] for flag in FAST_COMPILE_XLA_FLAGS}
  return " ".join(flag for flag in xla_flags.split() if flag.split("=")[0] not in names)
