"""EMOTIC: people in context, 26 emotion categories (multi-label) and valence/arousal/dominance.

Layout under manual_dir (CAGE's `mat2py.py` is the reference converter):

  emotic_pre/{train,val,test}.csv     what `mat2py.py --data_dir manual_dir` writes (preferred)
  emotic/<Folder>/<Filename>          images; Folder is e.g. 'mscoco/images', 'framesdb/images'
  Annotations/Annotations.mat         the official annotations (read only without the CSVs)

The CSVs have the header `Index,Folder,Filename,Image Size,BBox,Categorical_Labels,
Continuous_Labels,Gender,Age`; the list columns hold Python reprs such as `[12, 40, 310, 470]`
and `['Engagement', 'Doubt/Confusion']`. Other locations are options: csv={split: path}
(relative to manual_dir or absolute) and image_dir (default manual_dir/emotic when it exists,
else manual_dir itself).

One example per annotated person (an image with three people gives three examples):
  image       path of the whole scene image
  box         float32 [4] x, y, w, h of the person's body: BBox is x1, y1, x2, y2 and is used as
              Python slices [y1:y2, x1:x2] by CAGE, so w = x2 - x1 and h = y2 - y1 exactly
  multilabel  float32 [26] multi-hot over emotic26 (alphabetical, ferjax.labels)
  vad         float32 [3] V, A, D mapped from EMOTIC's 1..10 scale to [-1, 1] by
              (v - 5.5) / 4.5, so 1 -> -1, 5.5 -> 0, 10 -> 1. This is the mapping asked for in the
              issue, and it equals CAGE's (2v - 11) / 9, so its losses and RMSEs compare directly.
  label       -1: EMOTIC has no single expression class
Train rows carry one annotator's labels; val and test carry the combined labels of several
annotators (mat2py.py picks them), so val/test VAD values may be fractional.

Reading Annotations.mat (scipy.io, only when scipy imports) follows mat2py.py's positional
access to the MATLAB structs and its filters: a person with no category or continuous annotators,
with a NaN continuous value, or whose clamped box is empty is skipped (counted in `stats`). Row
indices are counted like mat2py.py's, so keys match the CSV it would write when every image is
present. When scipy is missing, convert with mat2py.py and read the CSVs.
"""
from __future__ import annotations

import ast
import csv as csvlib
import math
import os
import re
from typing import Any, Iterator, Mapping

import numpy as np

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError

SPLITS = ('train', 'val', 'test')
CATEGORIES = labels.MULTILABEL_SPACES['emotic26']

# The one native -> canonical table: EMOTIC's category names, normalised by _norm (lower case,
# runs of non-alphanumerics -> '_'), to their emotic26 index. EMOTIC's own order is already the
# emotic26 order; normalising lets 'Doubt/Confusion', 'doubt confusion' and 'Doubt_Confusion'
# all name doubt_confusion.
CATEGORY_INDEX = {name: i for i, name in enumerate(CATEGORIES)}

REQUIRED_COLUMNS = ('Index', 'Folder', 'Filename', 'BBox', 'Categorical_Labels',
                    'Continuous_Labels')

INFO = DatasetInfo(
    name='emotic',
    native_classes=(),          # no single-class label; the categories are the multilabel space
    class_space='affectnet8',   # only for the schema: every label is -1
    splits=SPLITS,
    features=('box', 'vad', 'multilabel'),
    multilabel_space='emotic26',
    layout='emotic_pre/{train,val,test}.csv (CAGE mat2py.py) or Annotations/Annotations.mat, '
           'images under emotic/<Folder>/<Filename>',
)


def vad_to_unit(values) -> np.ndarray:
  """EMOTIC's 1..10 V/A/D to [-1, 1]: (v - 5.5) / 4.5 (= CAGE's (2v - 11) / 9)."""
  return ((np.asarray(values, np.float64) - 5.5) / 4.5).astype(np.float32)


def _norm(name: str) -> str:
  return re.sub(r'[^0-9a-z]+', '_', name.strip().lower()).strip('_')


def multi_hot(names, where: str) -> np.ndarray:
  """Category names (any case, 'Doubt/Confusion' style) -> float32 [26]; unknown -> ReaderError."""
  out = np.zeros(len(CATEGORIES), np.float32)
  for name in names:
    key = _norm(str(name))
    if key not in CATEGORY_INDEX:
      raise ReaderError(f'{where}: unknown EMOTIC category {name!r}; known: '
                        f'{", ".join(CATEGORIES)}')
    out[CATEGORY_INDEX[key]] = 1.0
  return out


def _names(text: str, where: str) -> list[str]:
  text = text.strip()
  if text.startswith('['):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise ReaderError(f'{where}: cannot parse the category list {text!r}') from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
      raise ReaderError(f'{where}: expected a list of category names, got {text!r}')
    return list(value)
  # Hand-made CSVs sometimes drop the brackets: 'Engagement;Happiness' or 'Engagement, Peace'.
  return [p.strip().strip('\'"') for p in re.split(r'[,;|]', text) if p.strip().strip('\'"')]


