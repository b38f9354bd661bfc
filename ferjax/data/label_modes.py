"""Targets from annotator votes in training and evaluation (FERPlus and the synthetic benchmark).

config.data chooses (all off at their defaults):
  label_mode  'plurality' (the reader's label and the normalised emotion votes, as before);
              the microsoft/FERPlus training modes 'majority', 'probability', 'crossentropy',
              'multi_target' (ferplus.process_votes: its outlier floor and drop rules);
              'distribution' (paper 002's cleaning, see `clean`).
  clean       'distribution' only: 'paper' drops an image with unknown + not-a-face > 3 votes
              (ferplus.clean_votes), 'msft' drops what the reference's crossentropy mode drops.
  vote_floor  votes <= this are zeroed before 'distribution' targets are made (the reference
              uses 1; the paper keeps every vote, 0). The reference modes always floor at 1.
  nhot        1..8: the N largest entries of every training target kept (ferplus.n_hot, ties
              broken by the run's seed), renormalised; offline, training set only. 0 = off.
  split       'official': the specs' own splits. 'paper': the training spec is pooled and
              split by the seed (ferplus.split_test_set) into an ordinary test set (a random
              `test_fraction`), a complex test set (random images with X > 3, as many as the
              ordinary one where there are enough) and the rest for training; the eval specs
              'ordinary' and 'complex' name the two test sets.

Only the training set gets the mode's targets; evaluation sets keep their plurality labels
(their majority and any-max accuracies come from `vote_report`), except that 'distribution'
cleans them as the paper cleans its test sets. Every dropped example is counted and said.

'probability' serves the stored distribution; `draw_batch` replaces it with a one-hot drawn
afresh per epoch, keyed by (seed, epoch, example) (ferplus.draw_labels), whenever the loss is
'pld' (the two name the same procedure: the reference's mode, the paper's loss).
"""
from __future__ import annotations

import numpy as np

from ferjax.data import ferplus
from ferjax.errors import ConfigError
from ferjax.labels import CANONICAL

LABEL_MODES = ('plurality',) + ferplus.MODES + ('distribution',)
CLEAN = ('paper', 'msft')
SPLITS = ('official', 'paper')
PAPER_TEST_SETS = ('ordinary', 'complex')


def check(cfg) -> None:
  d = cfg.data
  for key, value, allowed in (('label_mode', d.label_mode, LABEL_MODES),
                              ('clean', d.clean, CLEAN), ('split', d.split, SPLITS)):
    if value not in allowed:
      raise ConfigError(f'config.data.{key}={value!r}; expected one of {allowed}')
  if not 0 <= int(d.nhot) <= ferplus.NUM_EMOTIONS:
    raise ConfigError(f'config.data.nhot={d.nhot}; expected 0 (off) or 1..8')
  if int(d.vote_floor) < 0:
    raise ConfigError(f'config.data.vote_floor={d.vote_floor}; expected >= 0')


def loss_name(cfg) -> str:
  """The distribution loss a run uses: the reference's modes bring their own."""
  mode = cfg.data.label_mode
  return {'probability': 'pld', 'multi_target': 'multi_target'}.get(mode, cfg.loss.name)


def active(cfg) -> bool:
  d = cfg.data
  return (d.label_mode != 'plurality' or int(d.nhot) > 0 or d.split != 'official'
          or loss_name(cfg) == 'pld')


def is_paper_test(cfg, spec: str) -> bool:
  return cfg.data.split == 'paper' and spec in PAPER_TEST_SETS


def pool_spec(cfg, spec: str) -> tuple[str, int]:
  """(spec, num_examples) to open for `spec`: the pooled training spec for the paper's test
  sets, else `spec` itself (num_examples -1: the caller's)."""
  if is_paper_test(cfg, spec):
    return cfg.data.train, cfg.data.train_examples
  if spec in PAPER_TEST_SETS:
    raise ConfigError(f"eval set {spec!r} exists with config.data.split='paper' only")
  return spec, -1


