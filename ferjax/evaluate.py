"""Scoring a model on eval sets (used by the trainer and by `python -m ferjax.eval`).

The evaluator is handed a `Predictor` (its method, config and variables) and never imports the
methods. Every example counts exactly once: the last batch is padded and padding is masked out.
The metric groups the method declares (`Method.metrics`) decide what is scored: classification
(accuracy, F1, confusion), regression (valence/arousal, or EMOTIC's V/A/D), multi-label
(top-3, mAP) and landmarks (NME). Accuracy-like rates are in percent everywhere.

`write_outputs` writes `results.json`, `results.md`, a confusion matrix PNG per set, a per-set
accuracy bar chart, V/A scatters and the absolute-error curve of CAGE's Fig. 10; then the
method's own report (`Method.report`) gets the predictions of the same pass.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from ferjax import metrics, plots, runtime, sharding
from ferjax.data import label_modes, pipeline, sources

VA_NAMES = ('valence', 'arousal')
VAD_NAMES = ('valence', 'arousal', 'dominance')
VOTES = ('probs', 'logits')


@dataclasses.dataclass
class SetResult:
  """One evaluation set's pass, as a method's report receives it."""
  spec: str
  report: dict
  predictions: dict     # host arrays in dataset order, padding removed
  targets: dict         # the batch keys the method's metric groups need, same rows
  sample: dict          # the first local batch as read (before preprocessing)
  method: object
  variables: dict       # host {'params', 'batch_stats'}
  out_dir: str


def predict_set(predictor, eval_set: pipeline.EvalSet, progress: bool = False):
  """(predictions, targets, first local batch): host arrays in dataset order, gathered over all
  processes, padding removed."""
  outs, kept, sample = [], [], None
  keys = predictor.method.target_keys()
  batches = eval_set.local_batches()
  if progress:
    batches = runtime.progress(batches, total=eval_set.num_batches,
                               desc=f'eval {sources.display_name(eval_set.spec)}')
  for local in batches:
    sample = local if sample is None else sample
    batch = sharding.to_global(local, predictor.mesh)
    pred = predictor(batch)
    keep = {k: batch[k] for k in keys if k in batch}
    outs.append(multihost_utils.process_allgather(pred, tiled=True))
    kept.append(multihost_utils.process_allgather(keep, tiled=True))
  cat = lambda parts: jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
  pred, data = cat(outs), cat(kept)
  n = len(eval_set)
  if int(data['mask'].sum()) != n or not np.all(data['mask'][:n] > 0):
    # The padding invariant, checked every time: padding only after the last real example.
    raise AssertionError(f'{eval_set.spec}: scored {data["mask"].sum()} examples of {n}')
  trim = lambda tree: jax.tree.map(lambda x: x[:n], tree)
  return trim(pred), trim(data), sample


def score(pred: dict, data: dict, class_names, groups) -> dict:
  """Report metrics of one eval set for the method's metric groups."""
  mask = data['mask']
  report = {'n': int(np.sum(mask > 0))}
  if ('classification' in groups and 'probs' in pred
      and np.any((mask > 0) & (data['label'] >= 0))):
    # A set without expression labels (EMOTIC, a V/A-only set) has no accuracy of 0 out of 0.
    cls = metrics.classification_report(data['label'], pred['probs'], class_names, mask=mask)
    cls['labelled'] = cls.pop('n')
    report.update(metrics.as_percent(cls))
    if 'votes' in data:     # FERPlus-style votes: majority / any-max accuracy, by complexity
      votes = label_modes.vote_report(data['votes'], pred['probs'], class_names, mask)
      if votes:
        report['votes'] = votes
  if 'multilabel' in groups and 'multilabel' in pred and 'multilabel' in data:
    report['multilabel'] = metrics.as_percent(metrics.multilabel_report(
        data['multilabel'], pred['multilabel'], class_names, k=3, mask=mask))
  if 'regression' in groups:
    for key, names in (('va', VA_NAMES), ('vad', VAD_NAMES)):
      if key not in pred or key not in data:
        continue
      reg_mask = mask * data.get(key + '_mask', data.get('va_mask'))
      if reg_mask.sum() > 0:
        report[key] = metrics.regression_report(data[key], pred[key], names=names, mask=reg_mask)
        # CAGE's single V/A numbers and its Fig. 10 curve (ferjax.metrics for the definitions).
        report[key + '_concat_official'] = metrics.concat_regression_official(
            data[key], pred[key], mask=reg_mask)
        report[key + '_abs_error'] = metrics.abs_error_curve(data[key], pred[key], names=names,
                                                             mask=reg_mask)
  if 'landmarks' in groups and 'landmarks' in pred and 'landmarks' in data:
    lm_mask = mask * data['landmarks_mask']
    if lm_mask.sum() > 0:
      report['landmarks'] = metrics.landmark_report(data['landmarks'], pred['landmarks'],
                                                    mask=lm_mask)
  return report


