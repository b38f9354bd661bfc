"""What a run draws: batch orders per sampler, bagging pools, label noise, appended copies."""
import os

import jax
import ml_collections
import numpy as np
import pytest

from ferjax import config as config_lib
from ferjax.data import offline_augment, order, pipeline, synthetic
from tests.conftest import REPO


class _Labels:
  """A source with labels only (images are never needed to order batches)."""

  def __init__(self, labels):
    self.y = np.asarray(labels)

  def __len__(self):
    return self.y.size

  def __getitem__(self, i):
    return {'label': np.int32(self.y[i]), 'image': np.zeros((4, 4, 3), np.uint8),
            'index': np.int32(i)}


def _cfg(seed=0, **data):
  cfg = ml_collections.ConfigDict({'data': config_lib.base_config().data.to_dict(),
                                   'model': {'num_classes': 4}, 'seed': seed})
  cfg.data.update(data)
  return cfg


def test_shuffle_is_a_permutation_per_epoch_and_a_function_of_seed_and_step():
  bo = order.BatchOrder(np.arange(100), None, 10, 'shuffle', seed=3)
  epoch0 = np.concatenate([bo[s] for s in range(10)])
  np.testing.assert_array_equal(np.sort(epoch0), np.arange(100))
  epoch1 = np.concatenate([bo[s] for s in range(10, 20)])
  assert not np.array_equal(epoch0, epoch1)
  fresh = order.BatchOrder(np.arange(100), None, 10, 'shuffle', seed=3)
  np.testing.assert_array_equal(fresh[13], bo[13])          # resume: no history needed
  assert not np.array_equal(order.BatchOrder(np.arange(100), None, 10, 'shuffle', 4)[0], bo[0])


def test_class_balanced_batches_hold_equal_counts():
  y = np.array([0] * 70 + [1] * 20 + [2] * 6 + [3] * 4)
  bo = order.BatchOrder(np.arange(100), y, 8, 'class_balanced', seed=0)
  for s in range(25):
    np.testing.assert_array_equal(np.bincount(y[bo[s]], minlength=4), [2, 2, 2, 2])
  with pytest.raises(ValueError, match='divisible by the 4 classes'):
    order.BatchOrder(np.arange(100), y, 6, 'class_balanced', seed=0)


def test_imbalance_sampler_balances_classes_in_expectation():
  y = np.array([0] * 800 + [1] * 150 + [2] * 50)
  bo = order.BatchOrder(np.arange(1000), y, 100, 'imbalance', seed=1, power=1.0)
  drawn = np.concatenate([bo[s] for s in range(200)])
  share = np.bincount(y[drawn], minlength=3) / drawn.size
  np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.01)


def test_bagging_pool_and_label_noise_through_training_source():
  y = np.arange(200) % 4
  src, pool, labels = order.training_source(
      _cfg(bagging_fraction=0.2, bagging_member=1, label_noise=0.25, sampler='class_balanced'),
      _Labels(y), seed=5)
  assert pool.size == 40 and np.unique(pool).size == 40
  flipped = src.flipped
  assert flipped.sum() == 50                                 # exactly round(0.25 * 200)
  np.testing.assert_array_equal(src.labels()[~flipped], y[~flipped])
  assert np.all(src.labels()[flipped] != y[flipped])
  np.testing.assert_array_equal(labels, src.labels()[pool])
  i = int(np.flatnonzero(flipped)[0])
  ex = src[i]
  assert ex['label'] == src.labels()[i] and ex['label_dist'][ex['label']] == 1.0
  other, _, _ = order.training_source(_cfg(label_noise=0.25), _Labels(y), seed=5)
  np.testing.assert_array_equal(other.flipped, flipped)     # the same flips on every call


@pytest.mark.parametrize('outside', ['unlabel', 'drop'])
def test_labels_outside_the_class_space_are_never_drawn(outside):
  from ferjax import labels as labels_lib
  from ferjax.data import spaces
  y = np.array([0, 1, 2, 3, 7, 7, 7, 7] * 10)               # contempt is outside affectnet7
  raw = _Labels(y)
  raw.class_names = labels_lib.CANONICAL
  src = spaces.InSpace(raw, 'affectnet7', outside)
  _, pool, labels = order.training_source(_cfg(sampler='imbalance'), src, seed=0)
  bo = order.BatchOrder(pool, labels, 8, 'imbalance', seed=0)
  drawn = np.array([src.index_of(i) for i in np.concatenate([bo[s] for s in range(10)])])
  assert not np.isin(drawn, np.flatnonzero(y == 7)).any()


def test_synthetic_labels_without_rendering_match_the_examples():
  src = synthetic.SyntheticFaces('lab', 'train', num_examples=12, image_size=48, seed=2)
  np.testing.assert_array_equal(src.labels(), [int(src[i]['label']) for i in range(12)])
  appended = offline_augment.Appended(src)
  np.testing.assert_array_equal(appended.labels(), np.tile(src.labels(), 4))


def test_pipeline_class_balanced_and_append_end_to_end():
  cfg = config_lib.load(os.path.join(REPO, 'configs', 'baseline_synthetic.py') + ':smoke')
  with cfg.unlocked():
    cfg.data.sampler, cfg.data.append, cfg.batch_size = 'class_balanced', True, 16
  assert pipeline.train_size(cfg) == 4 * cfg.data.train_examples
  assert pipeline.steps_per_epoch(cfg) == 4 * cfg.data.train_examples // 16
  batch = next(iter(pipeline.train_dataset(cfg, cfg.seed)))
  local = 16 // jax.process_count()
  counts = np.bincount(batch['label'], minlength=8)
  assert batch['label'].shape == (local,) and np.all(counts == 2)
  assert batch['index'].max() < 4 * cfg.data.train_examples


def test_bad_sampler_name_is_named():
  with pytest.raises(ValueError, match="sampler='balanced'"):
    order.training_source(_cfg(sampler='balanced'), _Labels(np.zeros(8, int)), seed=0)


def test_class_subsample_cuts_every_class_to_the_smallest():
  y = np.array([0] * 50 + [1] * 9 + [2] * 20 + [3] * 30 + [-1] * 5)
  src, pool, _ = order.training_source(_cfg(class_subsample=True), _Labels(y), seed=3)
  np.testing.assert_array_equal(np.bincount(y[pool], minlength=4), [9, 9, 9, 9])
  assert np.unique(pool).size == 36
  assert order.pool_size(_cfg(class_subsample=True, seed=3), _Labels(y)) == 36
  again = order.training_source(_cfg(class_subsample=True), _Labels(y), seed=3)[1]
  np.testing.assert_array_equal(again, pool)
  # bagging then takes its fraction of the balanced pool
  _, bag, _ = order.training_source(_cfg(class_subsample=True, bagging_fraction=0.5),
                                    _Labels(y), seed=3)
  assert bag.size == 18 and np.isin(bag, pool).all()
