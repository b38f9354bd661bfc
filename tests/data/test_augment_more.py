"""The extended on-device augmentations: resized crop, affine, perspective, colour, grey,
noise, erasing, Mix-up / Mix-augment. Each against an independent statement of what it does."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ferjax import config as fc
from ferjax.data import augment


def _cfg(**kw):
  c = fc.base_config().augment
  c.update(flip=False, crop_pad=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0,
           mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
  c.update(**kw)
  return c


def _ramp(size=32):
  """Image whose channel 0 is the row index and channel 1 the column index (in [0, 1])."""
  y, x = np.mgrid[:size, :size].astype(np.float32) / (size - 1)
  return jnp.asarray(np.stack([y, x, np.full_like(x, 0.5)], -1))


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


def test_colour_grey_noise_and_determinism():
  n, size = 4, 16
  img = jnp.full((n, size, size, 3), 128, jnp.uint8).at[:, :, :, 0].set(200)
  batch = {'image': img, 'index': jnp.arange(n, dtype=jnp.int32)}
  grey = augment.augment_batch(batch, 0, 0, _cfg(grayscale_p=1.0))['image']
  np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-6)
  np.testing.assert_allclose(grey[0, 0, 0, 0], (0.299 * 200 + 0.701 * 128) / 255, atol=1e-5)
  noisy = augment.augment_batch(batch, 0, 0, _cfg(noise_std=8.0, noise_p=1.0))['image']
  diff = np.asarray(noisy) - np.asarray(img, np.float32) / 255
  assert abs(diff.std() * 255 - 8.0) < 0.4 and abs(diff.mean()) < 0.01
  cfg = _cfg(saturation=0.5, hue=0.1, perspective=0.3, rrc_scale=(0.5, 1.0), erasing_p=0.5)
  a = augment.augment_batch(batch, 1, 3, cfg)['image']
  b = augment.augment_batch(batch, 1, 3, cfg)['image']
  c = augment.augment_batch(batch, 1, 4, cfg)['image']
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_erasing_zeroes_one_rectangle_of_the_stated_area():
  n, size = 64, 32
  batch = {'image': jnp.full((n, size, size, 3), 255, jnp.uint8),
           'index': jnp.arange(n, dtype=jnp.int32)}
  out = np.asarray(augment.augment_batch(batch, 0, 0, _cfg(erasing_p=1.0))['image'])
  zero = (out == 0).all(-1)
  frac = zero.mean((1, 2))
  assert (frac > 0).all() and (frac <= 0.33 + 0.05).all() and frac.mean() > 0.05
  for z in zero:   # one axis-aligned rectangle: the zero set equals its bounding box
    ys, xs = np.nonzero(z)
    assert z[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
  half = np.asarray(augment.augment_batch(batch, 0, 0, _cfg(erasing_p=0.5))['image'])
  assert 0.25 < ((half == 0).all(-1).any((1, 2))).mean() < 0.75


def test_mix_is_deterministic_in_seed_and_step():
  """The mixed batch itself; the mixed losses are checked through the train step
  (tests/test_mix_step.py)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(6, 4, 4, 3)).astype(np.float32))
  mixed, lam, perm = augment.mix(x, seed=0, step=3, alpha=0.1)
  again = augment.mix(x, seed=0, step=3, alpha=0.1)
  assert float(lam) == float(again[1]) and (perm == again[2]).all()
  assert 0.0 <= float(lam) <= 1.0 and sorted(np.asarray(perm)) == list(range(6))
  np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[perm], atol=1e-6)


def test_old_configs_without_the_new_keys_still_work():
  cfg = ml_collections.ConfigDict(dict(flip=True, crop_pad=0.1, rotate_deg=5.0, brightness=0.1,
                                       contrast=0.1, mean=(0.5,) * 3, std=(0.5,) * 3))
  batch = {'image': jnp.zeros((2, 8, 8, 3), jnp.uint8), 'index': jnp.arange(2)}
  assert augment.augment_batch(batch, 0, 0, cfg)['image'].shape == (2, 8, 8, 3)
