"""Scoring a model on eval sets (used by the trainer and by `python -m ferjax.eval`).

Every example counts exactly once: the last batch is padded and padding is masked out.
`write_outputs` writes `results.json`, `results.md`, a confusion matrix PNG per set (the
matrices themselves are in the JSON) and a per-set accuracy bar chart. When the method predicts
'va' (or EMOTIC's 'vad'), each set also gets a predicted-vs-true scatter (`va_scatter_<set>.png`)
and the absolute-error curve of CAGE's Fig. 10 (`va_abs_error_<set>.png`). A method without
'probs' (CAGE's VA model, EMOTIC) gets only the reports that apply: no classification columns.
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
VAD_NAMES = ('valence', 'arousal', 'dominance')
# Batch keys kept next to the predictions for scoring (those the batch has).
_TARGETS = ('label', 'label_dist', 'va', 'va_mask', 'vad', 'vad_mask', 'multilabel', 'mask')


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
    keep = {k: batch[k] for k in _TARGETS if k in batch}
    outs.append(multihost_utils.process_allgather(pred, tiled=True))
    labels.append(multihost_utils.process_allgather(keep, tiled=True))
  cat = lambda parts: jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
  return cat(outs), cat(labels)


def score(pred: dict, data: dict, class_names) -> dict:
  """Report metrics of one eval set (padding excluded through the mask)."""
  mask = data['mask']
  if 'probs' in pred and np.any((mask > 0) & (data['label'] >= 0)):
    report = metrics.classification_report(data['label'], pred['probs'], class_names, mask=mask)
  else:   # no expression labels (EMOTIC, a V/A-only set): no accuracy of 0 out of 0
    report = {'n': int(np.sum(mask > 0))}
  if 'multilabel' in pred and 'multilabel' in data:
    report['multilabel'] = metrics.multilabel_report(data['multilabel'], pred['multilabel'],
                                                     class_names, k=3, mask=mask)
  for key, names in (('va', VA_NAMES), ('vad', VAD_NAMES)):
    if key not in pred or key not in data:
      continue
    reg_mask = mask * data.get(key + '_mask', data['va_mask'])
    if reg_mask.sum() > 0:
      report[key] = metrics.regression_report(data[key], pred[key], names=names, mask=reg_mask)
      # CAGE's single V/A numbers and its Fig. 10 curve (ferjax.metrics for the definitions).
      report[key + '_concat_official'] = metrics.concat_regression_official(
          data[key], pred[key], mask=reg_mask)
      report[key + '_abs_error'] = metrics.abs_error_curve(data[key], pred[key], names=names,
                                                           mask=reg_mask)
  return report


def summary_row(name: str, report: dict) -> dict:
  row = {'dataset': name, 'n': report['n']}
  if 'accuracy' in report:
    row.update({'accuracy': 100 * report['accuracy'], 'macro_f1': 100 * report['macro_f1'],
                'weighted_f1': 100 * report['weighted_f1']})
  if 'multilabel' in report:
    row.update({'top3_accuracy': 100 * report['multilabel']['top3_accuracy'],
                'mean_ap': 100 * report['multilabel']['mean_ap']})
  for key, names in (('va', VA_NAMES), ('vad', VAD_NAMES)):
    if key in report:
      for dim in names:
        row[f'{dim}_rmse'] = report[key][dim]['rmse']
        row[f'{dim}_ccc'] = report[key][dim]['ccc']
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
      _scatter(pred, data, spec, out_dir)
  if out_dir and jax.process_index() == 0:
    write_outputs(reports, out_dir, class_names)
    method_report(cfg, state, specs, out_dir)
  return reports


def method_report(cfg, state, specs, out_dir: str):
  """The method's own pictures: its module's `report(cfg, state, specs, out_dir)`, if any."""
  import importlib

  from ferjax import methods
  module = methods.REGISTRY.get(cfg.get('method', ''))
  hook = getattr(importlib.import_module(module), 'report', None) if module else None
  return hook(cfg, state, specs, out_dir) if hook is not None else None


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
    stem = _stem(spec)
    if 'confusion' in r:
      plots.plot_confusion(np.asarray(r['confusion']), class_names,
                           os.path.join(out_dir, f'confusion_{stem}.png'), title=spec)
    for key in ('va', 'vad'):
      if key + '_abs_error' in r:
        plots.plot_abs_error_curve(r[key + '_abs_error'],
                                   os.path.join(out_dir, f'{key}_abs_error_{stem}.png'),
                                   title=f'{spec}: absolute error')
  if len(reports) > 1 and all('accuracy' in r for r in reports.values()):
    plots.plot_per_domain_bars({sources.display_name(s): 100 * r['accuracy']
                                for s, r in reports.items()},
                               os.path.join(out_dir, 'accuracy_per_set.png'), 'accuracy (%)')
  return table


def _stem(spec: str) -> str:
  return sources.display_name(spec).replace('/', '_')


def _scatter(pred: dict, data: dict, spec: str, out_dir: str) -> None:
  """Predicted-vs-true V/A (or V/A/D) scatter of the scored rows."""
  for key, names in (('va', VA_NAMES), ('vad', VAD_NAMES)):
    if key in pred and key in data:
      keep = (data['mask'] * data.get(key + '_mask', data['va_mask'])) > 0
      if keep.any():
        plots.plot_va_scatter(data[key][keep], pred[key][keep],
                              os.path.join(out_dir, f'{key}_scatter_{_stem(spec)}.png'),
                              title=spec, names=names)
