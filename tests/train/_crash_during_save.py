"""Run as a script by test_checkpoint.py: saves step 1, then is killed mid-save of step 2.

Prints one line saying how far step 2 got before the SIGKILL.
"""

import glob
import os
import signal
import sys
import time

import jax.numpy as jnp

from bonjax.train import checkpoint


def _written_files(directory: str) -> list[str]:
  # Array chunks land under .../d/<hash> inside the step's tmp directory.
  pattern = os.path.join(directory, '2.orbax-checkpoint-tmp*', '**', 'd', '*')
  return [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]


def main(directory: str, num_floats: int) -> None:
  ckpt = checkpoint.Checkpointer(directory)
  ckpt.save(1, params={'w': jnp.full((num_floats,), 1.0)})
  ckpt.wait()
  ckpt.save(2, params={'w': jnp.full((num_floats,), 2.0)})
  # Step 2 is being written in the background: let some array data land so the
  # kill leaves a genuinely half-written directory, then die without cleanup.
  deadline = time.monotonic() + 2.0
  while not _written_files(directory) and time.monotonic() < deadline:
    time.sleep(0.005)
  committed = os.path.exists(os.path.join(directory, '2'))
  print(f'committed={committed} tmp_files={len(_written_files(directory))}',
        flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]))
