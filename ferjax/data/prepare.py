r"""Prepares a dataset from its raw files into a TFDS ArrayRecord dataset.

  python -m ferjax.data.prepare --dataset rafdb --manual_dir /raw/RAF-DB --data_dir /data/tfds \
      [--option crop_box=True] [--option k=v ...] [--splits train,test] [--overwrite] \
      [--noprogress]
  (or ferjax-prepare ...; from Python: prepare(name, manual_dir, data_dir, ...))

The raw files are read by the dataset's reader (ferjax.data.readers) and written by the generic
builder (ferjax.data.tfds_builder) to DATA_DIR/NAME/VERSION. Training and evaluation then read
it as the spec 'NAME:SPLIT@DATA_DIR' (or 'NAME:SPLIT' with $FERJAX_DATA_DIR=DATA_DIR).
--data_dir defaults to $FERJAX_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets.

Options are k=v (values parsed as Python literals when they are, else strings): crop_box and
crop_margin are the builder's (see tfds_builder); every other option goes to the reader's
examples(). A dataset that is already prepared is kept (the counts are printed) unless
--overwrite is given: change options only together with --overwrite or another --data_dir.
Every build is written to a temporary folder inside DATA_DIR and moved into place only when it
succeeds, so a run that fails, with --overwrite too, leaves the dataset that was there intact.
Images left out (unreadable, or without an image extension) are listed in
DATA_DIR/NAME/skipped_images.txt.
"""
from __future__ import annotations

import ast
import os
import shutil
import sys
import tempfile

from absl import app, flags

from ferjax.data import readers, tfds_builder
from ferjax.errors import DataError, UserError

SKIPPED_FILE = 'skipped_images.txt'


def parse_options(items) -> dict:
  """['crop_box=True', 'mode=aligned'] -> {'crop_box': True, 'mode': 'aligned'}."""
  out = {}
  for item in items or ():
    key, eq, value = item.partition('=')
    if not eq or not key.strip():
      raise DataError(f'--option {item!r}: expected key=value')
    try:
      out[key.strip()] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key.strip()] = value
  return out


def check_manual_dir(name: str, manual_dir: str) -> None:
  """Fails early, saying which layout the reader expects, when manual_dir is not usable."""
  _, info = tfds_builder.load_reader(name)
  layout = info.layout or f'see the docstring of {readers.READERS[name]}'
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f'manual_dir {manual_dir!r} does not exist or is not a folder; '
                            f'{name} expects there: {layout}')
  if not os.listdir(manual_dir):
    raise FileNotFoundError(f'manual_dir {manual_dir!r} is empty; {name} expects there: {layout}')