def source_votes(src) -> np.ndarray:
  """int64 [len(src), 10] canonical votes of an InSpace source, images not decoded where the
  source can (synthetic and prepared sources have `votes()`)."""
  base = src.source
  if hasattr(base, 'votes'):
    v = np.asarray(base.votes(), np.int64)
  else:
    if 'votes' not in base[0]:
      raise ConfigError(f'{base!r} has no annotator votes; label_mode, nhot, split=paper and '
                        "the 'pld' loss need them (FERPlus or the synthetic benchmark)")
    v = np.stack([np.asarray(base[i]['votes'], np.int64) for i in range(len(base))])
  if v.ndim != 2 or v.shape[1] != ferplus.NUM_EMOTIONS + 2:
    raise ConfigError(f'{base!r}: votes of shape {v.shape}; label modes need 10 vote counts')
  return v if src.keep is None else v[src.keep]


def _normalised(emo: np.ndarray) -> np.ndarray:
  emo = emo.astype(np.float64)
  s = emo.sum(1, keepdims=True)
  return np.divide(emo, s, out=np.zeros_like(emo), where=s > 0).astype(np.float32)


def vote_targets(votes, cfg, train: bool) -> tuple[np.ndarray, np.ndarray, str]:
  """(targets float32 [N, 8] canonical, keep bool [N], why rows are dropped) of one set."""
  d, v = cfg.data, np.asarray(votes, np.int64)
  mode = d.label_mode
  if mode in ferplus.MODES and train:
    t, keep = ferplus.process_votes(v, mode)
    return t, keep, f"the reference's {mode} rules"
  if mode == 'distribution':
    floored = np.where(v <= int(d.vote_floor), 0, v)
    if d.clean == 'paper':
      t, keep = ferplus.clean_votes(floored)
      return t, keep, 'the paper cleaning (unknown + not-a-face > 3)'
    _, keep = ferplus.process_votes(v, 'crossentropy')
    t = _normalised(floored[:, :ferplus.NUM_EMOTIONS])
    keep &= t.sum(1) > 0
    return np.where(keep[:, None], t, 0).astype(np.float32), keep, "the reference's drop rules"
  return _normalised(v[:, :ferplus.NUM_EMOTIONS]), np.ones(len(v), bool), ''


def paper_split(targets: np.ndarray, keep: np.ndarray, seed: int,
                fraction: float) -> dict[str, np.ndarray]:
  """Positions (in the whole pool) of the paper's training, ordinary and complex test sets."""
  ids = np.flatnonzero(keep)
  x = ferplus.complexity_level(targets[ids])
  rest, ordinary = ferplus.split_test_set(x, 'ordinary', fraction, seed, ids=ids)
  # The complex set is as large as the ordinary one (about 10% of the data) where the pool
  # has that many complex images left.
  share = min(1.0, ordinary.size / max(rest.size, 1))
  train, cx = ferplus.split_test_set(x[rest], 'complex', share, seed, ids=ids[rest])
  return {'train': ids[rest[train]], 'ordinary': ids[ordinary], 'complex': ids[rest[cx]]}


class LabelView:
  """An InSpace source seen through the label mode: a subset of its rows (`positions`) whose
  'label_dist' is the served target and 'label' its first maximum (-1 for an empty target).
  Other attributes pass through to the InSpace source."""

  def __init__(self, spaced, positions, served, stored, notes: dict[str, int]):
    self.spaced, self.positions = spaced, np.asarray(positions, np.int64)
    self.served, self.notes = served.astype(np.float32), dict(notes)
    self._labels = np.where(stored.sum(1) > 0, stored.argmax(1), -1).astype(np.int64)

  def __len__(self) -> int:
    return int(self.positions.size)

  def labels(self) -> np.ndarray:
    return self._labels

  def index_of(self, i: int) -> int:
    return self.spaced.index_of(int(self.positions[int(i)]))

  def __getitem__(self, i: int) -> dict:
    i = int(i)
    ex = dict(self.spaced[int(self.positions[i])])
    ex['label'] = np.int32(self._labels[i])
    ex['label_dist'] = self.served[i]
    return ex

  def __getattr__(self, name):
    if name in ('spaced', '__setstate__'):
      raise AttributeError(name)
    return getattr(self.spaced, name)

  def summary(self) -> str:
    parts = [self.spaced.summary()] + [f'dropped {n} examples by {why}'
                                       for why, n in self.notes.items() if n]
    return '; '.join(p for p in parts if p)


