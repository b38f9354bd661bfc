"""Evaluation metrics computed on the host with numpy / scikit-learn.

These run once per evaluation on gathered predictions, so clarity and
agreement with the numbers reported in the literature matter more than speed.
scikit-learn is used for classification metrics so that our F1 / confusion
matrices are the same numbers other FER codebases report.

Conventions shared by all functions:

* ``mask`` (optional, ``[N]``): 1 for real rows, 0 for padding added to fill
  the last fixed-size evaluation batch.  Masked rows are dropped.
* Integer labels of -1 mean "unknown" and are dropped as well.
* If nothing is left after dropping, metrics are 0.0 (not NaN) so that the
  returned dicts stay strict-JSON serialisable; ``n`` tells the caller.
* All returned values are plain Python ``float`` / ``int`` / ``list``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def _paired(target, pred) -> tuple[np.ndarray, np.ndarray]:
  """Continuous targets and predictions as float64 (N, D) arrays of the same shape."""
  target, pred = np.asarray(target, np.float64), np.asarray(pred, np.float64)
  if target.ndim == 1:
    target, pred = target[:, None], pred[:, None]
  if target.shape != pred.shape:
    raise ValueError(f'target {target.shape} and pred {pred.shape} differ')
  return target, pred


def _row_keep(n: int, mask: Optional[np.ndarray]) -> np.ndarray:
  """Boolean ``[n]`` of rows to keep according to ``mask``."""
  if mask is None:
    return np.ones((n,), bool)
  mask = np.asarray(mask).reshape(-1)
  if mask.shape[0] != n:
    raise ValueError(f'mask has {mask.shape[0]} rows, expected {n}')
  return mask > 0


def classification_report(labels: np.ndarray, probs: np.ndarray,
              class_names: Sequence[str],
              mask: Optional[np.ndarray] = None) -> dict:
  """Accuracy, F1 scores, per-class stats and confusion matrix.

  Args:
    labels: ``[N]`` int true classes, -1 = unknown (excluded).
    probs: ``[N, K]`` scores; the prediction is ``argmax`` (probabilities or
    logits both work).
    class_names: K names, in the column order of ``probs``.
    mask: optional ``[N]`` padding mask.

  Returns:
    dict with ``accuracy``, ``macro_f1``, ``weighted_f1``,
    ``balanced_accuracy``, ``per_class`` ({name: {accuracy, precision, f1,
    support}} where per-class ``accuracy`` is the recall, as FER papers call
    it), ``confusion`` (K x K, rows = true, cols = predicted),
    ``class_names`` and ``n``.

  Macro F1 averages over all K classes (``labels=range(K)``,
  ``zero_division=0``), so a class absent from the evaluation set *and*
  never predicted counts as F1 = 0; that is the sklearn convention the
  spec asks for and it makes a wrong class count visible instead of hiding
  it.  ``balanced_accuracy`` is the mean recall over classes with support
  > 0 (as ``sklearn.metrics.balanced_accuracy_score``), because recall is
  undefined for a class with no examples.
  """
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  probs = np.asarray(probs)
  if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
    raise ValueError(
      f'probs must be [N, K] with N={labels.shape[0]}, got {probs.shape}')
  k = probs.shape[1]
  names = [str(c) for c in class_names]
  if len(names) != k:
    raise ValueError(f'{len(names)} class names for {k} probability columns')
  if np.any(labels >= k) or np.any(labels < -1):
    raise ValueError(f'labels must be in [-1, {k}), got range '
             f'[{labels.min()}, {labels.max()}]')

  keep = _row_keep(labels.shape[0], mask) & (labels >= 0)
  y_true = labels[keep]
  y_pred = np.argmax(probs[keep], axis=-1) if keep.any() else y_true
  n = int(y_true.shape[0])
  class_ids = list(range(k))

  if n == 0:
    precision = recall = f1 = np.zeros((k,))
    support = np.zeros((k,), np.int64)
    conf = np.zeros((k, k), np.int64)
  else:
    precision, recall, f1, support = precision_recall_fscore_support(
      y_true, y_pred, labels=class_ids, zero_division=0)
    conf = confusion_matrix(y_true, y_pred, labels=class_ids)

  present = support > 0
  accuracy = float(np.mean(y_true == y_pred)) if n else 0.0
  macro_f1 = float(np.mean(f1))
  weighted_f1 = float(np.sum(f1 * support) / n) if n else 0.0
  # Support-weighted P / R as sklearn's 'weighted avg' (CAGE reports these; weighted recall
  # equals accuracy), and their unweighted means over all K classes like macro_f1.
  weighted = (lambda v: float(np.sum(v * support) / n) if n else 0.0)
  balanced = float(np.mean(recall[present])) if present.any() else 0.0

  per_class = {
    name: {
      'accuracy': float(recall[c]),
      'precision': float(precision[c]),
      'f1': float(f1[c]),
      'support': int(support[c]),
    }
    for c, name in enumerate(names)
  }
  return {
    'accuracy': accuracy,
    'macro_f1': macro_f1,
    'weighted_f1': weighted_f1,
    'weighted_precision': weighted(precision),
    'weighted_recall': weighted(recall),
    'macro_precision': float(np.mean(precision)),
    'macro_recall': float(np.mean(recall)),
    'balanced_accuracy': balanced,
    'per_class': per_class,
    'confusion': conf.astype(int).tolist(),
    'class_names': names,
    'n': n,
  }


def _ccc_np(x: np.ndarray, y: np.ndarray) -> float:
  """Biased (population-variance) concordance correlation coefficient."""
  mx, my = x.mean(), y.mean()
  vx, vy = x.var(), y.var()
  cov = np.mean((x - mx) * (y - my))
  den = vx + vy + (mx - my) ** 2
  return float(2.0 * cov / den) if den > 0 else 0.0


def _pcc_np(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation; 0.0 when either side is constant."""
  dx, dy = x - x.mean(), y - y.mean()
  den = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
  return float(np.sum(dx * dy) / den) if den > 0 else 0.0


