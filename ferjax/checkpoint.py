"""Checkpoints: the only module that imports orbax.

A checkpoint is a step directory holding three items: `state` (step, params, batch_stats,
opt_state), `data` (the grain iterator's position) and `config` (the run's config as JSON).
orbax writes each step into a temporary directory and renames it when complete, so a process
killed during a save leaves the previous checkpoints untouched and usable.
"""
from __future__ import annotations

import fnmatch
import json
import os
from typing import Any, Sequence

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

CKPT_SUBDIR = 'checkpoints'


class IncompatibleCheckpoint(ValueError):
  """A checkpoint whose parameters do not fit the model being restored."""


def checkpoint_dir(path: str) -> str:
  """Accepts a workdir or its checkpoints/ directory."""
  path = os.path.abspath(os.path.expanduser(path))
  return path if os.path.basename(path) == CKPT_SUBDIR else os.path.join(path, CKPT_SUBDIR)


class Manager:
  def __init__(self, path: str, keep: int = 3, read_only: bool = False):
    self.directory = checkpoint_dir(path)
    if read_only and not os.path.isdir(self.directory):
      raise FileNotFoundError(f'no checkpoints under {path!r} (looked in {self.directory})')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only, cleanup_tmp_directories=True)
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

  def wait(self) -> None:
    self._mngr.wait_until_finished()

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
    restored = self._mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(restored['config'])

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
    """
    step = self._step(step)
    target = abstract_state
    if exclude and not params_only:
      raise ValueError('restore(exclude=...) only applies to params_only restores (init_from)')
    if params_only:
      target = {k: abstract_state[k] for k in ('params', 'batch_stats')}
    if exclude:
      target = self._exclude(step, target, tuple(exclude))
    self._check_compatible(step, target, tuple(exclude))
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    items = dict(state=ocp.args.PyTreeRestore(target, restore_args=restore_args,
                                              partial_restore=params_only))
    if data_iter is not None and not params_only:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self._mngr.restore(step, args=ocp.args.Composite(**items))
    return restored['state']

  def _stored_shapes(self, step: int) -> dict[str, tuple]:
    meta = self._mngr.item_metadata(step)['state']
    return _shapes(getattr(meta, 'tree', meta))

  def _exclude(self, step: int, target: Any, patterns: tuple[str, ...]) -> Any:
    """`target` without the excluded leaves; prints what is left out on either side."""
    stored = {k: v for k, v in self._stored_shapes(step).items()
              if k.split('.')[0] in ('params', 'batch_stats')}
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
