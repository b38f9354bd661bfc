"""Input pipeline: grain (ferjax's loader) vs torch DataLoader + torchvision transforms.

Both read the same JPEG files, decode with Pillow, resize to 112 px (bilinear, antialiased),
produce uint8 batches of 64, with the same number of workers. Each round times one pass of
batches after WARMUP batches from the same iterator (workers started, page cache warm, prefetch
buffers in steady state), rounds interleaved. Also: the on-device augmentation
cost per batch (ferjax augments inside the jit step; the reference does it in the workers).
"""
from __future__ import annotations

import gc
import os
import tempfile
import time

import numpy as np
from PIL import Image

from bench.common import interleave, summary

SIZE, BATCH, WARMUP = 112, 64, 12


def _write_images(root: str, n: int) -> list[str]:
  rng = np.random.default_rng(0)
  paths = []
  base = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
  for i in range(n):
    # Smooth image + noise: JPEG sizes like real faces, not like pure noise.
    img = np.clip(base.astype(np.int16) // 4 + (i % 97) + rng.integers(0, 24, base.shape), 0,
                  255).astype(np.uint8)
    p = os.path.join(root, f'{i:05d}.jpg')
    Image.fromarray(img).save(p, quality=90)
    paths.append(p)
  return paths


def _load(path: str) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert('RGB').resize((SIZE, SIZE), Image.BILINEAR))


class _TorchFiles:
  def __init__(self, paths):
    import torchvision.transforms.v2 as T
    self.paths = paths
    self.tf = T.Compose([T.Resize((SIZE, SIZE), antialias=True), T.PILToTensor()])

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    with Image.open(self.paths[i]) as im:
      return self.tf(im.convert('RGB'))


def loaders(num_images: int, workers: int, repeats: int) -> dict:
  import grain
  import torch
  tmp = tempfile.mkdtemp(prefix='ferjax-bench-')
  paths = _write_images(tmp, num_images)
  n_batches = num_images // BATCH

  # An endless stream (repeat) so that warm-up and timed batches come from one iterator. Each
  # round starts a fresh iterator, drains WARMUP batches (worker start-up and the initially
  # full prefetch buffer stay out of the timing, as the DataLoader's persistent workers keep
  # their start-up out), times a pass, and shuts the workers down so they do not run on, or
  # pre-fill their buffers, while the DataLoader is timed.
  ds = grain.MapDataset.source(paths).repeat(None).map(_load).batch(BATCH, drop_remainder=True)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=8))
  if workers:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  # The DataLoader gets the same treatment: one epoch is WARMUP + n_batches batches of the same
  # files, and only the last n_batches are timed.
  reps = -(-(WARMUP + n_batches) * BATCH // len(paths))
  dl = torch.utils.data.DataLoader(_TorchFiles((paths * reps)[:(WARMUP + n_batches) * BATCH]),
                                   batch_size=BATCH, num_workers=workers, drop_last=True,
                                   persistent_workers=workers > 0)
  timed = {'ferjax': [], 'torch': []}

  def timed_pass(side, loader):
    it = iter(loader)
    for _ in range(WARMUP):
      next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
      next(it)
    timed[side].append(time.perf_counter() - t0)
    del it
    gc.collect()

  interleave({'ferjax': lambda: timed_pass('ferjax', it_ds),
              'torch': lambda: timed_pass('torch', dl)}, repeats)
  times = {k: v[-repeats:] for k, v in timed.items()}    # the timed passes, not the warm-up
  return {'ferjax': summary(times['ferjax'], n_batches * BATCH),
          'torch': summary(times['torch'], n_batches * BATCH), 'workers': workers}


def augmentation(repeats: int) -> dict:
  """Milliseconds per batch of 64 at 112 px for ferjax's on-device augmentation (jit)."""
  import jax
  from ferjax import config as fc
  from ferjax.data import augment
  cfg = fc.base_config().augment
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (BATCH, SIZE, SIZE, 3), dtype=np.uint8),
           'landmarks': rng.random((BATCH, 68, 2)).astype(np.float32),
           'index': np.arange(BATCH, dtype=np.int32)}
  f = jax.jit(lambda b, s: augment.augment_batch(b, 0, s, cfg)['image'])
  f(batch, 0).block_until_ready()
  times = []
  for s in range(repeats):
    t = time.perf_counter()
    f(batch, s + 1).block_until_ready()
    times.append(time.perf_counter() - t)
  return {'ferjax': summary(times, BATCH)}
