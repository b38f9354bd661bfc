"""Paper 002's study as one resumable command: models x losses x N-hot label sets.

  python -m ferjax.studies.label_distribution --config configs/ldl_synthetic.py \
      --models vgg16,ran,dan,mten --losses all --nhot 1-8 --workdir runs/ldl

Cells (model, loss, N), as the paper's figures need them (`--grid paper`, the default):
  Fig. 26  the first model with every loss of --losses on the full distributions (N = 8);
  Fig. 28  every model with --nhot_loss (MSE, the paper's pick) at every N of --nhot, scored
  Fig. 29  on the ordinary and the complex test set.
`--grid full` trains every combination instead.

Each cell is one run of the project's trainer in WORKDIR/cells/MODEL-LOSS-nN, with the config
file loaded as `FILE:ARGS,model=MODEL,loss=LOSS,nhot=N` (the config file names the models it
knows and errs on others). A finished cell leaves cell.json and is skipped next time; a killed
sweep continues where it stopped (an interrupted cell resumes from its last checkpoint).
WORKDIR gets results.csv (one row per cell), study.json (the training wall time summed over
the cells) and fig26_losses.png, fig28_nhot_ordinary.png, fig29_nhot_complex.png, rewritten
after every cell.
"""
from __future__ import annotations

import csv
import json
import os
import time

from absl import flags

from ferjax import cli as cli_lib, runtime
from ferjax.errors import UserError

FLAGS = flags.FLAGS
SETS = ('ordinary', 'complex')
COLUMNS = ('model', 'loss', 'nhot', 'ordinary_anymax', 'complex_anymax', 'ordinary_majority',
           'complex_majority', 'ordinary_n', 'complex_n', 'steps', 'wall_s')


def parse_nhot(text: str) -> list[int]:
  """'1-8' or '1,2,3,8' -> sorted N values in 1..8."""
  out = set()
  for part in str(text).split(','):
    part = part.strip()
    if not part:
      continue
    lo, sep, hi = part.partition('-')
    try:
      values = range(int(lo), int(hi) + 1) if sep else [int(lo)]
    except ValueError:
      raise UserError(f'--nhot={text!r}: expected N, A-B or a comma list of them') from None
    out.update(values)
  if not out or min(out) < 1 or max(out) > 8:
    raise UserError(f'--nhot={text!r}: N must lie in 1..8')
  return sorted(out)


def parse_losses(text: str) -> list[str]:
  from ferjax import losses
  if text.strip() == 'all':
    return list(losses.DISTRIBUTION_LOSSES)
  names = [s.strip() for s in text.split(',') if s.strip()]
  bad = [n for n in names if n not in losses.LOSS_NAMES]
  if bad or not names:
    raise UserError(f'--losses: unknown {bad or text!r}; known: all, '
                    f'{", ".join(losses.LOSS_NAMES)}')
  return names


def cells(models, loss_names, nhots, grid: str = 'paper', nhot_loss: str = 'mse'):
  """The (model, loss, N) cells of the study, in training order, without repeats."""
  if grid == 'full':
    out = [(m, l, n) for m in models for l in loss_names for n in nhots]
  elif grid == 'paper':
    out = [(models[0], l, 8) for l in loss_names]
    out += [(m, nhot_loss, n) for m in models for n in nhots]
  else:
    raise UserError(f'--grid={grid!r}; expected paper or full')
  return list(dict.fromkeys(out))


def cell_name(model: str, loss: str, nhot: int) -> str:
  return f'{model}-{loss}-n{nhot}'


def cell_config(config: str, model: str, loss: str, nhot: int):
  from ferjax import config as config_lib
  path, _, arg = config.partition(':')
  cell = f'model={model},loss={loss},nhot={nhot}'
  try:
    return config_lib.load(f'{path}:{arg + "," if arg else ""}{cell}')
  except ValueError as e:   # the config file's own message: unknown model, loss or argument
    raise UserError(f'{config} ({cell}): {e}') from None


