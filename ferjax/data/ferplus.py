"""FERPlus label processing: the reference training modes and the protocol of paper 002.

Input everywhere is a vote array int [N, 10] in canonical order (neutral, happy, sad, surprise,
fear, disgust, anger, contempt, unknown, NF): the `votes` layout of ferjax readers
(ferjax/data/readers/__init__.py) and of the synthetic benchmark (ferjax/data/synthetic.py).
FERPlus's own column order (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt)
is mapped by the reader; every rule below treats the 8 emotions alike and only tells them apart
from unknown/NF, so the results do not depend on the emotion order (tests check this).

1. Reference modes of the FERPlus release (`microsoft/FERPlus:src/ferplus.py`): `process_votes`
   returns the per-sample target the reference stores and a keep-mask; `training_targets` turns
   it into what one minibatch serves (a fresh one-hot draw per epoch in 'probability' mode).
2. Paper 002 ("Facial Expression Recognition without One-hot Labels", HKU report, section 3.3-3.4):
   `clean_votes`, `complexity_level`, `split_test_set`, `n_hot`, `any_max_accuracy`.

Randomness that must be reproducible per sample (label draws, N-hot ties, test splits) comes from
a counter-based hash of integer keys (`hash_uniform`), not from a sequential generator, so a
sample's value depends only on (seed, its keys) and not on batch composition or numpy version.
All thresholds are compared in exact integer arithmetic (2*x > total rather than x > 0.5*total);
for integer counts this agrees with the reference's float comparisons (checked for totals up to
2000 while writing this module).
"""
from __future__ import annotations

import numpy as np

from ferjax.labels import CANONICAL

NUM_EMOTIONS = 8
UNKNOWN, NOT_FACE = 8, 9
VOTE_NAMES = CANONICAL + ('unknown', 'not_face')
MODES = ('majority', 'probability', 'crossentropy', 'multi_target')
MULTI_TARGET_EPSILON = 0.001   # `_process_target` of the reference, 'multi_target' mode

# Domain-separation salts of hash_uniform, so the streams of different uses never coincide.
_SALT_DRAW, _SALT_NHOT, _SALT_SPLIT = 1, 2, 3
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# --------------------------------------------------------------------------------------------
# Counter-based randomness
# --------------------------------------------------------------------------------------------

