"""`plan`: compile a config's train step and generation ahead of time for a mesh, and say if it fits.

    the config's objects --abstract state (bonjax.train.abstract_state), abstract batch-->
      train_step_for(...).lower(...).compile()       the very step `train` runs
      sampling._generate.lower(...).compile()       the rollout's generation program
      --memory_analysis(), cost_analysis()--> per-device bytes and FLOPs, against device memory

Nothing is allocated: every argument is a ShapeDtypeStruct carrying its sharding. The devices are
fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N, set before jax starts:
`bonjax plan` does it from --mesh), so the numbers are those of XLA's CPU compiler, run with its
memory-minimizing scheduler (the default CPU scheduler favours concurrency and schedules every
rematerialized block at once, which would hide what `remat` saves). A TPU's compiler schedules
collectives its own way: the arguments are exact, the temporaries an estimate (Gemma 2B
BoN-RL-V on 16 devices: 0.85x the analytic count, whose parts are printed beside them).

Depth: a model that scans its layers (`models.Transformer.scans`: remat, the pod configs) is
compiled whole, since its loop body is one period of the layer pattern however deep it is (Gemma
2B: about a minute on two cores); its FLOPs come from the same step with the layers unrolled,
lowered but not compiled. An unrolled model would take minutes to compile whole, so by default
it is compiled at one and two periods of the layer pattern and every number is extrapolated
linearly in the depth: the layers are identical, so their parameters, optimizer state, saved
activations and FLOPs add up per layer. `full_depth=True` compiles the whole model instead.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bonjax import models, sampling, sharding
from bonjax.fake_devices import fake_device_flags, mesh_device_count
from bonjax.train import methods as methods_lib
from bonjax.train import rollout as rollout_lib
from bonjax.train import state as state_lib
from bonjax.train import steps as steps_lib
from bonjax.train.optimizers import optimizer as make_optimizer

_UNITS = {'': 1, 'b': 1, 'kb': 1e3, 'mb': 1e6, 'gb': 1e9, 'tb': 1e12, 'kib': 2**10,
          'mib': 2**20, 'gib': 2**30, 'tib': 2**40}
GiB = 2**30


def parse_bytes(text: str | int | float) -> int:
  """'16GiB', '95 GiB', '1.5e9', 2**34 -> bytes."""
  if isinstance(text, (int, float)):
    return int(text)
  match = re.fullmatch(r'\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*', str(text))
  if not match or match.group(2).lower() not in _UNITS:
    raise ValueError(f'device memory {text!r} is not a size such as 16GiB, 95GiB or 32GB')
  return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclasses.dataclass(frozen=True)
class Memory:
  """Per-device bytes of one compiled program (`compiled.memory_analysis()`)."""

  arguments: float
  outputs: float
  aliased: float
  temporaries: float

  @property
  def peak(self) -> float:
    """Arguments, plus outputs that do not reuse a donated argument, plus temporaries."""
    return self.arguments + self.outputs - self.aliased + self.temporaries

  @classmethod
  def of(cls, compiled) -> 'Memory':
    stats = compiled.memory_analysis()
    return cls(stats.argument_size_in_bytes, stats.output_size_in_bytes,
               stats.alias_size_in_bytes, stats.temp_size_in_bytes)

  def extrapolate(self, other: 'Memory', fraction: float) -> 'Memory':
    """self + fraction * (other - self), field by field."""
    return Memory(*[a + fraction * (b - a) for a, b in zip(dataclasses.astuple(self),
                                                            dataclasses.astuple(other))])


def _shard_bytes(tree: Any) -> int:
  """Bytes per device of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
  return total


