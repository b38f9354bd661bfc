"""A dataset seen in the run's class space: labels mapped by class name, never by position.

Every source names its classes (`source.class_names`: the names of its 'label' values, and of
the columns of its 'label_dist' votes, `source.dist_names`, canonical when absent). `InSpace`
maps both into the run's space (`config.data.class_space`). An example whose class the space
lacks is an error naming the classes, unless `config.data.outside_space` says otherwise:
'drop' leaves it out (the wrapped source is shorter), 'unlabel' keeps it with label -1, so its
other targets (valence/arousal, landmarks) still count. Either way the count per class is said.
"""
from __future__ import annotations

import numpy as np

from ferjax import labels as labels_lib
from ferjax.errors import ConfigError


def source_labels(src) -> np.ndarray:
  """int64 [len(src)] labels in the source's own class space (-1 unknown), without decoding
  images where the source can (synthetic and prepared sources have `labels()`)."""
  if hasattr(src, 'labels'):
    return np.asarray(src.labels(), np.int64)
  return np.array([int(src[i]['label']) for i in range(len(src))], np.int64)


def _counts(names, values: np.ndarray) -> dict[str, int]:
  ids, n = np.unique(values, return_counts=True)
  return {names[int(i)]: int(c) for i, c in zip(ids, n)}


def describe(counts: dict[str, int]) -> str:
  return ', '.join(f'{name} {n}' for name, n in counts.items())


class InSpace:
  """Random-access source over `source` with 'label' and 'label_dist' in `space`.

  `dropped` / `unlabelled`: class name -> examples left out / kept without a label.
  `index_of(i)`: the position in `source` of example i (they differ after a drop).
  """

  def __init__(self, source, space: str, outside: str = 'error', what: str = ''):
    if outside not in labels_lib.OUTSIDE:
      raise ConfigError(f'config.data.outside_space={outside!r}; expected one of '
                       f'{labels_lib.OUTSIDE}')
    what = what or repr(source)
    src_names = getattr(source, 'class_names', None)
    if src_names is None:
      raise ValueError(f'{what}: the source does not name its classes (class_names), so its '
                       'labels cannot be matched to the class space by name')
    self.source, self.space = source, space
    self.names = labels_lib.class_names(space)
    self.source_names = tuple(src_names)
    self.multilabel = labels_lib.is_multilabel(space)
    # Multi-label spaces score the 'multilabel' vector; single labels do not map into them.
    self.label_map = (np.full(len(src_names), -1, np.int64) if self.multilabel
                      else labels_lib.space_map(self.source_names, self.names))
    dist_names = tuple(getattr(source, 'dist_names', labels_lib.CANONICAL))
    self.dist_cols = labels_lib.space_map(self.names, dist_names)   # run class -> vote column
    self.keep, self.dropped, self.unlabelled = None, {}, {}
    self._labels = None
    if not self.multilabel and (self.label_map < 0).any():
      raw = source_labels(source)
      outside_mask = (raw >= 0) & (self.label_map[np.maximum(raw, 0)] < 0)
      if outside_mask.any():
        counts = _counts(self.source_names, raw[outside_mask])
        if outside == 'error':
          raise ConfigError(
              f'{what}: {int(outside_mask.sum())} examples have classes outside the class space '
              f'{space!r} ({", ".join(self.names)}): {describe(counts)}. Set '
              '--config.data.outside_space=drop to leave them out, or =unlabel to keep them '
              'without a class label, or choose another --config.data.class_space')
        if outside == 'drop':
          self.keep = np.nonzero(~outside_mask)[0]
          self.dropped = counts
        else:
          self.unlabelled = counts
      self._labels = self._map(raw)
      if self.keep is not None:
        self._labels = self._labels[self.keep]

  def _map(self, raw: np.ndarray) -> np.ndarray:
    return np.where(raw >= 0, self.label_map[np.maximum(raw, 0)], -1).astype(np.int64)

  def __len__(self) -> int:
    return len(self.source) if self.keep is None else int(self.keep.size)

  def index_of(self, i: int) -> int:
    return int(i) if self.keep is None else int(self.keep[int(i)])

  def labels(self) -> np.ndarray:
    """int64 labels in the run's space (-1: unknown or outside it)."""
    if self._labels is None:
      self._labels = self._map(source_labels(self.source))
    return self._labels

  def __getitem__(self, i: int) -> dict:
    ex = dict(self.source[self.index_of(i)])
    raw = int(ex['label'])
    label = int(self.label_map[raw]) if raw >= 0 else -1
    ex['label'] = np.int32(label)
    k = len(self.names)
    if 'label_dist' in ex:
      votes = np.asarray(ex['label_dist'], np.float32)
      dist = np.where(self.dist_cols >= 0, votes[np.maximum(self.dist_cols, 0)], 0.0)
      total = dist.sum()
      ex['label_dist'] = (dist / total if total > 0 and label >= 0
                          else np.zeros(k)).astype(np.float32)
    return ex

  def __getattr__(self, name):
    # Source-specific attributes (record, features, name, split, ...) pass through.
    if name == 'source':
      raise AttributeError(name)
    return getattr(self.source, name)

  def summary(self) -> str:
    parts = []
    if self.dropped:
      parts.append(f'dropped {sum(self.dropped.values())} examples outside class space '
                   f'{self.space!r} ({describe(self.dropped)})')
    if self.unlabelled:
      parts.append(f'kept {sum(self.unlabelled.values())} examples outside class space '
                   f'{self.space!r} without a class label ({describe(self.unlabelled)})')
    return '; '.join(parts)