def _mix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective avalanche mix of uint64."""
  x = x ^ (x >> np.uint64(30))
  x = x * np.uint64(0xBF58476D1CE4E5B9)
  x = x ^ (x >> np.uint64(27))
  x = x * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def _as_key(k, name: str) -> np.ndarray:
  k = np.asarray(k)
  if k.dtype.kind not in 'iub' or np.any(k < 0):
    raise ValueError(f'{name} must be non-negative integers, got {k!r}')
  return k.astype(np.uint64)


def hash_uniform(*keys) -> np.ndarray:
  """Uniform floats in [0, 1), a pure function of the (broadcast) non-negative integer keys.

  h = 0; for each key k: h = mix64(h + golden + k); u = (h >> 11) * 2**-53. Chaining the mix
  between keys makes (1, 0) and (0, 1) independent streams.
  """
  ks = [_as_key(k, 'keys') for k in keys]
  shape = np.broadcast_shapes(*(k.shape for k in ks))
  h = np.zeros((int(np.prod(shape)),), np.uint64)   # 1-D: array ops wrap silently on overflow
  for k in ks:
    h = _mix64(h + _GOLDEN + np.broadcast_to(k, shape).reshape(-1))
  return ((h >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(shape)


# --------------------------------------------------------------------------------------------
# Reference modes (microsoft/FERPlus src/ferplus.py)
# --------------------------------------------------------------------------------------------

def _check_votes(votes) -> np.ndarray:
  v = np.asarray(votes)
  if v.ndim != 2 or v.shape[1] != NUM_EMOTIONS + 2:
    raise ValueError(f'votes must be [N, 10] (8 emotions, unknown, NF), got shape {v.shape}')
  if v.dtype.kind == 'f' and np.any(v != np.round(v)):
    raise ValueError('votes must be integer counts')
  v = v.astype(np.int64)
  if np.any(v < 0):
    raise ValueError('votes must be non-negative')
  return v


def remove_outliers(votes) -> np.ndarray:
  """Zeroes every count <= 1, unknown and NF included: the reference's first step in all modes.

  The reference tests `count < 1 + float eps` ("remove emotions with a single vote (outlier
  removal)"), so votes <= 1 are zeroed.
  """
  v = _check_votes(votes)
  return np.where(v <= 1, 0, v)


def _peaks(row: np.ndarray) -> np.ndarray | None:
  """Emotion votes kept by 'probability'/'crossentropy' for one outlier-free row; None: drop.

  Rule (the reference's `_process_data`): repeatedly take the current maximum
  with all its ties while fewer than 75% of the votes are covered and fewer than 3 emotions are
  taken. When unknown/NF reaches the current maximum the loop stops: the row is dropped if no
  emotion was taken before (unknown/NF would be the label), otherwise unknown/NF stay out of the
  target and the emotions taken so far are judged as usual (the reference zeroes the unknown
  entry again when "other emotions [are] ahead of" it). The row is dropped when the emotions
  taken cover <= 50% of the votes or more than 3 were taken (ties can overshoot 3).
  """
  total = int(row.sum())
  left = row.copy()
  kept = np.zeros_like(row)
  covered = count = 0
  while 4 * covered < 3 * total and count < 3:
    peak = left.max()
    ties = np.flatnonzero(left == peak)
    emo = ties[ties < NUM_EMOTIONS]
    kept[emo] = peak
    covered += int(peak) * emo.size
    count += emo.size
    left[ties] = 0
    if emo.size < ties.size:        # unknown or NF shares the current maximum
      if count == 0:
        return None
      break
  if 2 * covered <= total or count > 3:
    return None
  return kept[:NUM_EMOTIONS]


def process_votes(votes, mode: str) -> tuple[np.ndarray, np.ndarray]:
  """Per-sample targets of a FERPlus training mode and the mask of samples that survive.

  After `remove_outliers` (total = the remaining votes, unknown and NF included):
    majority      one-hot of the argmax when it holds > 50% of the votes, else dropped.
    probability,  peaks taken as in `_peaks` (>= 75% coverage, <= 3 emotions, dropped at <= 50%
    crossentropy  or when unknown/NF wins), normalised to a distribution.
    multi_target  emotions with >= 30% of the votes; dropped when they cover <= 50%.
  In every mode a sample is also dropped when its processed 10-vector peaks at unknown/NF (the
  reader keeps `argmax < 8`, numpy's first-max rule: an emotion tying with unknown in
  'multi_target' survives) and the 8 emotion entries are renormalised. A row with no vote
  left is dropped.

  Returns:
    targets float32 [N, 8] (rows of dropped samples are zero) and keep bool [N]. The targets are
    what the reference stores per image; `training_targets` makes the per-minibatch version.
  """
  if mode not in MODES:
    raise ValueError(f'unknown FERPlus mode {mode!r}; known: {MODES}')
  v = remove_outliers(votes)
  n = v.shape[0]
  total = v.sum(1)
  kept = np.zeros((n, NUM_EMOTIONS + 2), np.int64)   # the surviving vote counts per sample
  if mode == 'majority':
    top = v.argmax(1)
    ok = 2 * v.max(1) > total
    kept[np.flatnonzero(ok), top[ok]] = 1
  elif mode == 'multi_target':
    kept = np.where(10 * v >= 3 * total[:, None], v, 0)
    ok = 2 * kept.sum(1) > total
  else:
    ok = np.zeros(n, bool)
    for i in range(n):
      peaks = _peaks(v[i])
      if peaks is not None:
        kept[i, :NUM_EMOTIONS], ok[i] = peaks, True
  ok &= total > 0
  ok &= kept.argmax(1) < NUM_EMOTIONS          # the reader's `idx < emotion_count - 2`
  emo = np.where(ok[:, None], kept[:, :NUM_EMOTIONS], 0).astype(np.float64)
  sums = emo.sum(1, keepdims=True)
  targets = np.divide(emo, sums, out=np.zeros_like(emo), where=sums > 0)
  return targets.astype(np.float32), ok


def draw_labels(dists, seed: int, epoch: int, indices) -> np.ndarray:
  """One class per row drawn from `dists` [N, K] (rows need not be normalised), int64 [N].

  Probabilistic label drawing ('probability' mode): the reference calls
  `np.random.choice(p=target)` every time a sample is served, i.e. a fresh one-hot each epoch.
  Here the draw of sample `index` in `epoch` is the inverse CDF at u = hash_uniform(salt, seed,
  epoch, index), so it is reproducible whatever the batch or worker that serves it. A class with
  zero probability is never drawn.
  """
  d = np.asarray(dists, np.float64)
  if d.ndim != 2 or np.any(d < 0) or np.any(d.sum(1) <= 0):
    raise ValueError('dists must be [N, K], non-negative, with a positive sum per row')
  idx = np.asarray(indices)
  if idx.shape != (d.shape[0],):
    raise ValueError(f'indices must be [N] = [{d.shape[0]}], got shape {idx.shape}')
  u = hash_uniform(_SALT_DRAW, seed, epoch, idx)
  cdf = np.cumsum(d, axis=1)
  target = u * cdf[:, -1]
  label = (cdf <= target[:, None]).sum(1)       # first class whose CDF exceeds u * total
  last = d.shape[1] - 1 - np.argmax(d[:, ::-1] > 0, axis=1)
  return np.minimum(label, last)                 # guards u * total rounding up to total


def multi_target_encoding(targets, epsilon: float = MULTI_TARGET_EPSILON) -> np.ndarray:
  """(1 - eps) * 1[t > 0] + eps: the reference's served 'multi_target' target.

  The reference pairs it with the loss -log max_k(t_k * p_k); eps "avoid[s] ill-conditioned
  computation".
  """
  t = np.asarray(targets, np.float32)
  return ((1.0 - epsilon) * (t > 0) + epsilon).astype(np.float32)


def training_targets(targets, mode: str, seed: int = 0, epoch: int = 0,
                     indices=None) -> np.ndarray:
  """What a minibatch serves for stored `targets` (reference `_process_target`), float32 [N, 8].

  majority and crossentropy serve the stored distribution (soft-target CE); probability serves
  a one-hot of `draw_labels(targets, seed, epoch, indices)` (indices: the samples' dataset
  indices, default 0..N-1); multi_target serves `multi_target_encoding`.
  """
  if mode not in MODES:
    raise ValueError(f'unknown FERPlus mode {mode!r}; known: {MODES}')
  t = np.asarray(targets, np.float32)
  if mode == 'probability':
    idx = np.arange(t.shape[0]) if indices is None else indices
    return np.eye(t.shape[1], dtype=np.float32)[draw_labels(t, seed, epoch, idx)]
  if mode == 'multi_target':
    return multi_target_encoding(t)
  return t


# --------------------------------------------------------------------------------------------
# Paper 002: FER without one-hot labels (section 3.2-3.4)
# --------------------------------------------------------------------------------------------

def clean_votes(votes, max_unknown_nf: int = 3) -> tuple[np.ndarray, np.ndarray]:
  """Paper 002 data cleaning (section 3.3.1): distributions over the 8 emotions and a keep-mask.

  "images that are labeled by more than three taggers as unknown or N.F. are ... eliminated";
  Fig. 16 drops an image with 2 unknown + 2 NF votes, so the test is on the sum unknown + NF.
  The remaining rows are normalised over the 8 emotions (no outlier removal: Fig. 16 keeps
  single-digit votes as they are). A row without any emotion vote is dropped as well (it has no
  distribution; the paper's rows all have 10 votes, so this cannot happen there).

  Returns:
    dist float32 [N, 8] (zero rows where dropped) and keep bool [N].
  """
  v = _check_votes(votes)
  emo = v[:, :NUM_EMOTIONS].astype(np.float64)
  sums = emo.sum(1, keepdims=True)
  keep = (v[:, UNKNOWN] + v[:, NOT_FACE] <= max_unknown_nf) & (sums[:, 0] > 0)
  dist = np.divide(emo, sums, out=np.zeros_like(emo), where=keep[:, None])
  return dist.astype(np.float32), keep


def complexity_level(dist) -> np.ndarray:
  """Complexity X (paper 002, section 3.2): the number of emotions with a positive entry, int [N].

  Takes cleaned distributions [N, 8] or votes [N, 10] (only the 8 emotions count: after cleaning
  X is "the number of emotion categories among the remaining 8 classes with positive estimated
  probability").
  """
  d = np.asarray(dist)
  if d.ndim != 2 or d.shape[1] not in (NUM_EMOTIONS, NUM_EMOTIONS + 2):
    raise ValueError(f'expected [N, 8] distributions or [N, 10] votes, got shape {d.shape}')
  return (d[:, :NUM_EMOTIONS] > 0).sum(1)


def split_test_set(complexity, kind: str = 'ordinary', fraction: float = 0.1, seed: int = 0,
                   ids=None, min_complex_level: int = 4) -> tuple[np.ndarray, np.ndarray]:
  """Paper 002 train/test split of the cleaned samples (section 3.3.2), as sorted positions.

  The paper pools the cleaned dataset (not the FERPlus Train/Valid/Test split) and draws "about
  one-tenth" as the test set: randomly for the 'ordinary' test set, randomly among the complex
  samples (X > 3) for the 'complex' one; the rest is the training set. Exactly, with
  n_test = round(fraction * N) (Python rounding) and key_i = hash_uniform(salt, seed, ids[i])
  (ids: stable per-sample ids such as the original row numbers, default 0..N-1):
    ordinary  the n_test samples with the smallest keys;
    complex   the min(n_test, #complex) complex samples (X >= min_complex_level) with the
              smallest keys; when fewer complex samples exist than n_test all are taken (the
              paper's FERPlus has about 10% complex samples, so its complex test set is nearly
              all of them).
  Keys depend only on (seed, id), so the split of a sample does not move when others are
  added or removed.

  Returns:
    (train, test): int64 arrays of positions in `complexity`, disjoint and covering all of it.
  """
  x = np.asarray(complexity)
  n = x.shape[0]
  if kind not in ('ordinary', 'complex'):
    raise ValueError(f"kind must be 'ordinary' or 'complex', got {kind!r}")
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f'fraction must be in [0, 1], got {fraction}')
  ids = np.arange(n) if ids is None else np.asarray(ids)
  if ids.shape != (n,) or np.unique(ids).size != n:
    raise ValueError('ids must be [N] distinct integers')
  key = hash_uniform(_SALT_SPLIT, seed, ids)
  pool = np.arange(n) if kind == 'ordinary' else np.flatnonzero(x >= min_complex_level)
  n_test = min(round(fraction * n), pool.size)
  test = np.sort(pool[np.argsort(key[pool], kind='stable')[:n_test]])
  train = np.setdiff1d(np.arange(n), test)
  return train, test


def n_hot(dist, n: int, seed: int = 0, ids=None) -> np.ndarray:
  """Paper 002 N-hot label reduction (section 3.3.3, Fig. 18), float32 [N, 8].

  Rows with complexity X <= n are unchanged. Other rows are sorted by descending probability,
  "random order is applied to a tie", the last 8 - n entries are set to 0 and the vector is
  renormalised to sum 1, so at most n entries stay positive. A tie is broken by the key
  hash_uniform(salt, seed, ids[i], class) (smaller key ranks first), so the result of a row
  depends only on (its values, seed, its id). n = 8 returns the input (the 8-hot set).
  """
  d = np.asarray(dist, np.float64)
  if d.ndim != 2 or d.shape[1] != NUM_EMOTIONS:
    raise ValueError(f'dist must be [N, 8], got shape {d.shape}')
  if not 1 <= n <= NUM_EMOTIONS:
    raise ValueError(f'n must be in 1..8, got {n}')
  ids = np.arange(d.shape[0]) if ids is None else np.asarray(ids)
  if ids.shape != (d.shape[0],):
    raise ValueError(f'ids must be [N] = [{d.shape[0]}], got shape {ids.shape}')
  key = hash_uniform(_SALT_NHOT, seed, ids[:, None], np.arange(NUM_EMOTIONS)[None, :])
  order = np.lexsort((key, -d), axis=-1)       # primary: value descending; then the key
  keep = np.zeros(d.shape, bool)
  np.put_along_axis(keep, order[:, :n], True, axis=1)
  out = np.where(keep, d, 0.0)
  sums = out.sum(1, keepdims=True)
  out = np.divide(out, sums, out=np.zeros_like(out), where=sums > 0)
  simple = (d > 0).sum(1, keepdims=True) <= n    # X <= n: "do not require further processing"
  return np.where(simple, d, out).astype(np.float32)


def any_max_correct(probs_or_pred, target, atol: float = 1e-6) -> np.ndarray:
  """Per sample: does the prediction hit one of the target's maximal entries? bool [N].

  Paper 002, section 3.4: the predicted emotion is the argmax of the model output; "if the
  predicted emotion matches with any of the emotions that have the highest value in the actual
  emotion vector, the prediction is considered accurate". `probs_or_pred` is scores [N, K]
  (argmax, first on ties) or int predictions [N]. Entries within `atol` of the row maximum
  count as maximal, so float32 renormalisation cannot split a tie (distinct vote shares differ
  by at least 1 / total).
  """
  t = np.asarray(target, np.float64)
  p = np.asarray(probs_or_pred)
  if t.ndim != 2:
    raise ValueError(f'target must be [N, K], got shape {t.shape}')
  if p.ndim == 2:
    if p.shape != t.shape:
      raise ValueError(f'scores {p.shape} and target {t.shape} differ in shape')
    pred = p.argmax(1)
  elif p.shape == (t.shape[0],) and p.dtype.kind in 'iu':
    pred = p
  else:
    raise ValueError(f'expected scores [N, K] or int predictions [N], got {p.shape} {p.dtype}')
  if np.any(pred < 0) or np.any(pred >= t.shape[1]):
    raise ValueError('predictions out of range')
  hit = t[np.arange(t.shape[0]), pred]
  return hit >= t.max(1) - atol


def any_max_accuracy(probs_or_pred, target, atol: float = 1e-6) -> float:
  """Fraction of samples whose prediction hits a maximal target entry (paper 002 accuracy)."""
  correct = any_max_correct(probs_or_pred, target, atol)
  if correct.size == 0:
    raise ValueError('any_max_accuracy of an empty set')
  return float(correct.mean())