def _numbers(text: str, count: int, where: str, column: str) -> list[float]:
  body = text.strip().strip('[]()')
  parts = [p for p in re.split(r'[,\s]+', body) if p]
  try:
    values = [float(p) for p in parts]
  except ValueError:
    raise ReaderError(f'{where}: {column} must hold {count} numbers, got {text!r}') from None
  if len(values) != count or not all(math.isfinite(v) for v in values):
    raise ReaderError(f'{where}: {column} must hold {count} finite numbers, got {text!r}')
  return values


def _vad(values: list[float], where: str) -> np.ndarray:
  if not all(1.0 <= v <= 10.0 for v in values):
    raise ReaderError(f'{where}: Continuous_Labels {values} are outside EMOTIC\'s 1..10 scale')
  return vad_to_unit(values)


def _box(x1: float, y1: float, x2: float, y2: float, where: str) -> np.ndarray:
  if x2 <= x1 or y2 <= y1:
    raise ReaderError(f'{where}: BBox {[x1, y1, x2, y2]} is empty (expected x1 < x2, y1 < y2)')
  return np.asarray([x1, y1, x2 - x1, y2 - y1], np.float32)


def _resolve(manual_dir: str, path: str) -> str:
  return path if os.path.isabs(path) else os.path.join(manual_dir, path)


def _default_csv(manual_dir: str, split: str) -> str | None:
  for rel in (os.path.join('emotic_pre', f'{split}.csv'), f'{split}.csv'):
    path = os.path.join(manual_dir, rel)
    if os.path.isfile(path):
      return path
  return None


def _image(image_dir: str, folder: str, filename: str, where: str, skip_missing: bool,
           stats: dict) -> str | None:
  path = os.path.join(image_dir, folder, filename)
  if os.path.isfile(path):
    return path
  if skip_missing:
    stats['missing_image'] = stats.get('missing_image', 0) + 1
    return None
  raise ReaderError(f'{where}: image {path} does not exist (image_dir={image_dir}; pass '
                    'skip_missing=True to skip such rows)')


def _read_csv(path: str, split: str, image_dir: str, skip_missing: bool,
              stats: dict) -> Iterator[tuple[str, dict]]:
  with open(path, newline='', encoding='utf-8-sig') as f:  # -sig: Excel's BOM
    reader = csvlib.reader(f)
    header = next(reader, None)
    if header is None:
      raise ReaderError(f'{path}:1: empty file; expected the header {",".join(REQUIRED_COLUMNS)}')
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
      raise ReaderError(f'{path}:1: header lacks columns {missing}; got {header}')
    col = {name: header.index(name) for name in REQUIRED_COLUMNS}
    for row in reader:
      where = f'{path}:{reader.line_num}'
      if not row or all(not c.strip() for c in row):
        continue
      if len(row) != len(header):
        raise ReaderError(f'{where}: {len(row)} fields, expected {len(header)} ({header})')
      cell = {name: row[i].strip() for name, i in col.items()}
      index = cell['Index']
      if not index:
        raise ReaderError(f'{where}: empty Index')
      box = _box(*_numbers(cell['BBox'], 4, where, 'BBox'), where)
      multilabel = multi_hot(_names(cell['Categorical_Labels'], where), where)
      vad = _vad(_numbers(cell['Continuous_Labels'], 3, where, 'Continuous_Labels'), where)
      image = _image(image_dir, cell['Folder'], cell['Filename'], where, skip_missing, stats)
      if image is None:
        continue
      stats['yielded'] = stats.get('yielded', 0) + 1
      yield f'{split}/{index}', {'image': image, 'label': -1, 'box': box, 'vad': vad,
                                 'multilabel': multilabel}


def _leaves(x: Any) -> list:
  """All scalars and strings inside a loadmat value (structs, cells and arrays nested freely)."""
  if isinstance(x, np.void) and x.dtype.names:
    return [leaf for name in x.dtype.names for leaf in _leaves(x[name])]
  if isinstance(x, np.ndarray):
    if x.dtype.names:
      return [leaf for rec in x.flat for leaf in _leaves(rec)]
    if x.dtype.kind in 'US':
      return [str(s) for s in x.flat]
    if x.dtype == object:
      return [leaf for item in x.flat for leaf in _leaves(item)]
    return [v.item() for v in x.flat]
  if isinstance(x, (bytes, str)):
    return [x.decode() if isinstance(x, bytes) else x]
  return [x]


