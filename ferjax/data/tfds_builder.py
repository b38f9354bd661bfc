"""Prepared datasets: one TFDS builder per reader (ferjax.data.readers), written as ArrayRecord.

A builder class is made at run time from the reader's INFO, so adding a reader module is all it
takes to prepare a dataset; nothing here knows any one dataset. The builder's name is the
dataset's name in `readers.READERS`, so a prepared dataset is read back by that name with
`tfds.data_source(name, split=..., data_dir=...)` (ferjax.data.sources), without the reader or
this module being imported.

Features of every example:
  image   tfds.features.Image, encoded bytes. A file the reader names is stored byte for byte
          when it is a PNG or JPEG (no re-encoding loss; sources decode it when read); other
          formats (TIFF, BMP, ...) are decoded as sources decode (sources.upright_8bit: EXIF
          orientation applied, 16-bit grey scaled to 8 bits, grey kept grey) and arrays are
          taken as they are; both become PNG. So boxes and landmarks are in pixels of the
          upright image, whichever way it is stored.
  label   ClassLabel over the names of INFO.class_space (canonical order); -1 unknown.
  key     Text, the reader's stable key (relative path or row id), to trace an example back.
and, for each name in INFO.features, a fixed-shape Tensor (FEATURE_SHAPES). An example that
lacks one of them gets a sentinel (FEATURE_FILL: NaN for floats, 0 votes), which sources turn
into a zero mask; Example keys that INFO.features does not declare are not stored. Readers
whose INFO depends on the tree or the options define `info(...)` (see reader_info).

Builder options (`--option k=v` of ferjax.data.prepare; all other options go to the reader):
  crop_box=True     crop each image to its 'box' (x, y, w, h) and shift landmarks and box into
                    the crop; crops are re-encoded (JPEG q95 for JPEG sources, else PNG).
  crop_margin=0.2   grow the box by this fraction of its size on every side before cropping
                    (default 0); the crop is clipped to the image, never padded.

The builders are not registered with TFDS (they are made afresh per run, and registering twice
raises), take their description from INFO instead of README/CITATIONS files beside the module,
and have no code_path (there are no checksums to find), so they need no package folder of
their own.
"""
from __future__ import annotations

import inspect
import io
import os
import types
from typing import Iterator

import numpy as np

from ferjax import labels
from ferjax.data import readers, sources

VERSION = '1.0.0'
FILE_FORMAT = 'array_record'
NUM_LANDMARKS = 68
# Optional Example keys (readers/__init__.py) -> (shape, dtype); 'multilabel' is sized by
# INFO.multilabel_space. 'va_valid' (AffectNet's reader) is False where the dataset marks
# valence/arousal as missing.
FEATURE_SHAPES = {
    'votes': ((10,), np.int32),
    'va': ((2,), np.float32),
    'va_valid': ((), np.bool_),
    'vad': ((3,), np.float32),
    'landmarks': ((NUM_LANDMARKS, 2), np.float32),
    'box': ((4,), np.float32),
}
# What an example without the feature stores; floats not listed get NaN. A missing va_valid
# claims nothing: the values themselves (NaN when missing) decide.
FEATURE_FILL = {'votes': 0, 'va_valid': True}
# bad_images: 'skip' (default) leaves out an image that cannot be decoded (missing bytes,
# truncated or corrupt file) and counts it: `prepare` reports them at the end and writes their
# keys and reasons to DATA_DIR/NAME/skipped_images.txt; 'error' stops at the first one.
BUILDER_OPTIONS = {'crop_box': False, 'crop_margin': 0.0, 'bad_images': 'skip'}
# (dataset name, split) -> [(key, reason)] of the images skipped by the last build.
SKIPPED: dict[tuple[str, str], list[tuple[str, str]]] = {}
# (dataset name, split) -> [(key, reason)] of the files the reader left out on purpose in the
# last build (readers.skip_file, e.g. no image extension); listed beside SKIPPED.
NOT_IMAGES: dict[tuple[str, str], list[tuple[str, str]]] = {}


class BadImage(readers.ReaderError):
  """An image file that cannot be read or decoded."""
# Encodings that every TFDS image decoder reads; anything else is converted to PNG.
_KEPT_FORMATS = ('PNG', 'JPEG')


def default_data_dir() -> str:
  """Where prepared datasets live unless a spec or flag says otherwise: $FERJAX_DATA_DIR, else
  $TFDS_DATA_DIR, else TFDS's own default (~/tensorflow_datasets)."""
  for var in ('FERJAX_DATA_DIR', 'TFDS_DATA_DIR'):
    if os.environ.get(var):
      return os.path.expanduser(os.environ[var])
  return os.path.join(os.path.expanduser('~'), 'tensorflow_datasets')


