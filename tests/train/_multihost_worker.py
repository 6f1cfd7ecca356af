"""One process of a CPU training job, run as a script by test_multihost.py.

    python tests/train/_multihost_worker.py '<spec as JSON>'

spec: process_id, num_processes, coordinator ('localhost:PORT'; unused for one process),
local_devices, root (a directory), result (a path) and runs: a list of {workdir (under root),
method ('sft' or 'bon_rl_s'), num_steps}, run one after the other (a workdir named again resumes).

The process fakes `local_devices` CPU devices, joins the `num_processes` job through
`bonjax.sharding.initialize_distributed` (gloo CPU collectives) and, for each run, trains a tiny
model on a tiny generated bonjax_arith task (global batches of 16) on the mesh 'data:4,fsdp:2'
over all the job's devices. It writes `result` as JSON: its process index and count, its device
counts and, per run, the last metrics `train` returned and every batched read of the train split
it made (the source indices of each step's rows: what share of the data this process read).
"""

import dataclasses
import json
import os
import sys
import time

READS: list[list[int]] = []  # the current run's batched reads of the train split, in order


def main(spec: dict) -> None:
  # Before jax is imported: XLA reads the flag once, when the CPU backend starts.
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={spec["local_devices"]}'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.config.update('jax_default_matmul_precision', 'highest')  # as tests/conftest.py
  from bonjax import sharding  # pylint: disable=g-import-not-at-top
  if spec['num_processes'] > 1:
    sharding.initialize_distributed(coordinator_address=spec['coordinator'],
                                    num_processes=spec['num_processes'],
                                    process_id=spec['process_id'])
  from bonjax import data, train, verifiers  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top

  class RecordedSource:
    """The train split, noting the indices of every batched read (the batch iterator's)."""

    def __init__(self, source):
      self._source = source

    def __len__(self):
      return len(self._source)

    def __getitem__(self, index):
      return self._source[index]

    def __getitems__(self, indices):
      READS.append([int(i) for i in indices])
      return [self._source[i] for i in indices]

  @dataclasses.dataclass(frozen=True)
  class RecordedTask(data.Task):

    def source(self, split, workdir):
      source = super().source(split, workdir)
      return RecordedSource(source) if split == self.train_split else source

  # data_dir None: the dataset is prepared into <workdir>/data, and the tokenizer trained into
  # <workdir>, by the job itself (process 0 first: the others then read what it wrote).
  task = RecordedTask(config=data.ArithConfig(name='multihost_test', num_train=64, num_test=16),
                      vocab_size=320, max_prompt_len=80, max_target_len=80)
  model = helpers.tiny_model(vocab_size=320, num_layers=1, embed_dim=32, num_heads=2,
                             num_kv_heads=1, head_dim=16, mlp_dim=64)
  methods = {
      'sft': dict(method=train.Sft()),
      # The verifier prefers short completions; the task reward is the answer's correctness.
      # 2 microbatches over the 2 chunks: each chunk's gradient taken as soon as it is scored.
      'bon_rl_s': dict(method=train.PolicyGradient('bon_rl_s', bon_n=2), microbatches=2,
                       rollout=train.Rollout(num_samples=4, max_new_tokens=6, chunks=2),
                       verifier=helpers.Scripted(lambda p, c, m: -len(c)),
                       reward=verifiers.AnswerMatch(), eval_every=2, eval_prompts=16),
  }
  runs = []
  for run in spec['runs']:
    READS.clear()
    start = time.perf_counter()
    last = train.train(os.path.join(spec['root'], run['workdir']), model=model, task=task,
                       num_steps=run['num_steps'], batch_size=16,
                       optimizer=train.optimizer('adam', 1e-3), mesh='data:4,fsdp:2',
                       checkpoint_every=2, progress=False, **methods[run['method']])
    runs.append({'last': last, 'reads': list(READS)})
    print(f'{run}: {time.perf_counter() - start:.1f} s', flush=True)  # for a failure's output
  result = {'process_index': jax.process_index(), 'process_count': jax.process_count(),
            'device_count': jax.device_count(), 'local_device_count': jax.local_device_count(),
            'runs': runs}
  with open(spec['result'], 'w', encoding='utf-8') as f:
    json.dump(result, f)


if __name__ == '__main__':
  main(json.loads(sys.argv[1]))