def summary_row(name: str, report: dict) -> dict:
  row = {'dataset': name, 'n': report['n']}
  if 'accuracy' in report:
    row.update({'accuracy': report['accuracy'], 'macro_f1': report['macro_f1'],
                'weighted_f1': report['weighted_f1']})
  for key in ('majority_accuracy', 'anymax_accuracy'):
    if key in report.get('votes', {}):
      row[key] = report['votes'][key]
  if 'multilabel' in report:
    row.update({'top3_accuracy': report['multilabel']['top3_accuracy'],
                'mean_ap': report['multilabel']['mean_ap']})
  for key, names in (('va', VA_NAMES), ('vad', VAD_NAMES)):
    if key in report:
      for dim in names:
        row[f'{dim}_rmse'] = report[key][dim]['rmse']
        row[f'{dim}_ccc'] = report[key][dim]['ccc']
  if 'landmarks' in report:
    row['landmark_nme'] = report['landmarks']['nme']
  return row


def _open(spec: str, predictor, seed: int | None = None) -> pipeline.EvalSet:
  cfg = predictor.cfg
  return pipeline.EvalSet(spec, cfg, cfg.seed if seed is None else seed, predictor.method)


def _data_notes(eval_set) -> dict:
  src = eval_set.source
  notes = {}
  if src.dropped:
    notes['dropped_outside_space'] = dict(src.dropped)
  if src.unlabelled:
    notes['unlabelled_outside_space'] = dict(src.unlabelled)
  if getattr(src, 'notes', None):   # label_modes.LabelView: examples its rules dropped
    notes['dropped_by_label_rules'] = {k: v for k, v in src.notes.items() if v}
  return notes


def evaluate(predictor, specs, out_dir: str | None = None, progress: bool = True,
             meta: dict | None = None) -> dict:
  """Scores every spec; writes files (and the method's report) under out_dir on process 0."""
  reports, results = {}, []
  groups = predictor.method.metrics
  for spec in specs:
    eval_set = _open(spec, predictor)
    pred, data, sample = predict_set(predictor, eval_set, progress)
    reports[spec] = score(pred, data, predictor.class_names, groups) | _data_notes(eval_set)
    results.append(SetResult(spec, reports[spec], pred, data, sample, predictor.method, {},
                             out_dir or ''))
    if out_dir and jax.process_index() == 0:
      os.makedirs(out_dir, exist_ok=True)
      _scatter(pred, data, spec, out_dir)
  if out_dir and jax.process_index() == 0:
    write_outputs(reports, out_dir, predictor.class_names, meta)
    if predictor.method.report is not None:
      variables = predictor.host_variables()
      for r in results:
        predictor.method.report(dataclasses.replace(r, variables=variables))
  return reports