def view(cfg, spaced, spec: str, train: bool):
  """`spaced` (an InSpace source) with the config's targets, or `spaced` itself when no label
  option is on."""
  check(cfg)
  if not active(cfg):
    return spaced
  d = cfg.data
  if set(spaced.names) != set(CANONICAL) or len(spaced.names) != len(CANONICAL):
    raise ConfigError(f'config.data.label_mode / nhot / split work on the 8 FERPlus emotions; '
                      f'the class space {spaced.space!r} has {spaced.names}')
  votes = source_votes(spaced)
  targets, keep, why = vote_targets(votes, cfg, train or is_paper_test(cfg, spec))
  if why and d.split == 'paper':   # the drops happen in the pool, before the split
    why += ' in the pooled set'
  notes = {why: int((~keep).sum())} if why else {}
  positions = np.flatnonzero(keep)
  if d.split == 'paper':
    parts = paper_split(targets, keep, int(cfg.seed), float(d.test_fraction))
    positions = parts[spec if is_paper_test(cfg, spec) else 'train']
  cols = [CANONICAL.index(n) for n in spaced.names]        # run class -> canonical column
  stored = targets[positions][:, cols]
  served = stored
  if train:
    if int(d.nhot) > 0:
      served = ferplus.n_hot(served, int(d.nhot), seed=int(cfg.seed), ids=positions)
      stored = served
    if d.label_mode == 'multi_target':
      served = ferplus.multi_target_encoding(served)
  return LabelView(spaced, positions, served, stored, notes)


def draw_batch(cfg, seed: int, steps_per_epoch: int):
  """f(batch, ids, step) -> batch with 'label_dist' / 'label' one-hot draws from the served
  distributions when the loss is 'pld', else None. ids: the examples' positions in the
  training source (unique, appended copies included)."""
  if loss_name(cfg) != 'pld':
    return None

  def draw(batch: dict, ids, step: int) -> dict:
    dist = batch['label_dist']
    ok = dist.sum(1) > 0
    out = dict(batch)
    if ok.any():
      cls = ferplus.draw_labels(dist[ok], seed, step // steps_per_epoch,
                                np.asarray(ids, np.int64)[ok])
      onehot = np.zeros_like(dist)
      onehot[np.flatnonzero(ok), cls] = 1.0
      label = np.where(ok, onehot.argmax(1), -1).astype(batch['label'].dtype)
      out['label_dist'], out['label'] = onehot, label
    return out

  return draw


def vote_report(votes, probs, class_names, mask=None) -> dict | None:
  """The FERPlus accuracies of one set from its votes (canonical [N, 10]) and the model's
  probabilities (run class order), in percent: the reference's majority accuracy (rows its
  majority rule drops are counted, not scored), the paper's any-max accuracy on cleaned
  distributions (its drops counted) and that accuracy per complexity level X. None when the
  class space is not the 8 emotions."""
  names = tuple(class_names)
  if set(names) != set(CANONICAL) or len(names) != len(CANONICAL):
    return None
  v = np.asarray(votes)
  keep = np.ones(len(v), bool) if mask is None else np.asarray(mask) > 0
  v = np.rint(v[keep]).astype(np.int64)
  if not len(v):
    return None
  pred = np.asarray([CANONICAL.index(n) for n in names])[np.asarray(probs)[keep].argmax(1)]
  out: dict = {'n': int(len(v))}
  major, ok = ferplus.process_votes(v, 'majority')
  out['majority_dropped'] = int((~ok).sum())
  if ok.any():
    out['majority_accuracy'] = 100.0 * float(np.mean(pred[ok] == major[ok].argmax(1)))
  dist, clean = ferplus.clean_votes(v)
  out['anymax_dropped'] = int((~clean).sum())
  if clean.any():
    hit = ferplus.any_max_correct(pred[clean], dist[clean])
    out['anymax_accuracy'] = 100.0 * float(hit.mean())
    x = ferplus.complexity_level(dist[clean])
    out['by_complexity'] = {int(k): {'n': int((x == k).sum()),
                                     'anymax_accuracy': 100.0 * float(hit[x == k].mean())}
                            for k in np.unique(x)}
  return out
