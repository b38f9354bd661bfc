"""Runs a benchmark suite and writes bench/results/<date>.json (and .md).

  python -m bench.run --suite quick      # < 10 minutes on a 2-core CPU
  python -m bench.run --suite full       # accelerators: larger batches, more repeats
  python -m bench.run --only resnet18_train_112,pipeline

Every figure compares ferjax with the PyTorch reference run side by side (interleaved) on the
same machine; ratios > 1 mean ferjax is faster. Needs the torch extra (torch, torchvision,
transformers).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

# Suites: name -> (function, kwargs). Batch sizes fit a 24 GB, 2-core CPU in the quick suite.
QUICK = {
    'resnet18_train_112': ('models.train_step', dict(backbone='resnet18', size=112, batch=32,
                                                     repeats=5)),
    'resnet18_train_224': ('models.train_step', dict(backbone='resnet18', size=224, batch=16,
                                                     repeats=3)),
    'maxvit_t_train_224': ('models.train_step', dict(backbone='maxvit_t', size=224, batch=8,
                                                     repeats=3)),
    'cafe_step_224': ('cafe.step', dict(batch=16, repeats=3)),
    'resnet18_infer_b1': ('models.inference', dict(backbone='resnet18', size=112, batch=1,
                                                   repeats=30)),
    'resnet18_infer_b64': ('models.inference', dict(backbone='resnet18', size=112, batch=64,
                                                    repeats=5)),
    'clip_features_224': ('models.clip_features', dict(batch=16, repeats=3)),
    'pipeline': ('pipeline.loaders', dict(num_images=1024, workers=2, repeats=3)),
    'augment': ('pipeline.augmentation', dict(repeats=10)),
}
FULL = {
    'resnet18_train_112': ('models.train_step', dict(backbone='resnet18', size=112, batch=256,
                                                     repeats=20)),
    'resnet18_train_224': ('models.train_step', dict(backbone='resnet18', size=224, batch=128,
                                                     repeats=20)),
    'maxvit_t_train_224': ('models.train_step', dict(backbone='maxvit_t', size=224, batch=64,
                                                     repeats=10)),
    'cafe_step_224': ('cafe.step', dict(batch=32, repeats=20)),
    'resnet18_infer_b1': ('models.inference', dict(backbone='resnet18', size=112, batch=1,
                                                   repeats=100)),
    'resnet18_infer_b64': ('models.inference', dict(backbone='resnet18', size=112, batch=64,
                                                    repeats=20)),
    'clip_features_224': ('models.clip_features', dict(batch=128, repeats=10)),
    'pipeline': ('pipeline.loaders', dict(num_images=8192, workers=8, repeats=3)),
    'augment': ('pipeline.augmentation', dict(repeats=50)),
}
_UNITS = {'augment': 'img/s'}


def _call(path: str, kwargs: dict) -> dict:
  import importlib
  mod, fn = path.rsplit('.', 1)
  return getattr(importlib.import_module(f'bench.{mod}'), fn)(**kwargs)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m bench.run', description=__doc__.split('\n')[0])
  ap.add_argument('--suite', choices=('quick', 'full'), default='quick')
  ap.add_argument('--only', default='', help='comma-separated benchmark names')
  ap.add_argument('--out', default='', help='JSON path; default bench/results/<date>.json')
  args = ap.parse_args(argv)
  suite = QUICK if args.suite == 'quick' else FULL
  names = [n for n in args.only.split(',') if n] or list(suite)
  bad = [n for n in names if n not in suite]
  if bad:
    ap.error(f'unknown benchmarks {bad}; known: {", ".join(suite)}')
  from ferjax import runtime
  runtime.setup()
  from bench import common
  meta = common.machine() | {'suite': args.suite, 'date': datetime.date.today().isoformat()}
  peak = common.matmul_peak_gflops()
  meta['matmul_peak_gflops'] = peak
  print(f'# {meta["platform"]}, {meta["cpus"]} CPUs, jax {meta["jax"]}, torch '
        f'{meta.get("torch")}; measured fp32 matmul peak {peak:.1f} GFLOP/s', flush=True)
  rep = common.Report()
  for name in names:
    fn, kw = suite[name]
    r = _call(fn, kw)
    row = {'name': name, 'unit': _UNITS.get(name, 'img/s'), **{k: v for k, v in kw.items()}}
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
    for key in ('ferjax_exact', 'cache_gain'):     # the CAFE step's exact-mode figures
      if key in r:
        row[key] = r[key]['per_s'] if isinstance(r[key], dict) else r[key]
    if 'notes' in r:
      notes.append(r['notes'])
    row['notes'] = ', '.join(notes)
    rep.add(**row)
  meta['peak_rss_mb'] = common.peak_rss_mb()
  out = args.out or os.path.join(os.path.dirname(__file__), 'results', f'{meta["date"]}.json')
  rep.write(out, meta)
  table = rep.table()
  with open(out[:-5] + '.md', 'w') as f:
    f.write(table + '\n')
  print('\n' + table)
  print(f'\nwrote {out} (peak RSS {meta["peak_rss_mb"]:.0f} MB)', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
