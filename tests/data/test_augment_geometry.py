"""Geometric augmentations: the projective warp, resized crop, affine zoom / shear and
perspective, and landmarks that follow the pixels under every one. Each against an independent
statement of what it does."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax.data import augment
from tests.data.augment_configs import CFG
from tests.data.augment_configs import plain_cfg as _cfg


def _ramp(size=32):
  """Image whose channel 0 is the row index and channel 1 the column index (in [0, 1])."""
  y, x = np.mgrid[:size, :size].astype(np.float32) / (size - 1)
  return jnp.asarray(np.stack([y, x, np.full_like(x, 0.5)], -1))


def test_warp_equals_dm_pix_affine_transform():
  import dm_pix as pix
  rng = np.random.default_rng(2)
  image = jnp.asarray(rng.random((20, 24, 3)), jnp.float32)
  t = 0.4
  a = jnp.array([[np.cos(t), -np.sin(t)], [np.sin(t), -np.cos(t)]], jnp.float32)  # rotate + flip
  offset = jnp.array([3.5, 20.25], jnp.float32)
  expected = pix.affine_transform(image, jnp.eye(3).at[:2, :2].set(a),
                                  offset=jnp.append(offset, 0.0), order=1, mode='nearest')
  got = augment.warp_projective(image, augment._to_h(a, offset))
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_homography_maps_the_four_points():
  src = jnp.array([[0.0, 0.0], [0.0, 9.0], [9.0, 9.0], [9.0, 0.0]])
  dst = jnp.array([[1.0, 2.0], [0.5, 8.0], [8.0, 7.5], [9.0, 1.0]])
  h = augment._homography(src, dst)
  for s, d in zip(np.asarray(src), np.asarray(dst)):
    p = h @ jnp.array([d[0], d[1], 1.0])
    np.testing.assert_allclose(p[:2] / p[2], s, atol=1e-4)


def test_resized_crop_samples_a_region_of_the_stated_area_and_ratio():
  size = 32
  cfg = _cfg(rrc_scale=(0.25, 0.25), rrc_ratio=(1.0, 1.0))
  a, offset = augment._resized_crop(jax.random.key(3), size, cfg)
  out = augment.warp_projective(_ramp(size), augment._to_h(a, offset))
  # A quarter of the area at ratio 1 is a half-size square: output pixel centres step by half
  # a pixel, so each ramp spans half its range.
  for ch in (0, 1):
    span = float(out[..., ch].max() - out[..., ch].min())
    assert abs(span - 0.5) < 0.01
  assert float(out[..., 0].min()) >= 0 and float(out[..., 0].max()) <= 1


def test_affine_zoom_and_shear_change_the_map_as_stated():
  size, key = 31, jax.random.key(0)
  a, _ = augment._affine(key, size, _cfg(scale=(2.0, 2.0)))
  np.testing.assert_allclose(a, 0.5 * np.eye(2), atol=1e-6)   # zoom in 2x samples half as far
  a, _ = augment._affine(key, size, _cfg(shear_deg=30.0))
  assert abs(float(a[1, 0])) > 0 and float(a[0, 1]) == 0 and np.allclose(np.diag(a), 1.0)


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


@pytest.mark.parametrize('opts', [dict(perspective=0.5, perspective_p=1.0),
                                  dict(rrc_scale=(0.3, 0.9), scale=(0.8, 1.2), shear_deg=15.0,
                                       rotate_deg=20.0, flip=True)])
def test_landmarks_follow_every_geometric_option(opts):
  size, n = 48, 8
  rng = np.random.default_rng(2)
  images, pts = np.zeros((n, size, size, 3), np.uint8), []
  for i in range(n):
    cx, cy = rng.integers(18, 30, 2)
    images[i, cy - 1:cy + 2, cx - 1:cx + 2] = 255
    pts.append([[cx / (size - 1), cy / (size - 1)]])
  batch = {'image': jnp.asarray(images), 'index': jnp.arange(n, dtype=jnp.int32),
           'landmarks': jnp.asarray(np.array(pts, np.float32))}
  out = augment.augment_batch(batch, 0, 5, _cfg(**opts))
  img, lm = np.asarray(out['image']).mean(-1), np.asarray(out['landmarks'])
  ys, xs = np.mgrid[:size, :size]
  moved = 0
  for i in range(n):
    w = img[i] / img[i].sum()
    centroid = np.array([(w * xs).sum(), (w * ys).sum()]) / (size - 1)
    np.testing.assert_allclose(centroid, lm[i, 0], atol=1.5 / size)
    moved += np.abs(lm[i, 0] - pts[i][0]).max() > 1 / size
  assert moved >= n // 2
