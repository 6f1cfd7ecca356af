#!/usr/bin/env bash
# Creates benchmarks/.venv-tunix: Tunix (PyPI google-tunix) with CPU jax, for tunix_grpo.py.
#
#   benchmarks/tunix_venv.sh              # uses python3.11 (Tunix needs Python >= 3.11)
#   PYTHON=/path/to/python3.12 TUNIX_VENV=/tmp/venv benchmarks/tunix_venv.sh   # other python / place
#
# Tunix lives in its own venv, apart from bonjax's: it brings its own pins (e.g. safetensors<0.8,
# which bonjax's setup.py excludes). Every package is pinned by tunix_constraints.txt (google-tunix
# 0.1.7, jax/jaxlib 0.10.2, flax 0.12.8, optax 0.2.8, ...), so a new release cannot change what
# is benchmarked. Re-running it on an existing venv only installs what is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TUNIX_VENV:-${here}/.venv-tunix}"
python="${PYTHON:-python3.11}"

if ! "${python}" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "google-tunix needs Python >= 3.11; ${python} is $("${python}" --version 2>&1)." >&2
  echo "Set PYTHON to a Python 3.11+ interpreter." >&2
  exit 1
fi
if [[ ! -x "${venv}/bin/python" ]]; then
  "${python}" -m venv "${venv}"
fi
"${venv}/bin/python" -m pip install --quiet --upgrade pip
"${venv}/bin/python" -m pip install --quiet -c "${here}/tunix_constraints.txt" google-tunix
"${venv}/bin/python" -c 'import importlib.metadata as m, jax
print("tunix venv:", "google-tunix", m.version("google-tunix"), "jax", jax.__version__,
      "on", jax.devices()[0].platform)'
