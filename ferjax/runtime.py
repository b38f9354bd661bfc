"""Process-level setup shared by the CLIs: compilation cache, logging, progress bars."""
from __future__ import annotations

import os
import sys

import jax

DEFAULT_CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'ferjax', 'jax_cache')


def setup() -> None:
  """Persistent compilation cache (compiles dominate on CPU and small accelerators), library
  logging at WARNING unless --verbosity was given (orbax logs every file at INFO), and absl flags
  at their defaults when the CLI did not parse them.

  FERJAX_CACHE_DIR overrides the cache location; an empty value turns the cache off.
  """
  from absl import flags, logging
  if not (flags.FLAGS.is_parsed() and flags.FLAGS['verbosity'].present):
    logging.set_verbosity(logging.WARNING)
  if not flags.FLAGS.is_parsed():
    # CLIs built on argparse (prepare, bench, cafe_protocol) never parse absl flags, and grain
    # reads its own absl flags in worker threads and processes, so they must be parsed:
    # defaults.
    flags.FLAGS.mark_as_parsed()
  cache = os.environ.get('FERJAX_CACHE_DIR', DEFAULT_CACHE)
  if cache:
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def local_path(path: str, what: str = '--workdir') -> str:
  """`path` as a local path: file:// URLs are accepted; other schemes (gs://, s3://) are
  refused in one line, since checkpoints are written and checked with POSIX file operations
  (renames, tensorstore's file driver). A bucket is used through a mount (gcsfuse, the GKE GCS
  FUSE CSI driver): docs/cluster.md."""
  scheme, sep, rest = path.partition('://')
  if not sep:
    return path
  if scheme == 'file':
    return rest
  from ferjax.errors import UserError
  raise UserError(f'{what}={path}: {scheme}:// paths are not written directly; mount the '
                  f'bucket (e.g. gcsfuse BUCKET /mnt/BUCKET) and give the mounted path '
                  '(docs/cluster.md, "Storage")')


def is_primary() -> bool:
  return jax.process_index() == 0


def say(message: str) -> None:
  """One status line on stderr from process 0 (kept out of library log levels)."""
  if is_primary():
    print(message, file=sys.stderr, flush=True)


def progress(iterable=None, total=None, desc='', **kw):
  """A tqdm bar on process 0 only, on stderr; disabled when stderr is not a terminal and
  FERJAX_PROGRESS is not set (keeps CI logs readable)."""
  from tqdm.auto import tqdm
  enabled = is_primary() and (sys.stderr.isatty() or os.environ.get('FERJAX_PROGRESS') == '1')
  return tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=True,
              file=sys.stderr, **kw)