def _read_mat(path: str, split: str, image_dir: str, skip_missing: bool,
              stats: dict) -> Iterator[tuple[str, dict]]:
  from scipy import io as sio  # Optional: only this path needs scipy.
  mat = sio.loadmat(path)
  if split not in mat:
    raise ReaderError(f'{path}: no {split!r} struct; has {sorted(k for k in mat if k[0] != "_")}')
  # Positions as in mat2py.py: an image record is (filename, folder, image_size,
  # original_database, person); a train person is (body_bbox, categories, continuous, gender,
  # age) and a val/test person is (body_bbox, categories per annotator, combined categories,
  # continuous per annotator, combined continuous, gender, age).
  combined = split != 'train'
  idx = 0
  for ex_idx, ex in enumerate(mat[split][0]):
    filename, folder = str(_leaves(ex[0])[0]), str(_leaves(ex[1])[0])
    im_w, im_h = _leaves(ex[2])[:2]  # mat2py clamps x with the first, y with the second
    for p_idx, person in enumerate(ex[4][0]):
      where = f'{path}: {split} image {ex_idx} ({folder}/{filename}) person {p_idx}'
      image = _image(image_dir, folder, filename, where, skip_missing, stats)
      if image is None:
        continue
      x1, y1, x2, y2 = _leaves(person[0])[:4]
      x1, x2 = (int(min(im_w, max(0, v))) for v in (x1, x2))
      y1, y2 = (int(min(im_h, max(0, v))) for v in (y1, y2))
      if x2 <= x1 or y2 <= y1:
        stats['empty_box'] = stats.get('empty_box', 0) + 1
        continue
      # np.size, not len(x[0]): MATLAB's empty [] loads as a 0x0 array with no row 0.
      has_cat = np.size(person[1]) > 0 if combined else True
      cats = _leaves(person[2] if combined else person[1]) if has_cat else []
      cont_field = person[4] if combined else person[2]
      has_cont = np.size(person[3]) > 0 if combined else True
      cont = [float(v) for v in _leaves(cont_field)] if has_cont else []
      if not has_cat or not has_cont or len(cont) != 3 or any(math.isnan(v) for v in cont):
        stats['no_annotation'] = stats.get('no_annotation', 0) + 1
        continue
      stats['yielded'] = stats.get('yielded', 0) + 1
      yield f'{split}/{idx}', {'image': image, 'label': -1,
                               'box': np.asarray([x1, y1, x2 - x1, y2 - y1], np.float32),
                               'vad': _vad(cont, where), 'multilabel': multi_hot(cats, where)}
      idx += 1


def examples(manual_dir: str | os.PathLike, split: str, *,
             csv: Mapping[str, str] | None = None, image_dir: str | None = None,
             source: str = 'auto', skip_missing: bool = False,
             stats: dict | None = None) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) for one split; keys are '<split>/<row Index>'.

  Args:
    manual_dir: the EMOTIC root (see the module docstring for the layout).
    split: 'train', 'val' or 'test'.
    csv: {split: path} overriding the default emotic_pre/<split>.csv (then <split>.csv).
    image_dir: root that <Folder>/<Filename> is relative to.
    source: 'csv', 'mat' (Annotations/Annotations.mat, needs scipy) or 'auto' (the CSV when it
      exists, else the .mat).
    skip_missing: skip rows whose image is missing (counted in stats['missing_image']) instead
      of raising ReaderError.
    stats: if given, filled with counts: yielded, missing_image, empty_box, no_annotation.
  """
  if split not in SPLITS:
    raise ValueError(f'EMOTIC has splits {SPLITS}, not {split!r}')
  if source not in ('auto', 'csv', 'mat'):
    raise ValueError(f"source must be 'auto', 'csv' or 'mat', not {source!r}")
  stats = {} if stats is None else stats
  if image_dir is None:
    nested = os.path.join(manual_dir, 'emotic')
    image_dir = nested if os.path.isdir(nested) else manual_dir
  csv_path = _resolve(manual_dir, csv[split]) if csv and split in csv else None
  if csv_path is None and source != 'mat':
    csv_path = _default_csv(manual_dir, split)
  if source == 'mat' or (source == 'auto' and csv_path is None):
    mat_path = os.path.join(manual_dir, 'Annotations', 'Annotations.mat')
    if not os.path.isfile(mat_path):
      raise ReaderError(f'{manual_dir}: found neither emotic_pre/{split}.csv nor {mat_path}; '
                        f'expected {INFO.layout}')
    try:
      import scipy.io  # noqa: F401  (checked here to give a useful message)
    except ImportError:
      raise ReaderError(f'{mat_path}: reading the .mat needs scipy; install it or convert with '
                        "CAGE's mat2py.py and read emotic_pre/<split>.csv") from None
    yield from _read_mat(mat_path, split, image_dir, skip_missing, stats)
    return
  if csv_path is None or not os.path.isfile(csv_path):
    raise ReaderError(f'{csv_path or manual_dir}: no CSV for split {split!r}; expected '
                      f'{INFO.layout}')
  yield from _read_csv(csv_path, split, image_dir, skip_missing, stats)
