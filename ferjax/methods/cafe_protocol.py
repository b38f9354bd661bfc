"""CAFE's cross-domain protocol (Table 1) on the synthetic benchmark: train on each domain, test
on all, print the matrix (rows: training domain; columns: test domains and their mean).

  python -m ferjax.methods.cafe_protocol --config configs/cafe_synthetic.py:cpu \\
      --workdir runs/cafe_xdomain [--domains lab,wild] [--extra variant=baseline]

`--compare DIR,DIR,...` prints, for finished runs, mean in-domain / cross-domain accuracy side by
side (the Table 2 ablation on the synthetic domains).

Each row is an ordinary `ferjax.train` run in `<workdir>/<domain>` (the config argument gets
`domain=<d>` appended); a finished run is not retrained, its final results.json is read back.
Writes `<workdir>/matrix.md` and `matrix.json`.
"""
from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np


def _final_results(workdir: str) -> dict | None:
  runs = glob.glob(os.path.join(workdir, 'eval', 'step_*', 'results.json'))
  if not runs:
    return None
  last = max(runs, key=lambda p: int(p.split('step_')[-1].split(os.sep)[0]))
  with open(last) as f:
    return json.load(f)


def matrix_table(rows: dict[str, dict[str, float]], tests: list[str]) -> str:
  head = '| train \\ test | ' + ' | '.join(tests) + ' | mean |'
  lines = [head, '|' + '---|' * (len(tests) + 2)]
  for train, accs in rows.items():
    vals = [accs[t] for t in tests]
    cells = [f'**{v:.2f}**' if t == train else f'{v:.2f}' for t, v in zip(tests, vals)]
    lines.append(f'| {train} | ' + ' | '.join(cells) + f' | {np.mean(vals):.2f} |')
  return '\n'.join(lines)


def run_protocol(config: str, workdir: str, domains: list[str], extra: str = '') -> dict:
  from ferjax import config as config_lib, runtime, trainer
  runtime.setup()
  path, _, arg = config.partition(':')
  rows = {}
  for d in domains:
    parts = [p for p in (arg, extra, f'domain={d}') if p]
    cfg = config_lib.load(f'{path}:{",".join(parts)}')
    wd = os.path.join(workdir, d)
    if _final_results(wd) is None:
      trainer.train(cfg, wd)
    res = _final_results(wd)
    rows[d] = {r['dataset'].split('/')[0]: r['accuracy'] for r in res['summary']
               if r['dataset'] != 'mean'}
  tests = list(next(iter(rows.values())))
  table = matrix_table(rows, tests)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'matrix.md'), 'w') as f:
    f.write(f'Cross-domain accuracy (%), config {config} {extra}\n\n{table}\n')
  with open(os.path.join(workdir, 'matrix.json'), 'w') as f:
    json.dump({'config': config, 'extra': extra, 'rows': rows}, f, indent=1)
  print(table)
  return rows


def compare_table(workdirs: list[str]) -> str:
  """One row per finished protocol run (its matrix.json): mean in-domain accuracy (the
  diagonal), mean cross-domain accuracy (off the diagonal) and the mean of the whole matrix,
  the synthetic analogue of the paper's Table 2."""
  lines = ['| run | config | in-domain | cross-domain | all |', '|---|---|---|---|---|']
  for wd in workdirs:
    with open(os.path.join(wd, 'matrix.json')) as f:
      m = json.load(f)
    rows = m['rows']
    diag = [accs[train] for train, accs in rows.items()]
    off = [v for train, accs in rows.items() for test, v in accs.items() if test != train]
    lines.append(f'| {os.path.basename(os.path.normpath(wd))} | {m["config"]} {m["extra"]} | '
                 f'{np.mean(diag):.2f} | {np.mean(off):.2f} | {np.mean(diag + off):.2f} |')
  return '\n'.join(lines)


def main(argv=None):
  from ferjax import config as config_lib
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', help='configs/cafe_synthetic.py[:args]')
  p.add_argument('--workdir', help='where the runs and matrix.json go')
  p.add_argument('--compare', default='',
                 help='comma-separated workdirs of finished runs: print their summary table')
  p.add_argument('--domains', default=','.join(config_lib.SYNTHETIC_DOMAINS))
  p.add_argument('--extra', default='', help='more config arguments, e.g. variant=baseline')
  a = p.parse_args(argv)
  if a.compare:
    print(compare_table([d for d in a.compare.split(',') if d]))
    return
  if not (a.config and a.workdir):
    p.error('--config and --workdir are needed (or --compare)')
  run_protocol(a.config, a.workdir, [d for d in a.domains.split(',') if d], a.extra)


if __name__ == '__main__':
  main()