def regression_report(target: np.ndarray, pred: np.ndarray,
            names: Sequence[str] = ('valence', 'arousal'),
            mask: Optional[np.ndarray] = None) -> dict:
  """Per-dimension RMSE / MAE / MSE / CCC / PCC for continuous targets.

  CCC uses population (biased) variances, as in the AffectNet and ABAW
  evaluation code, so our numbers are comparable to published ones.

  Returns:
    ``{name: {rmse, mae, mse, ccc, pcc}, ..., 'mean_ccc': float, 'n': int}``
  """
  target, pred = _paired(target, pred)
  names = [str(s) for s in names]
  if len(names) != target.shape[1]:
    raise ValueError(f'{len(names)} names for {target.shape[1]} dimensions')

  keep = _row_keep(target.shape[0], mask)
  t, p = target[keep], pred[keep]
  n = int(t.shape[0])
  report: Dict[str, object] = {}
  cccs = []
  for d, name in enumerate(names):
    if n == 0:
      stats = dict(rmse=0.0, mae=0.0, mse=0.0, ccc=0.0, pcc=0.0)
    else:
      err = p[:, d] - t[:, d]
      mse_d = float(np.mean(err ** 2))
      stats = dict(rmse=float(np.sqrt(mse_d)),
             mae=float(np.mean(np.abs(err))),
             mse=mse_d,
             ccc=_ccc_np(p[:, d], t[:, d]),
             pcc=_pcc_np(p[:, d], t[:, d]))
    cccs.append(stats['ccc'])
    report[name] = stats
  report['mean_ccc'] = float(np.mean(cccs)) if cccs else 0.0
  report['n'] = n
  return report


def concat_regression_official(target: np.ndarray, pred: np.ndarray,
                               mask: Optional[np.ndarray] = None) -> dict:
  """CAGE's single-number V/A metrics: MSE, MAE, RMSE and CCC over the dimensions *concatenated*
  (all valence values, then all arousal values), as models/evaluation.py of the official code
  computes them. Its CCC mixes conventions: the numerator uses np.cov (ddof 1), the variances
  np.var (ddof 0), so it is not the per-dimension CCC of `regression_report`; report it under a
  name that says so.

  Returns ``{mse, mae, rmse, ccc, n}`` (n = rows, each contributing D values).
  """
  target, pred = _paired(target, pred)
  keep = _row_keep(target.shape[0], mask)
  t, p = target[keep].T.reshape(-1), pred[keep].T.reshape(-1)   # dim-major, as list(v) + list(a)
  if t.size < 2:
    return dict(mse=0.0, mae=0.0, rmse=0.0, ccc=0.0, n=int(keep.sum()))
  err = p - t
  mse = float(np.mean(err ** 2))
  cov = np.sum((t - t.mean()) * (p - p.mean())) / (t.size - 1)   # np.cov(t, p)[0, 1]
  den = t.var() + p.var() + (t.mean() - p.mean()) ** 2
  return dict(mse=mse, mae=float(np.mean(np.abs(err))), rmse=float(np.sqrt(mse)),
              ccc=float(2.0 * cov / den) if den > 0 else 0.0, n=int(keep.sum()))


