"""Run as a script by test_loop.py: `bonjax train` that SIGKILLs itself while saving a step.

    python _train_and_die.py WORKDIR KILL_STEP GIN_FILE [BINDING ...]

The save of KILL_STEP is started (orbax writes it in the background), then the process dies at
once, without cleanup: the checkpoint directory is left with a half-written step.
"""

import os
import signal
import sys

from bonjax import registry
from bonjax.train import checkpoint


def main(workdir: str, kill_step: int, gin_file: str, *bindings: str) -> None:
  original = checkpoint.Checkpointer.save

  def save_then_die(self, step, **kwargs):
    started = original(self, step, **kwargs)
    if step == kill_step:
      print(f'killed while saving step {step}', flush=True)
      os.kill(os.getpid(), signal.SIGKILL)
    return started

  checkpoint.Checkpointer.save = save_then_die
  registry.parse_config([gin_file], bindings)
  registry.train(workdir=workdir)


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:])
