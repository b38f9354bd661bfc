"""Dataset specs -> grain random-access sources.

Specs:
  synthetic:DOMAIN:SPLIT        the embedded synthetic benchmark (ferjax.data.synthetic)
  NAME:SPLIT[@DATA_DIR]         a dataset prepared by `python -m ferjax.data.prepare` (NAME is a
                                key of ferjax.data.readers.READERS), e.g. 'rafdb:test',
                                'affectnet:train[:10%]@/data/tfds'. SPLIT is any TFDS split
                                expression. DATA_DIR defaults to $FERJAX_DATA_DIR, else
                                $TFDS_DATA_DIR, else ~/tensorflow_datasets.

A prepared dataset is read whole: `num_examples` (the config's train/eval_examples) sizes only
the synthetic sets; take a subset of a real one with a split slice ('rafdb:train[:1000]'), so
that an eval set is never cut short silently.

Items of a prepared dataset (PreparedSource) follow the example dict of
pipeline.standardize: 'image' uint8 [S,S,3] (RGB; grey repeated), 'label' (in the dataset's class
space), 'index' (position in the split), 'domain' (the dataset's position in READERS), 'key';
'label_dist' float32 [8] when the dataset has votes (emotion votes normalised) or the label is
unknown (all zero, so soft-label losses skip it); 'va' + 'va_mask' (from 'va' or the first two
of 'vad'; mask 0 when missing, marked invalid by 'va_valid', or outside [-1, 1]); 'landmarks'
in [0, 1] of the resized image + 'landmarks_mask'; and 'multilabel' / 'vad' / 'box' as stored.
"""
from __future__ import annotations

import io
import os

import numpy as np

from ferjax.errors import DataError

SPLITS = ('train', 'val', 'test')
NUM_EMOTIONS = 8
_LABELS: dict = {}   # (name, split, data_dir, size) -> labels, see PreparedSource.labels


def parse(spec: str) -> tuple[str, list[str]]:
  name, *rest = spec.strip().split(':')
  return name, rest


def parse_prepared(spec: str) -> tuple[str, str, str | None]:
  """'NAME:SPLIT[@DATA_DIR]' -> (name, split, data_dir or None)."""
  name, _, rest = spec.strip().partition(':')
  split, at, data_dir = rest.partition('@')
  if not name or not split or (at and not data_dir):
    raise DataError(f'bad dataset spec {spec!r}: expected NAME:SPLIT or NAME:SPLIT@DATA_DIR '
                    '(e.g. rafdb:test, rafdb:train[:90%]@/data/tfds)')
  return name, split, (os.path.expanduser(data_dir) if data_dir else None)


def known_names() -> list[str]:
  from ferjax.data import readers
  return ['synthetic', *sorted(readers.READERS)]


def make(spec: str, num_examples: int, image_size: int, seed: int):
  name, rest = parse(spec)
  if name == 'synthetic':
    from ferjax.data import synthetic
    if len(rest) != 2 or rest[0] not in synthetic.DOMAINS or rest[1] not in SPLITS:
      raise DataError(f'bad dataset spec {spec!r}: expected synthetic:DOMAIN:SPLIT with DOMAIN '
                      f'in {synthetic.DOMAINS} and SPLIT in {SPLITS}')
    return synthetic.SyntheticFaces(rest[0], rest[1], num_examples=num_examples,
                                    image_size=image_size, seed=seed)
  from ferjax.data import readers
  if name not in readers.READERS:
    raise DataError(f'unknown dataset {name!r} in spec {spec!r}; known: '
                    f'{", ".join(known_names())}')
  name, split, data_dir = parse_prepared(spec)
  return PreparedSource(name, split, data_dir, image_size=image_size)


def display_name(spec: str) -> str:
  """Short names for tables and file names: 'synthetic:lab:test' -> 'lab/test',
  'rafdb:test@/data' -> 'rafdb/test'."""
  name, rest = parse(spec)
  if name == 'synthetic':
    return '/'.join(rest)
  try:
    name, split, _ = parse_prepared(spec)
  except ValueError:
    return spec
  return f'{name}/{split}'


_GREY_MODES = ('1', 'L', 'LA', 'La', 'F')


def upright_8bit(pil):
  """A just opened PIL image -> the image as it is meant to be seen, in mode 'L' or 'RGB'.

  The one decoding step of every image path: `prepare` (tfds_builder.encode_image) and
  reading (decode_image) both go through it, so a stored image and a converted one read alike.
  - EXIF orientation is applied as PIL's ImageOps.exif_transpose applies it (the tag is then
    dropped, so an image written from the result is not turned twice).
  - 16-bit grey ('I;16*', and 'I' as Pillow opens some 16-bit files) is scaled to 8 bits,
    round(v / 257), keeping the full range; a plain convert would clip every value above 255.
  - Other grey modes become 'L', colour ones 'RGB' (alpha dropped, palette and CMYK converted).
  """
  from PIL import Image, ImageOps
  ImageOps.exif_transpose(pil, in_place=True)
  if pil.mode == 'I' or pil.mode.startswith('I;16'):
    wide = np.clip(np.asarray(pil).astype(np.int64), 0, 65535)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
  if pil.mode in ('L', 'RGB'):
    return pil
  return pil.convert('L' if pil.mode in _GREY_MODES else 'RGB')


