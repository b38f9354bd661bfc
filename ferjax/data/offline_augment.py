"""Paper 002's offline "append" augmentation: the training set plus a flipped copy and copies
rotated by +-20 degrees, appended as new examples (the paper enlarges FERPlus this way before
training, instead of drawing random transforms on the fly).

config.data.append_rotation picks the rotated copies, as Table 2 of the paper compares them:
'20' (the default; also '10', '30', '40') gives +angle and -angle copies; '10-30' gives each
example a +a and a -a copy with its own magnitude a drawn uniformly in [10, 30] degrees, keyed
by (seed, example), so every epoch and every process sees the same rotated set.

`Appended(source)` wraps any random-access source (synthetic or prepared): example i of the
wrapped set is variant i // n of example i % n, where the variants are (identity, flip,
rotate +angle, rotate -angle, ...). Landmarks move with the image. The example's `index`
becomes i, so on-device augmentation keys stay distinct per appended copy.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ferjax.data.spaces import source_labels


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
  """Counter-clockwise rotation about the centre, same size, edges filled by replication."""
  pil = Image.fromarray(image)
  return np.asarray(pil.rotate(degrees, resample=Image.BILINEAR, fillcolor=None))


def _rotate_points(xy: np.ndarray, degrees: float, size: int) -> np.ndarray:
  """(x, y) in [0, 1] of a size x size image, rotated as PIL rotates the pixels."""
  c = (size - 1) / 2.0
  t = np.deg2rad(degrees)
  p = xy * (size - 1) - c
  # PIL's counter-clockwise rotation in image coordinates (y down).
  x = p[:, 0] * np.cos(t) + p[:, 1] * np.sin(t)
  y = -p[:, 0] * np.sin(t) + p[:, 1] * np.cos(t)
  return (np.stack([x, y], 1) + c) / (size - 1)


def parse_rotation(spec) -> tuple[tuple[float, ...], tuple[float, float] | None]:
  """'20' -> ((20, -20), None); '10-30' -> ((1, -1), (10, 30)): signs times a drawn magnitude."""
  text = str(spec).strip()
  try:
    if '-' in text.lstrip('-'):
      lo, hi = (float(v) for v in text.split('-'))
      if not 0 <= lo <= hi:
        raise ValueError
      return (1.0, -1.0), (lo, hi)
    angle = float(text)
  except ValueError:
    raise ValueError(f"config.data.append_rotation={spec!r}: expected degrees ('20') or a "
                     "range for random magnitudes ('10-30')") from None
  return (angle, -angle), None


class Appended:
  """The base set, then a flipped copy, then one copy per rotation angle (with `random_range`,
  the angles are signs times a magnitude drawn per example)."""

  def __init__(self, source, flip: bool = True, rotations=(20.0, -20.0),
               random_range: tuple[float, float] | None = None, seed: int = 0):
    self.source, self.n = source, len(source)
    self.variants = [('id', 0.0)] + ([('flip', 0.0)] if flip else []) + [
        ('rot', float(a)) for a in rotations]
    self.magnitudes = None
    if random_range is not None:
      rng = np.random.default_rng([int(seed), 20020])
      self.magnitudes = rng.uniform(random_range[0], random_range[1], self.n)

  def __len__(self) -> int:
    return self.n * len(self.variants)

  def labels(self):
    """The base labels repeated once per variant (no image is read)."""
    return np.tile(source_labels(self.source), len(self.variants))

  def __getitem__(self, i: int) -> dict:
    if not 0 <= i < len(self):
      raise IndexError(f'index {i} out of range for {len(self)} examples')
    kind, angle = self.variants[i // self.n]
    ex = dict(self.source[i % self.n])
    image = np.asarray(ex['image'])
    lm = np.asarray(ex['landmarks'], np.float32) if 'landmarks' in ex else None
    if kind == 'flip':
      image = image[:, ::-1].copy()
      if lm is not None:
        lm = np.stack([1.0 - lm[:, 0], lm[:, 1]], 1)
        if lm.shape[0] == 68:      # left and right swap names too (augment.FLIP_68)
          from ferjax.data.augment import FLIP_68
          lm = lm[list(FLIP_68)]
    elif kind == 'rot':
      if self.magnitudes is not None:
        angle = angle * float(self.magnitudes[i % self.n])
      image = _rotate(image, angle)
      if lm is not None:
        lm = _rotate_points(lm, angle, image.shape[0])
    ex['image'] = image
    if lm is not None:
      ex['landmarks'] = lm.astype(np.float32)
    ex['index'] = np.int32(i)
    return ex
