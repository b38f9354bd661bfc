"""AffectNet: the official manually-annotated CSVs, the 224x224 npy release, or CAGE's CSVs.

Layouts, detected per split in this order unless layout= is given:

'official': `Manually_Annotated_file_lists/{training,validation}.csv`, columns
  subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
  expression, valence, arousal. training.csv has that header line; validation.csv reportedly
  has none (third-party loaders skip a header for training only), so both are accepted.
  Images under `Manually_Annotated_Images/` or `Manually_Annotated/Manually_Annotated_Images/`.
  Keys are subDirectory_filePath.
  Yields box (face_x, face_y, face_width, face_height) and landmarks (68 `x;y` pairs).
'npy': `{train_set,val_set}/images/<n>.jpg` with `annotations/<n>_{exp,val,aro,lnd}.npy`
  (the later 224x224 release, as read by yaoing/DAN). The npy files may hold numbers or
  numeric strings. Yields landmarks from _lnd.npy. Keys are `<set>/images/<n>.jpg`.
'cage': a CSV with columns number, exp, val, aro (CAGE's flattening of the npy release; extra
  columns such as a pandas index are ignored), found at
  `affectnet_annotations/{train,val}_set_annotation_without_lnd.csv` or given by option
  csv=PATH for the requested split. Images are `<manual_dir>/<set>/images/<number>.jpg`.
  Same keys as 'npy'.

Expression codes are 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger,
7 contempt (already the canonical order); codes 8-10 (None, Uncertain, Non-Face) are dropped
and counted in a log line, and any other code is a ReaderError. num_classes=7 also drops
contempt (class space affectnet7; see `info`).

Valence/arousal: every example has 'va' float32[2] and 'va_valid' bool. AffectNet writes -2
for "no valence/arousal"; such rows keep their expression label, with va = [0, 0] and
va_valid = False. Zeros rather than NaN because a masked loss multiplies by the mask, and
NaN * 0 is NaN. Other values outside [-1, 1] are a ReaderError.

Which optional features a layout yields is in LAYOUT_FEATURES; `info(layout=...)` declares
exactly those, and INFO is the official layout's.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
import csv as csvlib
import os
import pathlib

from absl import logging
import numpy as np

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError
from ferjax.data.readers import folder

NATIVE = labels.CANONICAL
CODE_TO_LABEL = labels.index_map(NATIVE, 'affectnet8')
DROPPED_CODES = {8: 'None', 9: 'Uncertain', 10: 'Non-Face'}
INVALID_VA = -2.0

OFFICIAL_COLUMNS = ('subDirectory_filePath', 'face_x', 'face_y', 'face_width', 'face_height',
                    'facial_landmarks', 'expression', 'valence', 'arousal')
OFFICIAL_LISTS = {'train': 'training.csv', 'val': 'validation.csv'}
LIST_DIR = 'Manually_Annotated_file_lists'
IMAGE_DIRS = ('Manually_Annotated_Images', 'Manually_Annotated/Manually_Annotated_Images')
SETS = {'train': 'train_set', 'val': 'val_set'}
CAGE_CSV = 'affectnet_annotations/{set}_annotation_without_lnd.csv'
CAGE_COLUMNS = ('number', 'exp', 'val', 'aro')
LAYOUT_FEATURES = {
    'official': ('va', 'va_valid', 'landmarks', 'box'),
    'npy': ('va', 'va_valid', 'landmarks'),
    'cage': ('va', 'va_valid'),
}
NUM_LANDMARKS = 68


def info(num_classes: int = 8, layout: str = 'official') -> DatasetInfo:
  """DatasetInfo for the 8- or 7-class task and the features `layout` yields."""
  if num_classes not in (7, 8):
    raise ValueError(f'num_classes={num_classes}; AffectNet has 7 or 8 classes')
  if layout not in LAYOUT_FEATURES:
    raise ValueError(f'layout={layout!r}; expected one of {sorted(LAYOUT_FEATURES)}')
  return DatasetInfo(
      name='affectnet',
      native_classes=NATIVE[:num_classes],
      class_space=f'affectnet{num_classes}',
      splits=tuple(SETS),
      features=LAYOUT_FEATURES[layout],
      layout=f'{LIST_DIR}/{{training,validation}}.csv + Manually_Annotated_Images/, or '
             '{train,val}_set/{images,annotations}/, or number,exp,val,aro CSVs',
  )


INFO = info()


def detect_layout(manual_dir: str | os.PathLike, split: str) -> str:
  """'official', 'npy' or 'cage': the first layout present for `split`."""
  root = pathlib.Path(manual_dir)
  candidates = {
      'official': root / LIST_DIR / OFFICIAL_LISTS[split],
      'npy': root / SETS[split] / 'annotations',
      'cage': root / CAGE_CSV.format(set=SETS[split]),
  }
  for layout, path in candidates.items():
    if path.exists():
      return layout
  raise ReaderError(f'{root}: no AffectNet layout found for split {split!r}; looked for '
                    f'{", ".join(str(p) for p in candidates.values())}')


def examples(manual_dir: str | os.PathLike, split: str, *, num_classes: int = 8,
             layout: str = 'auto', csv: str | os.PathLike | None = None,
             missing: str = 'error') -> Iterator[tuple[str, dict]]:
  """(key, example) for one split; see the module docstring.

  Args:
    manual_dir: the AffectNet folder.
    split: 'train' or 'val' (AffectNet's validation set is the usual test set).
    num_classes: 8, or 7 to drop contempt.
    layout: 'auto', 'official', 'npy' or 'cage'.
    csv: a number,exp,val,aro CSV for this split (implies layout 'cage').
    missing: 'error' (default) or 'skip' for listed images that do not exist.
  """
  info(num_classes)
  folder.check_split(split, INFO.splits)
  policy = folder.MissingFiles(missing, INFO.name)
  root = pathlib.Path(manual_dir)
  if csv is not None:
    layout = 'cage'
  elif layout == 'auto':
    layout = detect_layout(root, split)
  dropped = Counter()
  if layout == 'official':
    rows = _official(root, split, policy)
  elif layout == 'npy':
    rows = _npy(root, split, policy)
  elif layout == 'cage':
    path = pathlib.Path(csv) if csv is not None else root / CAGE_CSV.format(set=SETS[split])
    rows = _cage(root, split, path, policy)
  else:
    raise ValueError(f"layout={layout!r}; expected 'auto', 'official', 'npy' or 'cage'")
  for key, code, where, make in rows:
    if code in DROPPED_CODES or (num_classes == 7 and code == 7):
      dropped[DROPPED_CODES.get(code, 'contempt')] += 1
      continue
    if code not in range(8):
      raise ReaderError(f'{where}: expression {code} is not an AffectNet code 0-10')
    example = make()  # Parsed only for kept rows: dropped ones may lack landmarks or V/A.
    if example is not None:
      example['label'] = CODE_TO_LABEL[code]
      yield key, example
  if dropped:
    logging.info('affectnet/%s: dropped %s', split, dict(sorted(dropped.items())))
  policy.report(split)


def _int(text, where: str, what: str) -> int:
  try:
    value = float(text)
  except (TypeError, ValueError):
    value = float('nan')
  if not value.is_integer():
    raise ReaderError(f'{where}: {what} {text!r} is not an integer')
  return int(value)


def _va(valence, arousal, where: str) -> dict:
  try:
    va = np.array([float(valence), float(arousal)], dtype=np.float64)
  except (TypeError, ValueError):
    raise ReaderError(
        f'{where}: valence/arousal {valence!r}, {arousal!r} are not numbers') from None
  if np.any(np.abs(va - INVALID_VA) < 1e-6):
    return {'va': np.zeros(2, np.float32), 'va_valid': False}
  if np.any(np.abs(va) > 1 + 1e-6):
    raise ReaderError(f'{where}: valence/arousal {va.tolist()} outside [-1, 1] and not the '
                      f'invalid marker {INVALID_VA}')
  return {'va': np.clip(va, -1, 1).astype(np.float32), 'va_valid': True}


def _landmarks(values, where: str) -> np.ndarray:
  try:
    points = np.asarray(values, dtype=np.float32)
  except ValueError:
    raise ReaderError(f'{where}: landmarks are not numbers') from None
  if points.size != 2 * NUM_LANDMARKS:
    raise ReaderError(f'{where}: expected {NUM_LANDMARKS} landmarks (x, y), got '
                      f'{points.size} values')
  return points.reshape(NUM_LANDMARKS, 2)


def _official(root: pathlib.Path, split: str, policy: folder.MissingFiles):
  """(key, code, where, make_example) per row of the official list of `split`."""
  list_path = root / LIST_DIR / OFFICIAL_LISTS[split]
  image_root = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
  if image_root is None:
    raise ReaderError(f'{root}: no image folder; looked for '
                      f'{", ".join(str(root / d) for d in IMAGE_DIRS)}')
  with open(list_path, newline='', encoding='utf-8') as f:
    reader = csvlib.reader(f)
    for row in reader:
      if not row:
        continue
      where = f'{list_path}:{reader.line_num}'
      if reader.line_num == 1 and row[0].strip() == OFFICIAL_COLUMNS[0]:
        if tuple(c.strip() for c in row) != OFFICIAL_COLUMNS:
          raise ReaderError(f'{where}: header {row}; expected {list(OFFICIAL_COLUMNS)}')
        continue
      if len(row) != len(OFFICIAL_COLUMNS):
        raise ReaderError(f'{where}: expected {len(OFFICIAL_COLUMNS)} fields '
                          f'({",".join(OFFICIAL_COLUMNS)}), got {len(row)}')
      rel = row[0].strip()

      def make(row=row, where=where, rel=rel):
        try:
          box = np.array([float(v) for v in row[1:5]], dtype=np.float32)
        except ValueError:
          raise ReaderError(f'{where}: face box {row[1:5]} is not numeric') from None
        points = [v for v in row[5].strip().split(';') if v.strip()]
        path = image_root / rel
        if not policy.exists(path, where):
          return None
        return {'image': str(path), 'box': box, 'landmarks': _landmarks(points, where),
                **_va(row[7], row[8], where)}

      yield rel, _int(row[6], where, 'expression'), where, make


def _sort_key(stem: str):
  return (0, int(stem), '') if stem.isdigit() else (1, 0, stem)


def _npy_value(path: pathlib.Path) -> np.ndarray:
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ReaderError(f'{path}: cannot read as a .npy array ({e})') from None


def _npy(root: pathlib.Path, split: str, policy: folder.MissingFiles):
  set_dir = root / SETS[split]
  ann_dir, image_dir = set_dir / 'annotations', set_dir / 'images'
  if not ann_dir.is_dir():
    raise ReaderError(f'{ann_dir}: not a directory')
  suffix = '_exp.npy'
  stems = sorted((p.name[:-len(suffix)] for p in ann_dir.iterdir() if p.name.endswith(suffix)),
                 key=_sort_key)
  if image_dir.is_dir():
    unlabelled = {p.stem for p in image_dir.iterdir()} - set(stems)
    if unlabelled:
      logging.warning('%s: %d images have no %s annotation and are not read', image_dir,
                      len(unlabelled), suffix)
  for stem in stems:
    exp_path = ann_dir / f'{stem}{suffix}'
    where = str(exp_path)

    def make(stem=stem, where=where):
      path = image_dir / f'{stem}.jpg'
      values = {}
      for part in ('val', 'aro', 'lnd'):
        part_path = ann_dir / f'{stem}_{part}.npy'
        if not part_path.is_file():
          raise ReaderError(f'{where}: {part_path.name} is missing beside it')
        values[part] = _npy_value(part_path)
      if not policy.exists(path, where):
        return None
      landmarks = _landmarks(values['lnd'].reshape(-1), str(ann_dir / f'{stem}_lnd.npy'))
      return {'image': str(path), 'landmarks': landmarks,
              **_va(values['val'].reshape(-1)[0], values['aro'].reshape(-1)[0], where)}

    exp = _npy_value(exp_path)
    if exp.size != 1:
      raise ReaderError(f'{where}: expected one expression code, got shape {exp.shape}')
    key = f'{SETS[split]}/images/{stem}.jpg'
    yield key, _int(exp.reshape(-1)[0], where, 'expression'), where, make


def _cage(root: pathlib.Path, split: str, path: pathlib.Path, policy: folder.MissingFiles):
  if not path.is_file():
    raise ReaderError(f'{path}: CSV not found')
  image_dir = root / SETS[split] / 'images'
  with open(path, newline='', encoding='utf-8') as f:
    reader = csvlib.reader(f)
    header = [h.strip() for h in next(reader, [])]
    missing_cols = [c for c in CAGE_COLUMNS if c not in header]
    if missing_cols:
      raise ReaderError(f'{path}:1: header {header} lacks {missing_cols}')
    cols = [header.index(c) for c in CAGE_COLUMNS]
    for row in reader:
      if not row:
        continue
      where = f'{path}:{reader.line_num}'
      if len(row) != len(header):
        raise ReaderError(f'{where}: expected {len(header)} fields, got {len(row)}')
      number, exp, val, aro = (row[c].strip() for c in cols)
      if not number:
        raise ReaderError(f'{where}: empty image number')

      def make(number=number, val=val, aro=aro, where=where):
        image = image_dir / f'{number}.jpg'
        if not policy.exists(image, where):
          return None
        return {'image': str(image), **_va(val, aro, where)}

      yield f'{SETS[split]}/images/{number}.jpg', _int(exp, where, 'expression'), where, make
