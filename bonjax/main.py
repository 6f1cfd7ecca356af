"""The `bonjax` command line: one entry point, one sub-command per job, configured with gin.

    bonjax train --gin_file=experiments/arith/bon_rl_v.gin --workdir=runs/arith/bon_rl_v
    bonjax train --gin_file=experiments/arith/sft.gin --workdir=runs/sft \\
        --gin_bindings='train.num_steps = 50'
    bonjax demo --workdir=runs/demo                      # the small end-to-end BoN experiment
    bonjax train_reward_model --gin_file=experiments/arith/reward_model.gin --workdir=runs/arith/rm

Every configurable is registered in `bonjax.registry`; `--gin_file` paths (and their `include`s)
are relative to the working directory, so run from the repository root. A configuration error
(a wrong binding, an unknown name, a bad value, a foreign workdir) prints one line naming the
problem and exits with status 2, having written nothing; `--traceback` shows the whole trace.

A multi-process job (a TPU pod slice, SLURM, MPI) runs the same command in every process, with the
same --workdir on a filesystem they share: the processes connect first, each reads its share of
every batch, and process 0 prepares the data and writes the metrics.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for this run\'s outputs.')
flags.DEFINE_multi_string('gin_file', [], 'Gin config files, parsed in order.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, e.g. "train.num_steps = 10".')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of a configuration error.')


# Command -> the registry's gin-configurable entry point it calls with workdir=.
COMMANDS: dict[str, str] = {
    'train': 'train',
    'demo': 'run_demo',
    'train_reward_model': 'train_reward_model',
}


def _configuration_errors() -> tuple[type[BaseException], ...]:
  from bonjax import data, verifiers  # pylint: disable=g-import-not-at-top
  from bonjax.train import checkpoint  # pylint: disable=g-import-not-at-top
  return (ValueError, TypeError, FileNotFoundError, verifiers.UnknownVerifierError,
          checkpoint.CheckpointMismatchError, data.MissingManualDataError)


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] not in COMMANDS:
    got = ' '.join(argv[1:]) or 'nothing'
    raise app.UsageError(f'expected one command, one of: {", ".join(COMMANDS)}; got {got}')
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required: the directory this run writes to')
  if not FLAGS['verbosity'].present:
    # Orbax logs every save at INFO: keep the console to warnings and the progress bar.
    logging.set_verbosity(logging.WARNING)
  # Imported here, not at the top: they import jax, and `bonjax --help` should stay instant.
  from bonjax import sharding  # pylint: disable=g-import-not-at-top
  # One process of a multi-process job (a TPU pod slice, SLURM, MPI) joins the others first.
  sharding.initialize_distributed()
  from bonjax import registry  # pylint: disable=g-import-not-at-top
  try:
    registry.parse_config(FLAGS.gin_file, FLAGS.gin_bindings)
    getattr(registry, COMMANDS[argv[1]])(workdir=FLAGS.workdir)
  except _configuration_errors() as error:
    if FLAGS.traceback:
      raise
    message = str(error).strip().splitlines()
    # gin appends "In call to configurable ..." context lines: keep the first and the last.
    text = message[0] if len(message) < 2 else f'{message[0]} ({message[-1].strip()})'
    print(f'bonjax {argv[1]}: error: {type(error).__name__}: {text}', file=sys.stderr)
    sys.exit(2)


def run() -> None:
  """Console-script entry point (setup.py: `bonjax=bonjax.main:run`)."""
  app.run(main, argv=sys.argv)


if __name__ == '__main__':
  run()