def _final_reports(cell_dir: str) -> tuple[int, dict]:
  """(step, reports) of the run's final evaluation (eval/step_N/results.json, N largest)."""
  root = os.path.join(cell_dir, 'eval')
  steps = sorted(int(d[5:]) for d in os.listdir(root)
                 if d.startswith('step_') and d[5:].isdigit()) if os.path.isdir(root) else []
  if not steps:   # stopped (SIGTERM) before the end: its checkpoint continues next time
    raise UserError(f'{cell_dir}: stopped before its final evaluation; run the same command '
                    'again to continue the sweep')
  with open(os.path.join(root, f'step_{steps[-1]}', 'results.json')) as f:
    return steps[-1], json.load(f)['reports']


def run_cell(config: str, workdir: str, model: str, loss: str, nhot: int) -> dict:
  """Trains one cell (or finds it finished) and returns its results.csv row."""
  from ferjax import trainer
  cell_dir = os.path.join(workdir, 'cells', cell_name(model, loss, nhot))
  done = os.path.join(cell_dir, 'cell.json')
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  cfg = cell_config(config, model, loss, nhot)
  t0 = time.time()
  trainer.train(cfg, cell_dir)
  step, reports = _final_reports(cell_dir)
  row = {'model': model, 'loss': loss, 'nhot': nhot, 'steps': step,
         'wall_s': round(time.time() - t0, 1)}
  for name in SETS:
    votes = reports.get(name, {}).get('votes', {})
    row[f'{name}_anymax'] = votes.get('anymax_accuracy')
    row[f'{name}_majority'] = votes.get('majority_accuracy')
    row[f'{name}_n'] = votes.get('n')
  tmp = done + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(row, f, indent=1)
  os.replace(tmp, done)          # written last: a cell without cell.json is not finished
  return row


def write_csv(rows: list[dict], path: str) -> None:
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
    w.writeheader()
    for r in rows:
      w.writerow({k: (f'{v:.2f}' if isinstance(v, float) else v) for k, v in r.items()})


def _figure(width=6.0):
  from ferjax import plots
  fig = plots._new_figure((width, 4.0))
  return fig, fig.add_subplot(1, 1, 1)


def plot_losses(rows, model: str, path: str) -> str | None:
  """Fig. 26: the test accuracy of one model per loss (N = 8)."""
  from ferjax import plots
  sel = [r for r in rows if r['model'] == model and r['nhot'] == 8]
  if not sel:
    return None
  sel.sort(key=lambda r: -(r['ordinary_anymax'] or 0))
  fig, ax = _figure(max(5.0, 0.7 * len(sel) + 2))
  vals = [r['ordinary_anymax'] or 0 for r in sel]
  ax.bar(range(len(sel)), vals, color='tab:blue')
  for i, v in enumerate(vals):
    ax.text(i, v, f'{v:.1f}', ha='center', va='bottom', fontsize=8)
  ax.set_xticks(range(len(sel)), [r['loss'] for r in sel], rotation=30, ha='right')
  ax.set_ylabel('ordinary test accuracy (any-max, %)')
  ax.set_title(f'{model}: loss functions (8-hot targets)')
  return plots._save(fig, path)


def plot_nhot(rows, models, loss: str, path: str, sets=('ordinary',)) -> str | None:
  """Fig. 28 (ordinary) / Fig. 29 (ordinary solid, complex dashed): accuracy against N."""
  from ferjax import plots
  fig, ax = _figure()
  drawn = False
  for i, m in enumerate(models):
    sel = sorted((r for r in rows if r['model'] == m and r['loss'] == loss),
                 key=lambda r: r['nhot'])
    for name, style in zip(sets, ('-', '--')):
      pts = [(r['nhot'], r[f'{name}_anymax']) for r in sel if r[f'{name}_anymax'] is not None]
      if len(pts) > 0:
        ax.plot(*zip(*pts), style, marker='o', color=f'C{i}', label=f'{m} ({name})')
        drawn = True
  if not drawn:
    return None
  ax.set_xlabel('N (N-hot training targets)')
  ax.set_ylabel('test accuracy (any-max, %)')
  ax.set_xticks(range(1, 9))
  ax.set_title(f'N-hot label sets, {loss} loss')
  ax.legend(fontsize=8)
  return plots._save(fig, path)


