"""What a training run reads, in which order: the training pool and the global batch of each step.

config.data chooses (each off at its default):
  append             paper 002's offline augmentation: the training set + a flipped copy + copies
                     rotated by +-20 degrees (ferjax.data.offline_augment.Appended)
  bagging_fraction   > 0: train on one ensemble member's subset (paper 004), member
                     `bagging_member`, with `bagging_replace` / `bagging_disjoint` as in
                     samplers.bagging_subset; drawn from the run's seed, so members of one
                     ensemble share `seed` and differ in `bagging_member`;
                     `bagging_stratified`: fold `bagging_member` of round(1 / fraction)
                     disjoint stratified folds (samplers.stratified_fold)
  class_subsample    a fixed class-balanced subset, every class cut to the smallest one's count
                     (CAGE's valence/arousal model)
  label_noise        a fraction of the training labels flipped (GReFEL's noise studies), mode
                     `label_noise_mode`; the same examples flip in every epoch and on resume
  sampler            'shuffle' (a fresh permutation per epoch), 'class_balanced' (GReFEL: every
                     batch holds batch_size / K examples of each of the K classes) or
                     'imbalance' (P(example) proportional to n_class ** -sampler_power, with
                     replacement, as torchsampler's ImbalancedDatasetSampler)

`BatchOrder` maps a global step to the example ids of its global batch. It is a pure function of
(seed, step), so every process computes the same batch and reads its own slice of it, and a
resumed run (grain checkpoints the position) continues the exact stream.
"""
from __future__ import annotations

import numpy as np

from ferjax.data import offline_augment, samplers
from ferjax.data.spaces import source_labels

SAMPLERS = ('shuffle', 'class_balanced', 'imbalance')


class Relabeled:
  """A source whose labels are replaced (label noise): 'label' is the new label and a one-hot
  'label_dist' replaces the votes of flipped examples, so soft-target losses see the noise too."""

  def __init__(self, source, new_labels: np.ndarray, flipped: np.ndarray, num_classes: int):
    self.source, self.new_labels, self.flipped = source, new_labels, flipped
    self.num_classes = num_classes

  def __len__(self) -> int:
    return len(self.source)

  def labels(self) -> np.ndarray:
    return self.new_labels

  def __getitem__(self, i: int) -> dict:
    ex = dict(self.source[i])
    if self.flipped[int(i)]:
      ex['label'] = np.int32(self.new_labels[int(i)])
      dist = np.zeros(self.num_classes, np.float32)
      dist[ex['label']] = 1.0
      ex['label_dist'] = dist
    return ex


def training_source(cfg, src, seed: int):
  """(source, pool, labels): the source (already in the run's class space, see spaces.InSpace)
  after `append` and `label_noise`, the example ids this run may draw (class subsample, then
  bagging) and, when a sampler or the noise needed them, their labels (-1 unknown); else None."""
  d = cfg.data
  if d.append:
    angles, random_range = offline_augment.parse_rotation(d.get('append_rotation', '20'))
    src = offline_augment.Appended(src, rotations=angles, random_range=random_range, seed=seed)
  num_classes = cfg.model.num_classes
  labels = None
  rate = float(d.label_noise)
  if rate > 0:
    labels = source_labels(src)
    noisy, flipped = samplers.inject_label_noise(labels, rate, num_classes, seed,
                                                 mode=d.label_noise_mode)
    src = Relabeled(src, noisy, flipped, num_classes)
    labels = noisy
  pool = np.arange(len(src), dtype=np.int64)
  if d.class_subsample:
    if labels is None:
      labels = source_labels(src)
    pool = samplers.class_subsample(labels, seed)
  fraction = float(d.bagging_fraction)
  if fraction > 0 and d.get('bagging_stratified', False):
    if labels is None:
      labels = source_labels(src)
    pool = pool[samplers.stratified_fold(labels[pool], round(1.0 / fraction),
                                         int(d.bagging_member), seed)]
  elif fraction > 0:
    pool = pool[samplers.bagging_subset(pool.size, fraction, int(d.bagging_member),
                                        seed, replace=bool(d.bagging_replace),
                                        disjoint=bool(d.bagging_disjoint))]
  sampler = d.sampler
  if sampler not in SAMPLERS:
    raise ValueError(f'config.data.sampler={sampler!r}; known: {SAMPLERS}')
  if sampler != 'shuffle':
    if labels is None:
      labels = source_labels(src)
  return src, pool, (None if labels is None else labels[pool])


def pool_size(cfg, src) -> int:
  """Examples per epoch: the size of the pool `training_source` draws from."""
  return training_source(cfg, src, cfg.seed)[1].size


class BatchOrder:
  """A random-access sequence: item s is the int64 ids of the global batch of step s.

  Epoch e's order depends on (seed, e) only and is cached, so consecutive steps cost nothing.
  The length is finite but far beyond any run (grain needs a length).
  """

  def __init__(self, pool: np.ndarray, labels: np.ndarray | None, batch_size: int,
               sampler: str, seed: int, power: float = 1.0):
    self.pool, self.labels, self.batch_size = pool, labels, int(batch_size)
    self.sampler, self.seed, self.power = sampler, int(seed), float(power)
    self.steps_per_epoch = pool.size // self.batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(f'the training pool has {pool.size} examples, fewer than one batch '
                       f'({batch_size})')
    if sampler == 'class_balanced':
      k = np.unique(labels[labels >= 0]).size
      if k == 0 or self.batch_size % k:
        raise ValueError(f"sampler 'class_balanced' needs a batch size divisible by the {k} "
                         f'classes present; got batch_size={batch_size}')
      self.per_class = self.batch_size // k
    self._epoch, self._ids = -1, None

  def __len__(self) -> int:
    return self.steps_per_epoch * 10**9

  def _epoch_seed(self, epoch: int) -> int:
    return int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])

  def epoch_ids(self, epoch: int) -> np.ndarray:
    """int64 [steps_per_epoch, batch_size]: the pool ids of every batch of one epoch."""
    spe, b, s = self.steps_per_epoch, self.batch_size, self._epoch_seed(epoch)
    if self.sampler == 'class_balanced':
      pos = samplers.class_balanced_batches(self.labels, self.per_class, spe, s)
    elif self.sampler == 'imbalance':
      pos = samplers.imbalance_aware_order(self.labels, spe * b, s, self.power).reshape(spe, b)
    else:
      pos = np.random.default_rng(s).permutation(self.pool.size)[:spe * b].reshape(spe, b)
    return self.pool[pos]

  def __getitem__(self, step: int) -> np.ndarray:
    epoch, within = divmod(int(step), self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._ids = epoch, self.epoch_ids(epoch)
    return self._ids[within]
