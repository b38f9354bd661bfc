"""Checkpoints: the only module that imports orbax.

A checkpoint is a step directory holding three items: `state` (step, params, batch_stats,
opt_state), `data` (the grain iterator's position) and `config` (the run's config as JSON).
orbax writes each step into a temporary directory and renames it when complete, so a process
killed during a save leaves the previous checkpoints untouched and usable.

A step whose files were damaged afterwards (a truncated or deleted file) is found before orbax
reads it (`Manager.damaged_file`), because orbax reports such a file as dozens of asynchronous
tracebacks. It is reported as `DamagedCheckpoint`, naming the file; `Manager.restore_latest`
falls back to the newest readable step.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import urllib.parse
from typing import Any, Sequence

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from ferjax.errors import UserError

CKPT_SUBDIR = 'checkpoints'
_PARAMS = ('params', 'batch_stats')  # what a params_only restore reads
_CONFIG_FILE = 'config/metadata'     # JsonCheckpointHandler's file
_STATE_METADATA = 'state/_METADATA'  # PyTreeCheckpointHandler's list of arrays


class IncompatibleCheckpoint(UserError, ValueError):
  """A checkpoint whose parameters do not fit the model being restored."""


class DamagedCheckpoint(UserError, ValueError):
  """A checkpoint step with a file that is missing or cannot be read.

  `step` and `file` (relative to the step directory) name the first such file; `damaged` maps
  every step found damaged to its (file, reason), several when no step was readable.
  """

  def __init__(self, message: str, directory: str = '',
               damaged: dict[int, tuple[str, str]] | None = None):
    super().__init__(message)  # defaults: an exception must rebuild from its message alone
    self.directory = directory
    self.damaged = damaged or {}
    self.step, (self.file, self.reason) = next(iter(self.damaged.items()), (None, (None, None)))


def checkpoint_dir(path: str) -> str:
  """Accepts a workdir or its checkpoints/ directory."""
  path = os.path.abspath(os.path.expanduser(path))
  return path if os.path.basename(path) == CKPT_SUBDIR else os.path.join(path, CKPT_SUBDIR)


class Manager:
  def __init__(self, path: str, keep: int = 3, read_only: bool = False):
    self.directory = checkpoint_dir(path)
    if read_only and not os.path.isdir(self.directory):
      raise FileNotFoundError(f'no checkpoints under {path!r} (looked in {self.directory})')
    # A read-only manager keeps everything and cleans nothing (orbax warns when told otherwise).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only, save_interval_steps=0 if read_only else 1)
    # Handlers are registered up front so metadata can be read before any save or restore.
    handlers = dict(state=ocp.PyTreeCheckpointHandler(), config=ocp.JsonCheckpointHandler(),
                    data=grain.checkpoint.CheckpointHandler())
    self._mngr = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state_tree: Any, data_iter, config: ml_collections.ConfigDict,
           force: bool = True) -> None:
    items = dict(state=ocp.args.PyTreeSave(state_tree),
                 config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())))
    if data_iter is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iter)
    self._mngr.save(step, args=ocp.args.Composite(**items), force=force)

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()

  def _step(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no finished checkpoint in {self.directory}')
    if step not in self.all_steps():
      raise FileNotFoundError(f'no checkpoint for step {step} in {self.directory}; '
                              f'available: {self.all_steps()}')
    return step

  def config(self, step: int | None = None) -> ml_collections.ConfigDict:
    step = self._step(step)
    problem = _read_json(self._step_dir(step), _CONFIG_FILE)
    if problem:
      raise self._damaged(step, *problem)
    restored = self._mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(restored['config'])

  def damaged_file(self, step: int, collections: Sequence[str] | None = None,
             data: bool = False) -> tuple[str, str] | None:
    """(file, reason) for the first file of `step` that a restore would fail to read, or None.

    Checks the config, the state's metadata and its OCDBT database: every B-tree node and every
    array value of the `collections` (top-level keys of the state; None: all) must lie within
    its file; with `data`, the data iterator's positions of all processes too. Reads no array
    data, so it is cheap enough to run before every restore. Damage inside a file of the right
    size is found only when the restore fails (see `restore`).
    """
    root = self._step_dir(step)
    if not os.path.isdir(root):
      return '.', 'the step directory is missing'
    files = [_CONFIG_FILE, _STATE_METADATA]
    if data:
      n = jax.process_count()
      files += [f'data/process_{i}-of-{n}.json' for i in range(n)]
    for name in files:
      problem = _read_json(root, name)
      if problem:
        return problem
    with open(os.path.join(root, _STATE_METADATA)) as f:
      meta = json.load(f)
    if not isinstance(meta, dict) or not meta.get('tree_metadata'):
      return _STATE_METADATA, 'it lists no arrays'
    if not meta.get('use_ocdbt', True):
      return None  # an older layout without OCDBT: only the restore itself can tell
    return _walk_ocdbt(os.path.join(root, 'state'), _wanted(collections))[0]

  def readable_steps(self, params_only: bool = False, data: bool = False) -> list[int]:
    """The steps whose files `damaged_file` finds intact, oldest first: those `restore` can read
    with the same `params_only`, and with a data iterator when `data`."""
    collections = _PARAMS if params_only else None
    return [s for s in self.all_steps()
            if self.damaged_file(s, collections, data and not params_only) is None]

  def restore(self, abstract_state: Any, data_iter=None, step: int | None = None,
              params_only: bool = False, exclude: Sequence[str] = ()) -> Any:
    """Restores into `abstract_state` (ShapeDtypeStructs with shardings).

    With `params_only`, only params and batch_stats are read (init_from); the rest of the
    abstract state is returned as is.

    `exclude` (params_only only) names parameters that are *not* read, on both sides: the
    model's leaves under them are left out of the returned tree (the caller keeps their fresh
    init, see `merge`), and the checkpoint's leaves under them are ignored. A pattern is a
    path relative to the collection, dot-separated: a module ('classifier_5'), a leaf
    ('classifier_5.kernel') or a glob ('classifier_*'). Everything not excluded must still match
    exactly, so a new head is dropped by name, never by accident. What was not restored is
    printed. Used to fine-tune with a new head (CAGE's VA model starts from the combined one).

    A step with a missing or unreadable file raises DamagedCheckpoint, naming the file and the
    steps that are readable; `restore_latest` falls back to them instead.
    """
    step = self._step(step)
    problem = self._damage_for(step, abstract_state, data_iter, params_only)
    if problem:
      raise self._damaged(step, *problem, params_only=params_only,
                          data=data_iter is not None)
    return self._restore(step, abstract_state, data_iter, params_only, exclude)

  def restore_latest(self, abstract_state: Any, data_iter=None, params_only: bool = False,
                     exclude: Sequence[str] = ()) -> tuple[Any, int]:
    """(tree, step): `restore` of the newest readable step.

    Each newer step found damaged is reported and skipped; the data iterator is restored from
    the same step as the state, so the run continues exactly as it did from that step. A
    writable manager moves a damaged step aside (to `<step>.damaged`), because orbax cannot save
    that step again while its directory exists. Raises DamagedCheckpoint when no step is readable
    and FileNotFoundError when there is no checkpoint at all.
    """
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f'no finished checkpoint in {self.directory}')
    damaged = {}
    for step in steps:
      problem = self._damage_for(step, abstract_state, data_iter, params_only)
      if problem is None:
        try:
          tree = self._restore(step, abstract_state, data_iter, params_only, exclude)
        except DamagedCheckpoint as e:
          problem = e.file, e.reason
      if problem:
        damaged[step] = problem
        continue
      self._set_aside(damaged, step, 'resuming from' if not params_only else 'using')
      return tree, step
    raise DamagedCheckpoint(
        f'no readable checkpoint in {self.directory}: ' +
        '; '.join(f'step {s} is damaged ({f}: {r})' for s, (f, r) in damaged.items()) +
        '. Start a fresh run in another workdir, or restore the checkpoints from a copy.',
        self.directory, damaged)

  def _damage_for(self, step: int, abstract_state: Any, data_iter,
                  params_only: bool) -> tuple[str, str] | None:
    collections = _PARAMS if params_only else (
        list(abstract_state) if isinstance(abstract_state, dict) else None)
    return self.damaged_file(step, collections, data_iter is not None and not params_only)

  def _restore(self, step: int, abstract_state: Any, data_iter, params_only: bool,
               exclude: Sequence[str]) -> Any:
    target = abstract_state
    if exclude and not params_only:
      raise ValueError('restore(exclude=...) only applies to params_only restores (init_from)')
    if params_only:
      target = {k: abstract_state[k] for k in _PARAMS}
    if exclude:
      target = self._exclude(step, target, tuple(exclude))
    self._check_compatible(step, target, tuple(exclude))
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    items = dict(state=ocp.args.PyTreeRestore(target, restore_args=restore_args,
                                              partial_restore=params_only))
    if data_iter is not None and not params_only:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self._mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
      # Damage that `damaged_file` cannot see (bytes changed in a file of the right size): decode
      # every array to find the file. Anything else is not damage and is raised as it is.
      problem = _unreadable_array(os.path.join(self._step_dir(step), 'state'),
                                  _wanted(list(target) if isinstance(target, dict) else None))
      if problem is None:
        raise
      raise self._damaged(step, *problem, params_only=params_only,
                          data=data_iter is not None) from e
    return restored['state']

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _damaged(self, step: int, file: str, reason: str, params_only: bool = False,
               data: bool = False) -> DamagedCheckpoint:
    others = [s for s in self.readable_steps(params_only, data) if s != step]
    if others:
      advice = (f'Readable steps: {", ".join(map(str, others))}; restore one of them (eval: '
                f'--step={others[-1]}); training resumes from the newest readable step by itself.')
    else:
      advice = ('No other step is readable: start a fresh run in another workdir, or restore '
                'the checkpoints from a copy.')
    return DamagedCheckpoint(f'checkpoint step {step} in {self.directory} is damaged: cannot '
                             f'read {file} ({reason}). {advice}', self.directory,
                             {step: (file, reason)})

  def _set_aside(self, damaged: dict[int, tuple[str, str]], restored: int, verb: str) -> None:
    """Reports the damaged steps skipped for `restored`; a writable manager moves them aside."""
    from ferjax import runtime  # local: keeps this module free of ferjax imports at load time
    read_only = self._mngr._options.read_only  # pylint: disable=protected-access
    for step, (file, _) in damaged.items():
      note = ''
      if not read_only:
        aside = _free_name(self._step_dir(step) + '.damaged')
        if jax.process_index() == 0:
          os.rename(self._step_dir(step), aside)
        note = f'; moved it to {aside}'
      runtime.say(f'checkpoint step {step} in {self.directory} is damaged ({file}): '
                  f'{verb} step {restored}{note}')
    if damaged and not read_only:
      # Every process must see the rename before orbax lists the steps again.
      ocp.multihost.sync_global_processes(f'ferjax_set_aside_{restored}')
      self._mngr.reload()

  def _stored_shapes(self, step: int) -> dict[str, tuple]:
    meta = self._mngr.item_metadata(step)['state']
    return _shapes(getattr(meta, 'tree', meta))

  def _exclude(self, step: int, target: Any, patterns: tuple[str, ...]) -> Any:
    """`target` without the excluded leaves; prints what is left out on either side."""
    stored = {k: v for k, v in self._stored_shapes(step).items()
              if k.split('.')[0] in _PARAMS}
    model = _shapes(target)
    unused = [p for p in patterns if not any(_excluded(k, (p,)) for k in (*model, *stored))]
    if unused:
      raise ValueError(f'init_exclude patterns {unused} match no parameter of the model or of '
                       f'checkpoint {self.directory}/{step}')
    fresh = sorted(k for k in model if _excluded(k, patterns))
    dropped = sorted(k for k in stored if _excluded(k, patterns))
    from ferjax import runtime  # local: keeps this module free of ferjax imports at load time
    runtime.say(f'init_from {self.directory}/{step}: not restored, left at their fresh init '
                f'({len(fresh)}): {", ".join(fresh) or "-"}; in the checkpoint but not used '
                f'({len(dropped)}): {", ".join(dropped) or "-"}')
    return _prune(target, patterns)

  def _check_compatible(self, step: int, target: Any, exclude: tuple[str, ...] = ()) -> None:
    """Names the parameters that differ instead of letting orbax fail deep inside."""
    want = _shapes(target)
    have = {k: v for k, v in self._stored_shapes(step).items() if k.split('.')[0] in
            {w.split('.')[0] for w in want} and not _excluded(k, exclude)}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or wrong:
      lines = [f'checkpoint {self.directory}/{step} does not fit this model '
               f'(is it from another model or config?)']
      for title, keys in (('missing', missing), ('unexpected', unexpected)):
        if keys:
          lines.append(f'  {title} ({len(keys)}): ' + ', '.join(keys[:8]) +
                       (' ...' if len(keys) > 8 else ''))
      for k in wrong[:8]:
        lines.append(f'  shape of {k}: checkpoint {have[k]} vs model {want[k]}')
      raise IncompatibleCheckpoint('\n'.join(lines))


def _read_json(root: str, name: str) -> tuple[str, str] | None:
  """(name, reason) when `root/name` is missing or not JSON."""
  try:
    with open(os.path.join(root, name)) as f:
      json.load(f)
  except FileNotFoundError:
    return name, 'missing'
  except (OSError, ValueError) as e:
    return name, f'not readable JSON: {e}'
  return None


def _wanted(collections: Sequence[str] | None):
  """Whether an OCDBT key ('params.fc.kernel/0.0', 'step/0') belongs to `collections`."""
  if collections is None:
    return lambda key: True
  keep = set(collections)
  return lambda key: re.split(r'[./]', key, maxsplit=1)[0] in keep


def _location(loc: str) -> tuple[str, int, int]:
  """An OCDBT location ('value:ocdbt.process_0/:d/ab12:0:10355', 'btreenode::d/cd34:0:323')
  as (file relative to the database, offset, length)."""
  file_id, offset, length = loc.split(':', 1)[1].rsplit(':', 2)
  return urllib.parse.unquote(file_id.replace(':', '', 1)), int(offset), int(length)


def _walk_ocdbt(state: str, wanted) -> tuple[tuple[str, str] | None, dict[str, str]]:
  """Walks the B-tree of the OCDBT database in `state` (reading only its small nodes) and
  checks that each node and each wanted value lies within its file. Returns the first problem
  as (file relative to the step directory, reason), or None, and, for the wanted keys walked,
  the file holding each value."""
  sizes, files = {}, {}

  def outside(rel: str, offset: int, length: int) -> tuple[str, str] | None:
    if rel not in sizes:
      try:
        sizes[rel] = os.path.getsize(os.path.join(state, rel))
      except OSError:
        sizes[rel] = None
    if sizes[rel] is None:
      return f'state/{rel}', 'missing'
    if sizes[rel] < offset + length:
      return f'state/{rel}', (f'truncated: {sizes[rel]} bytes, the checkpoint needs '
                              f'{offset + length}')
    return None

  if not os.path.isfile(os.path.join(state, 'manifest.ocdbt')):
    return ('state/manifest.ocdbt', 'missing'), files
  try:
    base = ts.KvStore.open({'driver': 'file', 'path': state + '/'}).result()
    manifest = ts.ocdbt.dump(base).result()
  except Exception as e:  # tensorstore raises ValueError, but any failure here is damage
    return ('state/manifest.ocdbt', _short(e)), files
  versions = manifest.get('versions') or []
  if not versions:
    # Only a database with very many versions keeps them in version nodes; orbax writes one.
    return None, files
  root = versions[-1]['root'].get('location')
  stack = [(root, b'')] if root else []
  while stack:
    loc, prefix = stack.pop()
    rel, offset, length = _location(loc)
    problem = outside(rel, offset, length)
    if problem:
      return problem, files
    try:
      node = ts.ocdbt.dump(base, loc).result()
    except Exception as e:
      return (f'state/{rel}', _short(e)), files
    for entry in node['entries']:
      key = prefix + entry['key']
      if 'location' in entry:  # an inner node: its children's keys follow its common prefix
        stack.append((entry['location'], prefix + entry.get('subtree_common_prefix', b'')))
        continue
      name = key.decode(errors='replace')
      if not wanted(name):
        continue
      if 'indirect_value' in entry:
        value = _location(entry['indirect_value'])
        problem = outside(*value)
        if problem:
          return problem, files
        files[name] = f'state/{value[0]}'
      else:
        files[name] = f'state/{rel}'
  return None, files


def _unreadable_array(state: str, wanted) -> tuple[str, str] | None:
  """(file, reason) for the first wanted array of `state` that tensorstore cannot decode, or
  None. Reads every array: only run after a restore has failed."""
  problem, files = _walk_ocdbt(state, wanted)
  if problem:
    return problem
  try:
    with open(os.path.join(os.path.dirname(state), _STATE_METADATA)) as f:
      driver = 'zarr3' if json.load(f).get('use_zarr3') else 'zarr'
  except (OSError, ValueError) as e:
    return _STATE_METADATA, _short(e)
  marker = '/zarr.json' if driver == 'zarr3' else '/.zarray'
  kvstore = {'driver': 'ocdbt', 'base': {'driver': 'file', 'path': state + '/'}}
  for key in sorted(files):
    if not key.endswith(marker):
      continue
    array = key[:-len(marker)]
    try:
      spec = {'driver': driver, 'kvstore': kvstore | {'path': array + '/'}}
      ts.open(spec).result().read().result()
    except Exception as e:
      chunks = sorted({f for k, f in files.items() if k.startswith(array + '/') and k != key})
      return ' or '.join(chunks or [files[key]]), f'array {array}: {_short(e)}'
  return None


def _short(error: Exception) -> str:
  """The first line of an error, without tensorstore's spec dump."""
  text = str(error).split('\n')[0].split(' [tensorstore_spec=')[0]
  return text[:300] + (' ...' if len(text) > 300 else '')


def _free_name(path: str) -> str:
  """`path`, or `path.1`, `path.2`, ... whichever does not exist yet."""
  candidate, n = path, 0
  while os.path.exists(candidate):
    n += 1
    candidate = f'{path}.{n}'
  return candidate


def _key_name(entry) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _shapes(tree) -> dict[str, tuple]:
  """'params.fc.kernel' -> shape; namedtuple fields and dict keys spelt alike, because orbax
  metadata turns optax's namedtuple states into dicts."""
  return {'.'.join(_key_name(e) for e in path): tuple(leaf.shape) for path, leaf in
          jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(leaf, 'shape')}


def _excluded(path: str, patterns: Sequence[str]) -> bool:
  """Whether 'params.a.b.kernel' falls under one of `patterns` (relative to the collection)."""
  rel = path.split('.', 1)[1] if '.' in path else path
  return any(rel == p or rel.startswith(p + '.') or fnmatch.fnmatchcase(rel, p)
             for p in patterns)


def _prune(tree: Any, patterns: Sequence[str], prefix: str = '') -> Any:
  """A nested dict without the excluded leaves (and without sub-dicts left empty)."""
  out = {}
  for k, v in tree.items():
    path = f'{prefix}.{k}' if prefix else str(k)
    if isinstance(v, dict):
      sub = _prune(v, patterns, path)
      if sub or not v:
        out[k] = sub
    elif not _excluded(path, patterns):
      out[k] = v
  return out


def merge(base: Any, update: Any) -> Any:
  """`base` (nested dicts) with every leaf that `update` has replaced by `update`'s (a partial
  restore laid over a fresh init)."""
  if not isinstance(update, dict):
    return update
  out = dict(base)
  for k, v in update.items():
    out[k] = merge(base[k], v) if k in base and isinstance(base[k], dict) else v
  return out


def abstract_with_sharding(abstract: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def to_numpy(tree: Any) -> Any:
  return jax.tree.map(np.asarray, tree)