def abs_error_curve(target: np.ndarray, pred: np.ndarray,
                    names: Sequence[str] = ('valence', 'arousal'),
                    bounds: Optional[Sequence[float]] = None,
                    mask: Optional[np.ndarray] = None) -> dict:
  """Share of predictions whose absolute error is within each bound, per dimension: the curve
  of CAGE's Fig. 10 ("80% of the valence and arousal predictions differ only +-0.3").

  Returns ``{'bounds': [...], name: [share per bound], ..., 'n': int}``; bounds default to
  0, 0.05, ..., 1.0 (V/A live in [-1, 1]).
  """
  target, pred = _paired(target, pred)
  if len(names) != target.shape[1]:
    raise ValueError(f'target {target.shape}, pred {pred.shape} and {len(names)} names differ')
  bounds = np.round(np.linspace(0.0, 1.0, 21), 4) if bounds is None else np.asarray(bounds)
  keep = _row_keep(target.shape[0], mask)
  err = np.abs(pred[keep] - target[keep])                        # (n, D)
  out: Dict[str, object] = {'bounds': [float(b) for b in bounds]}
  for d, name in enumerate(names):
    share = (err[:, d][:, None] <= bounds[None, :] + 1e-12).mean(0) if len(err) else 0 * bounds
    out[str(name)] = [float(v) for v in share]
  out['n'] = int(keep.sum())
  return out


def multilabel_report(targets: np.ndarray, scores: np.ndarray, names: Sequence[str],
                      k: int = 3, mask: Optional[np.ndarray] = None) -> dict:
  """Multi-label (EMOTIC-style) metrics from per-category scores.

  * ``top{k}_accuracy``: share of rows whose k highest-scoring categories include at least one
    true category (top-k hit rate). CAGE's Table 8 reports a "top-3 accuracy" without defining
    it; this is the usual reading, and ``precision_at_{k}`` is the stricter one.
  * ``precision_at_{k}``: mean share of the k highest-scoring categories that are true.
  * ``mean_ap`` (and ``per_class_ap``): average precision per category (sklearn), averaged over
    the categories that have a positive example; EMOTIC's standard metric.
  Rows with no true category carry no label and are excluded, like masked rows.
  """
  from sklearn.metrics import average_precision_score
  targets = np.asarray(targets, np.float64) > 0.5
  scores = np.asarray(scores, np.float64)
  if targets.shape != scores.shape or targets.ndim != 2 or len(names) != targets.shape[1]:
    raise ValueError(f'targets {targets.shape}, scores {scores.shape} and {len(names)} names '
                     'must agree as [N, M]')
  keep = _row_keep(targets.shape[0], mask) & targets.any(-1)
  t, s = targets[keep], scores[keep]
  n = int(t.shape[0])
  report: Dict[str, object] = {'n': n}
  if n == 0:
    report.update({f'top{k}_accuracy': 0.0, f'precision_at_{k}': 0.0, 'mean_ap': 0.0,
                   'per_class_ap': {str(c): 0.0 for c in names}})
    return report
  top = np.argsort(-s, axis=-1, kind='stable')[:, :k]             # (n, k)
  hits = np.take_along_axis(t, top, axis=-1)
  report[f'top{k}_accuracy'] = float(np.mean(hits.any(-1)))
  report[f'precision_at_{k}'] = float(np.mean(hits.mean(-1)))
  aps = {str(c): (float(average_precision_score(t[:, j], s[:, j])) if t[:, j].any() else None)
         for j, c in enumerate(names)}
  valid = [v for v in aps.values() if v is not None]
  report['mean_ap'] = float(np.mean(valid)) if valid else 0.0
  report['per_class_ap'] = {c: (0.0 if v is None else v) for c, v in aps.items()}
  return report


def any_max_accuracy(target_dist: np.ndarray, probs: np.ndarray,
           mask: Optional[np.ndarray] = None) -> float:
  """Accuracy for soft / N-hot targets with ties.

  A row is correct when ``argmax(probs)`` lands on *any* entry that attains
  the row maximum of ``target_dist`` (e.g. two emotions with equal votes).
  Rows whose target is all zeros carry no label and are excluded, like
  masked rows.  Ties are detected with a small relative tolerance so that
  vote fractions such as 1/3 computed two different ways still tie.
  """
  target_dist = np.asarray(target_dist, np.float64)
  probs = np.asarray(probs)
  if target_dist.shape != probs.shape or target_dist.ndim != 2:
    raise ValueError(
      f'target_dist {target_dist.shape} and probs {probs.shape} must be '
      'equal [N, K] shapes')
  keep = _row_keep(target_dist.shape[0], mask) & np.any(target_dist != 0, -1)
  if not keep.any():
    return 0.0
  t = target_dist[keep]
  pred = np.argmax(probs[keep], axis=-1)
  row_max = t.max(axis=-1)
  hit = t[np.arange(t.shape[0]), pred]
  correct = np.isclose(hit, row_max, rtol=1e-6, atol=1e-9)
  return float(np.mean(correct))


