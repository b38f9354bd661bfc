"""FERG-DB: 55,767 rendered cartoon faces (256x256 PNG), 6 characters x 7 expressions.

Layout: `FERG_DB_256/<char>/.../<char>_<expr>_<n>.png`, released as
`<char>/<char>_<expr>/<char>_<expr>_<n>.png`. Character and expression are parsed from the FILE
NAME, not the folders, so any nesting below manual_dir (or manual_dir/FERG_DB_256 when present)
works. Non-image files (README.txt, image_lst.csv) are ignored; an image whose name does not
parse, or whose expression is unknown, is a ReaderError.

Characters: aia, bonnie, jules, malcolm, mery, ray. Expressions, in the alphabetical folder order
(the native order): anger, disgust, fear, joy, neutral, sadness, surprise; joy is canonical
'happy' and sadness 'sad'. Labels are in 'affectnet7'.

FERG-DB has no official split, and it is trivially separable (used as a smoke test only). The
splits here are ferjax's:
  'all'                   every image
  'train'/'val'/'test'    by default stratified per character AND expression: each
                          (character, expression) group is permuted with a seed derived from
                          (seed, group name) and its first round(test_fraction * n) images go to
                          test, the next round(val_fraction * n) to val, the rest to train. A
                          group's split depends only on its own files, not on the other groups.
                          With test_characters (and optionally val_characters) given instead,
                          whole characters are held out: an identity-independent protocol.
"""
from __future__ import annotations

import os
import re
import zlib
from typing import Iterator, Sequence

import numpy as np

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')
SPLITS = ('all', 'train', 'val', 'test')
CHARACTERS = ('aia', 'bonnie', 'jules', 'malcolm', 'mery', 'ray')

# The one native -> canonical table: FERG's expression names in its (alphabetical) order.
EXPRESSIONS = ('anger', 'disgust', 'fear', 'joy', 'neutral', 'sadness', 'surprise')
NATIVE = ('anger', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise')
TO_CANONICAL = dict(zip(EXPRESSIONS, labels.index_map(NATIVE, 'affectnet7')))

_NAME = re.compile(r'^([a-z]+)_([a-z]+)_(\d+)$', re.IGNORECASE)

INFO = DatasetInfo(
    name='ferg',
    native_classes=NATIVE,
    class_space='affectnet7',
    splits=SPLITS,
    layout='FERG_DB_256/<char>/<char>_<expr>/<char>_<expr>_<n>.png',
)


def parse_name(filename: str, where: str) -> tuple[str, str, int]:
  """'aia_joy_12.png' -> ('aia', 'joy', 12); a malformed name or unknown expression raises."""
  match = _NAME.match(os.path.splitext(os.path.basename(filename))[0])
  if not match:
    raise ReaderError(f'{where}: expected a name like aia_anger_1.png (<char>_<expr>_<n>)')
  char, expr, n = match.group(1).lower(), match.group(2).lower(), int(match.group(3))
  if expr not in TO_CANONICAL:
    raise ReaderError(f'{where}: unknown FERG expression {match.group(2)!r}; known: '
                      f'{", ".join(EXPRESSIONS)}')
  return char, expr, n


def _scan(root: str) -> list[tuple[str, str, str, int]]:
  """[(path, char, expr, n)] sorted by (char, expr, n, path)."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith('.')]
    for name in filenames:
      if name.startswith('.') or not name.lower().endswith(IMAGE_EXTS):
        continue
      path = os.path.join(dirpath, name)
      out.append((path, *parse_name(name, path)))
  if not out:
    raise ReaderError(f'{root}: no FERG images found; expected {INFO.layout}')
  return sorted(out, key=lambda it: (it[1], it[2], it[3], it[0]))


def stratified_split(items: list[tuple], val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, str]:
  """{path: split} permuting each (char, expr) group with its own seeded generator."""
  if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
    raise ValueError(f'need val_fraction, test_fraction >= 0 with a sum < 1, got '
                     f'{val_fraction}, {test_fraction}')
  groups: dict[tuple[str, str], list[str]] = {}
  for path, char, expr, _ in items:
    groups.setdefault((char, expr), []).append(path)
  out = {}
  for (char, expr), paths in groups.items():
    # crc32 (unlike hash()) is the same in every process, so the split is reproducible.
    rng = np.random.default_rng([seed, zlib.crc32(f'{char}/{expr}'.encode())])
    order = [paths[i] for i in rng.permutation(len(paths))]
    n_test, n_val = round(test_fraction * len(paths)), round(val_fraction * len(paths))
    for i, path in enumerate(order):
      out[path] = 'test' if i < n_test else 'val' if i < n_test + n_val else 'train'
  return out


def examples(manual_dir: str | os.PathLike, split: str = 'all', *,
             val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
             test_characters: Sequence[str] | None = None,
             val_characters: Sequence[str] = ()) -> Iterator[tuple[str, dict]]:
  """Yields (key, example); keys are paths relative to manual_dir.

  Args:
    manual_dir: the folder holding FERG_DB_256/ (or the FERG_DB_256 folder itself).
    split: 'all', 'train', 'val' or 'test' (see the module docstring).
    val_fraction, test_fraction, seed: the stratified per-character split.
    test_characters, val_characters: hold out whole characters instead.
  """
  if split not in SPLITS:
    raise ValueError(f'FERG splits are {SPLITS}, not {split!r}')
  nested = os.path.join(manual_dir, 'FERG_DB_256')
  items = _scan(nested if os.path.isdir(nested) else manual_dir)
  if split != 'all':
    if test_characters is not None:
      test, val = {c.lower() for c in test_characters}, {c.lower() for c in val_characters}
      present = {it[1] for it in items}
      if (test | val) - present or test & val:
        raise ValueError(f'test_characters {sorted(test)} and val_characters {sorted(val)} must '
                         f'be disjoint characters of the data {sorted(present)}')
      which = {it[0]: 'test' if it[1] in test else 'val' if it[1] in val else 'train'
               for it in items}
    else:
      which = stratified_split(items, val_fraction, test_fraction, seed)
    items = [it for it in items if which[it[0]] == split]
  for path, _, expr, _ in items:
    yield (os.path.relpath(path, manual_dir).replace(os.sep, '/'),
           {'image': path, 'label': TO_CANONICAL[expr]})
