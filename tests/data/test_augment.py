"""On-device augmentation: keyed by (seed, step, example id); landmarks follow the image."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferjax.data import augment

CFG = ml_collections.ConfigDict(dict(flip=True, crop_pad=0.1, rotate_deg=25.0, brightness=0.0,
                                     contrast=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))


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


def test_landmarks_move_with_the_pixels():
  size, n = 65, 16
  rng = np.random.default_rng(1)
  pts = rng.uniform(0.3, 0.7, (n, 1, 2)).astype(np.float32)  # (x, y) in [0, 1]
  images = np.zeros((n, size, size, 3), np.uint8)
  for i, (x, y) in enumerate(pts[:, 0]):
    cx, cy = round(x * (size - 1)), round(y * (size - 1))
    images[i, cy - 1:cy + 2, cx - 1:cx + 2] = 255  # a 3x3 bright dot at the landmark
  pts = np.asarray([[[round(x * (size - 1)) / (size - 1), round(y * (size - 1)) / (size - 1)]]
                    for x, y in pts[:, 0]], np.float32)
  batch = {'image': jnp.asarray(images), 'index': jnp.arange(n, dtype=jnp.int32),
           'landmarks': jnp.asarray(pts)}
  out = augment.augment_batch(batch, seed=0, step=0, cfg=CFG)
  img, lm = np.asarray(out['image']).mean(-1), np.asarray(out['landmarks'])
  for i in range(n):
    w = img[i] / img[i].sum()
    ys, xs = np.mgrid[:size, :size]
    centroid = np.array([(w * xs).sum(), (w * ys).sum()]) / (size - 1)  # (x, y)
    np.testing.assert_allclose(centroid, lm[i, 0], atol=1.0 / size)
  # The augmentation really moved things (flip or rotation or shift happened).
  assert np.abs(lm - pts).max() > 0.05


def test_eval_preprocess_only_normalises():
  b = _batch()
  cfg = ml_collections.ConfigDict(dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
  out = augment.eval_preprocess(b, cfg)['image']
  np.testing.assert_allclose(out, (np.asarray(b["image"]) / 255.0 - 0.5) / 0.25, atol=1e-6)


def test_warp_equals_dm_pix_affine_transform():
  import dm_pix as pix
  rng = np.random.default_rng(2)
  image = jnp.asarray(rng.random((20, 24, 3)), jnp.float32)
  t = 0.4
  a = jnp.array([[np.cos(t), -np.sin(t)], [np.sin(t), -np.cos(t)]], jnp.float32)  # rotate + flip
  offset = jnp.array([3.5, 20.25], jnp.float32)
  expected = pix.affine_transform(image, jnp.eye(3).at[:2, :2].set(a),
                                  offset=jnp.append(offset, 0.0), order=1, mode='nearest')
  np.testing.assert_allclose(augment.warp_projective(image, augment._to_h(a, offset)), expected, atol=1e-5)