def study(config: str, workdir: str, models, loss_names, nhots, grid='paper',
          nhot_loss='mse', only_finished: bool = False) -> list[dict]:
  """Trains the missing cells (only_finished: none, the table and figures of those done) and
  returns their results.csv rows."""
  for m in dict.fromkeys(models):     # every model name checked before anything trains
    cell_config(config, m, nhot_loss, 8)
  todo = cells(list(models), list(loss_names), list(nhots), grid, nhot_loss)
  os.makedirs(workdir, exist_ok=True)
  meta_path = os.path.join(workdir, 'study.json')
  meta = {'wall_s': 0.0}
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
  rows = []
  for k, (m, l, n) in enumerate(todo):
    if only_finished and not os.path.exists(
        os.path.join(workdir, 'cells', cell_name(m, l, n), 'cell.json')):
      runtime.say(f'cell {k + 1}/{len(todo)}: {cell_name(m, l, n)} not finished, left out')
      continue
    runtime.say(f'cell {k + 1}/{len(todo)}: {cell_name(m, l, n)}')
    rows.append(run_cell(config, workdir, m, l, n))
    # The table, figures and wall time after every cell: a stopped sweep shows what it has.
    meta.update(config=config, cells=len(rows), of=len(todo), grid=grid,
                wall_s=round(sum(r['wall_s'] for r in rows), 1))
    with open(meta_path, 'w') as f:
      json.dump(meta, f, indent=1)
    write_csv(rows, os.path.join(workdir, 'results.csv'))
    plot_losses(rows, models[0], os.path.join(workdir, 'fig26_losses.png'))
    plot_nhot(rows, models, nhot_loss, os.path.join(workdir, 'fig28_nhot_ordinary.png'))
    plot_nhot(rows, models, nhot_loss, os.path.join(workdir, 'fig29_nhot_complex.png'), SETS)
  runtime.say(f'{len(rows)} cells in {workdir}/results.csv; training wall time '
              f'{meta["wall_s"]:.0f} s')
  return rows


def _define_flags() -> None:
  flags.DEFINE_string('config', None, 'Config file, optionally FILE:k=v,... (each cell adds '
                      'model=,loss=,nhot=).')
  flags.DEFINE_string('workdir', None, 'Study directory: cells/, results.csv, figures.')
  flags.DEFINE_list('models', ['vgg16'], 'Model names the config file knows.')
  flags.DEFINE_string('losses', 'all', "Comma-separated loss names, or 'all' (the ten).")
  flags.DEFINE_string('nhot', '1-8', 'N values: A-B or a comma list.')
  flags.DEFINE_string('nhot_loss', 'mse', 'The loss of the N-hot cells (paper grid).')
  flags.DEFINE_enum('grid', 'paper', ['paper', 'full'], 'Which cells: the figures\' or all.')
  flags.DEFINE_boolean('only_finished', False, 'Train nothing: the table and figures of the '
                       'cells already finished.')
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv) -> int:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  runtime.setup()
  if not os.path.exists(FLAGS.config.partition(':')[0]):
    raise UserError(f'--config: no file {FLAGS.config.partition(":")[0]!r}')
  if FLAGS.nhot_loss not in parse_losses(FLAGS.nhot_loss):
    raise UserError(f'--nhot_loss={FLAGS.nhot_loss!r}')
  study(FLAGS.config, FLAGS.workdir, FLAGS.models, parse_losses(FLAGS.losses),
        parse_nhot(FLAGS.nhot), FLAGS.grid, FLAGS.nhot_loss, FLAGS.only_finished)
  return 0


def cli() -> None:
  _define_flags()
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
