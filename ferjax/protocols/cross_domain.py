"""The cross-domain protocol for any method: train on each listed dataset, test on all, print
the matrix (rows: training set; columns: test sets and their mean; the diagonal, bold, is the
in-domain score).

  python -m ferjax.protocols.cross_domain --config configs/cafe_synthetic.py:cpu \\
      --workdir runs/cafe_xdomain [--train synthetic:lab:train,synthetic:wild:train] \\
      [--test synthetic:lab:test,...] [--extra variant=baseline]

--train defaults to every synthetic domain's train split, --test to the config's eval sets.
Each row is an ordinary training run in `<workdir>/<train set>` with `data.train` set to that
set and `data.eval_sets` to the test sets; a finished run is not retrained, its final
results.json is read back. Writes `<workdir>/matrix.md` and `matrix.json`.

`--compare DIR,DIR,...` prints, for finished protocols, mean in-domain / cross-domain accuracy
side by side (CAFE's Table 2 ablation on the synthetic domains).
"""
from __future__ import annotations

import json
import os
import re

from absl import flags
import numpy as np

from ferjax import cli as cli_lib
from ferjax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string('config', '', 'Config file with its arguments, FILE[:k=v,...].')
flags.DEFINE_string('workdir', '', 'Where the runs, matrix.md and matrix.json go.')
flags.DEFINE_list('train', [], 'Training sets (dataset specs); default: every synthetic domain.')
flags.DEFINE_list('test', [], "Test sets; default: the config's eval_sets.")
flags.DEFINE_string('extra', '', 'More config arguments, e.g. variant=baseline.')
flags.DEFINE_list('compare', [], 'Workdirs of finished protocols: print their summary table.')

_STEP_DIR = re.compile(r'^step_(\d+)$')


def final_results(workdir: str) -> dict | None:
  """The results.json of a run's final evaluation (eval/step_N with the largest N)."""
  root = os.path.join(workdir, 'eval')
  steps = [(int(m.group(1)), d) for d in (os.listdir(root) if os.path.isdir(root) else [])
           if (m := _STEP_DIR.match(d))
           and os.path.exists(os.path.join(root, d, 'results.json'))]
  if not steps:
    return None
  with open(os.path.join(root, max(steps)[1], 'results.json')) as f:
    return json.load(f)


def _domain(display: str) -> str:
  return display.split('/')[0]


def matrix_table(rows: dict[str, dict[str, float]], tests: list[str]) -> str:
  head = '| train \\ test | ' + ' | '.join(tests) + ' | mean |'
  lines = [head, '|' + '---|' * (len(tests) + 2)]
  for train, accs in rows.items():
    vals = [accs[t] for t in tests]
    cells = [f'**{v:.2f}**' if _domain(t) == _domain(train) else f'{v:.2f}'
             for t, v in zip(tests, vals)]
    lines.append(f'| {train} | ' + ' | '.join(cells) + f' | {np.mean(vals):.2f} |')
  return '\n'.join(lines)


def run_protocol(config: str, workdir: str, train_specs: list[str], test_specs: list[str],
                 extra: str = '', metric: str = 'accuracy') -> dict:
  from ferjax import config as config_lib, runtime, trainer
  from ferjax.data import sources
  runtime.setup()
  path, _, arg = config.partition(':')
  full_arg = ','.join(p for p in (arg, extra) if p)
  rows = {}
  for spec in train_specs:
    cfg = config_lib.load(f'{path}:{full_arg}' if full_arg else path)
    tests = test_specs or [s for s in cfg.data.eval_sets.split(',') if s]
    if not tests:
      raise UserError('no test sets: pass --test or use a config with eval_sets')
    cfg.data.train = spec
    cfg.data.eval_sets = ','.join(tests)
    name = sources.display_name(spec)
    wd = os.path.join(workdir, name.replace('/', '_'))
    if final_results(wd) is None:
      trainer.train(cfg, wd)
    res = final_results(wd)
    if res is None:
      raise RuntimeError(f'{wd}: the run ended without a final evaluation')
    rows[name] = {r['dataset']: r[metric] for r in res['summary'] if r['dataset'] != 'mean'}
  tests = list(next(iter(rows.values())))
  table = matrix_table(rows, tests)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'matrix.md'), 'w') as f:
    f.write(f'Cross-domain {metric} (%), config {config} {extra}\n\n{table}\n')
  with open(os.path.join(workdir, 'matrix.json'), 'w') as f:
    json.dump({'config': config, 'extra': extra, 'metric': metric, 'rows': rows}, f, indent=1)
  print(table)
  return rows


def compare_table(workdirs: list[str]) -> str:
  """One row per finished protocol (its matrix.json): mean in-domain score (the diagonal), mean
  cross-domain score (off the diagonal) and the mean of the whole matrix."""
  lines = ['| run | config | in-domain | cross-domain | all |', '|---|---|---|---|---|']
  for wd in workdirs:
    with open(os.path.join(wd, 'matrix.json')) as f:
      m = json.load(f)
    rows = m['rows']
    diag = [v for train, accs in rows.items() for test, v in accs.items()
            if _domain(test) == _domain(train)]
    off = [v for train, accs in rows.items() for test, v in accs.items()
           if _domain(test) != _domain(train)]
    lines.append(f'| {os.path.basename(os.path.normpath(wd))} | {m["config"]} {m["extra"]} | '
                 f'{np.mean(diag):.2f} | {np.mean(off):.2f} | {np.mean(diag + off):.2f} |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.compare:
    print(compare_table(FLAGS.compare))
    return
  if not (FLAGS.config and FLAGS.workdir):
    raise UserError('--config and --workdir are needed (or --compare)')
  from ferjax import config as config_lib
  train = FLAGS.train or [f'synthetic:{d}:train' for d in config_lib.SYNTHETIC_DOMAINS]
  run_protocol(FLAGS.config, FLAGS.workdir, train, FLAGS.test, FLAGS.extra)


def cli() -> None:
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
