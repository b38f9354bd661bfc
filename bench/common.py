"""Timing, hardware peak and reporting helpers shared by the benchmarks.

Timings interleave the two frameworks (A B A B ...) so that drift in the machine's load hits
both alike, and report the median and the spread (min..max) of the repeats.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from typing import Callable


def interleave(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 1
               ) -> dict[str, list[float]]:
  """Runs each fn `warmup` times, then `repeats` rounds of all fns in turn; seconds per call."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t)
  return times


def summary(seconds: list[float], items: int) -> dict:
  """Items per second from per-call times: median and the spread over repeats."""
  med = statistics.median(seconds)
  return {'per_s': items / med, 'per_s_min': items / max(seconds),
          'per_s_max': items / min(seconds), 'step_ms': 1e3 * med, 'repeats': len(seconds)}


def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
  """Measured float32 matmul throughput of this machine through XLA (the utilisation baseline
  on CPU, where no vendor peak applies)."""
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
  """What the README's benchmark table states about the machine (bench/readme.py)."""
  import jax
  import jaxlib
  devices = jax.devices()
  info = {'platform': platform.platform(), 'cpu_model': cpu_model(), 'python':
          platform.python_version(), 'cpus': os.cpu_count(), 'jax': jax.__version__,
          'jaxlib': jaxlib.__version__, 'devices': [str(d) for d in devices],
          'device_kind': devices[0].device_kind}
  try:
    import torch
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
  except ImportError:
    pass
  return info


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


# Table labels of the benchmarks in run.py's suites, formatted with a result row's fields.
LABELS = {
    'resnet18_train_112': 'ResNet-18 train, {size} px, batch {batch}',
    'resnet18_train_224': 'ResNet-18 train, {size} px, batch {batch}',
    'maxvit_t_train_224': 'MaxViT-T train, {size} px, batch {batch}',
    'cafe_step_224': 'CAFE step, cached CLIP vs recomputed, 224 px, batch {batch}',
    'dan_train_112': 'DAN train (ResNet-18, 4 heads), {size} px, batch {batch}',
    'dan_train_224': 'DAN train (ResNet-18, 4 heads), {size} px, batch {batch}',
    'grefel_train_64': 'GReFEL train (reduced CPU variant), 64 px, batch {batch}',
    'grefel_train_112': 'GReFEL train (IR-50 + MobileFaceNet, 3 scales), 112 px, batch {batch}',
    'vgg16_grey_train_48': 'VGG-16 train, grey {size} px, soft targets, batch {batch}',
    'resnet18_infer_b1': 'ResNet-18 inference, {size} px, batch {batch}',
    'resnet18_infer_b64': 'ResNet-18 inference, {size} px, batch {batch}',
    'clip_features_224': 'CLIP ViT-B/32 features, 224 px, batch {batch}',
    'pipeline': 'input pipeline, JPEG -> 112 px, {workers} workers',
    'augment': 'on-device augmentation',
    'predict_photos': 'predict, {num_images} photos 640x480 (decode, detect, crop, model), '
                      'batch {batch}',
    'predict_crops': 'predict, {num_images} face crops 112 px (decode, model), batch {batch}',
    'predict_video_memory': 'predict, {minutes:g}-minute video at {fps} fps: memory',
}


def label(row: dict) -> str:
  try:
    return LABELS[row['name']].format(**row)
  except (KeyError, IndexError):   # a benchmark without a label, or a field it lacks
    return row['name']


def _rate(value: float | None, spread: list[float] | None, unit: str) -> str:
  if value is None:
    return ''
  digits = 0 if value >= 100 else 1 if value >= 10 else 2   # three significant digits or more
  fmt = lambda v: f'{v:,.{digits}f}'  # noqa: E731
  text = f'{fmt(value)} {unit}'.strip()
  if spread:   # the slowest and fastest repeat: how far a ratio can be trusted
    text += f' ({fmt(spread[0])}-{fmt(spread[1])})'
  return text


def markdown_table(rows: list[dict]) -> str:
  """The results as a Markdown table: the README's (bench/readme.py) and run.py's .md."""
  lines = ['| benchmark | ferjax | PyTorch | ratio | notes |',
           '| --- | ---: | ---: | ---: | --- |']
  for r in rows:
    f, t, unit = r.get('ferjax'), r.get('torch'), r.get('unit', '')
    ratio = f'{f / t:.2f}x' if f and t else ''
    lines.append(f"| {label(r)} | {_rate(f, r.get('ferjax_spread'), unit)} | "
                 f"{_rate(t, r.get('torch_spread'), unit)} | {ratio} | {r.get('notes', '')} |")
  return '\n'.join(lines)


class Report:
  """Collects figures; prints one JSON line per figure as it arrives and a table at the end."""

  def __init__(self):
    self.rows: list[dict] = []

  def add(self, **row) -> None:
    self.rows.append(row)
    print(json.dumps(row), flush=True)

  def table(self) -> str:
    return markdown_table(self.rows)

  def write(self, path: str, meta: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      json.dump({'machine': meta, 'rows': self.rows}, f, indent=1)
