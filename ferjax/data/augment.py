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

The options (config.augment; each off at its neutral value) and the papers that use them:
  flip, rotate_deg, crop_pad (translation), scale / shear_deg (random affine), rrc_scale /
  rrc_ratio (random resized crop, torchvision semantics), perspective + perspective_p (corner
  distortion scale, as torchvision's RandomPerspective); brightness, contrast, saturation, hue
  (colour jitter), grayscale_p; grayscale (every image grey, evaluation too: paper 002);
  noise_std / noise_p (Gaussian noise on the uint8 scale before everything else, CAFE's
  `add_g`); erasing_p / erasing_scale / erasing_ratio (random erasing on
  the normalised image, value 0, torchvision's default). Mix-up and Mix-augment act on the
  batch (`mix`); the train step applies the method's loss to both label sets.
Geometry composes as torchvision applies it: resized crop of the input, then flip / affine /
perspective of the crop, all in one resampling.
"""
from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp


def _flip_68() -> tuple[int, ...]:
  """The iBUG 68-point index of each point's mirror image: jaw, brows, nose wings, eyes and
  mouth swap sides; the nose bridge and the mouth's centre line map to themselves."""
  perm = list(range(68))
  pairs = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]
  pairs += [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
  pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return tuple(perm)


# A mirrored face's left eye is where the right eye was: after a flip, point i must be read
# from its mirror's position, or a landmark loss would learn left/right-swapped targets.
FLIP_68 = _flip_68()


def example_keys(seed: int, step, index):
  """(B,) keys from (seed, step, example id)."""
  base = jax.random.fold_in(jax.random.key(seed), step)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def _opt(cfg, name, default):
  """A config option, or its neutral value for configs written before it existed."""
  return cfg.get(name, default) if hasattr(cfg, 'get') else getattr(cfg, name, default)


def _affine(key, size: int, cfg):
  """Sampling map in (y, x) pixel coordinates: input = A @ output + offset."""
  k_flip, k_rot, k_shift = jax.random.split(key, 3)
  flip = jnp.where(cfg.flip & jax.random.bernoulli(k_flip), -1.0, 1.0)
  angle = jnp.deg2rad(cfg.rotate_deg) * jax.random.uniform(k_rot, (), minval=-1.0, maxval=1.0)
  shift = cfg.crop_pad * size * jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0)
  c, s = jnp.cos(angle), jnp.sin(angle)
  a = jnp.array([[c, -s], [s, c]]) @ jnp.diag(jnp.array([1.0, flip]))
  # Random affine scale and shear (drawn from their own keys, so that configs without them keep
  # the exact stream they had): the map samples the input, so a zoom-in by z scales by 1 / z.
  lo, hi = _opt(cfg, 'scale', (1.0, 1.0))
  shear = jnp.deg2rad(_opt(cfg, 'shear_deg', 0.0))
  if lo != 1.0 or hi != 1.0 or _opt(cfg, 'shear_deg', 0.0):
    k_scale, k_shear = jax.random.split(jax.random.fold_in(key, 101))
    z = jax.random.uniform(k_scale, (), minval=lo, maxval=hi)
    sh = jnp.tan(shear * jax.random.uniform(k_shear, (), minval=-1.0, maxval=1.0))
    a = a @ jnp.array([[1.0, 0.0], [sh, 1.0]]) / z
  center = (size - 1) / 2.0
  offset = center - a @ jnp.full((2,), center) + shift
  return a, offset


def _resized_crop(key, size: int, cfg):
  """torchvision RandomResizedCrop as a map (A, offset) from the output grid into the input:
  area fraction ~ U(rrc_scale), log aspect ratio ~ U(log rrc_ratio), position uniform. The
  crop is clipped to the image instead of torchvision's ten retries and centre fallback."""
  lo, hi = _opt(cfg, 'rrc_scale', (1.0, 1.0))
  r_lo, r_hi = _opt(cfg, 'rrc_ratio', (3 / 4, 4 / 3))
  k_area, k_ratio, k_pos = jax.random.split(key, 3)
  area = jax.random.uniform(k_area, (), minval=lo, maxval=hi) * size * size
  ratio = jnp.exp(jax.random.uniform(k_ratio, (), minval=jnp.log(r_lo), maxval=jnp.log(r_hi)))
  h = jnp.minimum(jnp.sqrt(area / ratio), size)
  w = jnp.minimum(jnp.sqrt(area * ratio), size)
  top_left = jax.random.uniform(k_pos, (2,)) * (size - jnp.stack([h, w]))
  a = jnp.diag(jnp.stack([h, w]) / size)
  # Pixel centres: output p covers [p, p + 1) and lands on top_left + (p + 0.5) * h / size.
  offset = top_left + 0.5 * jnp.stack([h, w]) / size - 0.5
  return a, offset


def _homography(src, dst):
  """3x3 H with H @ (dst, 1) ~ (src, 1) from four point pairs (y, x)."""
  rows, rhs = [], []
  for (ys, xs), (yd, xd) in zip(src, dst):
    rows.append(jnp.stack([yd, xd, 1.0, 0.0, 0.0, 0.0, -ys * yd, -ys * xd]))
    rows.append(jnp.stack([0.0, 0.0, 0.0, yd, xd, 1.0, -xs * yd, -xs * xd]))
    rhs += [ys, xs]
  h = jnp.linalg.solve(jnp.stack(rows), jnp.stack(rhs))
  return jnp.append(h, 1.0).reshape(3, 3)


def _perspective(key, size: int, cfg):
  """torchvision RandomPerspective: each corner moves inwards by up to distortion * size / 2;
  applied with probability perspective_p. Returns H mapping output (y, x, 1) to input."""
  d = _opt(cfg, 'perspective', 0.0)
  k_on, k_pts = jax.random.split(key)
  e = size - 1.0
  corners = jnp.array([[0.0, 0.0], [0.0, e], [e, e], [e, 0.0]])
  inward = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]])
  moved = corners + inward * jax.random.uniform(k_pts, (4, 2)) * d * size / 2
  h = _homography(corners, moved)         # output corner `moved` samples input `corner`
  on = jax.random.bernoulli(k_on, _opt(cfg, 'perspective_p', 0.5))
  return jnp.where(on, h, jnp.eye(3))


