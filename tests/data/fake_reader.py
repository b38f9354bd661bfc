"""A tiny reader following the ferjax.data.readers contract, for the prepare/inspect tests.

Layout under manual_dir: `labels.txt` with lines `SPLIT KIND NAME LABEL W,H`, and the image files it
names. KIND says how the reader hands the image over, so that every form the contract allows
is prepared: `file` (a path), `bytes` (the file's encoded bytes), `grey` / `rgb` (a uint8 array
drawn from the line number). Every optional feature is yielded, from the line number, except
that line 2 has no landmarks, line 3 an invalid valence/arousal (-2, AffectNet's marker) and a
label of -1 has all votes on 'unknown'.

`write_tree(root)` writes such a tree and returns the examples the reader will yield.
"""
from __future__ import annotations

import os

import numpy as np

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError

INFO = DatasetInfo(
    name='fake',
    native_classes=labels.CANONICAL,
    class_space='affectnet8',
    splits=('train', 'test'),
    features=('votes', 'va', 'vad', 'landmarks', 'box', 'multilabel'),
    multilabel_space='emotic26',
    layout='labels.txt ("SPLIT KIND NAME LABEL W,H" lines) and the image files it names',
)

# (split, kind, file name, label, image size (w, h)) of the tree write_tree() makes.
LINES = (
    ('train', 'file', 'a.png', 1, (40, 30)),
    ('train', 'file', 'b.jpg', 2, (36, 36)),
    ('train', 'bytes', 'c.png', 0, (24, 32)),
    ('train', 'grey', '-', 6, (20, 20)),
    ('train', 'rgb', '-', -1, (30, 20)),
    ('train', 'file', 'd.png', 1, (50, 40)),
    ('test', 'file', 'e.png', 3, (32, 32)),
    ('test', 'rgb', '-', 7, (28, 28)),
)


def _pixels(seed: int, size, channels: int) -> np.ndarray:
  w, h = size
  shape = (h, w) if channels == 1 else (h, w, channels)
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _annotations(line: int, label: int, size) -> dict:
  w, h = size
  rng = np.random.default_rng(1000 + line)
  votes = np.zeros(10, np.int32)
  if label >= 0:
    votes[label] = 7
    votes[(label + 1) % 8] = 3
  else:
    votes[8] = 10
  va = np.array([-2.0, -2.0] if line == 3 else rng.uniform(-1, 1, 2), np.float32)
  out = {
      'votes': votes,
      'va': va,
      'vad': np.concatenate([va, rng.uniform(-1, 1, 1)]).astype(np.float32),
      'box': np.array([w * 0.25, h * 0.25, w * 0.5, h * 0.5], np.float32),
      'multilabel': (rng.random(26) < 0.2).astype(np.float32),
  }
  if line != 2:
    out['landmarks'] = np.stack([rng.uniform(0, w, 68), rng.uniform(0, h, 68)], -1).astype(
        np.float32)
  return out


def examples(manual_dir, split: str, limit: int = 0):
  """Yields (key, Example) of one split; `limit` > 0 stops early (a reader option)."""
  path = os.path.join(manual_dir, 'labels.txt')
  if not os.path.isfile(path):
    raise ReaderError(f'{path} is missing')
  count = 0
  with open(path) as f:
    for line_no, line in enumerate(f):
      parts = line.split()
      if len(parts) != 5:
        raise ReaderError(f'{path}:{line_no + 1}: expected "SPLIT KIND NAME LABEL W,H"')
      sp, kind, name, label, size = parts
      if sp != split:
        continue
      size = tuple(int(v) for v in size.split(','))
      if kind in ('file', 'bytes'):
        image = os.path.join(manual_dir, name)
        if kind == 'bytes':
          with open(image, 'rb') as g:
            image = g.read()
      else:
        image = _pixels(line_no, size, 1 if kind == 'grey' else 3)
      key = f'{split}/{line_no}'
      yield key, {'image': image, 'label': int(label), **_annotations(line_no, int(label), size)}
      count += 1
      if limit and count >= limit:
        return


def write_tree(root) -> dict[str, list[tuple[str, dict]]]:
  """Writes labels.txt and the image files under root; returns {split: [(key, Example)]}."""
  from PIL import Image
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, 'labels.txt'), 'w') as f:
    for i, (split, kind, name, label, size) in enumerate(LINES):
      if kind in ('file', 'bytes'):
        Image.fromarray(_pixels(i, size, 3)).save(os.path.join(root, name))
      f.write(f'{split} {kind} {name} {label} {size[0]},{size[1]}\n')
  return {s: list(examples(root, s)) for s in INFO.splits}
