"""`python -m ferjax.train ... --dry_run`: compiles the train step of a config for its mesh and
prints what one chip holds, without reading a checkpoint or training a step.

Two sources, side by side: `jax.eval_shape` of the train state gives the bytes of parameters,
BatchNorm statistics and optimiser state, divided by their shardings (exact, whatever the
backend); XLA's memory analysis of the compiled step (`compiled.memory_analysis()`) gives its
arguments, outputs, the donated buffers they share, and temporaries (activations kept for the
backward pass, gradients, workspace). Peak per chip = arguments + outputs - aliased +
temporaries, as the backend compiled it: compile on the target accelerator for its numbers; on
CPU with `XLA_FLAGS=--xla_force_host_platform_device_count=N` the partitioning is the same but
the CPU compiler fuses and schedules differently (docs/cluster.md).
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from ferjax import checkpoint, methods, optim, sharding, steps as steps_lib
from ferjax.data import pipeline

GiB = 2**30
# The schedule's length does not change what the step holds; any value compiles the same step.
NOMINAL_STEPS = 1000


@dataclasses.dataclass
class Report:
  method: str
  devices: int
  mesh: dict
  global_batch: int
  image_size: int
  dtype: str
  params: int                 # parameter count
  state_bytes: dict           # per chip: params, batch_stats, opt_state
  xla: dict                   # per chip: arguments, outputs, aliased, temporaries, peak

  def lines(self) -> list[str]:
    per_chip = self.global_batch // (self.mesh['data'] * self.mesh['fsdp'])
    rows = [f'dry run: {self.method}, {self.params / 1e6:.2f}M parameters, '
            f'{self.devices} {jax.devices()[0].platform} device(s), mesh {self.mesh}, '
            f'global batch {self.global_batch} ({per_chip} per chip) at {self.image_size} px, '
            f'compute {self.dtype}',
            'per chip (GiB):']
    rows += [f'  {k:<12} {v / GiB:8.3f}  {v:>15,d} bytes  (eval_shape)'
             for k, v in self.state_bytes.items()]
    rows += [f'  {k:<12} {v / GiB:8.3f}  {v:>15,d} bytes  (XLA memory analysis)'
             for k, v in self.xla.items()]
    return rows


def _per_chip_bytes(tree) -> int:
  """Bytes one device holds of `tree` (ShapeDtypeStructs with shardings)."""
  def one(x):
    return int(np.prod(x.sharding.shard_shape(x.shape), dtype=np.int64)) * x.dtype.itemsize
  return sum(one(x) for x in jax.tree.leaves(tree))


def abstract_batch(cfg, method, mesh) -> dict:
  """The global training batch's shapes: one example of the training set, standardised as the
  pipeline does, times the global batch. A method's per-example inputs that the pipeline adds
  (CAFE's cached CLIP features) are not computed: their shape comes from the model."""
  spaced = pipeline.in_space(cfg, cfg.data.train, cfg.data.train_examples, cfg.seed)
  example = pipeline.standardize(spaced[0], len(spaced.names))
  if method.model_inputs is not None and 'features' not in example:
    example['features'] = np.zeros((method.model.feature_dim,), np.float32)
  spec = sharding.batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct((cfg.batch_size,) + np.shape(v), np.asarray(v).dtype,
                                  sharding=spec)
          for k, v in example.items()}


def run(cfg) -> Report:
  mesh = sharding.make_mesh(cfg.mesh)
  sharding.check_batch(cfg.batch_size, mesh)
  method = methods.build(cfg)
  tx, schedule = optim.build_optimizer(cfg.optim, NOMINAL_STEPS, NOMINAL_STEPS)
  steps = steps_lib.build(method, tx, schedule, cfg, mesh)
  abstract = checkpoint.abstract_with_sharding(steps.abstract_state.tree(),
                                               steps.state_sharding.tree())
  batch = abstract_batch(cfg, method, mesh)
  compiled = steps.train.lower(steps_lib.TrainState.from_tree(abstract), batch).compile()
  mem = compiled.memory_analysis()
  xla = {'arguments': mem.argument_size_in_bytes, 'outputs': mem.output_size_in_bytes,
         'aliased': mem.alias_size_in_bytes, 'temporaries': mem.temp_size_in_bytes}
  xla['peak'] = xla['arguments'] + xla['outputs'] - xla['aliased'] + xla['temporaries']
  return Report(
      method=cfg.method, devices=mesh.size, mesh=dict(mesh.shape),
      global_batch=cfg.batch_size, image_size=cfg.data.image_size, dtype=cfg.model.dtype,
      params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract['params'])),
      state_bytes={k: _per_chip_bytes(abstract[k])
                   for k in ('params', 'batch_stats', 'opt_state')},
      xla=xla)
