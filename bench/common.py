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
  import jax
  info = {'platform': platform.platform(), 'python': platform.python_version(),
          'cpus': os.cpu_count(), 'jax': jax.__version__,
          'devices': [str(d) for d in jax.devices()]}
  try:
    import torch
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
  except ImportError:
    pass
  return info


class Report:
  """Collects figures; prints one JSON line per figure as it arrives and a table at the end."""

  def __init__(self):
    self.rows: list[dict] = []

  def add(self, **row) -> None:
    self.rows.append(row)
    print(json.dumps(row), flush=True)

  def table(self) -> str:
    lines = ['| benchmark | ferjax | PyTorch | ratio (ferjax / PyTorch) | notes |',
             '| --- | ---: | ---: | ---: | --- |']
    for r in self.rows:
      f, t = r.get('ferjax'), r.get('torch')
      ratio = f'{f / t:.2f}x' if f and t else ''
      unit = r.get('unit', '')
      fmt = lambda v: '' if v is None else f'{v:,.1f} {unit}'.strip()
      lines.append(f"| {r['name']} | {fmt(f)} | {fmt(t)} | {ratio} | {r.get('notes', '')} |")
    return '\n'.join(lines)

  def write(self, path: str, meta: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      json.dump({'machine': meta, 'rows': self.rows}, f, indent=1)