def prepare(name: str, manual_dir: str, data_dir: str | None = None, options: dict | None = None,
            splits=None, overwrite: bool = False, progress: bool = True) -> dict[str, int]:
  """Prepares `name` into data_dir; returns the number of examples per split.

  The function behind the command, for scripts and tests (the command's flags are absl's,
  parsed once per process). `options` are the command's --option values as a dict (see
  parse_options). Raises DataError for an unknown name, FileNotFoundError for a manual_dir that
  is missing or empty, ReaderError for raw files that do not fit the reader, ValueError for a
  split or reader option that the reader does not have.

  The dataset is built in a temporary folder inside data_dir and renamed into place only when
  the build succeeds, so a failed run (also with overwrite) leaves any dataset that was
  there as it was, and nothing that looks like a dataset otherwise.
  """
  import tensorflow_datasets as tfds
  manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
  data_dir = os.path.abspath(os.path.expanduser(data_dir or tfds_builder.default_data_dir()))
  check_manual_dir(name, manual_dir)
  builder_cls = tfds_builder.builder_class(name, manual_dir, options, splits=splits,
                                           progress=progress)
  # ferjax.runtime.progress draws the bars (one per split, counted in images); TFDS's own ones
  # would interleave with them.
  tfds.disable_progress_bar()
  if not overwrite and tfds_builder.VERSION in tfds_builder.prepared_versions(name, data_dir):
    builder = builder_cls(data_dir=data_dir, file_format=tfds_builder.FILE_FORMAT)
    return {split: builder.info.splits[split].num_examples for split in builder.info.splits}
  os.makedirs(data_dir, exist_ok=True)
  # Inside data_dir, so that moving the result into place is a rename on one file system.
  build_dir = tempfile.mkdtemp(prefix=f'.{name}-', suffix='.incomplete', dir=data_dir)
  try:
    builder = builder_cls(data_dir=build_dir, file_format=tfds_builder.FILE_FORMAT)
    # Nothing is downloaded; a throw-away download_dir keeps TFDS from leaving an empty
    # downloads folder behind.
    with tempfile.TemporaryDirectory(prefix='ferjax_prepare_') as tmp:
      builder.download_and_prepare(
          download_dir=tmp,
          download_config=tfds.download.DownloadConfig(
              manual_dir=manual_dir,
              download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    counts = {split: builder.info.splits[split].num_examples for split in builder.info.splits}
    lines, summary = _skipped(name, counts)
    if lines:
      with open(os.path.join(build_dir, name, SKIPPED_FILE), 'w') as f:
        f.writelines(lines)
    _swap_in(os.path.join(build_dir, name), os.path.join(data_dir, name), build_dir)
  finally:
    shutil.rmtree(build_dir, ignore_errors=True)
  if summary:
    print(f'skipped {summary}; all listed in {os.path.join(data_dir, name, SKIPPED_FILE)}',
          file=sys.stderr)
  return counts


def _skipped(name: str, counts: dict[str, int]) -> tuple[list[str], str]:
  """(lines 'split<TAB>key<TAB>reason' of skipped_images.txt, summary) of what the build left
  out: unreadable images and files without an image extension; ([], '') when nothing."""
  bad = {split: tfds_builder.SKIPPED.get((name, split), []) for split in counts}
  other = {split: tfds_builder.NOT_IMAGES.get((name, split), []) for split in counts}
  lines = [f'{split}\t{key}\t{reason}\n' for split in counts
           for key, reason in bad[split] + other[split]]
  parts = []
  n = sum(map(len, bad.values()))
  if n:
    first = next(r for items in bad.values() for _, r in items)
    parts.append(f'{n} unreadable image(s) '
                 f'({", ".join(f"{s}: {len(v)}" for s, v in bad.items() if v)}); e.g. {first}')
  n = sum(map(len, other.values()))
  if n:
    first = next(k for items in other.values() for k, _ in items)
    parts.append(f'{n} file(s) without an image extension '
                 f'({", ".join(f"{s}: {len(v)}" for s, v in other.items() if v)}); e.g. {first}')
  return lines, ' and '.join(parts)


def _swap_in(new: str, root: str, build_dir: str) -> None:
  """Moves the built DATA_DIR/NAME contents (`new`) into `root`, replacing what was there.

  The version folder is replaced by two renames (old one aside, new one in), so it is never
  half written; the old one is put back if the second rename fails. The skipped list belongs
  to the build: it is replaced, or removed when this build skipped nothing.
  """
  os.makedirs(root, exist_ok=True)
  version = os.path.join(root, tfds_builder.VERSION)
  old = os.path.join(build_dir, 'replaced')
  had_old = os.path.exists(version)
  if had_old:
    os.rename(version, old)
  try:
    os.rename(os.path.join(new, tfds_builder.VERSION), version)
  except BaseException:
    if had_old:
      os.rename(old, version)
    raise
  listed = os.path.join(new, SKIPPED_FILE)
  if os.path.exists(listed):
    os.replace(listed, os.path.join(root, SKIPPED_FILE))
  elif os.path.exists(os.path.join(root, SKIPPED_FILE)):
    os.remove(os.path.join(root, SKIPPED_FILE))


def format_counts(name: str, data_dir: str, counts: dict[str, int]) -> str:
  width = max(len('split'), *(len(s) for s in counts))
  lines = [f'{name} {tfds_builder.VERSION} in {os.path.join(data_dir, name)}',
           f'  {"split":<{width}}  {"examples":>9}']
  lines += [f'  {split:<{width}}  {n:>9,}' for split, n in counts.items()]
  lines.append(f'  {"total":<{width}}  {sum(counts.values()):>9,}')
  lines.append(f"Read it with the spec '{name}:SPLIT@{data_dir}' (or '{name}:SPLIT' with "
               f'FERJAX_DATA_DIR={data_dir}).')
  return '\n'.join(lines)


def _define_flags() -> None:
  # Defined when the command runs, not on import: absl flags are process-global, and
  # prepare() is imported beside inspect and other commands that have flags of the same names.
  flags.DEFINE_enum('dataset', None, sorted(readers.READERS), 'Dataset name.', required=True)
  flags.DEFINE_string('manual_dir', None, 'Folder holding the raw dataset files.', required=True)
  flags.DEFINE_string('data_dir', None, 'Output folder of prepared datasets (default '
                      '$FERJAX_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets).')
  flags.DEFINE_multi_string('option', [], 'K=V: a builder option (crop_box, crop_margin, '
                            'bad_images) or a reader option.')
  flags.DEFINE_list('splits', [], 'Comma-separated subset of the splits (default: all).')
  flags.DEFINE_boolean('overwrite', False, 'Rebuild a dataset that is already prepared (it is '
                       'replaced only when the rebuild succeeds).')
  flags.DEFINE_boolean('progress', True, 'Progress bars; --noprogress for none.')
  flags.DEFINE_boolean('no_progress', False, 'The older spelling of --noprogress.')


def main(argv: list[str]) -> int:
  """The command: prepare() with the flags, then the counts per split."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  args = flags.FLAGS
  from ferjax import cli as cli_lib
  cli_lib.quiet_logs()
  data_dir = os.path.abspath(os.path.expanduser(args.data_dir or tfds_builder.default_data_dir()))
  try:
    counts = prepare(args.dataset, args.manual_dir, data_dir, parse_options(args.option),
                     splits=args.splits or None, overwrite=args.overwrite,
                     progress=args.progress and not args.no_progress)
  except UserError:
    raise
  except ValueError as e:
    # Readers check their options with ValueError (affectnet num_classes=9, ferg fractions),
    # as the builder checks --splits: here they come from the command line.
    raise UserError(str(e)) from e
  print(format_counts(args.dataset, data_dir, counts))
  return 0


def cli() -> None:
  # Imported here: ferjax.cli defines --debug, which a program importing this module as a
  # library may define itself.
  from ferjax import cli as cli_lib
  _define_flags()
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
