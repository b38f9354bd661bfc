"""Mesh, shardings and multi-process start-up.

The mesh has a `data` axis and an `fsdp` axis. The batch is split over both (every device sees
a different slice of the batch); parameters are replicated over `data` and, when fsdp > 1,
their largest divisible dimension is split over `fsdp`. Axis types are explicit because
jax 0.10 defaults `make_mesh` to Explicit axes, which the rest of the code does not use.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')
# Parameters smaller than this stay replicated even with fsdp: splitting them costs more in
# collectives than it saves in memory.
FSDP_MIN_SIZE = 2**16


def maybe_initialize_distributed(coordinator: str = '', num_processes: int = 0,
                                 process_id: int = -1) -> None:
  """Starts jax.distributed when asked by flags or by the environment (Slurm, TPU pods)."""
  if coordinator:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  elif os.environ.get('FERJAX_DISTRIBUTED') == '1':
    jax.distributed.initialize()  # auto-detected cluster (Slurm, TPU VM, GKE)


def make_mesh(cfg) -> jax.sharding.Mesh:
  n = jax.device_count()
  data, fsdp = int(cfg.data), int(cfg.fsdp)
  if fsdp < 1:
    raise ValueError(f'config.mesh.fsdp={fsdp} must be >= 1')
  if data == -1:
    if n % fsdp:
      raise ValueError(f'config.mesh.fsdp={fsdp} does not divide the {n} devices')
    data = n // fsdp
  devices = jax.devices()
  if data * fsdp != n:
    if jax.process_count() > 1 or data * fsdp > n:
      raise ValueError(f'config.mesh data={data} x fsdp={fsdp} = {data * fsdp} devices, '
                       f'but {n} are available')
    devices = devices[:data * fsdp]  # a single process may use a subset (e.g. 1 GPU of 8)
  return jax.make_mesh((data, fsdp), ('data', 'fsdp'), devices=devices,
                       axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch(global_batch: int, mesh, what: str = 'config.batch_size') -> None:
  n = mesh.shape['data'] * mesh.shape['fsdp']
  if global_batch % n:
    raise ValueError(f'{what}={global_batch} is not divisible by the {n} devices of the mesh '
                     f'{dict(mesh.shape)}; use a multiple of {n}')


def param_sharding(mesh, tree):
  """Replicated, or split over `fsdp` on the largest divisible dimension of big arrays."""
  k = mesh.shape['fsdp']

  def one(x):
    shape = getattr(x, 'shape', ())
    if k == 1 or np.prod(shape, dtype=np.int64) < FSDP_MIN_SIZE:
      return replicated(mesh)
    for axis in np.argsort(shape)[::-1]:
      if shape[axis] % k == 0:
        spec = [None] * len(shape)
        spec[axis] = 'fsdp'
        return NamedSharding(mesh, P(*spec))
    return replicated(mesh)

  return jax.tree.map(one, tree)


def to_global(local_batch: dict, mesh) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  n = jax.process_count()

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * n,) + x.shape[1:])

  return jax.tree.map(one, local_batch)