def decode_image(data: bytes, image_size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
  """Encoded image -> (uint8 [S,S,3] RGB, (width, height) before resizing).

  The image is made upright and 8-bit (upright_8bit: EXIF orientation applied, 16-bit grey
  scaled), grey is repeated to RGB, then the whole image is resized to a square (bilinear;
  Pillow widens the filter when it shrinks, i.e. it antialiases). The size is that of the
  upright image, the frame that stored landmarks are in. image_size None keeps the size.
  """
  from PIL import Image
  with Image.open(io.BytesIO(data)) as pil:
    pil = upright_8bit(pil)
    size = pil.size
    if pil.mode != 'RGB':
      pil = pil.convert('RGB')
    if image_size and pil.size != (image_size, image_size):
      pil = pil.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(pil, np.uint8), size


class PreparedSource:
  """grain random-access source (`__len__`, `__getitem__`) over a prepared TFDS split.

  The TFDS data source is opened lazily and dropped when pickled, so the source travels to
  grain worker processes cheaply and each opens its own files.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None, image_size: int = 112):
    from ferjax.data import readers, tfds_builder
    self.name, self.split, self.image_size = name, split, int(image_size)
    self.data_dir = os.path.abspath(os.path.expanduser(data_dir or tfds_builder.default_data_dir()))
    builder = tfds_builder.open_prepared(name, self.data_dir)
    self.features = tuple(builder.info.features.keys())
    self.class_names = tuple(builder.info.features['label'].names)
    self.domain = list(readers.READERS).index(name)
    self._ds = None
    try:   # any TFDS split expression: 'train', 'train[:10%]', 'train+val', 'all'
      self.num_examples = len(self._source())
    except (KeyError, ValueError, AssertionError) as e:
      raise DataError(f'dataset {name!r} in {self.data_dir} has no split {split!r} ({e}); its '
                      f'splits: {sorted(builder.info.splits)}') from e

  def _source(self):
    if self._ds is None:
      import tensorflow_datasets as tfds
      # Images come as bytes and are decoded here, with one code path for every format.
      self._ds = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir,
                                  download=False,
                                  decoders={'image': tfds.decode.SkipDecoding()})
    return self._ds

  def __getstate__(self):
    return {**self.__dict__, '_ds': None}

  def __len__(self) -> int:
    return self.num_examples

  def record(self, index: int) -> dict:
    """The stored record (image still encoded)."""
    return self._source()[self._check(index)]

  def _check(self, index: int) -> int:
    index = int(index)
    if index < 0:
      index += self.num_examples
    if not 0 <= index < self.num_examples:
      raise IndexError(f'index {index} out of range for {self.num_examples} examples')
    return index

  def labels(self) -> np.ndarray:
    """int64 [N] labels of the split (images not decoded), read once per process: the epoch
    size, the training order and evaluation each build their own source of the same split."""
    key = (self.name, self.split, self.data_dir, self.num_examples)
    if key not in _LABELS:
      from ferjax import runtime
      src = self._source()
      _LABELS[key] = np.array([int(src[i]['label']) for i in runtime.progress(
          range(self.num_examples), desc=f'{self.name}:{self.split} labels')], np.int64)
    return _LABELS[key]

  def votes(self) -> np.ndarray:
    """int64 [N, 10] annotator votes of the split (canonical order, then unknown and
    not-a-face), images not decoded; a DataError when the dataset stores none."""
    if 'votes' not in self.features:
      raise DataError(f'dataset {self.name!r} stores no annotator votes; label modes, N-hot '
                      'and the paper split need them (FERPlus or the synthetic benchmark)')
    key = (self.name, self.split, self.data_dir, self.num_examples, 'votes')
    if key not in _LABELS:
      src = self._source()
      _LABELS[key] = np.stack([np.asarray(src[i]['votes'], np.int64)
                               for i in range(self.num_examples)])
    return _LABELS[key]

  def __getitem__(self, index: int) -> dict:
    index = self._check(index)
    return self.to_example(self._source()[index], index)

  def to_example(self, rec: dict, index: int) -> dict:
    image, (width, height) = decode_image(rec['image'], self.image_size)
    label = int(rec['label'])
    key = rec['key']
    out = {'image': image, 'label': np.int32(label), 'index': np.int32(index),
           'domain': np.int32(self.domain),
           'key': key.decode('utf-8') if isinstance(key, bytes) else str(key)}
    votes = np.asarray(rec['votes'], np.float32)[:NUM_EMOTIONS] if 'votes' in rec else None
    if votes is not None:
      out['votes'] = np.asarray(rec['votes'], np.float32)
    if votes is not None and votes.sum() > 0:
      out['label_dist'] = votes / votes.sum()
    elif label < 0:
      out['label_dist'] = np.zeros(NUM_EMOTIONS, np.float32)
    va = rec.get('va')
    if va is None and 'vad' in rec:
      va = rec['vad'][:2]
    if va is not None:
      va = np.asarray(va, np.float32)
      ok = bool(np.all(np.isfinite(va)) and np.all(np.abs(va) <= 1)
                and rec.get('va_valid', True))
      out['va'] = va if ok else np.zeros(2, np.float32)
      out['va_mask'] = np.float32(ok)
    if 'landmarks' in rec:
      pts = np.asarray(rec['landmarks'], np.float32)
      ok = bool(np.all(np.isfinite(pts)))
      scale = np.array([width, height], np.float32)
      out['landmarks'] = pts / scale if ok else np.zeros_like(pts)
      out['landmarks_mask'] = np.float32(ok)
    for name in ('vad', 'multilabel', 'box'):
      if name in rec:
        out[name] = np.asarray(rec[name], np.float32)
    return out

  def __repr__(self) -> str:
    return (f'PreparedSource({self.name!r}, split={self.split!r}, data_dir={self.data_dir!r}, '
            f'image_size={self.image_size}, num_examples={self.num_examples})')
