"""Runs a benchmark suite and writes bench/results/<date>.json (and .md).

  python -m bench.run --suite quick      # about 25 minutes on a 2-core CPU
  python -m bench.run --suite full       # accelerators: larger batches, more repeats
  python -m bench.run --only resnet18_train_112,pipeline

Every figure compares ferjax with the PyTorch reference run side by side (interleaved) on the
same machine; ratios > 1 mean ferjax is faster. Needs the torch extra (torch, torchvision,
transformers). Then `python -m bench.readme` writes the newest results into the README's table.
"""
from __future__ import annotations

import datetime
import os
import sys
import time

from absl import app, flags

from ferjax import cli

flags.DEFINE_enum('suite', 'quick', ['quick', 'full'],
                  'quick: about 25 minutes on a 2-core CPU; full: sized for accelerators.')
flags.DEFINE_list('only', [], 'Benchmark names to run; default: the whole suite.')
flags.DEFINE_string('out', '', 'JSON path; default bench/results/<date>.json, or <date>_2.json, '
                    '... if that exists (earlier runs of the day are kept).')
FLAGS = flags.FLAGS

# Suites: name -> (function, kwargs). Batch sizes fit a 24 GB, 2-core CPU in the quick suite.
QUICK = {
    'resnet18_train_112': ('models.train_step', dict(backbone='resnet18', size=112, batch=32,
                                                     repeats=5)),
    'resnet18_train_224': ('models.train_step', dict(backbone='resnet18', size=224, batch=16,
                                                     repeats=3)),
    'maxvit_t_train_224': ('models.train_step', dict(backbone='maxvit_t', size=224, batch=8,
                                                     repeats=3)),
    'cafe_step_224': ('cafe.step', dict(batch=16, repeats=3)),
    'dan_train_112': ('dan.step', dict(size=112, batch=32, repeats=3)),
    'grefel_train_64': ('grefel.step', dict(variant='cpu', batch=16, repeats=3)),
    'vgg16_grey_train_48': ('ldl.step', dict(size=48, batch=64, repeats=5)),
    'resnet18_infer_b1': ('models.inference', dict(backbone='resnet18', size=112, batch=1,
                                                   repeats=30)),
    'resnet18_infer_b64': ('models.inference', dict(backbone='resnet18', size=112, batch=64,
                                                    repeats=5)),
    'clip_features_224': ('models.clip_features', dict(batch=16, repeats=3)),
    'pipeline': ('pipeline.loaders', dict(num_images=1024, workers=2, repeats=3)),
    'augment': ('pipeline.augmentation', dict(repeats=10)),
    'predict_photos': ('predict.throughput', dict(num_images=256, batch=64, repeats=3)),
    'predict_crops': ('predict.throughput', dict(num_images=256, batch=64, repeats=3,
                                                 faces='none')),
    'predict_video_memory': ('predict.video_memory', dict(minutes=10.0, fps=10)),
}
FULL = {
    'resnet18_train_112': ('models.train_step', dict(backbone='resnet18', size=112, batch=256,
                                                     repeats=20)),
    'resnet18_train_224': ('models.train_step', dict(backbone='resnet18', size=224, batch=128,
                                                     repeats=20)),
    'maxvit_t_train_224': ('models.train_step', dict(backbone='maxvit_t', size=224, batch=64,
                                                     repeats=10)),
    'cafe_step_224': ('cafe.step', dict(batch=32, repeats=20)),
    'dan_train_112': ('dan.step', dict(size=112, batch=256, repeats=20)),
    'dan_train_224': ('dan.step', dict(size=224, batch=128, repeats=10)),
    'grefel_train_112': ('grefel.step', dict(variant='', batch=64, repeats=10)),
    'vgg16_grey_train_48': ('ldl.step', dict(size=48, batch=256, repeats=20)),
    'resnet18_infer_b1': ('models.inference', dict(backbone='resnet18', size=112, batch=1,
                                                   repeats=100)),
    'resnet18_infer_b64': ('models.inference', dict(backbone='resnet18', size=112, batch=64,
                                                    repeats=20)),
    'clip_features_224': ('models.clip_features', dict(batch=128, repeats=10)),
    'pipeline': ('pipeline.loaders', dict(num_images=8192, workers=8, repeats=3)),
    'augment': ('pipeline.augmentation', dict(repeats=50)),
    'predict_photos': ('predict.throughput', dict(num_images=1024, batch=256, repeats=5)),
    'predict_crops': ('predict.throughput', dict(num_images=1024, batch=256, repeats=5,
                                                 faces='none')),
    'predict_video_memory': ('predict.video_memory', dict(minutes=10.0, fps=25)),
}
_UNITS = {'augment': 'img/s', 'predict_video_memory': 'frames/s'}


