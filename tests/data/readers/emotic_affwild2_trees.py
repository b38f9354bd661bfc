"""Tiny on-disk fixture trees in the native layouts of EMOTIC (CSV and Annotations.mat) and
Aff-Wild2, and the seeded image / text writers that the LSD, JAFFE and FERG tests build their
trees with.

The tests have no copy of the real datasets, so each builder writes a few random uint8 images
with Pillow and hand-written label files into the exact native layout.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

EMOTIC_HEADER = ('Index,Folder,Filename,Image Size,BBox,Categorical_Labels,Continuous_Labels,'
                 'Gender,Age')
AFFWILD2_HEADER = 'Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other'


def write_image(path, size=8, gray=False, seed=0):
  """A random size x size image; the format follows the extension (JPEG, PNG, TIFF)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  shape = (size, size) if gray else (size, size, 3)
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
  return path


def write_text(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  return path


def emotic_tree(root, rows_by_split):
  """emotic_pre/<split>.csv with mat2py.py's header and emotic/<Folder>/<Filename> images.

  rows_by_split: {split: [(folder, filename, bbox, categories, vad)]}; lists are written as
  Python reprs inside quoted CSV fields, as csv.writer does for mat2py.py.
  """
  for split, rows in rows_by_split.items():
    lines = [EMOTIC_HEADER]
    for i, (folder, filename, bbox, cats, vad) in enumerate(rows):
      write_image(os.path.join(root, 'emotic', folder, filename), seed=i)
      lines.append(f'{i},{folder},{filename},"[64, 48]","{list(bbox)}","{list(cats)}",'
                   f'"{list(vad)}",Male,Adult')
    write_text(os.path.join(root, 'emotic_pre', f'{split}.csv'), '\n'.join(lines) + '\n')
  return root


def _structs(rows):
  """A 1 x n MATLAB struct array (what scipy.io.savemat writes for a structured ndarray)."""
  arr = np.empty((1, len(rows)), dtype=[(k, object) for k in rows[0]])
  for i, row in enumerate(rows):
    for k, v in row.items():
      arr[0, i][k] = v
  return arr


def _cell(items):
  arr = np.empty((1, len(items)), dtype=object)
  for i, item in enumerate(items):
    arr[0, i] = item
  return arr


def emotic_mat(root, split, images):
  """Annotations/Annotations.mat with one split, laid out the way CAGE's mat2py.py indexes it.

  images: [(folder, filename, (n_col, n_row), persons)], a person being (bbox, categories,
  (v, a, d)); val/test persons get the same values as one annotator and as the combination.
  """
  records = []
  for folder, filename, (n_col, n_row), persons in images:
    write_image(os.path.join(root, 'emotic', folder, filename))
    people = []
    for bbox, cats, (v, a, d) in persons:
      cont = dict(valence=float(v), arousal=float(a), dominance=float(d))
      person = dict(body_bbox=np.asarray([bbox], np.float64))
      if split == 'train':
        person.update(annotations_categories=_structs([dict(categories=_cell(cats))]),
                      annotations_continuous=_structs([cont]))
      else:
        person.update(annotations_categories=_structs([dict(categories=_cell(cats))]),
                      combined_categories=_cell(cats),
                      annotations_continuous=_structs([cont]),
                      combined_continuous=_structs([cont]))
      person.update(gender='Female', age='Adult')
      people.append(person)
    records.append(dict(filename=filename, folder=folder,
                        image_size=_structs([dict(n_col=float(n_col), n_row=float(n_row))]),
                        original_database=_structs([dict(name='mscoco')]),
                        person=_structs(people)))
  from scipy import io as sio
  os.makedirs(os.path.join(root, 'Annotations'), exist_ok=True)
  sio.savemat(os.path.join(root, 'Annotations', 'Annotations.mat'), {split: _structs(records)})
  return root


def affwild2_tree(root, videos, split_dir='Train_Set', frames=None):
  """annotations/EXPR_Set/<split_dir>/<video>.txt and cropped_aligned/<video>/<n:05d>.jpg.

  videos: {video: [codes]}; frames: {video: frame numbers with an image} (default: all).
  """
  for video, codes in videos.items():
    write_text(os.path.join(root, 'annotations', 'EXPR_Set', split_dir, f'{video}.txt'),
               '\n'.join([AFFWILD2_HEADER, *map(str, codes)]) + '\n')
    present = range(1, len(codes) + 1) if frames is None else frames.get(video, ())
    for n in present:
      write_image(os.path.join(root, 'cropped_aligned', video, f'{n:05d}.jpg'), seed=n)
  return root
