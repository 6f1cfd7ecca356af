"""The `bonjax` command line: one entry point, one sub-command per job, configured with gin.

    bonjax train --gin_file=experiments/arith/bon_rl_v.gin --workdir=runs/arith/bon_rl_v
    bonjax train --gin_file=experiments/arith/sft.gin --workdir=runs/sft \\
        --gin_bindings='train.num_steps = 50'
    bonjax eval --workdir=runs/arith/bon_rl_v --n=1,2,4,8,16,32 --temperature=0.3,0.7,1.0
    bonjax sample --workdir=runs/arith/bon_rl_v --prompts=prompts.jsonl --n=16 --temperature=0.8
    bonjax plan --gin_file=experiments/gemma_2b/math_bon_rl_v.gin --mesh=data:4,fsdp:16 \\
        --mesh=fsdp:64 --device_memory=16GiB
    bonjax demo --workdir=runs/demo                      # the main job: a small BoN study
    bonjax study --gin_file=experiments/arith/reproduce/rl_methods.gin --workdir=runs/reproduce
    bonjax train_reward_model --gin_file=experiments/arith/reward_model.gin --workdir=runs/arith/rm

Every configurable is registered in `bonjax.registry`; `--gin_file` paths (and their `include`s)
are relative to the working directory, so run from the repository root. `eval` and `sample` read
the run's own gin config from its run.json; `--gin_file` / `--gin_bindings` then override it
(`evaluate.batch_size = 32`). A configuration error (a wrong binding, an unknown name, a bad
value, a foreign workdir) prints one line naming the problem and exits with status 2, having
written nothing; `--traceback` shows the whole trace.

A multi-process job (a TPU pod slice, SLURM, MPI) runs the same command in every process, with the
same --workdir on a filesystem they share: the processes connect first, each reads its share of
every batch, and process 0 prepares the data and writes the metrics.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for this run\'s outputs.')
flags.DEFINE_multi_string('gin_file', [], 'Gin config files, parsed in order.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, e.g. "train.num_steps = 10".')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of a configuration error.')
# eval and sample.
flags.DEFINE_list('n', ['1', '2', '4', '8', '16'], 'eval: the Ns of pass@N, BoN@N, ...; sample: '
                  'samples per prompt (one value).')
flags.DEFINE_list('temperature', ['1.0'], 'Sampling temperatures, e.g. 0.3,0.7,1.0.')
flags.DEFINE_string('split', None, 'eval: the dataset split (default: the task\'s eval split).')
flags.DEFINE_integer('num_problems', None, 'eval: only the first this many problems.')
flags.DEFINE_string('verifier', None, 'eval, sample: a registered verifier to select with '
                    'instead of the run\'s (answer_match, code_execution, ...).')
flags.DEFINE_string('prompts', None, 'sample: a JSONL file of prompts (task examples, or '
                    '{"prompt": text}).')
# plan.
flags.DEFINE_multi_string('mesh', [], 'plan: candidate mesh specs, e.g. data:4,fsdp:16 (repeat '
                          'the flag for several).')
flags.DEFINE_string('device_memory', '16GiB', 'plan: memory of one device, e.g. 16GiB, 95GiB.')
flags.DEFINE_integer('num_devices', None, 'plan: the slice\'s device count (fills a -1 axis).')


# Command -> the registry's gin-configurable entry point it calls.
COMMANDS: dict[str, str] = {
    'train': 'train',
    'eval': 'evaluate_run',
    'sample': 'sample_run',
    'plan': 'plan',
    'demo': 'run_demo',
    'study': 'run_study',
    'train_reward_model': 'train_reward_model',
}
_RUN_COMMANDS = ('eval', 'sample')  # read a run's own config, then the flags' overrides


def _configuration_errors() -> tuple[type[BaseException], ...]:
  from bonjax import data, verifiers  # pylint: disable=g-import-not-at-top
  from bonjax.train import checkpoint  # pylint: disable=g-import-not-at-top
  return (ValueError, TypeError, FileNotFoundError, verifiers.UnknownVerifierError,
          checkpoint.CheckpointMismatchError, data.MissingManualDataError)


def _numbers(flag: str, kind: type) -> list:
  try:
    return [kind(v) for v in FLAGS[flag].value]
  except ValueError:
    raise ValueError(f'--{flag} must be a comma-separated list of {kind.__name__}s, got '
                     f'{",".join(FLAGS[flag].value)!r}') from None


def _arguments(command: str) -> dict:
  """The keyword arguments of a command's entry point, from the flags."""
  if command == 'eval':
    return dict(ns=_numbers('n', int), temperatures=_numbers('temperature', float),
                split=FLAGS.split, num_problems=FLAGS.num_problems, verifier=FLAGS.verifier)
  if command == 'sample':
    ns = _numbers('n', int)
    if len(ns) != 1:
      raise ValueError(f'sample takes one --n (samples per prompt), got {ns}')
    if not FLAGS.prompts:
      raise ValueError('sample needs --prompts=FILE.jsonl')
    return dict(n=ns[0], temperatures=_numbers('temperature', float), prompts=FLAGS.prompts,
                verifier=FLAGS.verifier)
  if command == 'plan':
    return dict(meshes=FLAGS.mesh, device_memory=FLAGS.device_memory,
                num_devices=FLAGS.num_devices)
  return {'workdir': FLAGS.workdir}


