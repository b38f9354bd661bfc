"""Accelerator presets: the config arguments `gpu` and `tpu` (with `chips=N`) that every config
file accepts, e.g. `--config configs/dan_rafdb.py:gpu,chips=8`.

A preset sets bfloat16 compute (parameters stay float32), a global batch of the method's
per-chip batch times the chips, and the `data` x `fsdp` mesh (`mesh_for`: 1, 8 and 64 chips
are the documented cases). The per-chip batches keep the compiled train step's peak at about
two thirds of one chip's memory (H100: 80 GB; TPU v5e: 16 GB), leaving room for the
allocator, the input pipeline's device copies and the evaluation step. docs/cluster.md shows
the arithmetic; `python -m ferjax.train ... --dry_run` prints it for any config. The learning
rate is the config's own: a bigger batch than the paper's may want it scaled
(`--config.optim.lr=...`).
"""
from __future__ import annotations

from ferjax.errors import ConfigError

ACCELERATORS = ('gpu', 'tpu')
# Config arguments handled here rather than by each config file.
ARGS = ACCELERATORS + ('chips',)

CHIP_MEMORY_GB = {'gpu': 80, 'tpu': 16}

# Global batch per chip, by method, at the image size of the method's paper configs (baseline
# and GReFEL 112 px; CAFE, CAGE, DAN and MTL 224 px; RAN and MTEN 48 px): the largest multiple of 8
# whose compiled peak stays under two thirds of the chip's memory, from the peak's growth per
# example that --dry_run measured by compiling on CPU (docs/cluster.md has the table).
PER_CHIP_BATCH = {
    'gpu': {'baseline': 2392, 'cafe': 608, 'cage': 104, 'grefel': 160, 'dan': 560,
            'ran': 1592, 'mten': 4312, 'mtl': 96},
    'tpu': {'baseline': 472, 'cafe': 120, 'cage': 16, 'grefel': 24, 'dan': 104, 'ran': 312,
            'mten': 856, 'mtl': 16},
}

# chips -> (data, fsdp). Every model here fits one chip (the largest, GReFEL, has 44M
# parameters: 0.7 GB with its gradients and Adam's two moments), so data parallelism is the
# default; from 64 chips on the parameters and optimiser state are also split 8 ways over
# `fsdp`, the mesh's last axis: consecutive devices, i.e. the 8 GPUs of one node (NVLink), so
# that its all-gathers stay off the network between nodes (a TPU slice has ICI between hosts).
FSDP_FROM_CHIPS, FSDP = 64, 8


def mesh_for(chips: int) -> tuple[int, int]:
  """(data, fsdp): 1 -> (1, 1), 8 -> (8, 1), 16 -> (16, 1), 64 -> (8, 8)."""
  if chips >= FSDP_FROM_CHIPS and chips % FSDP == 0:
    return chips // FSDP, FSDP
  return chips, 1


def apply(c, gpu: bool = False, tpu: bool = False, chips: int = 1) -> None:
  """Puts the `gpu` / `tpu` preset for `chips` chips on the (unlocked) config `c`."""
  if gpu and tpu:
    raise ConfigError('config arguments gpu and tpu: give one of them')
  if not (gpu or tpu):
    if chips != 1:
      raise ConfigError(f'config argument chips={chips} needs gpu or tpu (e.g. gpu,chips=8)')
    return
  accelerator = 'gpu' if gpu else 'tpu'
  if not isinstance(chips, int) or chips < 1:
    raise ConfigError(f'config argument chips={chips!r}: expected a number of chips >= 1')
  per_chip = PER_CHIP_BATCH[accelerator].get(c.method)
  if per_chip is None:
    raise ConfigError(f'method {c.method!r} has no {accelerator} preset; known: '
                      f'{sorted(PER_CHIP_BATCH[accelerator])}')
  c.model.dtype = 'bfloat16'
  c.batch_size = per_chip * chips
  c.eval_batch_size = 2 * per_chip * chips   # no gradients or optimiser state at evaluation
  c.mesh.data, c.mesh.fsdp = mesh_for(chips)
  # Decoding and augmenting on the host must keep up with the chips of that host.
  c.data.num_threads = max(c.data.num_threads, 16)