def _call(path: str, kwargs: dict) -> dict:
  import importlib
  mod, fn = path.rsplit('.', 1)
  return getattr(importlib.import_module(f'bench.{mod}'), fn)(**kwargs)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  suite = QUICK if FLAGS.suite == 'quick' else FULL
  names = FLAGS.only or list(suite)
  bad = [n for n in names if n not in suite]
  if bad:
    raise cli.UserError(f'--only: unknown benchmarks {bad}; known: {", ".join(suite)}')
  if FLAGS.out and not FLAGS.out.endswith('.json'):
    raise cli.UserError(f'--out {FLAGS.out!r}: name a .json file (the table goes beside it)')
  started = time.time()
  from ferjax import runtime
  runtime.setup()
  from bench import common
  now = datetime.datetime.now().astimezone()
  meta = common.machine() | {'suite': FLAGS.suite, 'date': now.date().isoformat(),
                             'timestamp': now.isoformat(timespec='seconds')}
  peak = common.matmul_peak_gflops()
  meta['matmul_peak_gflops'] = peak
  print(f'# {meta["platform"]}, {meta["cpus"]} CPUs, jax {meta["jax"]}, torch '
        f'{meta.get("torch")}; measured fp32 matmul peak {peak:.1f} GFLOP/s', flush=True)
  rep = common.Report()
  for name in names:
    fn, kw = suite[name]
    r = _call(fn, kw)
    row = {'name': name, 'unit': _UNITS.get(name, 'img/s'), **kw}
    for side in ('ferjax', 'torch'):
      if side in r:
        row[side] = r[side]['per_s']
        row[f'{side}_spread'] = [r[side]['per_s_min'], r[side]['per_s_max']]
        row[f'{side}_step_ms'] = r[side]['step_ms']
    notes = []
    if 'compile_s' in r:
      row['compile_s'] = r['compile_s']
      notes.append(f'compile {r["compile_s"]:.1f} s')
    if 'flops' in r and 'ferjax' in r:
      per_s = r['flops'] / (r['ferjax']['step_ms'] / 1e3) / 1e9
      row['gflops_per_s'], row['utilisation'] = per_s, per_s / peak
      row['gflop_per_image'] = r['flops'] / kw.get('batch', 1) / 1e9
      notes.append(f'{row["gflop_per_image"]:.2f} GFLOP/img, {100 * per_s / peak:.0f}% of peak')
    if 'xla_temp_mb' in r:
      row['xla_temp_mb'] = r['xla_temp_mb']
      notes.append(f'XLA temp {r["xla_temp_mb"]:.0f} MB')
    if name == 'augment':
      notes.append(f'{r["ferjax"]["step_ms"]:.1f} ms per batch of 64 at 112 px')
    for key in ('latency_ms', 'best', 'rss_mb'):   # the predict rows' figures
      if key in r:
        row[key] = r[key]
    for key in ('ferjax_exact', 'cache_gain'):     # the CAFE step's exact-mode figures
      if key in r:
        row[key] = r[key]['per_s'] if isinstance(r[key], dict) else r[key]
    if 'notes' in r:
      notes.append(r['notes'])
    row['notes'] = ', '.join(notes)
    rep.add(**row)
  meta['peak_rss_mb'] = common.peak_rss_mb()
  meta['duration_s'] = time.time() - started
  out = FLAGS.out or _free_path(os.path.join(os.path.dirname(__file__), 'results'), meta['date'])
  rep.write(out, meta)
  table = rep.table()
  with open(out[:-5] + '.md', 'w') as f:
    f.write(table + '\n')
  print('\n' + table)
  print(f'\nwrote {out} (peak RSS {meta["peak_rss_mb"]:.0f} MB); `python -m bench.readme` '
        'puts it into the README', file=sys.stderr)
  return 0


def _free_path(folder: str, date: str) -> str:
  path, n = os.path.join(folder, f'{date}.json'), 1
  while os.path.exists(path):
    n += 1
    path = os.path.join(folder, f'{date}_{n}.json')
  return path


if __name__ == '__main__':
  cli.run(main)