def _fake_devices_for_plan() -> None:
  """Enough fake CPU devices for the largest candidate mesh, before jax starts its backend."""
  from bonjax import fake_devices  # pylint: disable=g-import-not-at-top  (imports no jax)
  if not FLAGS.mesh:
    raise ValueError('plan needs at least one --mesh (e.g. --mesh=data:4,fsdp:16)')
  count = max(fake_devices.mesh_device_count(spec, FLAGS.num_devices) for spec in FLAGS.mesh)
  os.environ['XLA_FLAGS'] = fake_devices.fake_device_flags(count, os.environ.get('XLA_FLAGS', ''))
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] not in COMMANDS:
    got = ' '.join(argv[1:]) or 'nothing'
    raise app.UsageError(f'expected one command, one of: {", ".join(COMMANDS)}; got {got}')
  command = argv[1]
  if not FLAGS.workdir and command != 'plan':
    raise app.UsageError('--workdir is required: the directory this run writes to')
  if not FLAGS['verbosity'].present:
    # Orbax logs every save at INFO: keep the console to warnings and the progress bar.
    logging.set_verbosity(logging.WARNING)
  try:
    if command == 'plan':
      _fake_devices_for_plan()
    else:
      # One process of a multi-process job (a TPU pod slice, SLURM, MPI) joins the others first.
      from bonjax import sharding  # pylint: disable=g-import-not-at-top  (after plan's XLA_FLAGS)
      sharding.initialize_distributed()
    # Imported here, not at the top: it imports jax, and `bonjax --help` should stay instant.
    from bonjax import registry  # pylint: disable=g-import-not-at-top
    entry = getattr(registry, COMMANDS[command])
    if command in _RUN_COMMANDS:
      entry(FLAGS.workdir, gin_files=FLAGS.gin_file, bindings=FLAGS.gin_bindings,
            **_arguments(command))
    else:
      registry.parse_config(FLAGS.gin_file, FLAGS.gin_bindings)
      entry(**_arguments(command))
  except _configuration_errors() as error:
    if FLAGS.traceback:
      raise
    message = str(error).strip().splitlines()
    # gin appends "In call to configurable ..." context lines: keep the first and the last.
    text = message[0] if len(message) < 2 else f'{message[0]} ({message[-1].strip()})'
    print(f'bonjax {command}: error: {type(error).__name__}: {text}', file=sys.stderr)
    sys.exit(2)


def run() -> None:
  """Console-script entry point (setup.py: `bonjax=bonjax.main:run`)."""
  app.run(main, argv=sys.argv)


if __name__ == '__main__':
  run()
