"""On-device augmentation, inside the jitted train step.

Each example's randomness comes from `fold_in(fold_in(key(seed), step), index)`, where `index`
is the example's stable id. So the stream does not depend on the device count, the batch
position or whether the run was resumed: step s of a resumed run sees exactly what step s of an
uninterrupted run saw.

Geometric operations (flip, rotation, translation standing in for pad-and-crop) are composed
into one affine map and applied with a single bilinear resampling; landmarks, when the batch
has them, are moved by the same map so they stay on the face. The resampling is a flat gather
of the four neighbours: it equals `dm_pix.affine_transform(order=1, mode='nearest')` (tested)
and runs about 40x faster on CPU than its generic map_coordinates.
"""
from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp


def example_keys(seed: int, step, index):
  """(B,) keys from (seed, step, example id)."""
  base = jax.random.fold_in(jax.random.key(seed), step)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def _affine(key, size: int, cfg):
  """Sampling map in (y, x) pixel coordinates: input = A @ output + offset."""
  k_flip, k_rot, k_shift = jax.random.split(key, 3)
  flip = jnp.where(cfg.flip & jax.random.bernoulli(k_flip), -1.0, 1.0)
  angle = jnp.deg2rad(cfg.rotate_deg) * jax.random.uniform(k_rot, (), minval=-1.0, maxval=1.0)
  shift = cfg.crop_pad * size * jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0)
  c, s = jnp.cos(angle), jnp.sin(angle)
  a = jnp.array([[c, -s], [s, c]]) @ jnp.diag(jnp.array([1.0, flip]))
  center = (size - 1) / 2.0
  offset = center - a @ jnp.full((2,), center) + shift
  return a, offset


def warp(image, a, offset):
  """Bilinear resampling, edge-clamped: output[p] = image[a @ p + offset], p = (y, x)."""
  h, w, c = image.shape
  grid = jnp.stack(jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                                jnp.arange(w, dtype=jnp.float32), indexing='ij'))  # (2, H, W)
  src = jnp.einsum('ij,jhw->ihw', a, grid) + offset[:, None, None]
  y, x = jnp.clip(src[0], 0, h - 1), jnp.clip(src[1], 0, w - 1)
  y0, x0 = jnp.floor(y), jnp.floor(x)
  wy, wx = (y - y0)[..., None], (x - x0)[..., None]
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)
  flat = image.reshape(h * w, c)
  at = lambda yi, xi: flat[(yi * w + xi).reshape(-1)].reshape(h, w, c)
  top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
  bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
  return top * (1 - wy) + bottom * wy


def _augment_one(key, image, landmarks, cfg):
  size = image.shape[0]
  k_geo, k_b, k_c = jax.random.split(key, 3)
  a, offset = _affine(k_geo, size, cfg)
  image = warp(image, a, offset)
  if cfg.brightness > 0:
    image = pix.random_brightness(k_b, image, cfg.brightness)
  if cfg.contrast > 0:
    image = pix.random_contrast(k_c, image, 1.0 - cfg.contrast, 1.0 + cfg.contrast)
  image = jnp.clip(image, 0.0, 1.0)
  if landmarks is not None:
    # Landmarks are (x, y) in [0, 1]; the map works on (y, x) pixel indices.
    yx = landmarks[:, ::-1] * (size - 1)
    out = jnp.linalg.solve(a, (yx - offset).T).T
    landmarks = out[:, ::-1] / (size - 1)
  return image, landmarks


def to_float(image_u8):
  return image_u8.astype(jnp.float32) / 255.0


def normalize(image, cfg):
  return (image - jnp.asarray(cfg.mean)) / jnp.asarray(cfg.std)


def augment_batch(batch: dict, seed: int, step, cfg) -> dict:
  """Returns a copy of `batch` with `image` augmented and normalised (float32)."""
  images = to_float(batch['image'])                                  # (B, H, W, 3) in [0, 1]
  keys = example_keys(seed, step, batch['index'])
  lm = batch.get('landmarks')
  if lm is None:
    images = jax.vmap(lambda k, im: _augment_one(k, im, None, cfg)[0])(keys, images)
  else:
    images, lm = jax.vmap(lambda k, im, l: _augment_one(k, im, l, cfg))(keys, images, lm)
  out = dict(batch, image=normalize(images, cfg))
  if lm is not None:
    out['landmarks'] = lm
  return out


def eval_preprocess(batch: dict, cfg) -> dict:
  return dict(batch, image=normalize(to_float(batch['image']), cfg))