def prepared_versions(name: str, data_dir: str) -> list[str]:
  """Versions of `name` fully written under data_dir (those with a dataset_info.json)."""
  root = os.path.join(data_dir, name)
  if not os.path.isdir(root):
    return []
  return sorted(v for v in os.listdir(root)
                if os.path.isfile(os.path.join(root, v, 'dataset_info.json')))


def prepare_command(name: str, data_dir: str, manual_dir: str | None = None) -> str:
  """The command line that prepares `name` into data_dir."""
  manual_dir = manual_dir or f'/path/to/raw/{name}'
  return (f'python -m ferjax.data.prepare --dataset {name} --manual_dir {manual_dir} '
          f'--data_dir {os.path.abspath(data_dir)}')


def load_reader(name: str):
  """(module, static INFO) of a dataset name; errors list the known names or say what is missing.

  The static INFO is the module's INFOS[name] when one module reads several datasets (fer2013 /
  ferplus), else its INFO; `reader_info` refines it with manual_dir and options.
  """
  try:
    module = readers.get(name)        # ValueError listing the known names
  except ModuleNotFoundError as e:
    if e.name and readers.READERS[name].startswith(e.name):
      raise ValueError(f'the reader of {name!r} ({readers.READERS[name]}) is not installed') from e
    raise
  info = getattr(module, 'INFOS', {}).get(name, getattr(module, 'INFO', None))
  if not isinstance(info, readers.DatasetInfo) or not callable(getattr(module, 'examples', None)):
    raise ValueError(f'reader module {module.__name__} does not follow the reader contract '
                     '(INFO: DatasetInfo and examples(manual_dir, split, **options))')
  return module, info


def _accepted(fn, candidates: dict) -> dict:
  """The entries of `candidates` that `fn` takes as keyword arguments."""
  params = inspect.signature(fn).parameters
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return dict(candidates)
  return {k: v for k, v in candidates.items() if k in params}


def reader_info(name: str, module, manual_dir: str, options: dict) -> readers.DatasetInfo:
  """The DatasetInfo that describes what `examples` will yield for this tree and these options.

  Readers whose class space or features depend on the tree or the options (folder: contempt or
  not; affectnet: num_classes and layout; fer2013/ferplus: which dataset) define
  `info(...)`; it gets whichever of dataset=name, manual_dir and the reader options it takes.
  """
  _, info = load_reader(name)
  if callable(getattr(module, 'info', None)):
    info = module.info(**_accepted(module.info, {'dataset': name, 'manual_dir': manual_dir,
                                                 **options}))
  return info


def reader_options(name: str, module, options: dict) -> dict:
  """Options for `examples`: a module that reads several datasets is told which (dataset=)."""
  params = inspect.signature(module.examples).parameters
  if 'dataset' in params and 'dataset' not in options:
    return {'dataset': name, **options}
  return dict(options)


def feature_shapes(info: readers.DatasetInfo) -> dict:
  """Optional feature name -> (shape, dtype) for the features INFO declares."""
  out = {}
  for key in info.features:
    if key == 'multilabel':
      if info.multilabel_space not in labels.MULTILABEL_SPACES:
        raise ValueError(f'{info.name}: multilabel_space {info.multilabel_space!r} is not one of '
                         f'{sorted(labels.MULTILABEL_SPACES)}')
      out[key] = ((len(labels.MULTILABEL_SPACES[info.multilabel_space]),), np.float32)
    elif key in FEATURE_SHAPES:
      out[key] = FEATURE_SHAPES[key]
    else:
      raise ValueError(f'{info.name}: unknown optional feature {key!r}; known: '
                       f'{sorted([*FEATURE_SHAPES, "multilabel"])}')
  return out


def features_dict(info: readers.DatasetInfo):
  import tensorflow_datasets as tfds
  feats = {
      # Declared 3-channel: TFDS's own decoders repeat grey images to 3 channels.
      'image': tfds.features.Image(shape=(None, None, 3)),
      'label': tfds.features.ClassLabel(names=list(labels.class_names(info.class_space))),
      'key': tfds.features.Text(),
  }
  for key, (shape, dtype) in feature_shapes(info).items():
    feats[key] = tfds.features.Tensor(shape=shape, dtype=dtype)
  return tfds.features.FeaturesDict(feats)


def split_options(options: dict) -> tuple[dict, dict]:
  """(builder options with defaults filled, reader options)."""
  ours = dict(BUILDER_OPTIONS)
  ours.update({k: v for k, v in options.items() if k in BUILDER_OPTIONS})
  return ours, {k: v for k, v in options.items() if k not in BUILDER_OPTIONS}


