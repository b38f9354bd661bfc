"""Aff-Wild2 expression frames (ABAW EXPR challenge): per-frame labels on cropped, aligned faces.

Layout under manual_dir:

  annotations/EXPR_Set/Train_Set/<video>.txt        train annotations, one file per video
  annotations/EXPR_Set/Validation_Set/<video>.txt   val annotations
  cropped_aligned/<video>/<frame:05d>.jpg           the released cropped-aligned faces

Copies from other ABAW rounds may name the annotation folder differently: pass annotation_dir
(the folder that holds Train_Set and Validation_Set) and frames_dir. Videos with two annotated
people have one file per person (e.g. `<video>_left.txt`, `<video>_right.txt`) and a frames
folder of the same name, so the file stem is always taken as the frames folder's name.

An annotation file's first line is the header `Neutral,Anger,Disgust,Fear,Happiness,Sadness,
Surprise,Other` (checked, case-insensitively: it is the only statement of the code order), then
one integer per video frame: line k + 1 labels frame k (frames are 1-based, like the image
names). -1 means the frame is not annotated. Frame images are matched by the integer value of
their stem, so any zero padding or image extension works.

Skipped, counted in `stats` and logged once per split:
  ignored        frames labelled -1
  other          frames labelled 7 ('Other' has no canonical class) with other='drop'; with
                 other='unknown' they are kept with label -1 instead
  missing_image  annotated frames without an image (faces the detector missed are absent from
                 cropped_aligned; a whole missing video folder also counts in missing_video)
Labels are in 'affectnet7' (neutral, happy, sad, surprise, fear, disgust, anger).
"""
from __future__ import annotations

import os
from typing import Iterator

from absl import logging

from ferjax import labels
from ferjax.data.readers import DatasetInfo, ReaderError

SPLIT_DIRS = {'train': 'Train_Set', 'val': 'Validation_Set'}
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')

# The header every annotation file must start with (lower-cased), i.e. the native code order.
HEADER = ('neutral', 'anger', 'disgust', 'fear', 'happiness', 'sadness', 'surprise', 'other')
# The one native -> canonical table: native code 0..6 -> canonical name; code 7 ('Other') has
# no canonical class and is handled by the `other` option.
NATIVE = ('neutral', 'anger', 'disgust', 'fear', 'happy', 'sad', 'surprise')
OTHER = 7
IGNORE = -1
TO_CANONICAL = labels.index_map(NATIVE, 'affectnet7')

INFO = DatasetInfo(
    name='affwild2',
    native_classes=NATIVE,
    class_space='affectnet7',
    splits=tuple(SPLIT_DIRS),
    layout='annotations/EXPR_Set/{Train_Set,Validation_Set}/<video>.txt and '
           'cropped_aligned/<video>/<frame:05d>.jpg',
)


def read_annotation(path: str) -> list[int]:
  """The native codes of one annotation file, frame 1 first; -1 = not annotated."""
  with open(path, encoding='utf-8-sig') as f:
    lines = f.read().splitlines()
  header = tuple(h.strip().lower() for h in lines[0].split(',')) if lines else ()
  if header != HEADER:
    raise ReaderError(f'{path}:1: expected the header {",".join(h.title() for h in HEADER)}, '
                      f'got {lines[0] if lines else "an empty file"!r}')
  while len(lines) > 1 and not lines[-1].strip():
    lines.pop()  # trailing blank lines; a blank line inside would shift every later frame
  codes = []
  for n, line in enumerate(lines[1:], 2):
    try:
      code = int(line.strip())
    except ValueError:
      raise ReaderError(f'{path}:{n}: expected one integer code per frame, got {line!r}') from None
    if not IGNORE <= code <= OTHER:
      raise ReaderError(f'{path}:{n}: unknown expression code {code}; expected -1 (ignore) or '
                        f'0..7 ({",".join(HEADER)})')
    codes.append(code)
  return codes


def _frames(video_dir: str) -> dict[int, str]:
  """{frame number: file name} of a cropped_aligned video folder ({} when it is missing)."""
  if not os.path.isdir(video_dir):
    return {}
  out = {}
  for name in sorted(os.listdir(video_dir)):
    stem, ext = os.path.splitext(name)
    if stem.isdigit() and ext.lower() in IMAGE_EXTS:
      out.setdefault(int(stem), name)
  return out


def _under(manual_dir: str, path: str | None, default: str) -> str:
  """An option's folder: absolute as given, else relative to manual_dir (default when unset)."""
  if path and os.path.isabs(path):
    return path
  return os.path.join(manual_dir, *(path or default).split('/'))


def examples(manual_dir: str | os.PathLike, split: str, *,
             annotation_dir: str | None = None, frames_dir: str | None = None,
             other: str = 'drop',
             stats: dict | None = None) -> Iterator[tuple[str, dict]]:
  """Yields (key, example) per usable frame; keys are '<video>/<frame:05d>'.

  Args:
    manual_dir: the Aff-Wild2 root.
    split: 'train' or 'val' (the test labels were never released).
    annotation_dir: folder with Train_Set/ and Validation_Set/ (default
      manual_dir/annotations/EXPR_Set); relative paths are relative to manual_dir.
    frames_dir: folder with one sub-folder of frames per video (default manual_dir/cropped_aligned).
    other: 'drop' skips frames labelled Other (code 7); 'unknown' keeps them with label -1.
    stats: if given, filled with counts: videos, frames, yielded, ignored, other, missing_image,
      missing_video.
  """
  if split not in SPLIT_DIRS:
    raise ValueError(f'Aff-Wild2 EXPR has splits {tuple(SPLIT_DIRS)}, not {split!r}')
  if other not in ('drop', 'unknown'):
    raise ValueError(f"other must be 'drop' or 'unknown', not {other!r}")
  ann_root = os.path.join(_under(manual_dir, annotation_dir, 'annotations/EXPR_Set'),
                          SPLIT_DIRS[split])
  frames_root = _under(manual_dir, frames_dir, 'cropped_aligned')
  for path in (ann_root, frames_root):
    if not os.path.isdir(path):
      raise ReaderError(f'{path}: missing folder; expected {INFO.layout}')
  counts = {k: 0 for k in ('videos', 'frames', 'yielded', 'ignored', 'other', 'missing_image',
                           'missing_video')}
  if stats is not None:
    stats.update(counts)
    counts = stats
  videos = sorted(f for f in os.listdir(ann_root) if f.lower().endswith('.txt'))
  for name in videos:
    video = os.path.splitext(name)[0]
    codes = read_annotation(os.path.join(ann_root, name))
    video_dir = os.path.join(frames_root, video)
    frames = _frames(video_dir)
    counts['videos'] += 1
    counts['missing_video'] += not frames
    for frame, code in enumerate(codes, 1):
      counts['frames'] += 1
      if code == IGNORE:
        counts['ignored'] += 1
        continue
      if code == OTHER and other == 'drop':
        counts['other'] += 1
        continue
      if frame not in frames:
        counts['missing_image'] += 1
        continue
      counts['yielded'] += 1
      label = -1 if code == OTHER else TO_CANONICAL[code]
      yield f'{video}/{frame:05d}', {'image': os.path.join(video_dir, frames[frame]),
                                     'label': label}
  logging.info('Aff-Wild2 %s: %s', split, ', '.join(f'{k} {v}' for k, v in counts.items()))
