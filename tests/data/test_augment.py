"""On-device augmentation as a whole: keyed by (seed, step, example id), eval preprocessing
only normalises, and configs without the extended keys still work."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferjax.data import augment
from tests.data.augment_configs import CFG


def _batch(n=6, size=33, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': jnp.asarray(rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)),
          'index': jnp.arange(100, 100 + n, dtype=jnp.int32)}


def test_stream_depends_on_example_id_not_batch_position():
  b = _batch()
  out = augment.augment_batch(b, seed=3, step=7, cfg=CFG)['image']
  perm = np.array([3, 0, 5, 1, 4, 2])
  out_perm = augment.augment_batch(jax.tree.map(lambda x: x[perm], b), 3, 7, CFG)['image']
  np.testing.assert_array_equal(np.asarray(out)[perm], np.asarray(out_perm))
  again = augment.augment_batch(b, 3, 7, CFG)['image']
  np.testing.assert_array_equal(out, again)
  other_step = augment.augment_batch(b, 3, 8, CFG)['image']
  assert not np.allclose(out, other_step)


def test_eval_preprocess_only_normalises():
  b = _batch()
  cfg = ml_collections.ConfigDict(dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
  out = augment.eval_preprocess(b, cfg)['image']
  np.testing.assert_allclose(out, (np.asarray(b["image"]) / 255.0 - 0.5) / 0.25, atol=1e-6)


def test_old_configs_without_the_new_keys_still_work():
  cfg = ml_collections.ConfigDict(dict(flip=True, crop_pad=0.1, rotate_deg=5.0, brightness=0.1,
                                       contrast=0.1, mean=(0.5,) * 3, std=(0.5,) * 3))
  batch = {'image': jnp.zeros((2, 8, 8, 3), jnp.uint8), 'index': jnp.arange(2)}
  assert augment.augment_batch(batch, 0, 0, cfg)['image'].shape == (2, 8, 8, 3)