def combine(member_preds: list[dict], vote: str) -> dict:
  """Soft voting: the mean of the members' probabilities ('probs'), or the softmax of their
  summed logits ('logits'); regression and multi-label outputs are averaged."""
  if vote not in VOTES:
    raise ValueError(f'vote={vote!r}; expected one of {VOTES}')
  out = {}
  keys = set.intersection(*(set(p) for p in member_preds))
  for k in keys - {'logits', 'probs'}:
    out[k] = np.mean([p[k] for p in member_preds], axis=0)
  if vote == 'logits':
    missing = [i for i, p in enumerate(member_preds) if 'logits' not in p]
    if missing:
      raise ValueError(f'vote=logits: ensemble members {missing} predict no logits')
    z = np.sum([p['logits'] for p in member_preds], axis=0, dtype=np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    out['probs'] = (z / z.sum(-1, keepdims=True)).astype(np.float32)
  elif 'probs' in keys:
    out['probs'] = np.mean([p['probs'] for p in member_preds], axis=0)
  return out


def evaluate_ensemble(predictors, specs, vote: str = 'probs', out_dir: str | None = None,
                      progress: bool = True, meta: dict | None = None) -> dict:
  """The soft-voted ensemble of runs that share a class space, scored like one model. Each
  member reads the set with its own preprocessing (the synthetic sets, which depend on the seed,
  with the first member's seed); the members must read the same examples with the same labels."""
  names = predictors[0].class_names
  for p in predictors[1:]:
    if p.class_names != names:
      raise ValueError(f'ensemble members must share a class space: {predictors[0].origin} has '
                       f'{list(names)}, {p.origin} has {list(p.class_names)}')
  groups = tuple(dict.fromkeys(g for p in predictors for g in p.method.metrics))
  reports = {}
  for spec in specs:
    preds, data = [], None
    for p in predictors:
      eval_set = _open(spec, p, predictors[0].cfg.seed)
      pred, d, _ = predict_set(p, eval_set, progress)
      if data is not None and not (np.array_equal(d['index'], data['index'])
                                   and np.array_equal(d['label'], data['label'])):
        raise ValueError(f'{spec}: ensemble members read different examples (another '
                         f'eval_examples or outside_space setting?): {p.origin}')
      preds.append(pred)
      data = d if data is None else data
      notes = _data_notes(eval_set)
    merged = combine(preds, vote)
    reports[spec] = score(merged, data, names, groups) | notes
    if out_dir and jax.process_index() == 0:
      os.makedirs(out_dir, exist_ok=True)
      _scatter(merged, data, spec, out_dir)
  if out_dir and jax.process_index() == 0:
    write_outputs(reports, out_dir, names, meta)
  return reports


def write_outputs(reports: dict, out_dir: str, class_names, meta: dict | None = None) -> str:
  os.makedirs(out_dir, exist_ok=True)
  rows = [summary_row(sources.display_name(s), r) for s, r in reports.items()]
  if len(rows) > 1:
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]
            if k not in ('dataset', 'n') and all(k in r for r in rows)}
    rows.append(dict(mean, dataset='mean', n=sum(r['n'] for r in rows)))
  payload = {'class_names': list(class_names), **(meta or {}), 'datasets': list(reports),
             'summary': rows, 'reports': reports}
  _write_atomic(os.path.join(out_dir, 'results.json'), json.dumps(payload, indent=1))
  columns = list(dict.fromkeys(k for r in rows for k in r))
  table = metrics.markdown_table(rows, columns)
  _write_atomic(os.path.join(out_dir, 'results.md'), table + '\n')
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
    plots.plot_per_domain_bars({sources.display_name(s): r['accuracy']
                                for s, r in reports.items()},
                               os.path.join(out_dir, 'accuracy_per_set.png'), 'accuracy (%)')
  return table


def _write_atomic(path: str, text: str) -> None:
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def _stem(spec: str) -> str:
  return sources.display_name(spec).replace('/', '_')


def _scatter(pred: dict, data: dict, spec: str, out_dir: str) -> None:
  """Predicted-vs-true V/A (or V/A/D) scatter of the scored rows."""
  for key, names in (('va', VA_NAMES), ('vad', VAD_NAMES)):
    if key in pred and key in data:
      keep = (data['mask'] * data.get(key + '_mask', data.get('va_mask'))) > 0
      if keep.any():
        plots.plot_va_scatter(data[key][keep], pred[key][keep],
                              os.path.join(out_dir, f'{key}_scatter_{_stem(spec)}.png'),
                              title=spec, names=names)


def metric_value(reports: dict, name: str) -> float:
  """The value of 'SET/METRIC' in `reports` (SET: a spec, its display name, or 'mean' over the
  sets; METRIC: a key of the summary row, e.g. accuracy, macro_f1, valence_ccc)."""
  set_name, sep, metric = name.rpartition('/')
  if not sep or not set_name:
    raise ValueError(f'config.train.best_metric={name!r}: expected SET/METRIC, e.g. '
                     "'synthetic:lab:test/macro_f1' or 'mean/accuracy'")
  rows = {s: summary_row(sources.display_name(s), r) for s, r in reports.items()}
  if set_name == 'mean':
    vals = [row[metric] for row in rows.values() if metric in row]
    if len(vals) != len(rows) or not vals:
      raise ValueError(f'best_metric {name!r}: not every eval set reports {metric!r}')
    return float(np.mean(vals))
  for spec, row in rows.items():
    if set_name in (spec, row['dataset']):
      if metric not in row:
        raise ValueError(f'best_metric {name!r}: {spec} reports {sorted(row)[1:]}, not {metric!r}')
      return float(row[metric])
  raise ValueError(f'best_metric {name!r}: no eval set {set_name!r} (the run evaluates '
                   f'{[r["dataset"] for r in rows.values()]})')


def lower_is_better(name: str) -> bool:
  return name.rsplit('/', 1)[-1].endswith(('rmse', 'mse', 'mae', 'loss', 'nme'))
