"""ABAW4 Learning from Synthetic Data (LSD): six basic expressions, synthetic train, real val.

Layout under manual_dir, one folder per split:

  training_set_synthetic_images/<CLASS>/*.jpg   train (277,251 images, upper-case folders)
  validation_set_real_images/<class>/*.jpg      val (4,670 real Aff-Wild2 crops)
  lsd_test_data/**/*.jpg                        test, unlabelled (label -1)

Class folders are matched case-insensitively against ANGER, DISGUST, FEAR, HAPPINESS, SADNESS,
SURPRISE; 'ANGRER' is also read as anger, because the HSEmotion scripts spell the folder that way
(possibly a typo in one copy of the data). Any other folder name in a
labelled split is a ReaderError rather than a silently dropped class. Images may sit anywhere
below their class folder. Other split folders can be given as dirs={split: path}.

Labels are in the 'lsd6' space (ferjax.labels: happy, sad, surprise, fear, disgust, anger), not
in the alphabetical ImageFolder order (anger, disgust, fear, happiness, sadness, surprise) that
the HSEmotion and Jeong et al. code train with; the table below is the one place that maps them.

Landmarks (optional, for the multi-task models of Jeong et al.): a `.txt` file with the image's
stem next to the image holds 68 (x, y) points in pixels of that image, either as 68 lines `x y`
(the layout Jeong et al. read) or as 136 numbers interleaved x0 y0 x1 y1 ... separated by
spaces, commas or newlines in any arrangement. With landmarks=None (default) a split that has
any such file must have one for every image (examples then carry 'landmarks'); True requires
them, False ignores them. The coordinate scale of the released files is undocumented, so the
reader returns them as written.
"""
from __future__ import annotations

import os
import re
from typing import Iterator, Mapping

import numpy as np

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError

SPLIT_DIRS = {'train': 'training_set_synthetic_images', 'val': 'validation_set_real_images',
              'test': 'lsd_test_data'}
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')

# Native order: the alphabetical class folders (what ImageFolder and the reference code index).
NATIVE = ('anger', 'disgust', 'fear', 'happy', 'sad', 'surprise')
# The one native -> canonical table: lower-cased folder name -> canonical class name.
FOLDER_CLASSES = {'anger': 'anger', 'angrer': 'anger', 'disgust': 'disgust', 'fear': 'fear',
                  'happiness': 'happy', 'sadness': 'sad', 'surprise': 'surprise'}
TO_LSD6 = dict(zip(NATIVE, labels.index_map(NATIVE, 'lsd6')))

INFO = DatasetInfo(
    name='lsd',
    native_classes=NATIVE,
    class_space='lsd6',
    splits=tuple(SPLIT_DIRS),
    features=('landmarks',),  # only when the split ships landmark .txt files
    layout='training_set_synthetic_images/<CLASS>/, validation_set_real_images/<class>/, '
           'lsd_test_data/; optional <image stem>.txt landmarks next to each image',
)


def folder_label(folder: str, where: str) -> int:
  """A class folder's name -> label in lsd6; an unknown folder is a ReaderError."""
  name = FOLDER_CLASSES.get(folder.strip().lower())
  if name is None:
    raise ReaderError(f'{where}: unknown LSD class folder {folder!r}; expected one of '
                      'ANGER (or ANGRER), DISGUST, FEAR, HAPPINESS, SADNESS, SURPRISE')
  return TO_LSD6[name]


def read_landmarks(path: str) -> np.ndarray:
  """A 68-point landmark file (68 lines 'x y', or 136 numbers x0 y0 x1 y1 ...) -> float32 [68,2]."""
  with open(path, encoding='utf-8') as f:
    lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
  rows = []
  for n, line in lines:
    tokens = [t for t in re.split(r'[,\s]+', line) if t]
    try:
      rows.append((n, [float(t) for t in tokens]))
    except ValueError:
      raise ReaderError(f'{path}:{n}: non-numeric landmark value in {line!r}') from None
  flat = [v for _, values in rows for v in values]
  if len(flat) != 136:
    # Point at the first line that breaks the 68-line form when the file has that many lines.
    bad = next((n for n, values in rows if len(values) != 2), None) if len(rows) == 68 else None
    where = f'{path}:{bad}' if bad else path
    raise ReaderError(f'{where}: expected 68 lines "x y" or 136 numbers, got {len(rows)} lines '
                      f'with {len(flat)} numbers')
  points = np.asarray(flat, np.float32).reshape(68, 2)
  if not np.all(np.isfinite(points)):
    raise ReaderError(f'{path}: landmarks must be finite')
  return points


def _walk(root: str) -> Iterator[tuple[str, list[str], dict[str, str]]]:
  """(dir, sorted image names, {stem: .txt name}) below root, sorted, hidden entries skipped."""
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    names = [f for f in filenames if not f.startswith('.')]
    images = sorted(f for f in names if f.lower().endswith(IMAGE_EXTS))
    txt = {os.path.splitext(f)[0]: f for f in names if f.lower().endswith('.txt')}
    yield dirpath, images, txt


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _listing(split_root: str, labelled: bool) -> list[tuple[str, int, dict[str, str]]]:
  """[(image path, label, {stem: .txt name} of its directory)] in a deterministic order."""
  if not labelled:
    return [(os.path.join(d, f), -1, txt) for d, images, txt in _walk(split_root) for f in images]
  out = []
  for entry in sorted(os.listdir(split_root), key=lambda e: (e.lower(), e)):
    path = os.path.join(split_root, entry)
    if entry.startswith('.'):
      continue
    if not os.path.isdir(path):
      if entry.lower().endswith(IMAGE_EXTS):
        raise ReaderError(f'{path}: image outside a class folder in a labelled split')
      continue  # READMEs, lists: not examples
    label = folder_label(entry, path)
    out.extend((os.path.join(d, f), label, txt) for d, images, txt in _walk(path) for f in images)
  return out


def examples(manual_dir: str | os.PathLike, split: str, *,
             dirs: Mapping[str, str] | None = None,
             landmarks: bool | None = None) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) for 'train', 'val' or 'test'; keys are paths relative to manual_dir.

  Args:
    manual_dir: the folder holding the three split folders.
    split: 'train', 'val' or 'test' (test is unlabelled: label -1).
    dirs: {split: folder} overriding SPLIT_DIRS (relative to manual_dir or absolute).
    landmarks: None = read <stem>.txt landmarks when any image of the split has one (then
      every image needs one), True = require them, False = ignore them.
  """
  if split not in SPLIT_DIRS:
    raise ValueError(f'LSD has splits {tuple(SPLIT_DIRS)}, not {split!r}')
  folder = (dirs or {}).get(split, SPLIT_DIRS[split])
  split_root = folder if os.path.isabs(folder) else os.path.join(manual_dir, folder)
  if not os.path.isdir(split_root):
    raise ReaderError(f'{split_root}: missing split folder; expected {INFO.layout}')
  items = _listing(split_root, labelled=split != 'test')
  if landmarks is None:
    # A README.txt does not count: only a .txt sharing an image's stem is a landmark file.
    landmarks = any(_stem(path) in txt for path, _, txt in items)
  for path, label, txt in items:
    example = {'image': path, 'label': label}
    if landmarks:
      stem = _stem(path)
      if stem not in txt:
        raise ReaderError(f'{path}: no landmark file {stem}.txt next to the image (the split has '
                          'landmark files, or landmarks=True was asked for)')
      example['landmarks'] = read_landmarks(os.path.join(os.path.dirname(path), txt[stem]))
    yield os.path.relpath(path, manual_dir).replace(os.sep, '/'), example
