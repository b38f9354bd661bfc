"""RAF-DB (basic): the official label list, or one of the class-folder copies in circulation.

Layouts, detected in this order:

1. Official. manual_dir is the folder holding `basic/`, or `basic/` itself:

     basic/EmoLabel/list_patition_label.txt   lines `train_00001.jpg 5`
     basic/Image/aligned/train_00001_aligned.jpg   (100x100; option aligned=True, the default)
     basic/Image/original/train_00001.jpg          (aligned=False)

   The split is the file-name prefix (train_/test_), as every reference loader does:
   12,271 train / 3,068 test. Keys are the names without extension ('train_00001'), the same
   for aligned and original images.

2. Class folders, `<manual_dir>[/DATASET]/<split>/<class>/*`, where the test split is the
   folder `test`, `valid` or `val`:
   - Kaggle style: class folders `1`..`7` holding RAF-DB codes;
   - POSTER style (`raf-db/{train,valid}/<class name>/`): names matched with the synonyms of
     ferjax.data.readers.folder (happiness/happy, ...), or the option classes={folder: name}.
   Keys are paths relative to that root. POSTER's test images are larger than 100x100 and
   differ from the official ones (Talented-Q/POSTER_V2#24), so results on them are not
   comparable to results on the official aligned set.

RAF-DB codes are 1 = surprise, 2 = fear, 3 = disgust, 4 = happiness, 5 = sadness, 6 = anger,
7 = neutral; labels are mapped to the canonical affectnet7 order (code 4 -> happy -> 1).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
import os
import pathlib

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError
from ferjax.data.readers import folder

# Canonical names of RAF-DB codes 1..7, in code order.
NATIVE = ('surprise', 'fear', 'disgust', 'happy', 'sad', 'anger', 'neutral')
CODE_TO_LABEL = {code: idx for code, idx in
                 zip(range(1, 8), labels.index_map(NATIVE, 'affectnet7'), strict=True)}

LABEL_FILE = pathlib.Path('EmoLabel', 'list_patition_label.txt')
SPLIT_FOLDERS = {'train': ('train',), 'test': ('test', 'valid', 'val')}
FOLDER_ROOTS = ('.', 'DATASET')

INFO = DatasetInfo(
    name='rafdb',
    native_classes=NATIVE,
    class_space='affectnet7',
    splits=('train', 'test'),
    layout='[basic/]EmoLabel/list_patition_label.txt + [basic/]Image/{aligned,original}/, or '
           '<split>/<1..7 | class name>/* with split in train|test|valid',
)


def detect_layout(manual_dir: str | os.PathLike) -> tuple[str, pathlib.Path]:
  """('official' | 'folders', base folder) of the RAF-DB copy under manual_dir."""
  root = pathlib.Path(manual_dir)
  official = [root / 'basic', root]
  for base in official:
    if (base / LABEL_FILE).is_file():
      return 'official', base
  folder_bases = [root / r for r in FOLDER_ROOTS]
  aliases = {a for names in SPLIT_FOLDERS.values() for a in names}
  for base in folder_bases:
    if base.is_dir() and any(p.is_dir() and p.name.lower() in aliases for p in base.iterdir()):
      return 'folders', base
  looked = [str(b / LABEL_FILE) for b in official] + [
      f'{b}/{{train,test,valid,val}}/<class>/' for b in folder_bases]
  raise ReaderError(f'{root}: no RAF-DB layout found; looked for the official label list '
                    f'and class folders at: {", ".join(looked)}')


def examples(manual_dir: str | os.PathLike, split: str, *, aligned: bool = True,
             classes: Mapping[str, str | None] | None = None,
             missing: str = 'error') -> Iterator[tuple[str, dict]]:
  """(key, example) for one split; see the module docstring for layouts and options.

  Args:
    manual_dir: the RAF-DB folder (see the layouts above).
    split: 'train' or 'test'.
    aligned: official layout only: the 100x100 aligned faces (True) or the original images.
    classes: class-folder layouts only: {folder name: canonical name}, overriding detection.
    missing: 'error' (default) or 'skip' for images the label list names but the disk lacks.
  """
  folder.check_split(split, INFO.splits)
  policy = folder.MissingFiles(missing, INFO.name)
  layout, base = detect_layout(manual_dir)
  if layout == 'official':
    yield from _official(base, split, aligned, policy)
    policy.report(split)
  else:
    yield from _folders(base, split, classes)


def _official(base: pathlib.Path, split: str, aligned: bool,
              policy: folder.MissingFiles) -> Iterator[tuple[str, dict]]:
  label_file = base / LABEL_FILE
  image_dir = base / 'Image' / ('aligned' if aligned else 'original')
  seen = set()
  with open(label_file, encoding='utf-8') as f:
    for line_no, line in enumerate(f, start=1):
      fields = line.split()
      if not fields:
        continue  # Trailing blank lines are common and carry nothing.
      where = f'{label_file}:{line_no}'
      if len(fields) != 2 or not fields[1].lstrip('-').isdigit():
        raise ReaderError(f'{where}: expected "<image name> <code 1-7>", got {line.strip()!r}')
      name, code = fields[0], int(fields[1])
      if code not in CODE_TO_LABEL:
        raise ReaderError(f'{where}: label {code} is not a RAF-DB code 1-7')
      stem, ext = os.path.splitext(name)
      prefix = stem.split('_', 1)[0]
      if prefix not in INFO.splits:
        raise ReaderError(f'{where}: image name {name!r} starts with neither train_ nor test_, '
                          'so its split is unknown')
      if stem in seen:
        raise ReaderError(f'{where}: image {name!r} is listed twice')
      seen.add(stem)
      if prefix != split:
        continue
      path = image_dir / (f'{stem}_aligned{ext}' if aligned else name)
      if policy.exists(path, where):
        yield stem, {'image': str(path), 'label': CODE_TO_LABEL[code]}


def _folders(base: pathlib.Path, split: str,
             classes: Mapping[str, str | None] | None) -> Iterator[tuple[str, dict]]:
  split_dir = folder.find_split_dir(base, split, SPLIT_FOLDERS)
  names = [p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith('.')]
  if classes is None and names and all(n.isdigit() for n in names):
    # Numeric folders are RAF-DB codes (1..7); a 0-based copy fails loudly on folder '0'.
    classes = {str(code): NATIVE[code - 1] for code in CODE_TO_LABEL}
  mapping = folder.class_folders(split_dir, classes, allowed=NATIVE)
  yield from folder.folder_examples(base, split_dir, mapping)
