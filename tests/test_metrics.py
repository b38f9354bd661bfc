"""Tests for ferjax.metrics (vs scikit-learn / numpy) and ferjax.plots."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import (accuracy_score, balanced_accuracy_score,
               confusion_matrix, f1_score, mean_absolute_error,
               mean_squared_error)

from ferjax import metrics, plots

NAMES7 = ['neutral', 'happy', 'sad', 'surprise', 'fear', 'disgust', 'anger']


def _one_hot_probs(pred, k, rng):
  """Random probabilities whose argmax is ``pred``."""
  p = rng.random((len(pred), k)) * 0.5
  p[np.arange(len(pred)), pred] = 1.0
  return p / p.sum(1, keepdims=True)


# --------------------------------------------------------------------------
# classification_report
# --------------------------------------------------------------------------


def test_classification_report_matches_sklearn_with_padding_and_unknown():
  rng = np.random.default_rng(0)
  n, k = 60, 7
  y = rng.integers(0, k, n)
  y[[3, 10, 11]] = -1                        # unknown labels
  pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
  pred[pred < 0] = 0
  probs = _one_hot_probs(pred, k, rng)
  mask = np.ones(n)
  mask[-5:] = 0                              # padded tail
  keep = (mask > 0) & (y >= 0)

  rep = metrics.classification_report(y, probs, NAMES7, mask=mask)
  yt, yp = y[keep], pred[keep]
  assert rep['n'] == keep.sum()
  assert rep['accuracy'] == pytest.approx(accuracy_score(yt, yp))
  assert rep['macro_f1'] == pytest.approx(
    f1_score(yt, yp, labels=range(k), average='macro', zero_division=0))
  assert rep['weighted_f1'] == pytest.approx(
    f1_score(yt, yp, labels=range(k), average='weighted', zero_division=0))
  assert rep['balanced_accuracy'] == pytest.approx(
    balanced_accuracy_score(yt, yp))
  np.testing.assert_array_equal(
    rep['confusion'], confusion_matrix(yt, yp, labels=range(k)))
  per_f1 = f1_score(yt, yp, labels=range(k), average=None, zero_division=0)
  for c, name in enumerate(NAMES7):
    assert rep['per_class'][name]['f1'] == pytest.approx(per_f1[c])
    assert rep['per_class'][name]['support'] == int((yt == c).sum())
  assert rep['class_names'] == NAMES7
  json.dumps(rep, allow_nan=False)           # strict-JSON serialisable


def test_classification_report_hand_example_and_absent_class():
  # 3 classes; class 2 never occurs and is never predicted.
  y = np.array([0, 0, 1, 1])
  pred = np.array([0, 1, 1, 1])
  probs = np.eye(3)[pred]
  rep = metrics.classification_report(y, probs, ['a', 'b', 'c'])
  assert rep['accuracy'] == pytest.approx(0.75)
  # recall a = 0.5, b = 1.0 -> balanced 0.75 (c has no support)
  assert rep['balanced_accuracy'] == pytest.approx(0.75)
  assert rep['per_class']['a']['accuracy'] == pytest.approx(0.5)
  assert rep['per_class']['b']['precision'] == pytest.approx(2 / 3)
  # f1 a = 2/3, b = 0.8, c = 0 -> macro over all 3 labels
  assert rep['macro_f1'] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
  assert rep['confusion'] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_classification_report_empty_is_zero_not_nan():
  rep = metrics.classification_report(np.array([-1, 2]), np.eye(3)[[0, 2]],
                    ['a', 'b', 'c'], mask=np.array([1, 0]))
  assert rep['n'] == 0 and rep['accuracy'] == 0.0
  json.dumps(rep, allow_nan=False)


def test_classification_report_rejects_bad_shapes():
  with pytest.raises(ValueError):
    metrics.classification_report(np.array([0, 1]), np.eye(3)[[0, 1]],
                     ['a', 'b'])
  with pytest.raises(ValueError):
    metrics.classification_report(np.array([0, 5]), np.eye(3)[[0, 1]],
                    ['a', 'b', 'c'])


# --------------------------------------------------------------------------
# regression_report
# --------------------------------------------------------------------------


def test_regression_report_vs_independent_numpy():
  rng = np.random.default_rng(1)
  t = rng.uniform(-1, 1, size=(40, 2))
  p = np.clip(0.7 * t + rng.normal(0, 0.2, size=(40, 2)), -1, 1)
  mask = np.ones(40)
  mask[::7] = 0
  keep = mask > 0
  rep = metrics.regression_report(t, p, mask=mask)
  cccs = []
  for d, name in enumerate(['valence', 'arousal']):
    x, y = p[keep, d], t[keep, d]
    # CCC via Pearson: ccc = 2 r sx sy / (sx^2 + sy^2 + (mx - my)^2)
    r = np.corrcoef(x, y)[0, 1]
    sx, sy = x.std(), y.std()
    ccc = 2 * r * sx * sy / (sx ** 2 + sy ** 2 + (x.mean() - y.mean()) ** 2)
    cccs.append(ccc)
    assert rep[name]['ccc'] == pytest.approx(ccc, rel=1e-9)
    assert rep[name]['pcc'] == pytest.approx(r, rel=1e-9)
    assert rep[name]['mse'] == pytest.approx(mean_squared_error(y, x))
    assert rep[name]['rmse'] == pytest.approx(
      np.sqrt(mean_squared_error(y, x)))
    assert rep[name]['mae'] == pytest.approx(mean_absolute_error(y, x))
  assert rep['mean_ccc'] == pytest.approx(np.mean(cccs))
  assert rep['n'] == keep.sum()
  json.dumps(rep, allow_nan=False)


def test_regression_report_identical_ccc_one():
  t = np.array([[0.1, -0.4], [0.5, 0.2], [-0.3, 0.9]])
  rep = metrics.regression_report(t, t)
  assert rep['valence']['ccc'] == pytest.approx(1.0)
  assert rep['arousal']['rmse'] == pytest.approx(0.0)


# --------------------------------------------------------------------------
# any_max_accuracy
# --------------------------------------------------------------------------


def test_any_max_accuracy_ties_by_hand():
  target = np.array([
    [0.5, 0.5, 0.0],     # tie 0/1, pred 1 -> correct
    [1 / 3, 1 / 3, 1 / 3],  # three-way tie, any pred correct
    [0.2, 0.8, 0.0],     # pred 0 -> wrong
    [0.0, 0.0, 1.0],     # pred 2 -> correct
    [0.0, 0.0, 0.0],     # no label -> excluded
    [1.0, 0.0, 0.0],     # padding -> excluded
  ])
  probs = np.array([
    [0.1, 0.6, 0.3],
    [0.2, 0.1, 0.7],
    [0.5, 0.4, 0.1],
    [0.1, 0.1, 0.8],
    [0.9, 0.0, 0.1],
    [0.0, 1.0, 0.0],
  ])
  mask = np.array([1, 1, 1, 1, 1, 0])
  assert metrics.any_max_accuracy(target, probs, mask=mask) == pytest.approx(0.75)
  # Without the mask the padded row (wrong) counts too: 3/5.
  assert metrics.any_max_accuracy(target, probs) == pytest.approx(0.6)


# --------------------------------------------------------------------------
# markdown_table
# --------------------------------------------------------------------------


def test_markdown_table():
  rows = [{'method': 'baseline', 'acc': 0.6543, 'f1': 0.5, 'n': 3500},
      {'method': 'a|b', 'acc': 0.7, 'n': 10}]
  out = metrics.markdown_table(rows, ['method', 'acc', 'f1', 'n'],
                 percent_cols=('acc',))
  lines = out.strip().split('\n')
  assert lines[0] == '| method | acc | f1 | n |'
  assert lines[1] == '| --- | ---: | ---: | ---: |'
  assert lines[2] == '| baseline | 65.43 | 0.50 | 3500 |'
  assert lines[3] == '| a\\|b | 70.00 | - | 10 |'


# --------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------


def _check_png(path):
  assert path.exists() and path.stat().st_size > 0
  with Image.open(path) as im:
    im.verify()
    assert im.format == 'PNG'


def test_plots_write_pngs(tmp_path):
  conf = np.array([[50, 3, 2], [4, 30, 6], [0, 0, 0]])
  p1 = tmp_path / 'sub' / 'confusion.png'
  assert plots.plot_confusion(conf, ['neutral', 'happy', 'sad'], p1,
                title='test') == str(p1)
  _check_png(p1)
  p1b = tmp_path / 'confusion_counts.png'
  plots.plot_confusion(conf, ['neutral', 'happy', 'sad'], p1b,
             normalize=False)
  _check_png(p1b)

  p2 = tmp_path / 'bars.png'
  plots.plot_per_domain_bars({'affectnet': 0.61, 'rafdb': 0.83,
                'ferplus': 0.79}, p2, 'accuracy per domain')
  _check_png(p2)

  rng = np.random.default_rng(0)
  t = rng.uniform(-1, 1, size=(50, 2))
  p3 = tmp_path / 'va.png'
  plots.plot_va_scatter(t, np.clip(t + rng.normal(0, .2, t.shape), -1, 1), p3)
  _check_png(p3)


def test_landmark_nme_against_a_loop_over_faces_and_points():
  rng = np.random.default_rng(0)
  target = rng.uniform(0, 1, size=(5, 68, 2))
  pred = target + rng.normal(0, 0.02, size=target.shape)
  pred[4] += 1.0                                      # a failure, masked out below
  mask = np.array([1, 1, 1, 1, 0], np.float32)
  got = metrics.landmark_report(target, pred, mask=mask)
  per_face = []
  for i in range(4):
    iod = np.hypot(*(target[i, 36] - target[i, 45]))
    per_face.append(sum(np.hypot(*(target[i, p] - pred[i, p])) for p in range(68)) / 68 / iod)
  assert got['n'] == 4
  assert got['nme'] == pytest.approx(100 * np.mean(per_face))
  assert got['failure_rate'] == pytest.approx(100 * np.mean(np.array(per_face) > 0.1))


def test_reports_show_rates_in_percent():
  rep = metrics.classification_report(np.array([0, 1, 1, 0]), np.eye(2)[[0, 1, 0, 0]], ['a', 'b'])
  pct = metrics.as_percent(rep)
  assert pct['accuracy'] == pytest.approx(75.0) and pct['macro_f1'] == pytest.approx(
      100 * rep['macro_f1'])
  assert pct['per_class']['b']['accuracy'] == pytest.approx(50.0)
  assert pct['per_class']['b']['support'] == 2 and pct['confusion'] == rep['confusion']
