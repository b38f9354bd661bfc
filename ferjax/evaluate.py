"""Scoring a model on eval sets (used by the trainer and by `python -m ferjax.eval`).

Every example counts exactly once: the last batch is padded and padding is masked out.
`write_outputs` writes `results.json`, `results.md`, a confusion matrix PNG per set (the
matrices themselves are in the JSON) and a per-set accuracy bar chart.
"""
from __future__ import annotations

import json
import os
import jax
import numpy as np
from jax.experimental import multihost_utils

from ferjax import metrics, plots, runtime, sharding
from ferjax.data import pipeline, sources

VA_NAMES = ('valence', 'arousal')


def predict_set(predict_fn, state, eval_set: pipeline.EvalSet, mesh, progress: bool = False):
  """Runs `predict_fn` over a whole eval set; returns host arrays in dataset order."""
  outs, labels = [], []
  batches = eval_set.local_batches()
  if progress:
    batches = runtime.progress(batches, total=eval_set.num_batches,
                               desc=f'eval {sources.display_name(eval_set.spec)}')
  for local in batches:
    batch = sharding.to_global(local, mesh)
    pred = predict_fn(state, batch)
    keep = {k: batch[k] for k in ('label', 'label_dist', 'va', 'va_mask', 'mask')}
    outs.append(multihost_utils.process_allgather(pred, tiled=True))
    labels.append(multihost_utils.process_allgather(keep, tiled=True))
  cat = lambda parts: jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
  return cat(outs), cat(labels)


def score(pred: dict, data: dict, class_names) -> dict:
  """Report metrics of one eval set (padding excluded through the mask)."""
  mask = data['mask']
  report = metrics.classification_report(data['label'], pred['probs'], class_names, mask=mask)
  if 'va' in pred:
    va_mask = mask * data['va_mask']
    if va_mask.sum() > 0:
      report['va'] = metrics.regression_report(data['va'], pred['va'], names=VA_NAMES,
                                               mask=va_mask)
  return report


def summary_row(name: str, report: dict) -> dict:
  row = {'dataset': name, 'n': report['n'], 'accuracy': 100 * report['accuracy'],
         'macro_f1': 100 * report['macro_f1'], 'weighted_f1': 100 * report['weighted_f1']}
  if 'va' in report:
    for dim in VA_NAMES:
      row[f'{dim}_rmse'] = report['va'][dim]['rmse']
      row[f'{dim}_ccc'] = report['va'][dim]['ccc']
  return row


def evaluate(predict_fn, state, specs, cfg, mesh, class_names, out_dir: str | None = None,
             progress: bool = True) -> dict:
  """Scores every spec; writes files under out_dir (process 0) when given."""
  reports = {}
  for spec in specs:
    eval_set = pipeline.EvalSet(spec, cfg, cfg.seed)
    pred, data = predict_set(predict_fn, state, eval_set, mesh, progress)
    reports[spec] = score(pred, data, class_names)
    if int(data['mask'].sum()) != len(eval_set):  # the padding invariant, checked every time
      raise AssertionError(f'{spec}: scored {data["mask"].sum()} examples of {len(eval_set)}')
  if out_dir and jax.process_index() == 0:
    write_outputs(reports, out_dir, class_names)
  return reports


def write_outputs(reports: dict, out_dir: str, class_names) -> str:
  os.makedirs(out_dir, exist_ok=True)
  rows = [summary_row(sources.display_name(s), r) for s, r in reports.items()]
  if len(rows) > 1:
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ('dataset', 'n')}
    rows.append(dict(mean, dataset='mean', n=sum(r['n'] for r in rows)))
  with open(os.path.join(out_dir, 'results.json'), 'w') as f:
    json.dump({'class_names': list(class_names), 'summary': rows, 'reports': reports}, f,
              indent=1)
  columns = list(rows[0].keys())
  table = metrics.markdown_table(rows, columns)
  with open(os.path.join(out_dir, 'results.md'), 'w') as f:
    f.write(table + '\n')
  for spec, r in reports.items():
    stem = sources.display_name(spec).replace('/', '_')
    plots.plot_confusion(np.asarray(r['confusion']), class_names,
                         os.path.join(out_dir, f'confusion_{stem}.png'), title=spec)
  if len(reports) > 1:
    plots.plot_per_domain_bars({sources.display_name(s): 100 * r['accuracy']
                                for s, r in reports.items()},
                               os.path.join(out_dir, 'accuracy_per_set.png'), 'accuracy (%)')
  return table