def open_prepared(name: str, data_dir: str | None = None):
  """The TFDS builder of a prepared dataset, read back by name from data_dir (no reader needed).

  Raises ValueError for a name that is no dataset (listing the known ones) and
  FileNotFoundError with the exact prepare command when it was not prepared into data_dir.
  """
  import tensorflow_datasets as tfds
  if name not in readers.READERS:
    raise ValueError(f'unknown dataset {name!r}; known: {", ".join(sorted(readers.READERS))}')
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  if not prepared_versions(name, data_dir):
    raise FileNotFoundError(
        f'dataset {name!r} is not prepared under {os.path.abspath(data_dir)}; prepare it with\n'
        f'  {prepare_command(name, data_dir)}\n'
        f'(or point at another folder with NAME:SPLIT@DATA_DIR or $FERJAX_DATA_DIR)')
  return tfds.builder(name, data_dir=data_dir)


# ---------------------------------------------------------------------------------------------
# Examples -> records
# ---------------------------------------------------------------------------------------------
def _read_image_bytes(image, where: str) -> bytes | np.ndarray:
  if isinstance(image, (str, os.PathLike)):
    try:
      with open(image, 'rb') as f:
        return f.read()
    except OSError as e:
      raise BadImage(f'{where}: cannot read image file {os.fspath(image)!r}: {e}')
  if isinstance(image, (bytes, bytearray)):
    return bytes(image)
  if isinstance(image, np.ndarray):
    return image
  raise readers.ReaderError(f'{where}: image must be a path, encoded bytes or a uint8 array, '
                            f'got {type(image).__name__}')


def _png(pil_image) -> bytes:
  buf = io.BytesIO()
  pil_image.save(buf, format='PNG')
  return buf.getvalue()


def encode_image(image, where: str, crop=None) -> tuple[bytes, tuple[int, int]]:
  """(encoded bytes, (x0, y0) of the stored image in the reader's image).

  `crop` is (x, y, w, h) in pixels of the upright image, or None. Bytes are kept as they are
  when nothing needs changing, so a JPEG is never re-compressed just to be stored.
  """
  from PIL import Image
  data = _read_image_bytes(image, where)
  if isinstance(data, np.ndarray):
    arr = data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
      raise readers.ReaderError(f'{where}: image array must be uint8 [H,W] or [H,W,3], got '
                                f'{data.dtype} {data.shape}')
    pil, fmt = Image.fromarray(arr), 'PNG'
  else:
    try:
      pil = Image.open(io.BytesIO(data))
      fmt = pil.format
      # Always decode fully, the way sources read it back, also when the bytes are stored as
      # they are: a truncated JPEG or a broken EXIF block must fail here, not in the middle of
      # a training run.
      pil = sources.upright_8bit(pil)
    except Exception as e:  # Pillow raises several types for broken files
      raise BadImage(f'{where}: cannot decode image: {e}') from e
  if crop is None:
    if not isinstance(data, np.ndarray) and fmt in _KEPT_FORMATS:
      return data, (0, 0)
    return _png(pil), (0, 0)
  x, y, w, h = crop
  x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
  x1, y1 = min(pil.width, int(np.ceil(x + w))), min(pil.height, int(np.ceil(y + h)))
  if x1 <= x0 or y1 <= y0:
    raise readers.ReaderError(f'{where}: crop {[round(float(v), 1) for v in crop]} (x, y, w, h) '
                              f'lies outside the {pil.width}x{pil.height} image')
  pil = pil.crop((x0, y0, x1, y1))
  if fmt == 'JPEG':
    buf = io.BytesIO()
    pil.save(buf, format='JPEG', quality=95)
    return buf.getvalue(), (x0, y0)
  return _png(pil), (x0, y0)


def _crop_of(box, margin: float):
  """The (x, y, w, h) to crop for a reader box, or None when the box is missing or empty."""
  if box is None:
    return None
  box = np.asarray(box, np.float64).reshape(-1)
  if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
    return None
  x, y, w, h = box
  return (x - margin * w, y - margin * h, w * (1 + 2 * margin), h * (1 + 2 * margin))


def to_record(key: str, example: dict, info: readers.DatasetInfo, options: dict,
              shapes: dict) -> dict:
  """One reader Example -> the feature dict TFDS encodes (see the module docstring)."""
  where = f'{info.name} example {key!r}'
  if 'image' not in example or 'label' not in example:
    raise readers.ReaderError(f'{where}: an Example needs "image" and "label", got '
                              f'{sorted(example)}')
  crop = _crop_of(example.get('box'), float(options['crop_margin'])) if options['crop_box'] \
      else None
  image, (x0, y0) = encode_image(example['image'], where, crop)
  num_classes = len(labels.class_names(info.class_space))
  label = int(example['label'])
  if not -1 <= label < num_classes:
    raise readers.ReaderError(f'{where}: label {label} is outside [-1, {num_classes}) of class '
                              f'space {info.class_space}')
  record = {'image': image, 'label': label, 'key': str(key)}
  for name, (shape, dtype) in shapes.items():
    value = example.get(name)
    if value is None:
      record[name] = np.full(shape, FEATURE_FILL.get(name, np.nan), dtype)
      continue
    value = np.asarray(value, dtype)
    if value.shape != shape:
      raise readers.ReaderError(f'{where}: {name!r} has shape {value.shape}, expected {shape}')
    if name == 'landmarks':
      value = value - np.array([x0, y0], np.float32)
    elif name == 'box':
      value = value - np.array([x0, y0, 0, 0], np.float32)
    record[name] = value
  return record


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------
def _collecting_skipped(stream, sink: list):
  """The reader's stream, with the files it leaves out (readers.skip_file) appended to sink.

  The sink is installed only while the reader itself runs, not across our own yields.
  """
  stream = iter(stream)
  while True:
    with readers.collecting_skipped(sink):
      try:
        item = next(stream)
      except StopIteration:
        return
    yield item


