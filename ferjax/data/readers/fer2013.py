"""FER2013 (Kaggle `fer2013.csv`) and FERPlus (`microsoft/FERPlus` relabelling of the same faces).

One module serves both registry names; pass dataset='fer2013' (default) or dataset='ferplus'
to `examples`, and use `info(dataset)` (or INFOS) for the matching DatasetInfo. Splits map
train / val / test to Usage Training / PublicTest / PrivateTest and to the FERPlus folders
FER2013Train / FER2013Valid / FER2013Test.

fer2013: `fer2013.csv`, columns `emotion,pixels,Usage` (read by header
name, so Kaggle's `icml_face_data.csv` with its ' pixels' spelling also works when renamed).
Images are uint8 [48, 48] arrays; native order angry, disgust, fear, happy, sad, surprise,
neutral, mapped to affectnet7. Keys are the 0-based data-row index, 5 digits ('00017').

ferplus, two layouts (option layout='auto' picks the first present):
  'csv': `fer2013.csv` + `fer2013new.csv` (header `Usage,Image name,neutral,happiness,surprise,
    sadness,anger,disgust,fear,contempt,unknown,NF`), row-aligned with fer2013.csv. Rows with
    an empty Image name (148 / 10 / 15; no face) are skipped as generate_training_data.py
    does. A row-count or per-row Usage mismatch between the files is a ReaderError, since the
    files are joined by position only.
  'folders': `FER2013{Train,Valid,Test}/label.csv` with the PNGs alongside, under manual_dir
    or manual_dir/data (the FERPlus repo layout). Two row formats exist: the shipped files
    have `fer0000000.png,"(0, 0, 48, 48)",<10 votes>`; the current generate_training_data.py
    writes `fer0000000.png,<10 votes>`. Both are read; the box is always the whole 48x48
    image, so it is not yielded. The shipped lists hold 3 / 0 / 1 fewer rows than the CSV.
  Keys are the Image name without extension ('fer0000018'), so both layouts agree. They are
  not row indices: the numbering skips at some empty-name rows.

FERPlus examples carry 'votes' int32[10] in canonical order [neutral, happy, sad, surprise,
fear, disgust, anger, contempt, unknown, NF] (reordered from the column order) and 'label' =
the plurality emotion: argmax of the 8 emotion votes, ties to the lowest canonical index, -1
when no emotion has a vote. That label is only a convenience; the reference's majority /
probability / crossentropy / multi-target processing (outlier removal, unknown/NF rejection)
belongs to the label-processing module, which should read 'votes'.
"""
from __future__ import annotations

from collections.abc import Iterator
import csv
import itertools
import os
import pathlib

import numpy as np

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError
from ferjax.data.readers import folder

FER2013_NATIVE = ('anger', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
FERPLUS_NATIVE = ('neutral', 'happy', 'surprise', 'sad', 'anger', 'disgust', 'fear', 'contempt')
FERPLUS_COLUMNS = ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust', 'fear',
                   'contempt', 'unknown', 'NF')
FERPLUS_HEADER = ('Usage', 'Image name') + FERPLUS_COLUMNS

FER2013_TO_LABEL = labels.index_map(FER2013_NATIVE, 'affectnet7')
# votes_canonical = votes_native[VOTE_ORDER]: emotions permuted, unknown and NF kept last.
VOTE_ORDER = np.concatenate([np.argsort(labels.index_map(FERPLUS_NATIVE, 'affectnet8')),
                             [8, 9]])

USAGE = {'train': 'Training', 'val': 'PublicTest', 'test': 'PrivateTest'}
PLUS_FOLDERS = {'train': 'FER2013Train', 'val': 'FER2013Valid', 'test': 'FER2013Test'}
CSV_DIRS = ('.', 'fer2013', 'FERPlus')
FOLDER_DIRS = ('.', 'data')
SIZE = 48

INFO = DatasetInfo(
    name='fer2013',
    native_classes=FER2013_NATIVE,
    class_space='affectnet7',
    splits=tuple(USAGE),
    layout='fer2013.csv (emotion,pixels,Usage) in manual_dir or manual_dir/fer2013',
)
FERPLUS_INFO = DatasetInfo(
    name='ferplus',
    native_classes=FERPLUS_NATIVE,
    class_space='affectnet8',
    splits=tuple(USAGE),
    features=('votes',),
    layout='fer2013.csv + fer2013new.csv, or [data/]FER2013{Train,Valid,Test}/label.csv + PNGs',
)
INFOS = {'fer2013': INFO, 'ferplus': FERPLUS_INFO}


