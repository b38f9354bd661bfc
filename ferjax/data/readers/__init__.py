"""Readers of the FER datasets' native on-disk formats, one module each.

A reader module defines:

  INFO: DatasetInfo            what the dataset is and holds
  examples(manual_dir, split, **options) -> Iterator[(key, Example dict)]

An Example dict holds:
  'image'      str path to an image file, or encoded bytes (PNG/JPEG), or uint8 [H,W] / [H,W,3]
  'label'      int, index in INFO.class_space (canonical order, ferjax.labels); -1 unknown
and, when INFO.features lists them:
  'votes'      int32 [10] FERPlus-style counts (8 emotions in canonical order, unknown, NF)
  'va'         float32 [2] valence, arousal in [-1, 1]; 'vad' float32 [3] with dominance
  'landmarks'  float32 [68, 2] (x, y) in pixels of the stored image
  'box'        float32 [4] x, y, w, h in pixels (face or body box to crop)
  'multilabel' float32 [M] multi-hot over INFO.multilabel_space
Keys are stable strings (relative path or row id) so a prepared dataset can be traced back.

Every native class order is mapped to the canonical one in one declared table per module; a
malformed line, a missing file or an unknown code raises ReaderError naming the file and line.
A file that a reader leaves out on purpose (e.g. a class folder's file without an image
extension) is reported with `skip_file(key, reason)`, so that `prepare` names it in
skipped_images.txt instead of only counting it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib

from ferjax.errors import DataError, UserError

READERS = {
    'rafdb': 'ferjax.data.readers.rafdb',
    'fer2013': 'ferjax.data.readers.fer2013',
    'ferplus': 'ferjax.data.readers.fer2013',
    'affectnet': 'ferjax.data.readers.affectnet',
    'sfew': 'ferjax.data.readers.sfew',
    'mma': 'ferjax.data.readers.mma',
    'emotic': 'ferjax.data.readers.emotic',
    'lsd': 'ferjax.data.readers.lsd',
    'affwild2': 'ferjax.data.readers.affwild2',
    'jaffe': 'ferjax.data.readers.jaffe',
    'ferg': 'ferjax.data.readers.ferg',
    'folder': 'ferjax.data.readers.folder',
}


class ReaderError(UserError, ValueError):
  """The files under manual_dir do not have the expected format; says which file and line.

  A UserError, so that a command prints it as one `error:` line; a ValueError too, for code
  that catches those."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  native_classes: tuple[str, ...]   # canonical names, in the dataset's own label order
  class_space: str                  # ferjax.labels space of 'label' (affectnet8/7, lsd6)
  splits: tuple[str, ...]
  features: tuple[str, ...] = ()    # optional Example keys present: votes, va, vad, ...
  multilabel_space: str = ''        # ferjax.labels.MULTILABEL_SPACES key, when 'multilabel'
  layout: str = ''                  # the expected layout under manual_dir, for error messages


def get(name: str):
  """The reader module of a dataset name."""
  if name not in READERS:
    raise DataError(f'unknown dataset {name!r}; known: {", ".join(sorted(READERS))}')
  return importlib.import_module(READERS[name])


# Where skip_file records, while a builder reads a split (see collecting_skipped).
_skipped_sink: list | None = None


def skip_file(key: str, reason: str) -> None:
  """Records a file the reader leaves out on purpose; outside `collecting_skipped` (a reader
  used on its own) only the reader's own log line tells of it."""
  if _skipped_sink is not None:
    _skipped_sink.append((str(key), reason))


@contextlib.contextmanager
def collecting_skipped(sink: list):
  """skip_file appends (key, reason) to `sink` inside this block."""
  global _skipped_sink
  previous, _skipped_sink = _skipped_sink, sink
  try:
    yield sink
  finally:
    _skipped_sink = previous