def builder_class(name: str, manual_dir: str, options: dict | None = None,
                  splits=None, progress: bool = True):
  """A fresh, unregistered GeneratorBasedBuilder class that prepares `name` from manual_dir."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import dataset_metadata
  module, _ = load_reader(name)
  ours, theirs = split_options(dict(options or {}))
  info = reader_info(name, module, manual_dir, theirs)
  theirs = reader_options(name, module, theirs)
  shapes = feature_shapes(info)
  # TFDS reads the split 'all' as every split together, so a reader's 'all' (FERG, JAFFE) is
  # not written a second time when the reader has other splits.
  default = [s for s in info.splits if s != 'all'] or list(info.splits)
  splits = tuple(splits or default)
  unknown = [s for s in splits if s not in info.splits]
  if unknown:
    raise ValueError(f'{name} has no split(s) {unknown}; its splits: {list(info.splits)}')
  description = (f'{name}, prepared by ferjax from the files under manual_dir with reader '
                 f'{module.__name__} (options {options or {}}). Labels in class space '
                 f'{info.class_space}.')

  def _info(self):
    return self.dataset_info_from_configs(
        features=features_dict(info), description=description,
        # Reader order is kept, so `index` i is the reader's i-th example of the split.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(class_space=info.class_space, reader=module.__name__,
                                        options={k: repr(v) for k, v in (options or {}).items()},
                                        multilabel_space=info.multilabel_space))

  def _split_generators(self, dl_manager):
    del dl_manager  # manual_dir is checked and passed as the user gave it
    return {split: self._generate_examples(split) for split in splits}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
    from ferjax import runtime
    stream = module.examples(manual_dir, split, **theirs)
    if progress:
      stream = runtime.progress(stream, desc=f'{name} {split}', unit='img')
    seen = set()
    skipped = SKIPPED.setdefault((name, split), [])
    skipped.clear()
    not_images = NOT_IMAGES.setdefault((name, split), [])
    not_images.clear()
    for key, example in _collecting_skipped(stream, not_images):
      key = str(key)
      if key in seen:   # keys trace examples back to their files: they must be unique
        raise readers.ReaderError(f'{name}: key {key!r} occurs twice in split {split!r}')
      seen.add(key)
      try:
        record = to_record(key, example, info, ours, shapes)
      except BadImage as e:
        if ours['bad_images'] != 'skip':
          raise
        skipped.append((key, str(e)))
        continue
      yield key, record
    if seen and len(skipped) == len(seen):
      raise readers.ReaderError(f'{name}: no readable image in split {split!r} '
                                f'({len(skipped)} skipped), e.g. {skipped[0][1]}')
    if not seen:
      raise readers.ReaderError(f'{name}: split {split!r} has no examples under {manual_dir} '
                                f'(expected layout: {info.layout or "see the reader module"})')

  def _get_metadata(cls):
    return dataset_metadata.DatasetMetadata(description=description, citation='', tags=[])

  namespace = dict(
      name=name, VERSION=tfds.core.Version(VERSION),
      RELEASE_NOTES={VERSION: 'ferjax generic reader builder.'},
      MANUAL_DOWNLOAD_INSTRUCTIONS=info.layout or f'see {module.__name__}',
      _info=_info, _split_generators=_split_generators, _generate_examples=_generate_examples,
      get_metadata=classmethod(_get_metadata), __module__=__name__,
      # No source folder holds files for this builder (checksums.tsv, README.md); TFDS would
      # otherwise look for this module through importlib_resources, which it does not install.
      code_path=None,
      # prepare builds in a temporary folder and then names where the dataset ended up; TFDS's
      # own "preparing to ..." / "prepared to ..." lines would name the temporary folder.
      _log_download_bytes=lambda self: None, _log_download_done=lambda self: None,
      __doc__=f'TFDS builder of {name} over {module.__name__}.')
  return types.new_class(f'{name}_builder', (tfds.core.GeneratorBasedBuilder,),
                         dict(skip_registration=True), lambda ns: ns.update(namespace))
