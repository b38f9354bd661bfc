"""Tests for ferjax.losses against independent numpy re-implementations.

The references below are deliberately written differently from the library
code (explicit Python loops, hand-rolled log-sum-exp, sklearn's log_loss) so
that a shared mistake is unlikely.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import log_loss

from ferjax import losses

RTOL = 1e-5


def _rng(seed=0):
  return np.random.default_rng(seed)


def _log_softmax_loop(row):
  """log-softmax of one row with an explicit max-shifted log-sum-exp."""
  m = max(row)
  lse = m + math.log(sum(math.exp(v - m) for v in row))
  return [v - lse for v in row]


# --------------------------------------------------------------------------
# cross entropy
# --------------------------------------------------------------------------


def test_cross_entropy_matches_sklearn_log_loss():
  logits = _rng(1).normal(size=(6, 4)).astype(np.float32)
  labels = np.array([0, 3, 1, 1, 2, 0])
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  want = log_loss(labels, probs, labels=[0, 1, 2, 3])
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_cross_entropy_mask_and_ignore_label():
  logits = _rng(2).normal(size=(5, 3)).astype(np.float32)
  labels = np.array([2, -1, 0, 1, 1])
  mask = np.array([1, 1, 1, 0, 1], np.float32)  # row 3 is padding
  total, count = 0.0, 0
  for i in range(5):
    if mask[i] == 0 or labels[i] < 0:
      continue
    total += -_log_softmax_loop(list(logits[i]))[labels[i]]
    count += 1
  got = losses.cross_entropy(logits, labels, mask=mask)
  np.testing.assert_allclose(got, total / count, rtol=RTOL)


def test_cross_entropy_all_masked_is_zero_not_nan():
  logits = np.zeros((3, 4), np.float32)
  labels = np.array([-1, -1, 2])
  got = losses.cross_entropy(logits, labels, mask=np.array([1., 1., 0.]))
  assert float(got) == 0.0
  got_w = losses.cross_entropy(logits, labels, mask=np.array([1., 1., 0.]),
                 class_weights=np.ones(4))
  assert float(got_w) == 0.0


def test_cross_entropy_class_weights_hand_worked():
  # Two classes, uniform logits => every nll is log 2.  Weighted torch mean
  # is sum w_y nll / sum w_y = log 2 regardless of the weights ...
  logits = np.zeros((3, 2), np.float32)
  labels = np.array([0, 1, 1])
  w = np.array([3.0, 1.0])
  got = losses.cross_entropy(logits, labels, class_weights=w)
  np.testing.assert_allclose(got, math.log(2), rtol=RTOL)
  # ... and with distinct nlls: logits make p(correct) = 0.5, 0.8, 0.2.
  logits = np.log(np.array([[0.5, 0.5], [0.2, 0.8], [0.8, 0.2]], np.float32))
  nll = -np.log([0.5, 0.8, 0.2])
  # weights w_y = 3, 1, 1 -> (3*nll0 + nll1 + nll2) / 5
  want = (3 * nll[0] + nll[1] + nll[2]) / 5.0
  got = losses.cross_entropy(logits, labels, class_weights=w)
  np.testing.assert_allclose(got, want, rtol=RTOL)
  # Scaling all weights must not change the weighted mean.
  got10 = losses.cross_entropy(logits, labels, class_weights=10 * w)
  np.testing.assert_allclose(got10, want, rtol=RTOL)


def test_cross_entropy_class_weights_with_mask_and_smoothing():
  rng = _rng(3)
  logits = rng.normal(size=(6, 4)).astype(np.float32)
  labels = np.array([0, 1, -1, 3, 2, 2])
  mask = np.array([1, 1, 1, 1, 0, 1], np.float32)
  w = np.array([0.5, 2.0, 1.0, 0.25])
  eps = 0.1
  num = den = 0.0
  for i in range(6):
    if mask[i] == 0 or labels[i] < 0:
      continue
    logp = _log_softmax_loop(list(logits[i]))
    y = labels[i]
    # torch: (1-eps) w_y nll + eps/K sum_k w_k (-logp_k), / sum w_y
    num += (1 - eps) * w[y] * (-logp[y])
    num += eps / 4 * sum(w[k] * -logp[k] for k in range(4))
    den += w[y]
  got = losses.cross_entropy(logits, labels, mask=mask, class_weights=w,
                 label_smoothing=eps)
  np.testing.assert_allclose(got, num / den, rtol=RTOL)


def test_label_smoothing_equals_soft_target_ce():
  logits = _rng(4).normal(size=(4, 5)).astype(np.float32)
  labels = np.array([0, 4, 2, 2])
  eps = 0.2
  soft = np.full((4, 5), eps / 5) + (1 - eps) * np.eye(5)[labels]
  a = losses.cross_entropy(logits, labels, label_smoothing=eps)
  b = losses.softmax_cross_entropy(logits, soft)
  np.testing.assert_allclose(a, b, rtol=RTOL)


def test_softmax_cross_entropy_soft_targets_with_mask():
  rng = _rng(5)
  logits = rng.normal(size=(4, 3)).astype(np.float32) * 5
  targets = rng.dirichlet(np.ones(3), size=4).astype(np.float32)
  mask = np.array([1, 0, 1, 1], np.float32)
  rows = [-sum(t * lp for t, lp in zip(targets[i],
                     _log_softmax_loop(list(logits[i]))))
      for i in range(4) if mask[i]]
  got = losses.softmax_cross_entropy(logits, targets, mask=mask)
  np.testing.assert_allclose(got, np.mean(rows), rtol=RTOL)


def test_cross_entropy_jit_and_grad_finite():
  logits = jnp.asarray(_rng(6).normal(size=(4, 3)), jnp.float32)
  labels = jnp.array([0, -1, 2, 1])
  mask = jnp.array([1., 1., 1., 0.])
  f = jax.jit(lambda x: losses.cross_entropy(
    x, labels, mask=mask, class_weights=jnp.array([1., 2., 3.])))
  g = jax.grad(f)(logits)
  assert np.all(np.isfinite(g))
  # Ignored and padded rows receive no gradient.
  np.testing.assert_array_equal(np.asarray(g[1]), 0)
  np.testing.assert_array_equal(np.asarray(g[3]), 0)


# --------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------


def test_mse_masked():
  rng = _rng(7)
  p, t = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
  mask = np.array([1, 1, 0, 1, 0], np.float32)
  sq = [(p[i, d] - t[i, d]) ** 2 for i in range(5) if mask[i] for d in range(2)]
  got = losses.mse(p.astype(np.float32), t.astype(np.float32), mask=mask)
  np.testing.assert_allclose(got, np.mean(sq), rtol=RTOL)


def _ccc_reference(x, y, ddof):
  """CCC from numpy's np.cov (which uses ddof explicitly)."""
  c = np.cov(np.stack([x, y]), ddof=ddof)
  return 2 * c[0, 1] / (c[0, 0] + c[1, 1] + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize('unbiased,ddof', [(False, 0), (True, 1)])
def test_ccc_biased_and_unbiased(unbiased, ddof):
  rng = _rng(8)
  x = rng.normal(size=9)
  y = 0.5 * x + rng.normal(size=9) * 0.3 + 0.2
  got = losses.ccc(x.astype(np.float32), y.astype(np.float32),
           unbiased=unbiased)
  np.testing.assert_allclose(got, _ccc_reference(x, y, ddof), rtol=1e-4)


def test_ccc_biased_differs_from_unbiased():
  x = np.array([0.1, 0.4, -0.3, 0.8], np.float32)
  y = np.array([0.0, 0.5, -0.1, 0.2], np.float32)
  assert abs(float(losses.ccc(x, y)) - float(losses.ccc(x, y, unbiased=True))) > 1e-3


def test_ccc_identical_is_one_and_mask_drops_rows():
  x = np.array([0.3, -0.2, 0.9, 0.1], np.float32)
  np.testing.assert_allclose(losses.ccc(x, x), 1.0, rtol=1e-6)
  np.testing.assert_allclose(losses.ccc(x, x, unbiased=True), 1.0, rtol=1e-6)
  # Garbage in padded rows must not matter.
  xp = np.concatenate([x, [100.0, -50.0]]).astype(np.float32)
  yp = np.concatenate([x, [-7.0, 3.0]]).astype(np.float32)
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
  np.testing.assert_allclose(losses.ccc(xp, yp, mask=mask), 1.0, rtol=1e-6)


def test_ccc_masked_matches_subset():
  rng = _rng(9)
  x, y = rng.normal(size=8), rng.normal(size=8)
  mask = np.array([1, 0, 1, 1, 1, 0, 1, 1], np.float32)
  keep = mask > 0
  for unbiased, ddof in [(False, 0), (True, 1)]:
    got = losses.ccc(x.astype(np.float32), y.astype(np.float32),
             mask=mask, unbiased=unbiased)
    want = _ccc_reference(x[keep], y[keep], ddof)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_ccc_constant_vectors_give_zero_not_nan():
  c = np.ones(4, np.float32)
  assert float(losses.ccc(c, c)) == 0.0


def test_ccc_loss_mean_over_dims():
  rng = _rng(10)
  p, t = rng.normal(size=(7, 2)), rng.normal(size=(7, 2))
  want = np.mean([1 - _ccc_reference(p[:, d], t[:, d], 0) for d in range(2)])
  got = losses.ccc_loss(p.astype(np.float32), t.astype(np.float32))
  np.testing.assert_allclose(got, want, rtol=1e-4)
  want_u = np.mean([1 - _ccc_reference(p[:, d], t[:, d], 1) for d in range(2)])
  got_u = losses.ccc_loss(p.astype(np.float32), t.astype(np.float32),
              unbiased=True)
  np.testing.assert_allclose(got_u, want_u, rtol=1e-4)


# --------------------------------------------------------------------------
# BCE
# --------------------------------------------------------------------------


def _bce_hand(x, y, pw):
  """-[p*y*log(sig(x)) + (1-y)*log(1-sig(x))], naive float64 formula."""
  s = 1.0 / (1.0 + np.exp(-x))
  return -(pw * y * np.log(s) + (1 - y) * np.log(1 - s))


def test_bce_pos_weight_matches_hand_formula():
  rng = _rng(11)
  x = rng.normal(size=(4, 3)) * 3
  y = (rng.random(size=(4, 3)) > 0.5).astype(np.float64)
  pw = np.array([1.0, 2.5, 0.3])
  mask = np.array([1, 1, 0, 1], np.float32)
  elem = _bce_hand(x, y, pw)
  want = elem[mask > 0].mean()
  got = losses.bce_with_logits(x.astype(np.float32), y.astype(np.float32),
                 mask=mask, pos_weight=pw)
  np.testing.assert_allclose(got, want, rtol=RTOL)
  # No pos_weight == pos_weight of ones == sklearn log_loss per label.
  got1 = losses.bce_with_logits(x.astype(np.float32), y.astype(np.float32))
  np.testing.assert_allclose(got1, _bce_hand(x, y, 1.0).mean(), rtol=RTOL)
  s = 1 / (1 + np.exp(-x[:, 0]))
  np.testing.assert_allclose(
    losses.bce_with_logits(x[:, :1].astype(np.float32),
                 y[:, :1].astype(np.float32)),
    log_loss(y[:, 0], s, labels=[0, 1]), rtol=RTOL)


def test_bce_element_mask_and_stability():
  x = np.array([[200.0, -200.0], [0.0, 50.0]], np.float32)
  y = np.array([[0.0, 1.0], [1.0, 1.0]], np.float32)
  emask = np.array([[1, 1], [0, 1]], np.float32)
  got = float(losses.bce_with_logits(x, y, mask=emask))
  # Elements: 200, 200, ~0 (log(1+e^-50)) -> mean over 3 kept elements.
  np.testing.assert_allclose(got, 400.0 / 3, rtol=1e-6)
  assert np.isfinite(got)


def test_pos_weight_from_counts():
  w = losses.pos_weight_from_counts(np.array([10, 50, 0, 100]), 100)
  np.testing.assert_allclose(w, [9.0, 1.0, 1.0, 0.0])
  with pytest.raises(ValueError):
    losses.pos_weight_from_counts([101], 100)


def test_inverse_frequency_weights():
  w = losses.inverse_frequency_weights([10, 20, 0, 40])
  # Hand: 1/10, 1/20, 1/40 -> 4, 2, 1 (x1/40); mean over present = 7/3.
  np.testing.assert_allclose(w, np.array([4, 2, 0, 1]) * 3 / 7, rtol=1e-6)
  np.testing.assert_allclose(w[w > 0].mean(), 1.0, rtol=1e-6)
  with pytest.raises(ValueError):
    losses.inverse_frequency_weights([0, 0])
