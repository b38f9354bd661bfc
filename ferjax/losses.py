"""Loss functions for facial expression recognition (pure ``jax.numpy``).

Every loss is batch-first and takes an optional ``mask``: a float array of
shape ``[B]`` with 1 for a real example and 0 for padding.  Padding exists
because evaluation/training batches are padded to a fixed size so that jitted
step functions compile once; the mask keeps those rows out of the statistics.
Unless stated otherwise a loss returns the masked mean

  sum_i loss_i * mask_i / max(sum_i mask_i, 1)

The ``max(., 1)`` guard makes an all-padding batch return 0 instead of NaN
(which would poison the optimiser state), and is a no-op for real batches.

Conventions are chosen to match the PyTorch losses the reference papers were
trained with, so that loss values and class-weighting behave identically:

* :func:`cross_entropy` with ``class_weights`` follows
  ``torch.nn.CrossEntropyLoss(weight=w)`` -- the *weighted* mean
  ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` rather than a plain mean.
* :func:`bce_with_logits` follows ``torch.nn.BCEWithLogitsLoss(pos_weight=p)``.

Host-side helpers that turn dataset label counts into weights
(:func:`inverse_frequency_weights`, :func:`pos_weight_from_counts`) use numpy
because they run once, outside any jitted function.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _batch_mask(batch_size: int, mask: Optional[Array]) -> Array:
  """Returns a float32 ``[B]`` mask, all ones when ``mask`` is None."""
  if mask is None:
    return jnp.ones((batch_size,), jnp.float32)
  return jnp.asarray(mask, jnp.float32).reshape((batch_size,))


def _masked_mean(per_example: Array, mask: Optional[Array]) -> Array:
  """``sum(loss * mask) / max(sum(mask), 1)`` over the batch axis."""
  m = _batch_mask(per_example.shape[0], mask)
  return jnp.sum(per_example * m) / jnp.maximum(jnp.sum(m), 1.0)


def _safe_divide(num: Array, den: Array) -> Array:
  """num / den, or 0 where den == 0 (gradient-safe: no NaN from 0/0)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


