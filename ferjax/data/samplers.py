"""Index orders and label tools for training, pure numpy and deterministic in their seed.

Every function takes an integer `seed` (and, where it matters, a member or class id) and draws
from a fresh `np.random.default_rng` seeded with them, so a call returns the same result whatever
ran before it. Labels are int class ids; a negative label (-1: unknown, as in ferjax readers) is
never sampled, never flipped and never counted.

  class_balanced_batches   GReFEL's batches of B images per expression
  imbalance_aware_order    sampling probability of an example proportional to n_class**-power
  bagging_subset           the training subset of one ensemble member (Jeong et al., paper 004)
  stratified_fold          one of k disjoint stratified folds (paper 004's weak models)
  class_subsample          a class-balanced subset: every class cut to the smallest (CAGE's VA)
  inject_label_noise       synthetic label noise for noise studies (GReFEL Tables 5 and 7)
  class_weights            per-class loss weights (inverse frequency and variants; CAGE Table 4)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

WEIGHT_MODES = ('inverse', 'inverse_sqrt', 'effective', 'complement')
WEIGHT_NORMS = ('samples', 'classes_mean', 'classes_sum', 'none')
_SALT_BATCHES, _SALT_ORDER, _SALT_BAG, _SALT_NOISE, _SALT_SUB = 11, 12, 13, 14, 15


def _labels(labels) -> np.ndarray:
  y = np.asarray(labels)
  if y.ndim != 1 or y.dtype.kind not in 'iu':
    raise ValueError(f'labels must be a 1-D int array, got shape {y.shape} dtype {y.dtype}')
  return y.astype(np.int64)


def _seed(seed) -> int:
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
  return int(seed)


def _class_stream(members: np.ndarray, per_class: int, num_batches: int,
                  rng: np.random.Generator) -> np.ndarray:
  """[num_batches, per_class] draws from one class: successive shuffled passes over `members`.

  Every member is used once per pass, so a class with at least per_class * num_batches members
  repeats nothing, and a smaller one repeats its members as evenly as possible. When a pass runs
  out inside a batch, the next pass starts with the members not yet in that batch (order kept
  otherwise), so a batch holds an example twice only when the class has fewer than per_class
  members: the only case where sampling with replacement is unavoidable.
  """
  out = np.empty((num_batches, per_class), np.int64)
  pool, pos = rng.permutation(members), 0
  for b in range(num_batches):
    take = pool[pos:pos + per_class]
    pos += take.size
    while take.size < per_class:
      perm = rng.permutation(members)
      fresh = ~np.isin(perm, take)
      perm = np.concatenate([perm[fresh], perm[~fresh]])
      need = per_class - take.size
      take = np.concatenate([take, perm[:need]])
      pool, pos = perm, min(need, perm.size)
    out[b] = take
  return out


def class_balanced_batches(labels, per_class: int, num_batches: int, seed: int,
                           shuffle: bool = True) -> np.ndarray:
  """Batches holding `per_class` examples of every class, int64 [num_batches, K * per_class].

  GReFEL (paper 001, section 4.1, "Data Distribution Adjustments"): "B images per expression are
  chosen for training, creating a batch of (B x N_cls) images", to counter class imbalance.
  K is the number of distinct non-negative labels. Within a class the examples are taken from
  successive shuffled passes (see `_class_stream`): without replacement until the class is used
  up, so repeats happen only for classes smaller than per_class * num_batches, and inside one
  batch only for classes smaller than per_class. With `shuffle` each batch is permuted, so that
  the contiguous per-device slices of a data-parallel batch do not each hold only a few classes;
  without it the batch is grouped by class in ascending label order.
  """
  y = _labels(labels)
  if per_class < 1 or num_batches < 0:
    raise ValueError(f'need per_class >= 1 and num_batches >= 0, got {per_class}, {num_batches}')
  classes = np.unique(y[y >= 0])
  if classes.size == 0:
    raise ValueError('class_balanced_batches: no labelled example')
  rng = np.random.default_rng([_SALT_BATCHES, _seed(seed)])
  parts = [_class_stream(np.flatnonzero(y == c), per_class, num_batches, rng) for c in classes]
  batches = np.concatenate(parts, axis=1)
  return rng.permuted(batches, axis=1) if shuffle else batches


def imbalance_aware_order(labels, num_samples: int | None, seed: int,
                          power: float = 1.0) -> np.ndarray:
  """`num_samples` example indices drawn with replacement, P(example i) ∝ n_{y_i} ** -power.

  A class c is then drawn with probability ∝ n_c ** (1 - power): power = 1 is balanced in
  expectation (the `ImbalancedDatasetSampler` that POSTER++ and DAN use on AffectNet draws with
  weights 1 / n_class and replacement),
  power = 0 is uniform over examples (natural class frequencies) and 0.5 is in between.
  num_samples None means one pass, len(labels). Returns int64 [num_samples].
  """
  y = _labels(labels)
  counts = np.bincount(y[y >= 0], minlength=1).astype(np.float64)
  if counts.sum() == 0:
    raise ValueError('imbalance_aware_order: no labelled example')
  n = y.size if num_samples is None else int(num_samples)
  w = np.zeros(y.size)
  lab = y >= 0
  w[lab] = counts[y[lab]] ** -float(power)
  rng = np.random.default_rng([_SALT_ORDER, _seed(seed)])
  return rng.choice(y.size, size=n, replace=True, p=w / w.sum()).astype(np.int64)


def bagging_subset(num_examples: int, fraction: float, member: int, seed: int,
                   replace: bool = False, disjoint: bool = False) -> np.ndarray:
  """Sorted example indices of ensemble member `member`: round(fraction * num_examples) of them.

  Jeong et al. (paper 004, section 2 and Fig. 1b) train each "weak" model of their bagging
  ensemble [Breiman 1996] on a sub-sampled set, "20% out of the entire set"; the paper does not
  say whether with replacement or whether members overlap, so:
    replace=False  a uniform subset without replacement, drawn independently per member
                   (members may overlap) -- the default, a "sub-sampled" set;
    replace=True   a bootstrap sample (Breiman's bagging with fraction=1), duplicates kept;
    disjoint=True  members 0, 1, ... take consecutive slices of one permutation drawn from
                   `seed` alone, so they never overlap (with fraction 0.2, 5 members partition
                   the data up to rounding); needs (member + 1) * size <= num_examples.
  """
  if fraction <= 0.0 or (fraction > 1.0 and not replace):
    raise ValueError(f'fraction must be in (0, 1] (or > 0 with replace), got {fraction}')
  if member < 0 or num_examples < 1:
    raise ValueError(f'need member >= 0 and num_examples >= 1, got {member}, {num_examples}')
  size = max(1, round(fraction * num_examples))
  if disjoint:
    if replace:
      raise ValueError('disjoint subsets are drawn without replacement')
    if (member + 1) * size > num_examples:
      raise ValueError(f'member {member} has no disjoint slice of {size} in {num_examples}')
    perm = np.random.default_rng([_SALT_BAG, _seed(seed)]).permutation(num_examples)
    return np.sort(perm[member * size:(member + 1) * size])
  rng = np.random.default_rng([_SALT_BAG, _seed(seed), int(member)])
  return np.sort(rng.choice(num_examples, size=size, replace=replace)).astype(np.int64)


def stratified_fold(labels, folds: int, member: int, seed: int) -> np.ndarray:
  """Sorted indices of fold `member` of `folds` disjoint stratified folds (paper 004's weak
  models: 5 folds of 20%). Each class is permuted (from `seed` alone, so all members see one
  split) and dealt round-robin from a per-class offset, so every fold gets floor or ceil of
  n_c / folds of every class and the folds partition the labelled examples. Unlabelled
  examples (label < 0) are dealt the same way as one more class."""
  y = _labels(labels)
  if folds < 1 or not 0 <= member < folds:
    raise ValueError(f'need 0 <= member < folds, got member {member} of {folds}')
  rng = np.random.default_rng([_SALT_BAG, _seed(seed), 1])
  out, offset = [], 0
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    # The offset rotates which folds get a class's remainder, so fold sizes stay balanced.
    out.append(idx[(np.arange(idx.size) + offset) % folds == member])
    offset += idx.size
  return np.sort(np.concatenate(out)).astype(np.int64)


def class_subsample(labels, seed: int, per_class: int | None = None) -> np.ndarray:
  """Sorted indices of a class-balanced subset: `per_class` examples of every class present
  (default: the smallest class's count), each class drawn uniformly without replacement.

  CAGE's valence/arousal model trains on AffectNet "class-balanced by subsampling to the
  minority-class count" (CAGE's official VA scripts). Unlabelled examples
  (label < 0) are left out.
  """
  y = _labels(labels)
  classes, counts = np.unique(y[y >= 0], return_counts=True)
  if classes.size == 0:
    raise ValueError('class_subsample: no labelled example')
  k = int(counts.min()) if per_class is None else int(per_class)
  if k < 1 or k > counts.min():
    raise ValueError(f'per_class must be in 1..{counts.min()} (the smallest class), got {k}')
  rng = np.random.default_rng([_SALT_SUB, _seed(seed)])
  parts = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c in classes]
  return np.sort(np.concatenate(parts)).astype(np.int64)


def inject_label_noise(labels, rate: float, num_classes: int, seed: int,
                       mode: str = 'symmetric',
                       target_map: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Flips exactly round(rate * N) labels, never to their own class; (new labels, flipped mask).

  N counts the labelled examples (label >= 0); which ones flip is a uniform draw without
  replacement. GReFEL reports accuracy under 10% noise (Table 5, against EAC) and 0-50% noise
  (Table 7) but does not describe the injection; the FER noisy-label protocol of its baselines
  (SCN, RUL, EAC) replaces the label of the chosen fraction by a random *other* class, which is
  the default:
    symmetric   the new class is uniform over the num_classes - 1 other classes;
    asymmetric  a fixed confusion: class c becomes target_map[c] (default (c + 1) % K, the
                "pair flipping" of Han et al. 2018); target_map must have no fixed point.
  round is Python's (half to even). Returns int64 labels and bool [N] flipped.
  """
  y = _labels(labels)
  if num_classes < 2 or np.any(y >= num_classes):
    raise ValueError(f'need num_classes >= 2 and labels < num_classes ({num_classes})')
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f'rate must be in [0, 1], got {rate}')
  if mode == 'asymmetric':
    tmap = (np.arange(1, num_classes + 1) % num_classes if target_map is None
            else np.asarray(target_map, np.int64))
    if (tmap.shape != (num_classes,) or np.any(tmap == np.arange(num_classes))
        or np.any(tmap < 0) or np.any(tmap >= num_classes)):
      raise ValueError(f'target_map must map each of {num_classes} classes to another class')
  elif mode != 'symmetric':
    raise ValueError(f"mode must be 'symmetric' or 'asymmetric', got {mode!r}")
  labelled = np.flatnonzero(y >= 0)
  k = round(rate * labelled.size)
  rng = np.random.default_rng([_SALT_NOISE, _seed(seed)])
  chosen = rng.choice(labelled, size=k, replace=False)
  new = y.copy()
  if mode == 'symmetric':
    new[chosen] = (y[chosen] + rng.integers(1, num_classes, size=k)) % num_classes
  else:
    new[chosen] = tmap[y[chosen]]
  flipped = np.zeros(y.size, bool)
  flipped[chosen] = True
  return new, flipped


def class_weights(labels, num_classes: int, mode: str = 'inverse', normalize: str = 'samples',
                  beta: float = 0.999) -> np.ndarray:
  """Per-class loss weights from the label counts n_c, float64 [num_classes].

  Raw weights (absent classes, n_c = 0, get 0: they never occur as a target):
    inverse       1 / n_c
    inverse_sqrt  1 / sqrt(n_c)
    effective     (1 - beta) / (1 - beta ** n_c), the "effective number" weights of Cui et al.
                  (CVPR 2019); beta -> 0 gives uniform weights, beta -> 1 inverse frequency
    complement    1 - n_c / N, Jeong et al.'s LSD weights (use with
                  normalize='none' to reproduce them)
  Normalisation:
    samples       sum_c n_c w_c = N, i.e. the weights average to 1 over the samples, so a
                  weighted mean loss keeps the unweighted scale; with 'inverse' this is
                  N / (K n_c) = scikit-learn's compute_class_weight('balanced') and ARBEx's
                  (N / C) / count_c when every class is present
    classes_mean  mean over the present classes = 1 (ferjax.losses.inverse_frequency_weights)
    classes_sum   sum over classes = 1: CAGE's convention (paper 003 Table 4, whose AffectNet-8
                  weights 0.015605 ... 0.308210 sum to 1.000001; "inverse" + "classes_sum")
    none          the raw weights
  """
  y = _labels(labels)
  if mode not in WEIGHT_MODES:
    raise ValueError(f'unknown weight mode {mode!r}; known: {WEIGHT_MODES}')
  if normalize not in WEIGHT_NORMS:
    raise ValueError(f'unknown normalisation {normalize!r}; known: {WEIGHT_NORMS}')
  if np.any(y >= num_classes):
    raise ValueError(f'labels must be < num_classes ({num_classes})')
  n = np.bincount(y[y >= 0], minlength=num_classes).astype(np.float64)
  total = n.sum()
  if total == 0:
    raise ValueError('class_weights: no labelled example')
  present = n > 0
  safe = np.where(present, n, 1.0)
  if mode == 'inverse':
    w = 1.0 / safe
  elif mode == 'inverse_sqrt':
    w = 1.0 / np.sqrt(safe)
  elif mode == 'effective':
    if not 0.0 <= beta < 1.0:
      raise ValueError(f'beta must be in [0, 1), got {beta}')
    w = (1.0 - beta) / (1.0 - beta ** safe)
  else:
    w = 1.0 - n / total
  w = np.where(present, w, 0.0)
  if normalize != 'none' and not np.any(w > 0):
    raise ValueError(f'class_weights: all {mode!r} weights are zero; nothing to normalise')
  if normalize == 'samples':
    w *= total / np.sum(n * w)
  elif normalize == 'classes_mean':
    w *= present.sum() / w.sum()
  elif normalize == 'classes_sum':
    w /= w.sum()
  return w