def info(dataset: str = 'fer2013') -> DatasetInfo:
  if dataset not in INFOS:
    raise ValueError(f'dataset={dataset!r}; this module reads {sorted(INFOS)}')
  return INFOS[dataset]


def plurality(votes: np.ndarray) -> int:
  """Canonical index of the most-voted emotion (ties: lowest index); -1 without emotion votes."""
  emotions = np.asarray(votes)[:8]
  return int(np.argmax(emotions)) if emotions.sum() > 0 else -1


def detect_layout(manual_dir: str | os.PathLike, dataset: str = 'fer2013') -> str:
  """'csv' or 'folders': the layout `examples(..., layout='auto')` reads."""
  root = pathlib.Path(manual_dir)
  fer, new = _find(root, 'fer2013.csv'), _find(root, 'fer2013new.csv')
  if dataset == 'fer2013':
    if fer is None:
      raise ReaderError(f'{root}: no fer2013.csv; looked in {_looked(root, CSV_DIRS)}')
    return 'csv'
  if fer is not None and new is not None:
    return 'csv'
  if _folder_base(root) is not None:
    return 'folders'
  raise ReaderError(
      f'{root}: no FERPlus layout found; looked for fer2013.csv + fer2013new.csv in '
      f'{_looked(root, CSV_DIRS)} and for FER2013{{Train,Valid,Test}}/label.csv in '
      f'{_looked(root, FOLDER_DIRS)}')


def examples(manual_dir: str | os.PathLike, split: str, *, dataset: str = 'fer2013',
             layout: str = 'auto', missing: str = 'error') -> Iterator[tuple[str, dict]]:
  """(key, example) for one split of fer2013 or ferplus; see the module docstring.

  Args:
    manual_dir: folder holding the CSVs and/or the FERPlus image folders.
    split: 'train', 'val' or 'test'.
    dataset: 'fer2013' (original labels) or 'ferplus' (FERPlus votes).
    layout: 'auto', 'csv' or 'folders' (ferplus only).
    missing: 'error' or 'skip' for PNGs a FERPlus label.csv lists but the disk lacks.
  """
  info(dataset)
  folder.check_split(split, INFO.splits)
  if layout not in ('auto', 'csv', 'folders'):
    raise ValueError(f"layout={layout!r}; expected 'auto', 'csv' or 'folders'")
  if dataset == 'fer2013' and layout == 'folders':
    raise ValueError('the FERPlus folders hold no FER2013 labels; use dataset=ferplus')
  root = pathlib.Path(manual_dir)
  if layout == 'auto':
    layout = detect_layout(root, dataset)
  if layout == 'folders':
    policy = folder.MissingFiles(missing, 'ferplus')
    yield from _ferplus_folders(root, split, policy)
    policy.report(split)
    return
  fer = _find(root, 'fer2013.csv')
  if fer is None:
    raise ReaderError(f'{root}: no fer2013.csv; looked in {_looked(root, CSV_DIRS)}')
  if dataset == 'fer2013':
    for where, index, emotion, pixels, usage in _fer_rows(fer):
      if usage != USAGE[split]:
        continue
      if not (emotion.isdigit() and int(emotion) < len(FER2013_NATIVE)):
        raise ReaderError(f'{where}: emotion {emotion!r} is not a FER2013 code 0-6')
      yield f'{index:05d}', {'image': _pixels(pixels, where),
                             'label': FER2013_TO_LABEL[int(emotion)]}
    return
  new = _find(root, 'fer2013new.csv')
  if new is None:
    raise ReaderError(f'{root}: no fer2013new.csv; looked in {_looked(root, CSV_DIRS)}')
  yield from _ferplus_csv(fer, new, split)


def _find(root: pathlib.Path, name: str) -> pathlib.Path | None:
  for d in CSV_DIRS:
    if (root / d / name).is_file():
      return root / d / name
  return None


def _looked(root: pathlib.Path, dirs: tuple[str, ...]) -> str:
  return ', '.join(str(root / d) for d in dirs)


def _folder_base(root: pathlib.Path) -> pathlib.Path | None:
  for d in FOLDER_DIRS:
    if any((root / d / f / 'label.csv').is_file() for f in PLUS_FOLDERS.values()):
      return root / d
  return None


def _fer_rows(path: pathlib.Path) -> Iterator[tuple[str, int, str, str, str]]:
  """(where, data-row index, emotion, pixels, Usage) for each row of fer2013.csv."""
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    try:
      cols = [header.index(c) for c in ('emotion', 'pixels', 'Usage')]
    except ValueError:
      raise ReaderError(f'{path}:1: header {header} lacks one of emotion, pixels, Usage') from None
    index = 0
    for row in reader:
      if not row:
        continue
      where = f'{path}:{reader.line_num}'
      if len(row) != len(header):
        raise ReaderError(f'{where}: expected {len(header)} fields, got {len(row)}')
      yield where, index, row[cols[0]].strip(), row[cols[1]], row[cols[2]].strip()
      index += 1


