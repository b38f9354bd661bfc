"""Tiny on-disk copies of the native layouts of RAF-DB, FER2013, FERPlus, AffectNet and of
class-folder datasets (SFEW, MMA, generic folders), for the reader tests.

Every builder writes real files (random uint8 images through Pillow, CSV / txt / npy label
files) in the exact layout that the matching reader's docstring describes, small enough that a
test builds its own tree.
"""
from __future__ import annotations

import csv
import pathlib

import numpy as np
from PIL import Image

_RNG = np.random.default_rng(0)


def write_image(path: pathlib.Path, size: int = 8, grey: bool = False) -> pathlib.Path:
  """A random image at `path` (format from the extension), parents created."""
  path.parent.mkdir(parents=True, exist_ok=True)
  shape = (size, size) if grey else (size, size, 3)
  Image.fromarray(_RNG.integers(0, 256, shape, dtype=np.uint8)).save(path)
  return path


def write_lines(path: pathlib.Path, lines: list[str]) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(line + '\n' for line in lines))
  return path


def write_csv(path: pathlib.Path, rows: list[list]) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    csv.writer(f).writerows(rows)
  return path


def class_folders(root: pathlib.Path, tree: dict[str, dict[str, int]],
                  ext: str = '.jpg') -> None:
  """root/<split folder>/<class folder>/img<i><ext>, with tree[split][class] images each."""
  for split, classes in tree.items():
    for name, count in classes.items():
      (root / split / name).mkdir(parents=True, exist_ok=True)
      for i in range(count):
        write_image(root / split / name / f'img{i}{ext}')


def rafdb_official(root: pathlib.Path, entries: list[tuple[str, int]],
                   skip_images: tuple[str, ...] = ()) -> pathlib.Path:
  """root/basic/{EmoLabel/list_patition_label.txt, Image/{aligned,original}/}; returns basic/."""
  basic = root / 'basic'
  write_lines(basic / 'EmoLabel' / 'list_patition_label.txt',
              [f'{name} {code}' for name, code in entries])
  for name, _ in entries:
    if name in skip_images:
      continue
    stem = name.rsplit('.', 1)[0]
    write_image(basic / 'Image' / 'original' / name)
    write_image(basic / 'Image' / 'aligned' / f'{stem}_aligned.jpg')
  return basic


def fer2013_csv(path: pathlib.Path, rows: list[tuple[int, str]]) -> list[np.ndarray]:
  """fer2013.csv with one random 48x48 face per (emotion, Usage); returns the faces."""
  faces = [_RNG.integers(0, 256, (48, 48), dtype=np.uint8) for _ in rows]
  write_csv(path, [['emotion', 'pixels', 'Usage']] + [
      [emotion, ' '.join(map(str, face.reshape(-1))), usage]
      for (emotion, usage), face in zip(rows, faces)])
  return faces


FERPLUS_HEADER = ['Usage', 'Image name', 'neutral', 'happiness', 'surprise', 'sadness', 'anger',
                  'disgust', 'fear', 'contempt', 'unknown', 'NF']


def fer2013new_csv(path: pathlib.Path, rows: list[tuple[str, str, list[int]]]) -> pathlib.Path:
  """fer2013new.csv rows (Usage, Image name, 10 votes in FERPlus column order)."""
  return write_csv(path, [FERPLUS_HEADER] + [[u, n, *v] for u, n, v in rows])


def ferplus_folder(folder: pathlib.Path, rows: list[tuple[str, list[int]]], box: bool = True,
                   skip_images: tuple[str, ...] = ()) -> pathlib.Path:
  """FER2013<Split>/label.csv (with or without the box column) and its 48x48 PNGs."""
  write_csv(folder / 'label.csv',
            [[name, '(0, 0, 48, 48)', *votes] if box else [name, *votes] for name, votes in rows])
  for name, _ in rows:
    if name not in skip_images:
      write_image(folder / name, size=48, grey=True)
  return folder


def landmarks(seed: int) -> np.ndarray:
  """68 (x, y) points with two decimals, as in the AffectNet lists."""
  return np.round(np.random.default_rng(seed).uniform(0, 200, (68, 2)), 2).astype(np.float32)


def affectnet_row(rel: str, code: int, valence: float, arousal: float, seed: int) -> list:
  points = ';'.join(f'{v:.2f}' for v in landmarks(seed).reshape(-1))
  return [rel, 10 + seed, 20 + seed, 100 + seed, 110 + seed, points, code, valence, arousal]


AFFECTNET_COLUMNS = ['subDirectory_filePath', 'face_x', 'face_y', 'face_width', 'face_height',
                     'facial_landmarks', 'expression', 'valence', 'arousal']


def affectnet_official(root: pathlib.Path, list_name: str, rows: list[list], header: bool,
                       skip_images: tuple[str, ...] = ()) -> pathlib.Path:
  """Manually_Annotated_file_lists/<list_name> and the images under Manually_Annotated_Images/."""
  path = write_csv(root / 'Manually_Annotated_file_lists' / list_name,
                   ([AFFECTNET_COLUMNS] if header else []) + rows)
  for row in rows:
    if row[0] not in skip_images:
      write_image(root / 'Manually_Annotated_Images' / row[0])
  return path


def affectnet_npy(root: pathlib.Path, set_name: str,
                  items: dict[int, tuple[int, float, float]], as_strings: bool = True) -> None:
  """<set>/images/<n>.jpg + annotations/<n>_{exp,val,aro,lnd}.npy, stored as strings like DAN's."""
  ann = root / set_name / 'annotations'
  ann.mkdir(parents=True, exist_ok=True)
  for n, (exp, val, aro) in items.items():
    write_image(root / set_name / 'images' / f'{n}.jpg')
    for part, value in (('exp', exp), ('val', val), ('aro', aro)):
      np.save(ann / f'{n}_{part}.npy', np.array(str(value) if as_strings else value))
    lnd = landmarks(n).reshape(-1)
    np.save(ann / f'{n}_lnd.npy', lnd.astype(str) if as_strings else lnd)
