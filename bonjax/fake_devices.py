"""Fake CPU devices for compiling a pod's programs on one host: sized before jax starts.

XLA reads --xla_force_host_platform_device_count once, when jax starts its CPU backend, so the
command line sizes the devices from the mesh specs with plain string work (this module imports
no jax) before anything imports jax.
"""

from __future__ import annotations

import math
import re

MAX_FAKE_DEVICES = 4096
# XLA's CPU scheduler favours concurrency by default and then runs every rematerialized block
# as early as it can, which hides what `remat` saves; the memory-minimizing one does not.
SCHEDULER_FLAG = '--xla_cpu_enable_concurrency_optimized_scheduler=false'
_DEVICE_COUNT_FLAG = re.compile(r'--xla_force_host_platform_device_count=\S*')


def mesh_device_count(spec: str, num_devices: int | None = None) -> int:
  """The devices a mesh spec spans ('data:4,fsdp:16' -> 64); -1 axes fill `num_devices`.

  Pure string work, so the CLI can size the fake devices before jax starts.
  """
  sizes = []
  for part in filter(None, (p.strip() for p in spec.split(','))):
    _, _, size = part.partition(':')
    try:
      sizes.append(int(size))
    except ValueError:
      raise ValueError(f'bad mesh spec {spec!r}: size {size!r} is not an integer') from None
  if not sizes:
    raise ValueError(f'empty mesh spec {spec!r}')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices is None:
      raise ValueError(f'mesh spec {spec!r} has a -1 axis: give the device count (--num_devices)')
    if num_devices % known:
      raise ValueError(f'mesh spec {spec!r}: {num_devices} devices are not divisible by the '
                       f'product {known} of its other axes')
    return num_devices
  if num_devices is not None and known != num_devices:
    raise ValueError(f'mesh spec {spec!r} spans {known} devices, not the {num_devices} of '
                     f'--num_devices: make the product of its axis sizes {num_devices}')
  return known


def fake_device_flags(count: int, existing: str = '') -> str:
  """XLA_FLAGS giving `count` fake CPU devices (replacing any device count in `existing`)."""
  if count > MAX_FAKE_DEVICES:
    raise ValueError(f'{count} devices is more than the {MAX_FAKE_DEVICES} fake CPU devices plan '
                     f'compiles for in reasonable time; plan a smaller slice (the per-device '
                     f'numbers of an FSDP mesh change little past a few hundred devices)')
  flags = _DEVICE_COUNT_FLAG.sub('', existing).replace(SCHEDULER_FLAG, '').split()
  return ' '.join(flags + [f'--xla_force_host_platform_device_count={count}', SCHEDULER_FLAG])
