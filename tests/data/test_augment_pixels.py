"""Augmentations that change pixel values, not positions: colour, grey, noise, random erasing
and the Mix-up / Mix-augment batch mix. Each against an independent statement of what it does."""
import jax.numpy as jnp
import numpy as np

from ferjax.data import augment
from tests.data.augment_configs import plain_cfg as _cfg


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