def _pixels(text: str, where: str) -> np.ndarray:
  values = text.split()
  if len(values) != SIZE * SIZE:
    raise ReaderError(f'{where}: expected {SIZE * SIZE} pixel values ({SIZE}x{SIZE}), '
                      f'got {len(values)}')
  try:
    image = np.array(values, dtype=np.int32)
  except ValueError:
    raise ReaderError(f'{where}: pixels are not integers') from None
  if image.min() < 0 or image.max() > 255:
    raise ReaderError(f'{where}: pixel values outside 0-255')
  return image.astype(np.uint8).reshape(SIZE, SIZE)


def _votes(fields: list[str], where: str) -> np.ndarray:
  """Vote counts in FERPlus column order -> int32[10] in canonical order."""
  try:
    values = [float(v) for v in fields]
  except ValueError:
    raise ReaderError(f'{where}: vote counts {fields} are not numbers') from None
  if any(v < 0 or not v.is_integer() for v in values):
    raise ReaderError(f'{where}: vote counts {fields} are not non-negative integers')
  return np.asarray(values, dtype=np.int32)[VOTE_ORDER]


def _ferplus_csv(fer: pathlib.Path, new: pathlib.Path, split: str) -> Iterator[tuple[str, dict]]:
  with open(new, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    header = tuple(h.strip() for h in next(reader, []))
    if header != FERPLUS_HEADER:
      raise ReaderError(f'{new}:1: header {",".join(header)!r}; expected '
                        f'{",".join(FERPLUS_HEADER)!r}')
    new_rows = ((reader.line_num, row) for row in reader if row)
    fer_rows = _fer_rows(fer)
    n_fer = n_new = 0
    for fer_row, new_row in itertools.zip_longest(fer_rows, new_rows):
      n_fer += fer_row is not None
      n_new += new_row is not None
      if fer_row is None or new_row is None:
        continue  # Keep counting to report both totals.
      fer_where, _, _, pixels, usage = fer_row
      line_no, row = new_row
      where = f'{new}:{line_no}'
      if len(row) != len(FERPLUS_HEADER):
        raise ReaderError(f'{where}: expected {len(FERPLUS_HEADER)} fields, got {len(row)}')
      if row[0].strip() != usage:
        raise ReaderError(f'{where}: Usage {row[0].strip()!r} differs from {usage!r} at '
                          f'{fer_where}; the files must be row-aligned')
      name = row[1].strip()
      if not name or usage != USAGE[split]:
        continue  # An empty name marks a row FERPlus dropped (no face).
      votes = _votes(row[2:], where)
      yield os.path.splitext(name)[0], {'image': _pixels(pixels, fer_where),
                                        'label': plurality(votes), 'votes': votes}
  if n_fer != n_new:
    raise ReaderError(f'{fer} has {n_fer} data rows but {new} has {n_new}; fer2013new.csv must '
                      'have one row per fer2013.csv row, in the same order')


def _ferplus_folders(root: pathlib.Path, split: str,
                     policy: folder.MissingFiles) -> Iterator[tuple[str, dict]]:
  base = _folder_base(root)
  if base is None:
    raise ReaderError(f'{root}: no FER2013{{Train,Valid,Test}}/label.csv in '
                      f'{_looked(root, FOLDER_DIRS)}')
  image_dir = base / PLUS_FOLDERS[split]
  label_file = image_dir / 'label.csv'
  if not label_file.is_file():
    raise ReaderError(f'{label_file}: not found (other FERPlus splits are present)')
  with open(label_file, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    for row in reader:
      if not row:
        continue
      where = f'{label_file}:{reader.line_num}'
      if len(row) == 12 and row[1].strip().startswith('('):
        fields = row[2:]  # Shipped format: name, "(x, y, w, h)", 10 votes.
      elif len(row) == 11:
        fields = row[1:]  # generate_training_data.py format: name, 10 votes.
      else:
        raise ReaderError(f'{where}: expected `name,"(box)",<10 votes>` or `name,<10 votes>`, '
                          f'got {len(row)} fields')
      name = row[0].strip()
      votes = _votes(fields, where)
      path = image_dir / name
      if policy.exists(path, where):
        yield os.path.splitext(name)[0], {'image': str(path), 'label': plurality(votes),
                                          'votes': votes}
