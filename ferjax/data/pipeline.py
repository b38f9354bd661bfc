"""grain input pipelines: a process's shard -> shuffle -> standard batch -> global jax.Array.

Training: `order.BatchOrder` gives the example ids of every global batch (shuffled anew each
epoch, or class-balanced / imbalance-aware, over the run's pool); each process reads its slice,
`global_batch / process_count` examples, and hands it to `to_global`, which assembles the global
array sharded over the mesh's batch axes. The iterator's state is checkpointed with the
model, so a resumed run continues the exact stream.

Evaluation: examples are read in order and the last batch is padded with `mask = 0`, so every
example counts exactly once whatever the batch size and process count.
"""
from __future__ import annotations

import math
from typing import Iterator

import grain
import jax
import numpy as np

from ferjax.data import align, label_modes, order, sources, spaces

# The batch schema (docs/architecture.md). Keys a source lacks get neutral values and a zero mask.
NUM_LANDMARKS = 68


def standardize(example: dict, num_classes: int) -> dict:
  """Maps a source example, already in the run's class space (spaces.InSpace), onto the batch
  schema."""
  label = int(example['label'])
  if 'label_dist' in example:
    dist = np.asarray(example['label_dist'], np.float32)
    if dist.shape != (num_classes,):
      raise ValueError(f'label_dist of shape {dist.shape} in a {num_classes}-class space: the '
                       'source was not mapped into the run\'s class space')
  else:   # one-hot of the label; all zero when it is unknown, so soft losses skip it
    dist = np.zeros(num_classes, np.float32)
    if label >= 0:
      dist[label] = 1.0
  out = {
      'image': np.asarray(example['image'], np.uint8),
      'label': np.int32(label),
      'label_dist': dist.astype(np.float32),
      'va': np.zeros(2, np.float32), 'va_mask': np.float32(0.0),
      'landmarks': np.zeros((NUM_LANDMARKS, 2), np.float32), 'landmarks_mask': np.float32(0.0),
      'domain': np.int32(example.get('domain', 0)),
      'index': np.int32(example['index']),
      'mask': np.float32(1.0),
  }
  if 'va' in example:
    out['va'] = np.asarray(example['va'], np.float32)[:2]
    out['va_mask'] = np.float32(example.get('va_mask', 1.0))
  if 'landmarks' in example:
    out['landmarks'] = np.asarray(example['landmarks'], np.float32)
    out['landmarks_mask'] = np.float32(example.get('landmarks_mask', 1.0))
  # Multi-label targets (EMOTIC's 26 categories; the synthetic set's 8) and V/A/D, passed on as
  # stored: every example of one source has the same keys, so batches stay uniform.
  if 'votes' in example:     # annotator counts: the FERPlus accuracies (label_modes.vote_report)
    out['votes'] = np.asarray(example['votes'], np.float32)
  if 'multilabel' in example:
    out['multilabel'] = np.asarray(example['multilabel'], np.float32)
  if 'vad' in example:
    vad = np.asarray(example['vad'], np.float32)
    ok = bool(np.all(np.isfinite(vad)) and np.all(np.abs(vad) <= 1))
    out['vad'] = vad if ok else np.zeros_like(vad)
    out['vad_mask'] = np.float32(example.get('vad_mask', float(ok)))
  return out


def _pad_like(example: dict) -> dict:
  """A padding example: same shapes, mask 0, label -1."""
  out = {k: np.zeros_like(v) for k, v in example.items()}
  out['label'] = np.int32(-1)
  return out


def _identity(example, position):
  return example


def method_transform(method, spec: str, source, seed: int):
  """The method's per-example addition for this dataset, `f(example, position) -> example`
  (`Method.pipeline_transform`, e.g. CAFE's cached CLIP features); identity otherwise."""
  hook = getattr(method, 'pipeline_transform', None) if method is not None else None
  return (hook(spec, source, seed) if hook is not None else None) or _identity


def in_space(cfg, spec: str, num_examples: int, seed: int, train: bool = False):
  """The source of `spec` in the run's class space and with the config's label options
  (label_modes.view), with what fell outside or was dropped said once."""
  opened, pooled = label_modes.pool_spec(cfg, spec)
  num_examples = num_examples if pooled < 0 else pooled
  raw = sources.make(opened, num_examples, cfg.data.image_size, seed)
  src = spaces.InSpace(raw, cfg.data.class_space, cfg.data.outside_space,
                       what=sources.display_name(opened))
  src = label_modes.view(cfg, src, spec, train)
  note = src.summary()
  src = align.wrap(cfg, src)
  if note:
    from ferjax import runtime
    runtime.say(f'{sources.display_name(spec)}: {note}')
  return src


