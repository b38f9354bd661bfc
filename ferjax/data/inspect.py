r"""Looks inside a prepared dataset: examples per split and class, and a grid of samples.

  python -m ferjax.data.inspect --dataset rafdb [--data_dir /data/tfds] [--grid rafdb.png] \
      [--split train] [--per_class 4] [--size 96]
  (or ferjax-inspect ...; from Python: report(name, data_dir, ...))

The table counts every split's examples under the canonical class names of the dataset's class
space (column 'unknown' for label -1), so a wrong class order in a reader shows up as implausible
counts before any training. The grid shows --per_class examples of each class (columns, class
name on top) from one split, decoded the way training reads them.
"""
from __future__ import annotations

from absl import app, flags
import numpy as np

from ferjax.data import readers, sources, tfds_builder
from ferjax.errors import DataError

_CHUNK = 1024


def _labels_source(name: str, split: str, data_dir: str):
  import tensorflow_datasets as tfds
  return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                          decoders={'image': tfds.decode.SkipDecoding()})


def split_labels(name: str, split: str, data_dir: str) -> np.ndarray:
  """All labels of a split, in order (images are read as bytes and not decoded)."""
  ds = _labels_source(name, split, data_dir)
  out = []
  for lo in range(0, len(ds), _CHUNK):
    out += [int(r['label']) for r in ds.__getitems__(range(lo, min(lo + _CHUNK, len(ds))))]
  return np.asarray(out, np.int64)


def class_counts(name: str, data_dir: str) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
  """(class names, {split: int64 [K+1] counts, the last one of label -1})."""
  builder = tfds_builder.open_prepared(name, data_dir)
  names = tuple(builder.info.features['label'].names)
  counts = {}
  for split in builder.info.splits:
    lab = split_labels(name, split, data_dir)
    counts[split] = np.bincount(np.where(lab < 0, len(names), lab), minlength=len(names) + 1)
  return names, counts


def format_table(names, counts: dict[str, np.ndarray]) -> str:
  """Splits as rows, classes as columns; 'unknown' only when some label is -1."""
  show_unknown = any(c[-1] for c in counts.values())
  cols = list(names) + (['unknown'] if show_unknown else []) + ['total']
  rows = []
  for split, c in counts.items():
    vals = list(c[:len(names)]) + ([c[-1]] if show_unknown else []) + [c.sum()]
    rows.append([split] + [f'{int(v):,}' for v in vals])
  widths = [max(len(str(x)) for x in col) for col in zip(['split'] + cols, *rows)]
  line = lambda cells: '  '.join(f'{c:>{w}}' if i else f'{c:<{w}}'
                                 for i, (c, w) in enumerate(zip(cells, widths)))
  return '\n'.join([line(['split'] + cols), line(['-' * w for w in widths])] +
                   [line(r) for r in rows])


def sample_grid(name: str, split: str, data_dir: str, per_class: int = 4, size: int = 96,
                seed: int = 0) -> np.ndarray:
  """uint8 grid: one column per class (name on top), up to per_class random examples each."""
  from PIL import Image, ImageDraw, ImageFont
  src = sources.PreparedSource(name, split, data_dir, image_size=size)
  lab = split_labels(name, split, data_dir)
  rng = np.random.default_rng(seed)
  picks = []
  for c in range(len(src.class_names)):
    ids = np.flatnonzero(lab == c)
    picks.append(sorted(rng.choice(ids, min(per_class, len(ids)), replace=False)))
  try:
    font = ImageFont.load_default(size=max(11, size // 8))
  except TypeError:                          # older Pillow without FreeType sizes
    font = ImageFont.load_default()
  pad, top = 2, max(20, size // 5)
  rows = max(1, max(len(p) for p in picks))
  grid = Image.new('RGB', (len(picks) * (size + pad), top + rows * (size + pad)), (255, 255, 255))
  draw = ImageDraw.Draw(grid)
  for c, ids in enumerate(picks):
    x = c * (size + pad)
    draw.text((x + 3, 3), src.class_names[c], fill=(0, 0, 0), font=font)
    for r, i in enumerate(ids):
      grid.paste(Image.fromarray(src[int(i)]['image']), (x, top + r * (size + pad)))
  return np.asarray(grid)


def report(name: str, data_dir: str | None = None, grid: str = '', split: str = '',
           per_class: int = 4, size: int = 96) -> str:
  """What the command prints: where the dataset is, its class space and the table of counts;
  with `grid`, also writes there a sample grid PNG of `split` (default: the first split).

  The function behind the command, for scripts and tests (the command's flags are absl's,
  parsed once per process). Raises FileNotFoundError with the prepare command when the dataset
  is not prepared in data_dir, DataError for a split it does not have.
  """
  data_dir = data_dir or tfds_builder.default_data_dir()
  builder = tfds_builder.open_prepared(name, data_dir)
  names, counts = class_counts(name, data_dir)
  split = split or next(iter(counts))
  if split not in counts:
    raise DataError(f'{name} has no split {split!r}; its splits: {", ".join(counts)}')
  space = builder.info.metadata.get('class_space', '?') if builder.info.metadata else '?'
  lines = [f'{name} in {builder.data_dir} (class space {space})', format_table(names, counts)]
  if grid:
    from PIL import Image
    Image.fromarray(sample_grid(name, split, data_dir, per_class, size)).save(grid)
    lines.append(f'wrote {grid} ({split}, up to {per_class} per class)')
  return '\n'.join(lines)


def _define_flags() -> None:
  # Defined when the command runs, not on import: absl flags are process-global, and report()
  # is imported beside prepare and other commands that have flags of the same names.
  flags.DEFINE_enum('dataset', None, sorted(readers.READERS), 'Dataset name.', required=True)
  flags.DEFINE_string('data_dir', None, 'Folder of prepared datasets (default $FERJAX_DATA_DIR, '
                      'else $TFDS_DATA_DIR, else ~/tensorflow_datasets).')
  flags.DEFINE_string('grid', '', 'Write a sample grid PNG here.')
  flags.DEFINE_string('split', '', 'Split of the grid (default: the first one).')
  flags.DEFINE_integer('per_class', 4, 'Grid rows (examples per class).', lower_bound=1)
  flags.DEFINE_integer('size', 96, 'Grid cell size in pixels.', lower_bound=8)


def main(argv: list[str]) -> int:
  """The command: report() with the flags."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  args = flags.FLAGS
  from ferjax import cli as cli_lib
  cli_lib.quiet_logs()
  print(report(args.dataset, args.data_dir, args.grid, args.split, args.per_class, args.size))
  return 0


def cli() -> None:
  # Imported here: ferjax.cli defines --debug, which a program importing this module as a
  # library may define itself.
  from ferjax import cli as cli_lib
  _define_flags()
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