def _to_h(a, offset):
  """The 3x3 homography of the affine map p -> a @ p + offset on (y, x)."""
  return jnp.concatenate([jnp.concatenate([a, offset[:, None]], 1),
                          jnp.array([[0.0, 0.0, 1.0]])], 0)


def warp_projective(image, hmat):
  """Bilinear resampling through a 3x3 homography on (y, x, 1): output[p] = image[H p]."""
  h, w, c = image.shape
  grid = jnp.stack(jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                                jnp.arange(w, dtype=jnp.float32), indexing='ij'))  # (2, H, W)
  hom = jnp.concatenate([grid, jnp.ones((1, h, w), jnp.float32)])                  # (3, H, W)
  src = jnp.einsum('ij,jhw->ihw', hmat, hom)
  src = src[:2] / src[2:]
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


def _has_geometry(cfg) -> bool:
  """Whether any geometric option is on (config values are static, so an identity resampling is
  left out of the compiled step rather than computed)."""
  return bool(cfg.flip or cfg.rotate_deg or cfg.crop_pad or _opt(cfg, 'shear_deg', 0.0)
              or tuple(_opt(cfg, 'scale', (1.0, 1.0))) != (1.0, 1.0)
              or tuple(_opt(cfg, 'rrc_scale', (1.0, 1.0))) != (1.0, 1.0)
              or _opt(cfg, 'perspective', 0.0) > 0)


def _colour(image, key, k_b, k_c, cfg):
  """Colour jitter and grayscale, in torchvision's order, after the geometry."""
  extra = lambda i: jax.random.fold_in(key, 100 + i)
  if cfg.brightness > 0:
    image = pix.random_brightness(k_b, image, cfg.brightness)
  if cfg.contrast > 0:
    image = pix.random_contrast(k_c, image, 1.0 - cfg.contrast, 1.0 + cfg.contrast)
  if _opt(cfg, 'saturation', 0.0) > 0:
    sat = _opt(cfg, 'saturation', 0.0)
    image = pix.random_saturation(extra(4), image, 1.0 - sat, 1.0 + sat)
  if _opt(cfg, 'hue', 0.0) > 0:
    image = pix.random_hue(extra(5), image, _opt(cfg, 'hue', 0.0))
  if _opt(cfg, 'grayscale_p', 0.0) > 0:
    grey = image @ jnp.array([0.299, 0.587, 0.114])   # ITU-R 601 luma, as torchvision
    on = jax.random.bernoulli(extra(6), _opt(cfg, 'grayscale_p', 0.0))
    image = jnp.where(on, jnp.repeat(grey[..., None], 3, -1), image)
  return jnp.clip(image, 0.0, 1.0)