def abstract_batch(method: methods_lib.Method, task, rollout, batch_size: int,
                   mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch the step reads, as sharded ShapeDtypeStructs of the config's shapes."""
  S = jax.ShapeDtypeStruct
  if method.needs_rollouts:
    b, p, m, t = batch_size, task.max_prompt_len, rollout.num_samples, rollout.max_new_tokens
    batch = {'prompts': S((b, p), jnp.int32), 'prompt_lengths': S((b,), jnp.int32),
             'tokens': S((b, m, t), jnp.int32), 'logprobs': S((b, m, t), jnp.float32),
             'lengths': S((b, m), jnp.int32), 'scores': S((b, m), jnp.float32),
             'rewards': S((b, m), jnp.float32)}
    if method.needs_expert:
      batch.update(expert_tokens=S((b, 1, t), jnp.int32), expert_lengths=S((b, 1), jnp.int32),
                   expert_scores=S((b,), jnp.float32))
  else:
    length = task.max_prompt_len + task.max_target_len
    batch = {name: S((batch_size, length), dtype) for name, dtype in (
        ('inputs', jnp.int32), ('targets', jnp.int32), ('loss_mask', jnp.float32),
        ('positions', jnp.int32), ('input_mask', jnp.bool_))}
    if getattr(method, 'packing', False):
      batch['segment_ids'] = S((batch_size, length), jnp.int32)
  shardings = steps_lib.batch_shardings(batch, mesh)
  return {k: S(v.shape, v.dtype, sharding=shardings[k]) for k, v in batch.items()}


@dataclasses.dataclass(frozen=True)
class _Config:
  """The parts of a train config that shape the compiled programs."""

  model: models.Transformer
  optimizer: Any
  method: methods_lib.Method
  task: Any
  rollout: Any
  batch_size: int
  microbatches: int
  track_kl: bool
  rules: Any

  def at_depth(self, num_layers: int) -> '_Config':
    config = dataclasses.replace(self.model.config, num_layers=num_layers)
    return dataclasses.replace(self, model=self.model.clone(config=config))


def _compile_train(config: _Config, mesh) -> tuple[Memory, float, Any]:
  """The train step compiled on `mesh`; its memory, its FLOPs per step (all devices), its state."""
  abstract = state_lib.abstract_state(config.model, config.optimizer, mesh, config.rules)
  batch = abstract_batch(config.method, config.task, config.rollout, config.batch_size, mesh)
  sampler = config.rollout.sampler if config.rollout is not None else None

  def lowered(microbatches, model=config.model):
    step = steps_lib.train_step_for(model, config.optimizer, config.method, mesh=mesh,
                                    rules=config.rules, sampler=sampler,
                                    microbatches=microbatches, track_kl=config.track_kl)
    return step.lower(abstract, batch, abstract.params if step.with_reference else None)

  memory = Memory.of(lowered(config.microbatches).compile())
  # XLA's cost analysis counts a loop body once, so the FLOPs of a step come from the same step
  # without microbatches and with its layers unrolled (the same arithmetic, no loop), lowered
  # but not compiled.
  unrolled = config.model.clone(scan_layers=False)
  flops = float(lowered(1, unrolled).cost_analysis().get('flops', float('nan')))
  return memory, flops, abstract


def _compile_generation(config: _Config, mesh, params) -> Memory:
  """The rollout's generation (one chunk of prompts, M samples each) compiled on `mesh`."""
  rollout = config.rollout
  prompts = config.batch_size // rollout.chunks
  S = jax.ShapeDtypeStruct
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), prompts))
  sampler = jax.tree.map(lambda _: S((), jnp.float32), rollout.sampler)
  scalar = S((), jnp.int32)
  lowered = sampling.generation._generate.lower(  # pylint: disable=protected-access
      config.model, params, S((prompts, config.task.max_prompt_len), jnp.int32),
      S((prompts,), jnp.int32), keys, sampler, scalar, scalar,
      num_samples=rollout.num_samples, max_new_tokens=rollout.max_new_tokens,
      return_untempered_logprobs=False, mesh=mesh, rules=tuple(tuple(r) for r in config.rules))
  return Memory.of(lowered.compile())


def _depths(model: models.Transformer, full_depth: bool) -> list[int]:
  config = model.config
  period = len(config.attention_types)
  # A scanned stack compiles one period whatever the depth: compile all of it.
  if full_depth or model.scans or 2 * period >= config.num_layers:
    return [config.num_layers]
  return [period, 2 * period]


