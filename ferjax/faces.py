"""Faces for `ferjax.predict`: where they are in an image, and the crops the model sees.

- `HaarDetector`: OpenCV's frontal-face Haar cascade, which opencv-python-headless ships as an
  XML file (`cv2.data.haarcascades`), so nothing is downloaded at run time. Its score is the
  cascade's last-stage sum (`detectMultiScale3(..., outputRejectLevels=True)`): a relative
  confidence, higher is surer, not a probability.
- `read_boxes`: the user's own boxes from a CSV `path,x,y,w,h[,frame]` (a header is optional).
- `crop`: a box -> a square crop with a margin, resized to the model's input size, RGB uint8.
  Parts of the square outside the image are black.

Measured (scale step 1.1, 5 neighbours, the defaults here): on the real photos at hand it finds
the one face of scikit-image's astronaut and of matplotlib's Grace Hopper, misses the cameraman
(turned, small), and fires 10 times on 26 face-free photos (6 on a picture of coins). On 150
synthetic faces (48-240 px, five domains) pasted on those photos at 640x480 it finds 67% (lab
83%, cartoon 93%, lowq 77%, occluded 53%, wild 27%: turned heads), with 0.7 false boxes per
image, nearly all on textured backgrounds; a scale step of 1.2 cuts false boxes 7-fold and
recall to 54%. On the same images facenet-pytorch's MTCNN (weights in its wheel) also finds the
cameraman, fires twice on the face-free photos and finds 73% (wild 60%) with 0.01 false boxes
per image, but its releases pin numpy < 2, Pillow < 10.3 and torch < 2.3, so it cannot be
installed beside ferjax; MediaPipe 1.2 ships no face model in its wheel (it would download one).
Boxes from a stronger detector go in through --boxes. No larger set of real photos was at hand.

A box is `Face(x, y, w, h, score)` in pixels of the upright image; score is None when nobody
scored it (`--boxes`, `--faces none`).
"""
from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from ferjax.errors import UserError

CASCADE = 'haarcascade_frontalface_default.xml'
# The cascade's window is 24 px; smaller faces are never found, whatever --min_face says.
DETECTOR_MIN_SIZE = 24
# Images are searched at most this big (longest side): a face the detector needs is >= 24 px at
# that scale, i.e. >= 3% of the side, and a 4000 px photo costs what a 1280 px one does.
DETECT_MAX_SIDE = 1280


@dataclasses.dataclass(frozen=True)
class Face:
  x: float
  y: float
  w: float
  h: float
  score: float | None = None

  def square(self, margin: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square around the box, `margin` x its side added on
    every side, rounded to whole pixels."""
    side = max(self.w, self.h) * (1.0 + 2.0 * margin)
    cx, cy = self.x + self.w / 2.0, self.y + self.h / 2.0
    left, top = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    size = max(1, int(round(side)))
    return left, top, left + size, top + size


class HaarDetector:
  """Frontal faces in an RGB uint8 image, largest first."""

  name = 'opencv-haar'

  def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5,
               max_side: int = DETECT_MAX_SIDE):
    try:
      import cv2
    except ImportError:
      raise UserError("finding faces needs OpenCV: pip install 'ferjax[predict]' (or pass "
                      '--faces none or --boxes)') from None
    path = os.path.join(cv2.data.haarcascades, CASCADE)
    self._cascade = cv2.CascadeClassifier(path)
    if self._cascade.empty():
      raise UserError(f'OpenCV could not load its face cascade {path}; reinstall '
                      "opencv-python-headless (pip install 'ferjax[predict]')")
    self.scale_factor, self.min_neighbors, self.max_side = scale_factor, min_neighbors, max_side

  def __call__(self, image: np.ndarray) -> list[Face]:
    import cv2
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    scale = min(1.0, self.max_side / max(h, w))
    if scale < 1.0:
      grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                        interpolation=cv2.INTER_AREA)
    boxes, _, weights = self._cascade.detectMultiScale3(
        grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
        minSize=(DETECTOR_MIN_SIZE, DETECTOR_MIN_SIZE), outputRejectLevels=True)
    faces = [Face(float(x) / scale, float(y) / scale, float(bw) / scale, float(bh) / scale,
                  float(s))
             for (x, y, bw, bh), s in zip(np.reshape(boxes, (-1, 4)), np.ravel(weights))]
    return sorted(faces, key=lambda f: -f.w * f.h)


def whole_image(image: np.ndarray) -> list[Face]:
  """`--faces none`: the image is one pre-cropped face."""
  h, w = image.shape[:2]
  return [Face(0.0, 0.0, float(w), float(h))]


def crop(image: np.ndarray, face: Face, margin: float, size: int) -> np.ndarray:
  """uint8 [size, size, 3]: the square around `face` (Face.square), black outside the image,
  resized bilinearly (Pillow antialiases when it shrinks, as the dataset decoder does)."""
  from PIL import Image
  left, top, right, bottom = face.square(margin)
  h, w = image.shape[:2]
  side = right - left
  out = np.zeros((side, side, 3), np.uint8)
  x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
  if x1 > x0 and y1 > y0:
    out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
  if side != size:
    out = np.asarray(Image.fromarray(out).resize((size, size), Image.Resampling.BILINEAR))
  return out


def box_key(path: str) -> str:
  return os.path.normcase(os.path.abspath(os.path.expanduser(path)))


def read_boxes(path: str) -> dict[tuple[str, int | None], list[Face]]:
  """{(absolute source path, frame or None): [Face, ...]} from `path,x,y,w,h[,frame]` rows.

  Relative source paths are taken from the directory the command runs in. A first row whose
  x is not a number is a header. A frame left empty (or absent) applies to a still image.
  """
  boxes: dict[tuple[str, int | None], list[Face]] = {}
  try:
    with open(path, newline='') as f:
      rows = list(csv.reader(f))
  except OSError as e:
    raise UserError(f'--boxes {path}: {e.strerror or e}') from None
  for n, row in enumerate(rows, 1):
    row = [c.strip() for c in row]
    if not row or not any(row) or row[0].startswith('#'):
      continue
    if len(row) not in (5, 6):
      raise UserError(f'--boxes {path}:{n}: expected path,x,y,w,h[,frame], got {len(row)} '
                      'fields')
    try:
      x, y, w, h = (float(v) for v in row[1:5])
    except ValueError:
      if n == 1:    # a header
        continue
      raise UserError(f'--boxes {path}:{n}: x,y,w,h must be numbers, got {row[1:5]}') from None
    if w <= 0 or h <= 0:
      raise UserError(f'--boxes {path}:{n}: w and h must be positive, got {w}, {h}')
    frame = None
    if len(row) == 6 and row[5] != '':
      try:
        frame = int(row[5])
      except ValueError:
        raise UserError(f'--boxes {path}:{n}: frame must be an integer, got {row[5]!r}') from None
    boxes.setdefault((box_key(row[0]), frame), []).append(Face(x, y, w, h))
  return boxes
