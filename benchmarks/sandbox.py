"""The code sandbox's cost per program: forked from the fork server vs an interpreter per program.

    PYTHONPATH=. python benchmarks/sandbox.py
    PYTHONPATH=. python benchmarks/sandbox.py --programs=256 --threads=8

Runs the same passing HumanEval-style program --programs times on --threads threads (as
`CodeExecution` does), through `Sandbox(fork_server=True)` and, for the ratio, through
`Sandbox(fork_server=False)`, after a warm-up. Reported per program: wall time, the CPU time of
the whole machine (from /proc/stat, so it counts the sandboxed processes, the fork server and
the kernel's work, such as the network namespaces), and this process's share of it. As root the
runs also switch uid and enter a network namespace of their own; the script also times the
fork server without each of those layers, to show what each costs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import time

from bonjax.verifiers.sandbox import Sandbox

PROGRAM = 'def add(a, b):\n    return a + b\n'
TEST = 'def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n'


def machine_cpu_seconds() -> float:
  """Busy CPU seconds of the whole machine since boot (all but idle and iowait)."""
  with open('/proc/stat') as f:
    fields = [int(value) for value in f.readline().split()[1:]]
  return (sum(fields) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK')


def per_program(sandbox: Sandbox, programs: int, threads: int) -> dict[str, float]:
  run = lambda _: sandbox.run(PROGRAM, TEST, 'add').reason
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    list(pool.map(run, range(threads)))  # Warm-up: starts the fork server, fills caches.
    cpu, wall, own = machine_cpu_seconds(), time.perf_counter(), time.process_time()
    reasons = set(pool.map(run, range(programs)))
    cpu, wall = machine_cpu_seconds() - cpu, time.perf_counter() - wall
    own = time.process_time() - own
  if reasons != {'ok'}:
    raise SystemExit(f'the runs did not all pass: {reasons}')
  return {'wall_ms': 1e3 * wall / programs, 'cpu_ms': 1e3 * cpu / programs,
          'this_process_ms': 1e3 * own / programs}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--programs', type=int, default=128)
  parser.add_argument('--threads', type=int, default=4)
  args = parser.parse_args()
  variants = [('fork server', {}), ('interpreter per program', {'fork_server': False})]
  if os.geteuid() == 0:
    variants += [('fork server, no network namespace', {'isolate_network': False}),
                 ('fork server, no uid nor namespace',
                  {'isolate_network': False, 'isolate_user': False})]
  results = {}
  for label, kwargs in variants:
    results[label] = r = per_program(Sandbox(**kwargs), args.programs, args.threads)
    print(f'{label:34s} wall {r["wall_ms"]:6.2f} ms, CPU {r["cpu_ms"]:6.2f} ms '
          f'(this process {r["this_process_ms"]:.2f} ms) per program')
  ratio = results['interpreter per program']['cpu_ms'] / results['fork server']['cpu_ms']
  print(f'the fork server: {ratio:.2f}x less CPU per program')


if __name__ == '__main__':
  main()
