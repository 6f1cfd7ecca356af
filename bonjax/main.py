"""The `bonjax` command line: one entry point, one sub-command per job, configured with gin.

    bonjax demo --workdir=runs/demo                      # the small end-to-end BoN experiment
    bonjax demo --workdir=runs/demo --gin_file=experiments/arith/demo.gin \\
        --gin_bindings='DemoConfig.rl_steps = 60'
    bonjax train_reward_model --gin_file=experiments/arith/reward_model.gin --workdir=runs/rm

Every configurable is registered in `bonjax.registry`; `--gin_file` paths (and their `include`s)
are relative to the working directory, so run from the repository root.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for this run\'s outputs.')
flags.DEFINE_multi_string('gin_file', [], 'Gin config files, parsed in order.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, e.g. "DemoConfig.seed = 1".')


# Command -> the registry's gin-configurable entry point it calls with workdir=.
COMMANDS: dict[str, str] = {
    'demo': 'run_demo',
    'train_reward_model': 'train_reward_model',
}


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] not in COMMANDS:
    got = ' '.join(argv[1:]) or 'nothing'
    raise app.UsageError(f'expected one command, one of: {", ".join(COMMANDS)}; got {got}')
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required: the directory this run writes to')
  # Imported here, not at the top: it imports jax, and `bonjax --help` should stay instant.
  from bonjax import registry  # pylint: disable=g-import-not-at-top
  registry.parse_config(FLAGS.gin_file, FLAGS.gin_bindings)
  getattr(registry, COMMANDS[argv[1]])(workdir=FLAGS.workdir)


def run() -> None:
  """Console-script entry point (setup.py: `bonjax=bonjax.main:run`)."""
  app.run(main, argv=sys.argv)


if __name__ == '__main__':
  run()
