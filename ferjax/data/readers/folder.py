"""Generic class-folder datasets: `ROOT/<split>/<class name>/**/<image>` (torchvision ImageFolder).

Also the shared machinery of the other folder-shaped readers (SFEW, MMA, RAF-DB's folder
variants): folder-name synonyms, split-folder lookup, and the policy for listed images that do
not exist (`MissingFiles`).

Options of `examples`:
  classes: {folder name: canonical name or None}. Replaces the default synonyms, so every
    class folder must be listed; None skips a folder on purpose (logged). Default: the
    case-insensitive synonyms in SYNONYMS (angry/anger, happy/happiness/joy, ...).

Labels are indices in CANONICAL order, which is also the order of the first seven entries of
affectnet7, so one integer means the same class in both spaces. `info(manual_dir)` says which
space applies: affectnet8 when some folder maps to contempt, else affectnet7. INFO (static)
declares affectnet8, the space that holds every label this reader can yield.

Split folders are matched case-insensitively: train = train/training, val = val/valid/
validation, test = test. A tree need not have every split: `info(manual_dir)` declares the
splits whose folder exists, so a tree with only train/ and test/ prepares as it is. Images are
every file with an image extension, found recursively (as ImageFolder does) in sorted order;
other files are skipped, counted in a warning and named to `prepare` (skipped_images.txt).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import os
import pathlib

from absl import logging

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError, skip_file

IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.gif'})

# Lower-case folder name -> canonical class name. Folder datasets name classes in their own
# words and case (SFEW 'Angry', RAF-DB 'happiness', FERG 'joy'); one table keeps them aligned.
SYNONYMS = {
    'neutral': 'neutral', 'neutrality': 'neutral',
    'happy': 'happy', 'happiness': 'happy', 'joy': 'happy',
    'sad': 'sad', 'sadness': 'sad',
    'surprise': 'surprise', 'surprised': 'surprise',
    'fear': 'fear', 'fearful': 'fear', 'afraid': 'fear',
    'disgust': 'disgust', 'disgusted': 'disgust',
    'anger': 'anger', 'angry': 'anger',
    'contempt': 'contempt',
}

SPLIT_FOLDERS = {
    'train': ('train', 'training'),
    'val': ('val', 'valid', 'validation'),
    'test': ('test',),
}

MISSING_POLICIES = ('error', 'skip')

INFO = DatasetInfo(
    name='folder',
    native_classes=labels.CANONICAL,
    class_space='affectnet8',
    splits=tuple(SPLIT_FOLDERS),
    layout='ROOT/<split>/<class name>/**/*.{jpg,png,...}, split in train|val|test',
)


class MissingFiles:
  """Applies the `missing=` option to images that a label file lists but the disk lacks.

  'error' (default) raises at the first one, naming it and the listing line; 'skip' drops them
  and logs how many when the reader finishes, so a partial download never shrinks a split
  without a trace.
  """

  def __init__(self, policy: str, dataset: str):
    if policy not in MISSING_POLICIES:
      raise ValueError(f'missing={policy!r}; expected one of {MISSING_POLICIES}')
    self.policy = policy
    self.dataset = dataset
    self.count = 0

  def exists(self, path: str | os.PathLike, where: str) -> bool:
    """True if `path` exists; otherwise raises or counts it. `where` is 'file:line'."""
    if os.path.exists(path):
      return True
    if self.policy == 'error':
      raise ReaderError(f'{where}: listed image {path} does not exist '
                        "(pass missing='skip' to drop missing images)")
    self.count += 1
    return False

  def report(self, split: str) -> None:
    if self.count:
      logging.warning('%s/%s: skipped %d listed images that do not exist (missing=%r)',
                      self.dataset, split, self.count, self.policy)


def check_split(split: str, splits: Sequence[str]) -> None:
  if split not in splits:
    raise ValueError(f'unknown split {split!r}; this dataset has {", ".join(splits)}')


def canonical_of(name: str, classes: Mapping[str, str | None] | None = None) -> str | None:
  """Canonical class name of a folder name, '' if unknown, None if mapped to None (skipped)."""
  if classes is not None:
    if name in classes:
      target = classes[name]
    else:
      lowered = {k.lower(): v for k, v in classes.items()}
      if name.lower() not in lowered:
        return ''
      target = lowered[name.lower()]
    if target is None:
      return None
    # Values may themselves be synonyms ('Happiness'); they must end up canonical.
    canonical = SYNONYMS.get(target.lower(), target)
    if canonical not in labels.CANONICAL:
      raise ValueError(f'classes[{name!r}] = {target!r} is not a canonical class name '
                       f'{labels.CANONICAL}')
    return canonical
  return SYNONYMS.get(name.lower(), '')


def find_split_dir(root: pathlib.Path, split: str,
                   aliases: Mapping[str, Sequence[str]] = SPLIT_FOLDERS) -> pathlib.Path:
  """The one folder under `root` whose name (any case) is an alias of `split`."""
  if not root.is_dir():
    raise ReaderError(f'{root}: not a directory')
  wanted = {a.lower() for a in aliases[split]}
  found = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in wanted)
  if not found:
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise ReaderError(f'{root}: no folder for split {split!r} (looked for '
                      f'{"/".join(aliases[split])}, any case); folders present: {present}')
  if len(found) > 1:
    raise ReaderError(f'{root}: several folders for split {split!r}: '
                      f'{[p.name for p in found]}; keep one')
  return found[0]


def class_folders(split_dir: pathlib.Path,
                  classes: Mapping[str, str | None] | None = None,
                  allowed: Sequence[str] = labels.CANONICAL) -> dict[str, str]:
  """{folder name: canonical name} for the class folders of `split_dir`.

  Raises ReaderError listing every folder whose name is unknown or maps outside `allowed`, so
  one run shows all the renames needed rather than one per attempt.
  """
  mapping, unknown, skipped = {}, [], []
  for sub in sorted(p for p in split_dir.iterdir() if p.is_dir()):
    if sub.name.startswith('.'):
      continue
    canonical = canonical_of(sub.name, classes)
    if canonical is None:
      skipped.append(sub.name)
    elif canonical == '' or canonical not in allowed:
      unknown.append(sub.name)
    else:
      mapping[sub.name] = canonical
  if unknown:
    how = (f'not among the expected folders {list(classes)}' if classes is not None else
           'not known class names (pass classes={folder: canonical name})')
    raise ReaderError(f'{split_dir}: class folders {unknown} are {how}; accepted classes: '
                      f'{list(allowed)}')
  if skipped:
    logging.info('%s: skipping class folders %s (mapped to None)', split_dir, skipped)
  if not mapping:
    raise ReaderError(f'{split_dir}: no class folders')
  return mapping


def folder_examples(root: pathlib.Path, split_dir: pathlib.Path, mapping: Mapping[str, str],
                    ) -> Iterator[tuple[str, dict]]:
  """Examples of every image under split_dir/<folder> for the folders in `mapping`.

  Keys are paths relative to `root`, so they name the file a prepared example came from.
  """
  space = labels.CANONICAL
  other = 0
  for folder in sorted(mapping):
    label = space.index(mapping[folder])
    for dirpath, dirnames, filenames in os.walk(split_dir / folder):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
      for name in sorted(filenames):
        path = pathlib.Path(dirpath, name)
        key = path.relative_to(root).as_posix()
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
          other += 1
          skip_file(key, f'not an image extension: {path.suffix or "(none)"}')
          continue
        yield key, {'image': str(path), 'label': label}
  if other:
    logging.warning('%s: skipped %d files without an image extension %s (prepare lists them '
                    'in skipped_images.txt)', split_dir, other, sorted(IMAGE_EXTENSIONS))


def info(manual_dir: str | os.PathLike | None = None,
         classes: Mapping[str, str | None] | None = None) -> DatasetInfo:
  """INFO of this tree: the splits that have a folder (all three when none has, so that
  reading one names what is missing) and affectnet8 if a class folder maps to contempt."""
  if manual_dir is None:
    return INFO
  root = pathlib.Path(manual_dir)
  names, present = set(), []
  for split, aliases in SPLIT_FOLDERS.items():
    # A tree need not have every split; but a bad class folder in one that exists is an error.
    if root.is_dir() and any(p.is_dir() and p.name.lower() in aliases for p in root.iterdir()):
      present.append(split)
      names.update(class_folders(find_split_dir(root, split), classes).values())
  space = 'affectnet8' if 'contempt' in names else 'affectnet7'
  return DatasetInfo(name=INFO.name, native_classes=labels.class_names(space),
                     class_space=space, splits=tuple(present) or INFO.splits, layout=INFO.layout)


def examples(manual_dir: str | os.PathLike, split: str, *,
             classes: Mapping[str, str | None] | None = None) -> Iterator[tuple[str, dict]]:
  """(key, example) for every image of ROOT/<split>/<class>/; see the module docstring."""
  check_split(split, INFO.splits)
  root = pathlib.Path(manual_dir)
  split_dir = find_split_dir(root, split)
  yield from folder_examples(root, split_dir, class_folders(split_dir, classes))