def _format_cell(value, float_fmt: str, percent: bool) -> str:
  if value is None:
    return '-'
  if isinstance(value, (bool, np.bool_)):
    return str(bool(value))
  if isinstance(value, (int, np.integer)) and not percent:
    return str(int(value))
  if isinstance(value, (int, float, np.integer, np.floating)):
    v = float(value)
    if np.isnan(v):
      return 'nan'
    return float_fmt.format(100.0 * v if percent else v)
  # Pipes would split the cell; escape them as GitHub markdown expects.
  return str(value).replace('|', '\\|')


def markdown_table(rows: List[dict], columns: List[str],
           float_fmt: str = '{:.2f}',
           percent_cols: Sequence[str] = ()) -> str:
  """Renders ``rows`` as a GitHub-flavoured markdown table.

  Floats use ``float_fmt``; columns in ``percent_cols`` hold fractions in
  [0, 1] and are shown multiplied by 100 (no '%' sign, so the column header
  should say so, e.g. ``'acc (%)'``).  Integers are printed as-is, missing
  keys and None as ``-``.  Numeric columns are right-aligned.
  """
  percent = set(percent_cols)
  header = '| ' + ' | '.join(columns) + ' |'

  def numeric(col):
    vals = [r.get(col) for r in rows if r.get(col) is not None]
    return bool(vals) and all(
      isinstance(v, (int, float, np.integer, np.floating))
      and not isinstance(v, (bool, np.bool_)) for v in vals)

  sep = '| ' + ' | '.join('---:' if numeric(c) else '---'
              for c in columns) + ' |'
  lines = [header, sep]
  for r in rows:
    cells = [_format_cell(r.get(c), float_fmt, c in percent)
         for c in columns]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


# Rates that reports show in percent (the one unit of accuracy-like numbers in ferjax's outputs).
PERCENT_KEYS = ('accuracy', 'macro_f1', 'weighted_f1', 'weighted_precision', 'weighted_recall',
                'macro_precision', 'macro_recall', 'balanced_accuracy', 'precision', 'f1',
                'mean_ap', 'top3_accuracy', 'precision_at_3')


def as_percent(report: dict) -> dict:
  """A copy of a classification or multi-label report with its rates in percent (per-class
  rates and average precisions included); counts and confusion matrices unchanged."""
  out = {}
  for k, v in report.items():
    if k in PERCENT_KEYS and isinstance(v, float):
      out[k] = 100.0 * v
    elif k == 'per_class':
      out[k] = {name: as_percent(stats) for name, stats in v.items()}
    elif k == 'per_class_ap':
      out[k] = {name: 100.0 * ap for name, ap in v.items()}
    else:
      out[k] = v
  return out


# 68-point layout: outer corners of the eyes (0-based), the usual inter-ocular normaliser.
OUTER_EYE_CORNERS = (36, 45)


def landmark_report(target: np.ndarray, pred: np.ndarray,
                    mask: Optional[np.ndarray] = None) -> dict:
  """Normalised mean error of 68-point landmarks: per face, the mean point-to-point distance
  divided by the true inter-ocular (outer eye corner) distance; `nme` is its mean over faces in
  percent, `failure_rate` the percent of faces with NME > 10%."""
  target = np.asarray(target, np.float64)
  pred = np.asarray(pred, np.float64)
  if target.shape != pred.shape or target.ndim != 3 or target.shape[-1] != 2:
    raise ValueError(f'landmarks must be [N, P, 2] alike, got {target.shape} and {pred.shape}')
  keep = _row_keep(target.shape[0], mask)
  t, p = target[keep], pred[keep]
  if not len(t):
    return {'nme': 0.0, 'failure_rate': 0.0, 'n': 0}
  a, b = OUTER_EYE_CORNERS
  iod = np.linalg.norm(t[:, a] - t[:, b], axis=-1)
  per_face = np.linalg.norm(t - p, axis=-1).mean(-1) / np.maximum(iod, 1e-12)
  return {'nme': float(100 * per_face.mean()),
          'failure_rate': float(100 * np.mean(per_face > 0.1)), 'n': int(len(t))}