def _extrapolate(values: Sequence[Any], depths: Sequence[int], num_layers: int,
                 combine: Callable) -> Any:
  if len(values) == 1:
    return values[0]
  return combine(values[0], values[1], (num_layers - depths[0]) / (depths[1] - depths[0]))


def analytic(config: _Config, mesh, abstract_state) -> dict[str, float]:
  """Per-device bytes counted from the shapes alone (what the compiled numbers are checked by).

  state         params + optimizer state (+ the initial policy's params, for the KL), their
                shards as the shardings say
  gradients     one params-sized f32 buffer per device, two with microbatches (the accumulator)
  gathered      FSDP gathers each weight whole before using it: a layer's weights in f32 and bf16
                and their whole f32 gradient before it is reduce-scattered, for one period of
                the layer pattern at a time when the model scans its layers (the backward
                recomputes a period, its gathers included), for every layer when it unrolls
                them (the gathered weights stay from the forward to the backward); the
                embedding table likewise, with the gradients of its two uses (input embedding,
                output projection)
  stacked       a scanning model's layer params stacked for the scan, and their stacked gradient
  logits        per microbatch, the rows on one device x scored positions (a rollout's completion
                tokens; every position of an SFT row) x vocabulary: two f32 arrays (the logits,
                the log-probabilities; the bf16 product is fused into the first)
  layer inputs  remat keeps each block's input for the backward: layers x tokens x D, the tokens
                of a device's rows (rollouts: each prompt once, as the prefix of its M
                completions, bonjax.train.logprobs)
  one layer     the recomputed block being differentiated: its MLP hidden states (gate, up,
                product) and its attention probabilities (and their gradient, f32)
  kv cache      generation: the prompt prefix and the samples' slots, keys and values, all layers
  """
  cfg, task, rollout = config.model.config, config.task, config.rollout
  act_bytes = jnp.dtype(cfg.dtype).itemsize
  shards = _batch_shards(mesh, config.rules)
  params = _shard_bytes(abstract_state.params)
  with_reference = isinstance(config.method, methods_lib.PolicyGradient) and (
      config.track_kl or config.method.kl_coef > 0)
  out = {'params': params, 'optimizer_state': _shard_bytes(abstract_state.opt_state),
         'reference_params': params if with_reference else 0,
         'gradients': params * (2 if config.microbatches > 1 else 1)}
  layer_params = (models.param_count(dataclasses.replace(cfg, num_layers=2))
                  - models.param_count(dataclasses.replace(cfg, num_layers=1)))
  # A tied table has the gradients of two uses; an untied output head is a second table.
  tables = (4 + act_bytes + 4 + 4) if cfg.tie_embeddings else 2 * (4 + act_bytes + 4)
  gathered_layers = len(cfg.attention_types) if config.model.scans else cfg.num_layers
  out['gathered_weights'] = (cfg.vocab_size * cfg.embed_dim * tables
                             + gathered_layers * layer_params * (4 + act_bytes + 4))
  if config.model.scans:
    out['stacked_layers'] = 2 * _shard_bytes(
        {name: tree for name, tree in abstract_state.params.items() if name.startswith('layer_')})
  micro_prompts = config.batch_size // config.microbatches
  prompts_per_device = math.ceil(micro_prompts / shards)
  if config.method.needs_rollouts:
    rows_per_device = math.ceil(micro_prompts * rollout.num_samples / shards)
    scored = rollout.max_new_tokens  # only the completion's positions are projected to logits
    # Each prompt once, a prefix its completions attend to (bonjax.train.logprobs).
    prompt_len, fed = task.max_prompt_len, rollout.max_new_tokens - 1
    tokens = prompts_per_device * prompt_len + rows_per_device * fed
    scores = prompts_per_device * prompt_len ** 2 + rows_per_device * fed * (prompt_len + fed)
  else:
    rows_per_device = prompts_per_device
    scored = task.max_prompt_len + task.max_target_len
    tokens, scores = rows_per_device * scored, rows_per_device * scored ** 2
  out['logits'] = rows_per_device * scored * cfg.vocab_size * (4 + 4)
  out['layer_inputs'] = cfg.num_layers * tokens * cfg.embed_dim * act_bytes
  out['one_layer'] = 3 * tokens * cfg.mlp_dim * act_bytes + 2 * cfg.num_heads * scores * 4
  out['train_total'] = sum(out.values())
  if rollout is not None:
    prompts = config.batch_size // rollout.chunks
    per_slot = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * act_bytes
    slots = prompts * task.max_prompt_len + prompts * rollout.num_samples * rollout.max_new_tokens
    out['kv_cache'] = per_slot * math.ceil(slots / shards)
  return out