def local_batch_size(global_batch: int) -> int:
  n = jax.process_count()
  if global_batch % n:
    raise ValueError(f'batch size {global_batch} is not divisible by the {n} processes')
  return global_batch // n


def collate(examples: list[dict]) -> dict:
  return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


class TrainData:
  """The training set of one run, opened once: its source in the run's class space, the pool
  the run draws from and the batch order. `dataset()` is this process's infinite stream of
  local batches.

  The global batch of step s is the same whatever the number of processes: `order.BatchOrder`
  gives its example ids (shuffled, class-balanced or imbalance-aware, over the bagging pool),
  and each process reads only its own slice of each batch.
  """

  def __init__(self, cfg, seed: int, method=None):
    self.cfg, self.seed, self.method = cfg, seed, method
    self.spaced = in_space(cfg, cfg.data.train, cfg.data.train_examples, seed, train=True)
    self.source, self.pool, self.labels = order.training_source(cfg, self.spaced, seed)
    self.size = int(self.pool.size)
    self.steps_per_epoch = self.size // cfg.batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(f'the training set {cfg.data.train!r} has {self.size} examples, fewer '
                       f'than one batch ({cfg.batch_size})')

  def dataset(self) -> grain.IterDataset:
    cfg, src = self.cfg, self.source
    num_classes = len(self.spaced.names)
    lb = local_batch_size(cfg.batch_size)
    lo = jax.process_index() * lb
    batches = order.BatchOrder(self.pool, self.labels, cfg.batch_size, cfg.data.sampler,
                               self.seed, cfg.data.sampler_power)
    extra = method_transform(self.method, cfg.data.train, src, self.seed)
    # 'pld' draws each example's one-hot afresh per epoch (label_modes.draw_batch).
    draw = label_modes.draw_batch(cfg, self.seed, self.steps_per_epoch) or (lambda b, i, s: b)
    ds = grain.MapDataset.source(batches).map_with_index(
        lambda step, ids: draw(collate([extra(standardize(src[int(i)], num_classes), int(i))
                                        for i in ids[lo:lo + lb]]), ids[lo:lo + lb], step))
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(
        num_threads=cfg.data.num_threads,
        prefetch_buffer_size=max(cfg.data.prefetch, cfg.data.num_threads)))
    if cfg.data.num_workers > 0:
      iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=cfg.data.num_workers))
    return iter_ds


def train_dataset(cfg, seed: int, method=None) -> grain.IterDataset:
  """This process's infinite stream of local training batches (see TrainData)."""
  return TrainData(cfg, seed, method).dataset()


def train_size(cfg) -> int:
  """Examples per epoch: the synthetic benchmark has as many as `data.train_examples` asks for;
  a prepared dataset has its own size (train_examples does not cut it; use a split slice such
  as `rafdb:train[:10%]` for a subset). `append`, the class subsample, bagging and dropped
  classes change it."""
  return TrainData(cfg, cfg.seed).size


def steps_per_epoch(cfg) -> int:
  return TrainData(cfg, cfg.seed).steps_per_epoch


class EvalSet:
  """An eval dataset read in order, padded to whole global batches."""

  def __init__(self, spec: str, cfg, seed: int, method=None):
    self.spec = spec
    self.source = in_space(cfg, spec, cfg.data.eval_examples, seed)
    self.num_classes = len(self.source.names)
    self.global_batch = cfg.eval_batch_size
    self.local_batch = local_batch_size(cfg.eval_batch_size)
    self.threads = cfg.data.num_threads
    self.extra = method_transform(method, spec, self.source, seed)

  def __len__(self):
    return len(self.source)

  @property
  def num_batches(self) -> int:
    return math.ceil(len(self.source) / self.global_batch)

  def _example(self, i: int) -> dict:
    last = min(i, len(self.source) - 1)
    ex = self.extra(standardize(self.source[last], self.num_classes), last)
    return ex if i < len(self.source) else _pad_like(ex)

  def local_batches(self) -> Iterator[dict]:
    """This process's slice of each global batch, in order."""
    lo = jax.process_index() * self.local_batch
    n, gb, lb = self.num_batches, self.global_batch, self.local_batch
    ds = grain.MapDataset.range(n).map(
        lambda b: collate([self._example(b * gb + lo + j) for j in range(lb)]))
    yield from ds.to_iter_dataset(grain.ReadOptions(num_threads=self.threads))
