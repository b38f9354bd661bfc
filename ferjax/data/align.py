"""Face alignment from a dataset's own landmarks (paper 002, §3.6.2): the similarity transform
(rotation, uniform scale, translation) that puts the two eye centres at fixed places of the
output, applied to the image and to its landmarks.

  config.data.align = 'eyes'          # off: 'none'
  config.data.align_eyes = (0.32, 0.35)   # the left eye's (x, y) as fractions of the side; the
                                          # right eye goes to (1 - x, y)

Eye centres are the means of the iBUG 68-point eye contours (points 36-41 and 42-47) or, for
5-point landmarks, the first two points. An example without landmarks (`landmarks_mask` 0 or
no `landmarks` key) passes through unchanged; `Aligned.unaligned` counts those served.
Landmark (x, y) are fractions of the side as (x, y) * (size - 1) pixels, as everywhere in the
data pipeline. The warp is bilinear with black borders.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

MODES = ('none', 'eyes')


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(left, right) eye centres, in the image's left and right, from 68 or 5 landmarks."""
  lm = np.asarray(landmarks, np.float64)
  if lm.shape == (68, 2):
    return lm[36:42].mean(0), lm[42:48].mean(0)
  if lm.shape == (5, 2):
    return lm[0], lm[1]
  raise ValueError(f'eye alignment needs 68 or 5 landmarks, got an array of shape {lm.shape}')


def similarity(left, right, target_left, target_right) -> np.ndarray:
  """The 2 x 3 matrix A with A @ [p, 1] = the aligned point, mapping left -> target_left and
  right -> target_right (all in pixels) by rotation, uniform scale and translation."""
  src = np.asarray(right, np.float64) - np.asarray(left, np.float64)
  dst = np.asarray(target_right, np.float64) - np.asarray(target_left, np.float64)
  if np.hypot(*src) < 1e-6:
    raise ValueError('the two eye centres coincide')
  # As complex numbers: z -> s * z + t with s = dst / src.
  s = complex(*dst) / complex(*src)
  rot = np.array([[s.real, -s.imag], [s.imag, s.real]])
  t = np.asarray(target_left, np.float64) - rot @ np.asarray(left, np.float64)
  return np.concatenate([rot, t[:, None]], 1)


def align(image: np.ndarray, landmarks: np.ndarray, eyes=(0.32, 0.35)):
  """(aligned image, aligned landmarks) of one square RGB uint8 face."""
  size = image.shape[0]
  scale = size - 1
  left, right = eye_centres(np.asarray(landmarks) * scale)
  x, y = float(eyes[0]), float(eyes[1])
  a = similarity(left, right, (x * scale, y * scale), ((1.0 - x) * scale, y * scale))
  inv = np.linalg.inv(np.vstack([a, [0.0, 0.0, 1.0]]))[:2]
  # PIL's AFFINE data maps each output pixel to the input pixel it samples.
  out = Image.fromarray(image).transform((image.shape[1], size), Image.Transform.AFFINE,
                                         data=tuple(inv.ravel()),
                                         resample=Image.Resampling.BILINEAR)
  lm = np.asarray(landmarks, np.float64) * scale
  lm = (lm @ a[:, :2].T + a[:, 2]) / scale
  return np.asarray(out), lm.astype(np.float32)


class Aligned:
  """A source whose examples are eye-aligned when they carry landmarks (other attributes of
  the wrapped source, e.g. its class names, pass through)."""

  def __init__(self, source, eyes=(0.32, 0.35)):
    self.source, self.eyes = source, (float(eyes[0]), float(eyes[1]))
    if not (0.0 < self.eyes[0] < 0.5 and 0.0 < self.eyes[1] < 1.0):
      raise ValueError(f'config.data.align_eyes={tuple(eyes)}: the left eye x must be in '
                       '(0, 0.5) and y in (0, 1)')
    self.unaligned = 0

  def __len__(self) -> int:
    return len(self.source)

  def __getattr__(self, name):
    if name == 'source':    # not set yet (unpickling in a grain worker): no recursion
      raise AttributeError(name)
    return getattr(self.source, name)

  def __getitem__(self, i: int) -> dict:
    ex = dict(self.source[i])
    lm = ex.get('landmarks')
    if lm is None or float(ex.get('landmarks_mask', 1.0)) <= 0:
      self.unaligned += 1
      return ex
    ex['image'], ex['landmarks'] = align(np.asarray(ex['image']), lm, self.eyes)
    return ex


def wrap(cfg, source):
  """`source` aligned as config.data.align says."""
  mode = cfg.data.get('align', 'none')
  if mode not in MODES:
    raise ValueError(f'config.data.align={mode!r}; expected one of {MODES}')
  if mode == 'none':
    return source
  return Aligned(source, tuple(cfg.data.get('align_eyes', (0.32, 0.35))))