def softmax_cross_entropy(logits: Array, targets: Array,
              mask: Optional[Array] = None) -> Array:
  """Cross entropy against a soft target distribution.

  Args:
    logits: ``[B, K]`` unnormalised scores.
    targets: ``[B, K]`` target distribution per row (rows should sum to 1;
    e.g. annotator vote distributions or mixup targets).
    mask: optional ``[B]`` float mask.

  Returns:
    Scalar masked mean of ``-sum_k targets_k * log_softmax(logits)_k``.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  per_example = -jnp.sum(targets.astype(jnp.float32) * logp, axis=-1)
  return _masked_mean(per_example, mask)


def cross_entropy(logits: Array, labels: Array, mask: Optional[Array] = None,
          class_weights: Optional[Array] = None,
          label_smoothing: float = 0.0) -> Array:
  """Integer-label cross entropy, PyTorch ``nn.CrossEntropyLoss`` semantics.

  Labels equal to -1 (unknown / not annotated) are treated exactly like
  padding: they contribute neither to the numerator nor to the denominator,
  as with torch's ``ignore_index``.

  Without ``class_weights`` the result is the masked mean of per-example
  losses.  With ``class_weights`` ``w`` it is the *weighted* mean used by
  ``torch.nn.CrossEntropyLoss(weight=w, reduction='mean')``::

    sum_i m_i * w[y_i] * nll_i  /  sum_i m_i * w[y_i]

  (m = mask).  Note this is not ``mean_i(w[y_i] * nll_i)``: dividing by the
  total weight keeps the loss scale independent of the weights' scale.

  With ``label_smoothing = eps`` (again as torch does it) the per-example
  numerator becomes ``(1 - eps) * w[y_i] * nll_i + eps / K * sum_k w_k *
  (-log p_ik)`` while the denominator stays ``sum_i m_i * w[y_i]``; with no
  weights ``w`` is all ones.

  Args:
    logits: ``[B, K]``.
    labels: ``[B]`` int class ids in ``[0, K)`` or -1.
    mask: optional ``[B]`` float mask.
    class_weights: optional ``[K]`` per-class weights.
    label_smoothing: float in ``[0, 1)``.
  """
  num_classes = logits.shape[-1]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  labels = jnp.asarray(labels)
  m = _batch_mask(labels.shape[0], mask) * (labels >= 0)
  # Index with a valid class for ignored rows; their contribution is masked.
  safe = jnp.where(labels >= 0, labels, 0)
  nll = -jnp.take_along_axis(logp, safe[:, None], axis=-1)[:, 0]

  if class_weights is None:
    w_all = jnp.ones((num_classes,), jnp.float32)
  else:
    w_all = jnp.asarray(class_weights, jnp.float32)
  w_y = w_all[safe]
  per_example = w_y * nll
  if label_smoothing:
    smooth = -jnp.sum(logp * w_all[None, :], axis=-1)
    per_example = ((1.0 - label_smoothing) * per_example
             + (label_smoothing / num_classes) * smooth)

  numerator = jnp.sum(per_example * m)
  if class_weights is None:
    # Same guard as every other loss: all-padding batch -> 0.
    return numerator / jnp.maximum(jnp.sum(m), 1.0)
  # Weights may be small floats, so max(., 1) would be wrong here; only
  # guard the exact-zero case (no real example / all weights zero).
  return _safe_divide(numerator, jnp.sum(w_y * m))


# ---------------------------------------------------------------------------
# Regression (valence / arousal)
# ---------------------------------------------------------------------------


def mse(pred: Array, target: Array, mask: Optional[Array] = None) -> Array:
  """Mean squared error: mean over trailing dims, then masked batch mean."""
  diff = (pred.astype(jnp.float32) - target.astype(jnp.float32))
  per_example = jnp.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=-1)
  return _masked_mean(per_example, mask)


def _ccc_columns(pred: Array, target: Array, mask: Optional[Array],
         unbiased: bool) -> Array:
  """CCC of every column of ``[B, D]`` inputs, vectorised over D.

  CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2).
  ``unbiased`` divides var/cov by (n - 1) instead of n; the squared
  mean-difference term is the same under both conventions.  The biased
  version is the one used by AffectNet / ABAW evaluation code.
  """
  x = pred.astype(jnp.float32)
  y = target.astype(jnp.float32)
  m = _batch_mask(x.shape[0], mask)[:, None]
  n = jnp.sum(m)
  n_safe = jnp.maximum(n, 1.0)
  mx = jnp.sum(x * m, axis=0) / n_safe
  my = jnp.sum(y * m, axis=0) / n_safe
  dx = (x - mx) * m
  dy = (y - my) * m
  dof = jnp.maximum(n - 1.0, 1.0) if unbiased else n_safe
  vx = jnp.sum(dx * dx, axis=0) / dof
  vy = jnp.sum(dy * dy, axis=0) / dof
  cov = jnp.sum(dx * dy, axis=0) / dof
  den = vx + vy + (mx - my) ** 2
  # Two identical constant vectors give 0/0; we return 0 (no evidence of
  # agreement) rather than NaN so a degenerate batch cannot produce NaNs.
  return _safe_divide(2.0 * cov, den)


def ccc(pred: Array, target: Array, mask: Optional[Array] = None,
    unbiased: bool = False) -> Array:
  """Concordance correlation coefficient of two ``[B]`` vectors.

  Args:
    pred, target: ``[B]``.
    mask: optional ``[B]`` float mask; masked rows are excluded from the
    means, variances and covariance.
    unbiased: False (default) uses population variances (divide by n), True
    uses sample variances (divide by n - 1).
  """
  return _ccc_columns(pred[:, None], target[:, None], mask, unbiased)[0]


def ccc_loss(pred: Array, target: Array, mask: Optional[Array] = None,
       unbiased: bool = False) -> Array:
  """``mean_d (1 - CCC_d)`` over the D columns of ``[B, D]`` inputs."""
  return jnp.mean(1.0 - _ccc_columns(pred, target, mask, unbiased))


# ---------------------------------------------------------------------------
# Multi-label (e.g. action units, N-hot expression targets)
# ---------------------------------------------------------------------------


def bce_with_logits(logits: Array, targets: Array,
          mask: Optional[Array] = None,
          pos_weight: Optional[Array] = None) -> Array:
  """Binary cross entropy on logits, as torch ``BCEWithLogitsLoss``.

  Per element::

    -[p * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x))]

  computed stably as ``(1 - y) * x + (1 + (p - 1) * y) * softplus(-x)``
  (``log(1 - sigmoid(x)) = log(sigmoid(x)) - x`` and ``-log(sigmoid(x)) =
  softplus(-x)``), so large |x| never takes log(0).

  Args:
    logits, targets: ``[B, M]``.
    mask: optional ``[B]`` example mask (per-label means then masked batch
    mean, equal to torch's mean over all B*M elements when unmasked) or
    ``[B, M]`` element mask (masked mean over elements; useful when some
    labels are missing for some examples).
    pos_weight: optional ``[M]`` weight for the positive term.
  """
  x = logits.astype(jnp.float32)
  y = targets.astype(jnp.float32)
  p = 1.0 if pos_weight is None else jnp.asarray(pos_weight, jnp.float32)
  elem = (1.0 - y) * x + (1.0 + (p - 1.0) * y) * jax.nn.softplus(-x)
  if mask is not None and jnp.ndim(mask) == 2:
    m = jnp.asarray(mask, jnp.float32)
    return jnp.sum(elem * m) / jnp.maximum(jnp.sum(m), 1.0)
  return _masked_mean(jnp.mean(elem, axis=-1), mask)


# ---------------------------------------------------------------------------
# Host-side weight helpers (numpy)
# ---------------------------------------------------------------------------


def pos_weight_from_counts(n_pos, n_total) -> np.ndarray:
  """``pos_weight_c = (N - n_c) / n_c`` (negatives per positive), float32.

  A label with no positive example (n_c = 0) gets weight 1.0.  Its positive
  term never occurs in the training data, so the value cannot change the
  loss; 1.0 (no re-weighting) is the neutral, finite choice, whereas the
  formula would give inf and turn into NaN gradients if such a label ever
  appeared (e.g. in a different split).  A label that is positive for every
  example gets (N - N) / N = 0 exactly as the formula says.
  """
  n_pos = np.asarray(n_pos, np.float64)
  n_total = float(n_total)
  if np.any(n_pos < 0) or np.any(n_pos > n_total):
    raise ValueError(
      f'n_pos must lie in [0, n_total={n_total}], got {n_pos.tolist()}')
  with np.errstate(divide='ignore', invalid='ignore'):
    w = np.where(n_pos > 0, (n_total - n_pos) / np.maximum(n_pos, 1.0), 1.0)
  return w.astype(np.float32)


def inverse_frequency_weights(counts) -> np.ndarray:
  """Per-class weights proportional to ``1 / count``, float32 ``[K]``.

  Normalised so the weights average to 1 over the classes that are present
  (count > 0); absent classes get weight 0 (they cannot occur as targets, and
  a finite 0 keeps any accidental use harmless).  With the torch-style
  weighted mean of :func:`cross_entropy` only the ratios matter, but the
  mean-1 normalisation keeps the loss scale comparable to the unweighted one
  when weights are used in other places (e.g. per-example weighting).
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or np.any(counts < 0):
    raise ValueError(f'counts must be a 1-D non-negative array, got {counts}')
  present = counts > 0
  if not np.any(present):
    raise ValueError('inverse_frequency_weights: all class counts are zero')
  inv = np.where(present, 1.0 / np.where(present, counts, 1.0), 0.0)
  inv *= present.sum() / inv[present].sum()
  return inv.astype(np.float32)


# ---------------------------------------------------------------------------
# Losses on target distributions (paper 002, section 3.6.3 and Fig. 26)
# ---------------------------------------------------------------------------
#
# Each is the Keras loss of the same name applied to the softmax output p and a target
# distribution y (both [B, K]); the per-example values are then masked-averaged as everywhere
# here. Keras reduces element-wise losses with a mean over the class axis (MSE, MAE, log-cosh,
# Poisson, Huber) and sums the others (cross-entropy, KL divergence, cosine similarity).
# KERAS_EPSILON is Keras' backend epsilon, used where Keras clips.

KERAS_EPSILON = 1e-7


def _probs(logits: Array) -> Array:
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _dist_mse(p, y):
  return jnp.mean((p - y) ** 2, axis=-1)


def _dist_mae(p, y):
  return jnp.mean(jnp.abs(p - y), axis=-1)


def _dist_cce(logp, y):
  # Keras clips p to [eps, 1 - eps] before the log; log_softmax is the same value wherever no
  # probability is that close to 0 or 1 and keeps the gradient there.
  return -jnp.sum(y * logp, axis=-1)


def _dist_kld(p, y):
  y = jnp.clip(y, KERAS_EPSILON, 1.0)
  p = jnp.clip(p, KERAS_EPSILON, 1.0)
  return jnp.sum(y * jnp.log(y / p), axis=-1)


def _l2_normalize(x):
  # tf.math.l2_normalize: x / sqrt(max(sum x^2, 1e-12)).
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def _dist_cosine(p, y):
  return -jnp.sum(_l2_normalize(y) * _l2_normalize(p), axis=-1)


def _dist_log_cosh(p, y):
  x = p - y
  # log(cosh(x)) = x + softplus(-2x) - log 2, Keras' overflow-free form.
  return jnp.mean(x + jax.nn.softplus(-2.0 * x) - jnp.log(2.0), axis=-1)


def _dist_hinge(p, y):
  pos = jnp.sum(y * p, axis=-1)
  neg = jnp.max((1.0 - y) * p, axis=-1)
  return jnp.maximum(neg - pos + 1.0, 0.0)


def _dist_poisson(p, y):
  return jnp.mean(p - y * jnp.log(p + KERAS_EPSILON), axis=-1)


def _dist_huber(p, y, delta: float = 1.0):
  # Keras' default delta = 1. Probabilities differ by at most 1, so on these inputs Huber is
  # half the MSE; it is kept because the paper's "ten" losses appear to include it.
  a = jnp.abs(p - y)
  return jnp.mean(jnp.where(a <= delta, 0.5 * a * a, delta * a - 0.5 * delta * delta), axis=-1)


def _dist_multi_target(p, y):
  # microsoft/FERPlus 'multi_target' mode: -log max_k(y_k p_k) with y its (1 - eps) 1[t > 0] + eps
  # encoding, so the loss rewards whichever accepted emotion the model already favours.
  return -jnp.log(jnp.maximum(jnp.max(y * p, axis=-1), 1e-30))


# name -> (per-example function, whether it takes log-probabilities). 'pld' is cross-entropy
# against the one-hot the input pipeline draws from the target each epoch (ferplus.draw_labels):
# the draw is keyed by (seed, epoch, example), so it happens on the host, not here.
_DIST = {
    'mse': (_dist_mse, False), 'pld': (_dist_cce, True), 'cce': (_dist_cce, True),
    'kld': (_dist_kld, False), 'cosine': (_dist_cosine, False),
    'log_cosh': (_dist_log_cosh, False), 'mae': (_dist_mae, False),
    'hinge': (_dist_hinge, False), 'poisson': (_dist_poisson, False),
    'huber': (_dist_huber, False), 'multi_target': (_dist_multi_target, False),
}
# The ten of paper 002's Fig. 26 (Poisson and Huber assumed: the paper names eight).
DISTRIBUTION_LOSSES = ('mse', 'pld', 'cce', 'kld', 'cosine', 'log_cosh', 'mae', 'hinge',
                       'poisson', 'huber')
LOSS_NAMES = tuple(_DIST)


def distribution_loss(name: str, logits: Array, targets: Array,
                      mask: Optional[Array] = None) -> Array:
  """Masked mean of the loss `name` (LOSS_NAMES) between softmax(logits) and `targets` [B, K].

  Rows whose target is all zero (no label) count as padding.
  """
  if name not in _DIST:
    raise ValueError(f'unknown distribution loss {name!r}; known: {LOSS_NAMES}')
  fn, wants_log = _DIST[name]
  y = targets.astype(jnp.float32)
  x = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1) if wants_log else _probs(logits)
  m = _batch_mask(y.shape[0], mask) * (jnp.sum(y, axis=-1) > 0)
  return _masked_mean(fn(x, y), m)