def _augment_one(key, image, landmarks, cfg):
  size = image.shape[0]
  k_geo, k_b, k_c = jax.random.split(key, 3)
  # Options added later draw from fold_in(key, 100 + i): older configs keep their stream.
  extra = lambda i: jax.random.fold_in(key, 100 + i)
  if _opt(cfg, 'noise_std', 0.0) > 0:          # CAFE's add_g: before everything else
    k_on, k_n = jax.random.split(extra(0))
    noise = _opt(cfg, 'noise_std', 0.0) / 255.0 * jax.random.normal(k_n, image.shape)
    on = jax.random.bernoulli(k_on, _opt(cfg, 'noise_p', 0.5))
    image = jnp.clip(jnp.where(on, image + noise, image), 0.0, 1.0)
  if not _has_geometry(cfg):
    image = _colour(image, key, k_b, k_c, cfg)
    return image, landmarks
  a, offset = _affine(k_geo, size, cfg)
  hmat = _to_h(a, offset)
  if _opt(cfg, 'perspective', 0.0) > 0:
    hmat = hmat @ _perspective(extra(2), size, cfg)
  if tuple(_opt(cfg, 'rrc_scale', (1.0, 1.0))) != (1.0, 1.0):
    hmat = _to_h(*_resized_crop(extra(3), size, cfg)) @ hmat
  image = _colour(warp_projective(image, hmat), key, k_b, k_c, cfg)
  if landmarks is not None:
    # Landmarks are (x, y) in [0, 1]; the map works on (y, x) pixel indices and sends output
    # points to input points, so landmarks move by its inverse.
    ones = jnp.ones_like(landmarks[:, :1])
    yx1 = jnp.concatenate([landmarks[:, ::-1] * (size - 1), ones], 1)
    out = jnp.linalg.solve(hmat, yx1.T).T
    landmarks = (out[:, :2] / out[:, 2:])[:, ::-1] / (size - 1)
    if landmarks.shape[0] == 68:
      mirrored = jnp.linalg.det(hmat[:2, :2]) < 0     # a flip reverses orientation
      landmarks = jnp.where(mirrored, landmarks[jnp.array(FLIP_68)], landmarks)
  return image, landmarks


def _erase_one(key, image, cfg):
  """torchvision RandomErasing on a normalised image: a rectangle of area ~ U(erasing_scale) and
  aspect ~ log-U(erasing_ratio) set to 0, with probability erasing_p (clipped to the image
  instead of torchvision's ten retries)."""
  h, w, _ = image.shape
  lo, hi = _opt(cfg, 'erasing_scale', (0.02, 0.33))
  r_lo, r_hi = _opt(cfg, 'erasing_ratio', (0.3, 3.3))
  k_on, k_a, k_r, k_pos = jax.random.split(key, 4)
  area = jax.random.uniform(k_a, (), minval=lo, maxval=hi) * h * w
  ratio = jnp.exp(jax.random.uniform(k_r, (), minval=jnp.log(r_lo), maxval=jnp.log(r_hi)))
  eh, ew = jnp.minimum(jnp.sqrt(area * ratio), h), jnp.minimum(jnp.sqrt(area / ratio), w)
  y0, x0 = jax.random.uniform(k_pos, (2,)) * jnp.stack([h - eh, w - ew])
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  inside = (ys >= y0) & (ys < y0 + eh) & (xs >= x0) & (xs < x0 + ew)
  on = jax.random.bernoulli(k_on, _opt(cfg, 'erasing_p', 0.0))
  return jnp.where(on & inside[..., None], 0.0, image)


def to_float(image_u8):
  return image_u8.astype(jnp.float32) / 255.0


def to_grey(images, cfg):
  """`grayscale`: (..., 3) -> ITU-R 601 luma repeated to 3 channels (a grey source such as
  FER2013 stays as it is); the identity when off."""
  if not _opt(cfg, 'grayscale', False):
    return images
  grey = images @ jnp.array([0.299, 0.587, 0.114], images.dtype)
  return jnp.repeat(grey[..., None], 3, -1)


def normalize(image, cfg):
  return (image - jnp.asarray(cfg.mean)) / jnp.asarray(cfg.std)


def augment_batch(batch: dict, seed: int, step, cfg) -> dict:
  """Returns a copy of `batch` with `image` augmented and normalised (float32)."""
  images = to_grey(to_float(batch['image']), cfg)                    # (B, H, W, 3) in [0, 1]
  keys = example_keys(seed, step, batch['index'])
  lm = batch.get('landmarks')
  if lm is None:
    images = jax.vmap(lambda k, im: _augment_one(k, im, None, cfg)[0])(keys, images)
  else:
    images, lm = jax.vmap(lambda k, im, l: _augment_one(k, im, l, cfg))(keys, images, lm)
  images = normalize(images, cfg)
  if _opt(cfg, 'erasing_p', 0.0) > 0:
    erase_keys = jax.vmap(lambda k: jax.random.fold_in(k, 107))(keys)
    images = jax.vmap(lambda k, im: _erase_one(k, im, cfg))(erase_keys, images)
  out = dict(batch, image=images)
  if lm is not None:
    out['landmarks'] = lm
  return out


def mix(images, seed: int, step, alpha: float):
  """Mix-up of a (global) batch: one lambda ~ Beta(alpha, alpha) and one permutation per step,
  deterministic in (seed, step), as the reference code draws them.

  Returns (mixed images, lam, perm): mixed = lam * x + (1 - lam) * x[perm]. The train step
  weighs the losses against y and y[perm] by lam; Mix-augment also uses the clean images.
  """
  k_lam, k_perm = jax.random.split(jax.random.fold_in(jax.random.key(seed + 7919), step))
  lam = jax.random.beta(k_lam, alpha, alpha)
  perm = jax.random.permutation(k_perm, images.shape[0])
  return lam * images + (1.0 - lam) * images[perm], lam, perm


def eval_preprocess(batch: dict, cfg) -> dict:
  return dict(batch, image=normalize(to_grey(to_float(batch['image']), cfg), cfg))