def plan(train_args: Mapping[str, Any], *, meshes: Sequence[str],
         device_memory: str | int = '16GiB', num_devices: int | None = None,
         full_depth: bool = False, log: Callable[[str], None] | None = print) -> dict[str, Any]:
  """Compiles the config's train step and generation on each candidate mesh; does it fit?

  Args:
    train_args: the arguments gin binds for `bonjax.train.train` (model, method, task, ...).
    meshes: candidate mesh specs, e.g. ['data:4,fsdp:16', 'fsdp:64'].
    device_memory: each device's memory, e.g. '16GiB' (TPU v5e) or '95GiB' (v5p).
    num_devices: the slice's device count, when a spec has a -1 axis (or to check the specs).
    full_depth: compile every layer instead of extrapolating from one and two periods.
    log: where the report goes (None: nowhere).

  Returns:
    {'device_memory', 'fits_on': [specs], 'meshes': {spec: {'train': {...}, 'generation': {...},
     'analytic': {...}, 'peak', 'fits', 'flops_per_step', 'compile_seconds', 'depths'}}}.
  """
  log = log or (lambda _: None)
  budget = parse_bytes(device_memory)
  if not meshes:
    raise ValueError('plan needs at least one mesh spec (--mesh=data:4,fsdp:16)')
  config = _config(train_args)
  depths = _depths(config.model, full_depth)
  report = {'device_memory': budget, 'meshes': {}, 'fits_on': []}
  for spec in meshes:
    count = mesh_device_count(spec, num_devices)
    available = jax.devices()
    if count > len(available):
      raise ValueError(f'mesh {spec!r} needs {count} devices but jax started with '
                       f'{len(available)}: set XLA_FLAGS="{fake_device_flags(count)}" before jax '
                       f'starts (`bonjax plan` does it from --mesh)')
    mesh = sharding.make_mesh(spec, available[:count])
    report['meshes'][spec] = entry = _plan_mesh(config, mesh, depths, budget)
    if entry['fits']:
      report['fits_on'].append(spec)
    log(_describe(spec, entry, config, budget))
  verdict = (f'fits on {", ".join(report["fits_on"])}' if report['fits_on']
             else 'fits on none of the candidate meshes')
  log(f'verdict at {budget / GiB:.1f} GiB per device: {verdict}')
  return report


def _config(args: Mapping[str, Any]) -> _Config:
  for name in ('model', 'method', 'task', 'batch_size'):
    if args.get(name) is None:
      raise ValueError(f'the config binds no train.{name}: plan needs the config of a train run')
  method = args['method']
  rollout = args.get('rollout')
  if method.needs_rollouts and rollout is None:
    raise ValueError(f'{type(method).__name__} needs rollouts: the config binds no train.rollout')
  return _Config(model=args['model'], optimizer=args.get('optimizer') or make_optimizer(
      'adamw', 1e-4), method=method, task=args['task'], rollout=rollout,
                 batch_size=args['batch_size'], microbatches=args.get('microbatches', 1),
                 track_kl=args.get('track_kl', True),
                 rules=args.get('rules', sharding.DEFAULT_RULES))


