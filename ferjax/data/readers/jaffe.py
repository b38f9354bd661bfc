"""JAFFE: 213 posed grayscale images (256x256 TIFF) of 10 Japanese female subjects.

Layout: the image files anywhere below manual_dir (the archive unpacks to `jaffe/` or
`jaffedbase/`), named `<subject>.<code><n>.<id>.tiff`, e.g. `KA.AN1.39.tiff`: subject KA, code
AN (anger), 1st anger image of KA, running id 39. The expression is
tokens[1][:2] of the dot-separated name. Non-image files (README) are ignored; an image whose
name does not parse, or whose code is unknown, is a ReaderError. Any of .tiff/.tif/.png/.jpg is
accepted, for copies that were converted.

JAFFE has no official split. split='all' (the default protocol for a cross-dataset test set)
yields every image. split='train' / 'test' give a subject-independent split: the test subjects
are test_subjects when given, else num_test_subjects drawn by a seeded permutation of the sorted
subject codes present, so a (seed, num_test_subjects) pair always names the same people.
Leave-one-subject-out is the same with num_test_subjects=1 and seeds, or test_subjects=[s].
The 60-rater semantic ratings (soft labels) are not read here.
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError

IMAGE_EXTS = ('.tiff', '.tif', '.png', '.jpg', '.jpeg', '.bmp')
SPLITS = ('all', 'train', 'test')

# The one native -> canonical table, in JAFFE's usual listing order (it has no numeric codes).
CODES = ('NE', 'HA', 'SA', 'SU', 'AN', 'DI', 'FE')
NATIVE = ('neutral', 'happy', 'sad', 'surprise', 'anger', 'disgust', 'fear')
TO_CANONICAL = dict(zip(CODES, labels.index_map(NATIVE, 'affectnet7')))

INFO = DatasetInfo(
    name='jaffe',
    native_classes=NATIVE,
    class_space='affectnet7',
    splits=SPLITS,
    layout='<subject>.<code><n>.<id>.tiff files (e.g. KA.AN1.39.tiff) anywhere below manual_dir',
)


def parse_name(filename: str, where: str) -> tuple[str, int]:
  """'KA.AN1.39.tiff' -> ('KA', canonical label of AN); a malformed name is a ReaderError."""
  tokens = os.path.splitext(os.path.basename(filename))[0].split('.')
  if len(tokens) != 3 or not tokens[0] or len(tokens[1]) < 2:
    raise ReaderError(f'{where}: expected a name like KA.AN1.39.tiff (subject.codeN.id)')
  code = tokens[1][:2].upper()
  if code not in TO_CANONICAL:
    raise ReaderError(f'{where}: unknown JAFFE expression code {tokens[1][:2]!r}; known: '
                      f'{", ".join(CODES)}')
  return tokens[0].upper(), TO_CANONICAL[code]


def subject_split(subjects: Sequence[str], num_test_subjects: int, seed: int) -> set[str]:
  """The test subjects of a seeded subject-independent split of `subjects`."""
  ordered = sorted(set(subjects))
  if not 0 < num_test_subjects < len(ordered):
    raise ValueError(f'num_test_subjects must be in 1..{len(ordered) - 1}, got '
                     f'{num_test_subjects}')
  perm = np.random.default_rng(seed).permutation(len(ordered))
  return {ordered[i] for i in perm[:num_test_subjects]}


def _scan(manual_dir: str) -> list[tuple[str, str, int]]:
  """[(path, subject, label)] sorted by path."""
  out = []
  for dirpath, dirnames, filenames in os.walk(manual_dir):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    for name in sorted(filenames):
      if name.startswith('.') or not name.lower().endswith(IMAGE_EXTS):
        continue
      path = os.path.join(dirpath, name)
      out.append((path, *parse_name(name, path)))
  if not out:
    raise ReaderError(f'{manual_dir}: no JAFFE images found; expected {INFO.layout}')
  return out


def examples(manual_dir: str | os.PathLike, split: str = 'all', *,
             test_subjects: Sequence[str] | None = None, num_test_subjects: int = 2,
             seed: int = 0) -> Iterator[tuple[str, dict]]:
  """Yields (key, example); keys are paths relative to manual_dir.

  Args:
    manual_dir: a folder with the JAFFE images below it.
    split: 'all', or 'train' / 'test' of a subject-independent split.
    test_subjects: subject codes (e.g. ['KA', 'UY']) held out as 'test'.
    num_test_subjects: without test_subjects, how many subjects the seeded split holds out.
    seed: seed of that split.
  """
  if split not in SPLITS:
    raise ValueError(f'JAFFE splits are {SPLITS}, not {split!r}')
  items = _scan(manual_dir)
  if split != 'all':
    subjects = {s for _, s, _ in items}
    if test_subjects is None:
      held_out = subject_split(sorted(subjects), num_test_subjects, seed)
    else:
      held_out = {s.upper() for s in test_subjects}
      if held_out - subjects:
        raise ValueError(f'test_subjects {sorted(held_out - subjects)} are not in the data; '
                         f'subjects: {sorted(subjects)}')
    items = [it for it in items if (it[1] in held_out) == (split == 'test')]
  for path, _, label in items:
    yield os.path.relpath(path, manual_dir).replace(os.sep, '/'), {'image': path, 'label': label}