def _plan_mesh(config: _Config, mesh, depths: list[int], budget: int) -> dict[str, Any]:
  start = time.perf_counter()
  trains, flops, generations = [], [], []
  for depth in depths:
    shallow = config.at_depth(depth)
    memory, step_flops, abstract = _compile_train(shallow, mesh)
    trains.append(memory)
    flops.append(step_flops)
    if config.rollout is not None:
      generations.append(_compile_generation(shallow, mesh, abstract.params))
  num_layers = config.model.config.num_layers
  combine = lambda a, b, f: a.extrapolate(b, f)
  train = _extrapolate(trains, depths, num_layers, combine)
  step_flops = _extrapolate(flops, depths, num_layers, lambda a, b, f: a + f * (b - a))
  counted = analytic(config, mesh, state_lib.abstract_state(config.model, config.optimizer, mesh,
                                                            config.rules))
  entry = {'depths': depths, 'train': dataclasses.asdict(train), 'train_peak': train.peak,
           'flops_per_step': step_flops, 'flops_per_step_per_device': step_flops / mesh.size,
           'analytic': counted}
  peak = train.peak
  if generations:
    generation = _extrapolate(generations, depths, num_layers, combine)
    # The train state stays on the devices while the rollout generates from its params.
    resident = counted['params'] + counted['optimizer_state'] + counted['reference_params']
    entry['generation'] = dataclasses.asdict(generation)
    entry['generation_peak'] = resident + generation.peak - generation.arguments
    peak = max(peak, entry['generation_peak'])
  entry.update(peak=peak, fits=bool(peak <= budget), notes=_notes(config, mesh),
               compile_seconds=time.perf_counter() - start)
  return entry


def _batch_shards(mesh, rules) -> int:
  axes = sharding.batch_sharding(mesh, rules).spec[0]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  return math.prod(mesh.shape[a] for a in axes)


def _notes(config: _Config, mesh) -> list[str]:
  """What in the config makes the step need more than the analytic count, or keeps the update
  from overlapping the rollout's verification (`rollout.streamed_chunks`)."""
  shards = _batch_shards(mesh, config.rules)
  prompts = config.batch_size // config.microbatches
  notes = []
  if prompts % shards:
    notes.append(f'each microbatch holds {prompts} prompts, which the {shards} batch shards do '
                 f'not divide: the step reshards its rows (XLA replicates them first), so it '
                 f'needs more memory than counted; make batch_size / microbatches a multiple of '
                 f'{shards}')
  _, why_not = rollout_lib.streamed_chunks(config.rollout, config.method,
                                           batch_size=config.batch_size,
                                           microbatches=config.microbatches, shards=shards)
  return notes + ([why_not] if why_not else [])


def _describe(spec: str, entry: dict[str, Any], config: _Config, budget: int) -> str:
  g = lambda x: f'{x / GiB:8.2f} GiB'
  train, counted = entry['train'], entry['analytic']
  cfg = config.model.config
  depth_note = (f'compiled at {entry["depths"]} layers, extrapolated linearly to {cfg.num_layers}'
                if len(entry['depths']) > 1 else f'compiled at all {cfg.num_layers} layers')
  lines = [f'mesh {spec}: {depth_note} in {entry["compile_seconds"]:.0f} s',
           f'  train step   arguments {g(train["arguments"])}  outputs {g(train["outputs"])} '
           f'(aliased {g(train["aliased"])})  temporaries {g(train["temporaries"])}  '
           f'peak {g(entry["train_peak"])}',
           f'               {entry["flops_per_step"]:.3e} FLOPs per step '
           f'({entry["flops_per_step_per_device"]:.3e} per device)']
  if 'generation' in entry:
    gen = entry['generation']
    lines.append(f'  generation   arguments {g(gen["arguments"])}  outputs {g(gen["outputs"])}  '
                 f'temporaries {g(gen["temporaries"])}  peak with the train state resident '
                 f'{g(entry["generation_peak"])}')
  parts = ', '.join(f'{k} {v / GiB:.2f}' for k, v in counted.items() if k != 'train_total')
  ratio = entry['train_peak'] / counted['train_total']
  lines.append(f'  analytic     {parts} GiB; train total {g(counted["train_total"])} '
               f'(compiled / analytic = {ratio:.2f})')
  lines += [f'  note: {note}' for note in entry['notes']]
  verdict = 'fits' if entry['fits'] else 'does NOT fit'
  lines.append(f'  peak {g(entry["peak"])} per device: {verdict} in {budget / GiB:.1f} GiB')
  return '\n'.join(lines)
