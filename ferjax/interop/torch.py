"""ferjax variables <-> PyTorch state_dicts, per architecture, strict in both directions.

Every architecture is an entry of `ferjax.models.registry.ARCHS`: how to build its Flax module,
an example input, and its `KeyMap` (in the interop module of its family), which names a Flax
parameter path in the reference state_dict. The conversion itself is generic: the Flax tree is
taken from `jax.eval_shape` of the module's init, each leaf is looked up under its torch name,
transformed (convolution kernels OIHW <-> HWIO, linear weights transposed) and shape-checked.
Keys left over on either side are an error that names them: a partial load is never silent.

  from_torch(arch, state_dict, ignore=(), **overrides) -> variables
  to_torch(arch, variables, **overrides) -> state_dict (torch tensors)
Each also takes `input_shape=` to trace the module at another NHWC size than the table's (a
reduced MaxViT whose partition size does not tile 224 x 224, for instance).
  load_state_dict(path) -> {name: np.ndarray}  (safetensors or torch.load(weights_only=True))
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.errors import UserError
from ferjax.models import registry


class ConversionError(UserError, ValueError):
  """A state_dict and an architecture do not fit; the message names every offending key."""


@dataclasses.dataclass(frozen=True)
class Transform:
  """A torch tensor -> Flax array map and its inverse."""
  name: str
  to_flax: Callable[[np.ndarray], np.ndarray]
  to_torch: Callable[[np.ndarray], np.ndarray]


SAME = Transform('same', lambda a: a, lambda a: a)
LINEAR = Transform('linear', lambda a: a.T, lambda a: a.T)  # (out, in) <-> (in, out)
# (out, in/groups, kh, kw) <-> (kh, kw, in/groups, out); depthwise kernels follow the same rule.
CONV = Transform('conv', lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
CONV1D = Transform('conv1d', lambda a: a.transpose(2, 1, 0), lambda a: a.transpose(2, 1, 0))

# Flax leaf name -> (torch leaf name, transform) for the common layers; `kernel` picks LINEAR or
# CONV by rank. BatchNorm statistics live in the `batch_stats` collection.
_LEAVES = {'scale': ('weight', SAME), 'bias': ('bias', SAME), 'mean': ('running_mean', SAME),
           'var': ('running_var', SAME), 'embedding': ('weight', SAME),
           'slope': ('weight', SAME)}   # per-channel PReLU (ferjax.models.irse.PReLU)


def default_leaf(leaf: str, ndim: int) -> tuple[str, Transform]:
  if leaf == 'kernel':
    return 'weight', {2: LINEAR, 3: CONV1D, 4: CONV}[ndim]
  if leaf not in _LEAVES:
    raise ConversionError(f'no default torch name for Flax leaf {leaf!r}')
  return _LEAVES[leaf]


@dataclasses.dataclass(frozen=True)
class KeyMap:
  """How a family's Flax variable paths correspond to its reference state_dict keys.

  name: (collection, Flax path tuple, leaf shape) -> (torch key, Transform).
  extra_torch: torch keys the reference has but Flax does not keep, with a function giving their
    value on export (e.g. BatchNorm `num_batches_tracked`); ignored on import.
  """
  name: Callable[[str, tuple, tuple], tuple[str, Transform]]
  extra_torch: Callable[[Mapping[str, Any]], dict[str, Callable[[], np.ndarray]]] = (
      lambda keys: {})


@dataclasses.dataclass(frozen=True)
class ArchMap:
  """One architecture's table entry with its builder and key map imported (see
  ferjax.models.registry.Arch for the fields)."""
  build: Callable[..., Any]
  input_shape: Sequence[int]
  name: Callable[[str, tuple, tuple], tuple[str, Transform]]
  extra_torch: Callable[[Mapping[str, Any]], dict[str, Callable[[], np.ndarray]]]
  init_kwargs: Mapping[str, Any]
  reference: str


_RESOLVED: dict[str, ArchMap] = {}


def archs() -> list[str]:
  return sorted(registry.ARCHS)


def get(arch: str) -> ArchMap:
  if arch not in registry.ARCHS:
    raise ConversionError(f'unknown architecture {arch!r}; known: {", ".join(archs())}')
  if arch not in _RESOLVED:
    e = registry.ARCHS[arch]
    keys = registry.resolve(e.keys)
    _RESOLVED[arch] = ArchMap(build=registry.resolve(e.build), input_shape=e.input_shape,
                              name=keys.name, extra_torch=keys.extra_torch,
                              init_kwargs=dict(e.init_kwargs), reference=e.reference)
  return _RESOLVED[arch]


_ABSTRACT_CACHE: dict = {}


def abstract_variables(arch: str, input_shape=None, **overrides) -> dict:
  """The Flax variable tree (ShapeDtypeStructs) of `arch` built with `overrides` (cached: tracing
  a deep model costs seconds, and a conversion needs it in both directions). `input_shape`
  replaces the table's example input (NHWC) for modules that cannot trace at that size."""
  try:
    key = (arch, input_shape and tuple(input_shape), tuple(sorted(overrides.items())))
    hash(key)
  except TypeError:   # an unhashable override (a list): trace every time
    key = None
  if key is not None and key in _ABSTRACT_CACHE:
    return _ABSTRACT_CACHE[key]
  tree = _abstract_variables(arch, input_shape, **overrides)
  if key is not None:
    _ABSTRACT_CACHE[key] = tree
  return tree


def traced(build: Callable[..., Any], input_shape, **dims) -> dict:
  """The variable tree of a whole model `build(**dims)` traced at `input_shape` (cached like
  abstract_variables, lists in `dims` taken as tuples), for the models outside the arch table."""
  key = (build.__module__, build.__qualname__, tuple(input_shape),
         tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                      for k, v in dims.items())))
  if key not in _ABSTRACT_CACHE:
    module = build(**dims)
    x = jnp.zeros(tuple(input_shape), jnp.float32)
    _ABSTRACT_CACHE[key] = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
  return _ABSTRACT_CACHE[key]


def _abstract_variables(arch: str, input_shape=None, **overrides) -> dict:
  m = get(arch)
  module = m.build(**overrides)
  x = jnp.zeros(tuple(input_shape or m.input_shape), jnp.float32)
  return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, **m.init_kwargs))


def _leaves(tree: Mapping, prefix=()) -> dict[tuple, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_leaves(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _nest(flat: Mapping[tuple, Any]) -> dict:
  out: dict = {}
  for path, v in flat.items():
    d = out
    for k in path[:-1]:
      d = d.setdefault(k, {})
    d[path[-1]] = v
  return out


def _names(arch: str, abstract: Mapping) -> dict[tuple, tuple[str, Transform]]:
  m = get(arch)
  out = {}
  for path, leaf in _leaves(abstract).items():
    out[path] = m.name(path[0], path[1:], tuple(leaf.shape))
  seen: dict[str, tuple] = {}
  for path, (key, _) in out.items():
    if key in seen:
      raise ConversionError(f'{arch}: Flax leaves {seen[key]} and {path} both map to {key!r}')
    seen[key] = path
  return out


def to_numpy(value) -> np.ndarray:
  """A torch tensor (any device, any dtype incl. bfloat16) or array-like -> np.ndarray."""
  if hasattr(value, 'detach'):
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def _short(keys, n=12) -> str:
  keys = sorted(keys)
  more = f' ... and {len(keys) - n} more' if len(keys) > n else ''
  return ', '.join(keys[:n]) + more


def from_torch(arch: str, state_dict: Mapping[str, Any], ignore: Sequence[str] = (),
               input_shape=None, abstract: Mapping | None = None, **overrides) -> dict:
  """A reference state_dict -> ferjax variables ({'params': ..., 'batch_stats': ...}).

  `ignore`: torch key prefixes to drop on purpose (e.g. ('fc.',) to keep only a backbone).
  Any other key without a Flax counterpart, any missing key and any shape mismatch is an error.
  `abstract`: the target variable tree (arrays or ShapeDtypeStructs) when the module already
  exists, e.g. a method's backbone subtree; otherwise `arch` is built with `overrides`.
  """
  m = get(arch)
  sd = {k: v for k, v in state_dict.items() if not any(k.startswith(p) for p in ignore)}
  if abstract is None:
    abstract = abstract_variables(arch, input_shape, **overrides)
  else:
    abstract = {k: v for k, v in abstract.items() if v}
  names = _names(arch, abstract)
  wanted = {key for key, _ in names.values()}
  extra = set(m.extra_torch(sd))
  missing = sorted(k for k in wanted if k not in sd)
  unexpected = sorted(k for k in sd if k not in wanted and k not in extra)
  flat_abs = _leaves(abstract)
  flat, bad_shape = {}, []
  for path, (key, tf) in names.items():
    if key not in sd:
      continue
    a = tf.to_flax(to_numpy(sd[key]))
    want = tuple(flat_abs[path].shape)
    if tuple(a.shape) != want:
      bad_shape.append(f'{key}: torch {tuple(to_numpy(sd[key]).shape)} -> {tuple(a.shape)}, '
                       f'ferjax {"/".join(path)} expects {want}')
      continue
    flat[path] = np.ascontiguousarray(a, dtype=flat_abs[path].dtype)
  if missing or unexpected or bad_shape:
    msg = [f'state_dict does not fit {arch} ({m.reference}) with overrides {overrides or {}}:']
    if missing:
      msg.append(f'  missing keys ({len(missing)}): {_short(missing)}')
    if unexpected:
      msg.append(f'  unexpected keys ({len(unexpected)}): {_short(unexpected)}'
                 + ('  (pass ignore=(prefix,...) to drop them on purpose)'))
    if bad_shape:
      msg.append(f'  shape mismatches ({len(bad_shape)}):\n    ' + '\n    '.join(bad_shape[:12]))
    raise ConversionError('\n'.join(msg))
  return _nest(flat)


def to_numpy_state_dict(arch: str, variables: Mapping, input_shape=None,
                        **overrides) -> dict[str, np.ndarray]:
  """ferjax variables -> {torch key: np.ndarray}, strict about the tree's keys and shapes."""
  m = get(arch)
  abstract = abstract_variables(arch, input_shape, **overrides)
  names = _names(arch, abstract)
  flat_abs, flat = _leaves(abstract), _leaves(variables)
  missing = sorted('/'.join(p) for p in names if p not in flat)
  unexpected = sorted('/'.join(p) for p in flat if p not in names)
  bad = sorted(f'{"/".join(p)}: {tuple(np.shape(flat[p]))}, expected {tuple(flat_abs[p].shape)}'
               for p in names if p in flat and tuple(np.shape(flat[p])) != tuple(flat_abs[p].shape))
  if missing or unexpected or bad:
    msg = [f'variables do not fit {arch} with overrides {overrides or {}}:']
    for what, keys in (('missing', missing), ('unexpected', unexpected), ('mis-shaped', bad)):
      if keys:
        msg.append(f'  {what} ({len(keys)}): {_short(keys)}')
    raise ConversionError('\n'.join(msg))
  out = {}
  for path, (key, tf) in names.items():
    out[key] = np.ascontiguousarray(tf.to_torch(np.asarray(jax.device_get(flat[path]),
                                                           np.float32)))
  for key, make in m.extra_torch(out).items():
    out[key] = make()
  return out


def to_torch(arch: str, variables: Mapping, input_shape=None, **overrides) -> dict:
  """ferjax variables -> a PyTorch state_dict (needs torch) for the reference model."""
  import torch
  return {k: torch.from_numpy(v.copy()) for k, v in
          to_numpy_state_dict(arch, variables, input_shape, **overrides).items()}


def bn_tracked(keys: Mapping[str, Any]) -> dict[str, Callable[[], np.ndarray]]:
  """`num_batches_tracked` for every BatchNorm (a key ending in running_mean) of a state_dict.

  ferjax does not count batches (momentum is fixed), so the exported count is 0.
  """
  return {k[:-len('running_mean')] + 'num_batches_tracked': (lambda: np.array(0, np.int64))
          for k in keys if k.endswith('running_mean')}


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a state_dict from .safetensors, or .pt/.pth/.bin with torch.load(weights_only=True),
  or a .pkl of numpy arrays (the caffe-converted VGGFace2 weights) through an unpickler that
  admits only numpy arrays.

  A checkpoint that wraps its state_dict ({'state_dict': ...} or {'model': ...}) is unwrapped,
  and a DataParallel 'module.' prefix is removed. Arbitrary pickles are never executed.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'no such checkpoint file: {path}')
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file
    try:
      return load_file(path)
    except Exception:  # bfloat16 tensors: let torch read them
      from safetensors.torch import load_file as load_torch
      return {k: to_numpy(v) for k, v in load_torch(path).items()}
  if path.endswith('.pkl'):
    return _load_numpy_pickle(path)
  import torch
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:
    raise ConversionError(f'{path}: not a weights-only PyTorch checkpoint ({e}); ferjax never '
                          'unpickles arbitrary objects') from e
  for key in ('state_dict', 'model', 'model_state_dict', 'net'):
    if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
      obj = obj[key]
      break
  if not isinstance(obj, Mapping):
    raise ConversionError(f'{path}: holds a {type(obj).__name__}, not a state_dict')
  sd = {k: to_numpy(v) for k, v in obj.items() if hasattr(v, 'shape')}
  if sd and all(k.startswith('module.') for k in sd):
    sd = {k[len('module.'):]: v for k, v in sd.items()}
  return sd


# The only globals a pickled {name: np.ndarray} needs; anything else (os.system, ...) is refused.
_NUMPY_PICKLE_OK = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray',
                    '_reconstruct'), ('numpy', 'ndarray'), ('numpy', 'dtype'),
                    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
                    ('collections', 'OrderedDict'), ('_codecs', 'encode')}  # py2-era bytes


def _load_numpy_pickle(path: str) -> dict[str, np.ndarray]:
  import pickle

  class _Restricted(pickle.Unpickler):

    def find_class(self, module, name):
      if (module, name) not in _NUMPY_PICKLE_OK:
        raise ConversionError(f'{path}: the pickle asks for {module}.{name}; only numpy '
                              'arrays are accepted (ferjax never runs arbitrary pickles)')
      return super().find_class(module, name)

  with open(path, 'rb') as f:
    obj = _Restricted(f, encoding='latin1').load()   # latin1: pickles written by Python 2
  if not isinstance(obj, Mapping):
    raise ConversionError(f'{path}: holds a {type(obj).__name__}, not a {{name: array}} dict')
  return {k: np.asarray(v) for k, v in obj.items()}


def load_bundle(path: str, device: str = 'cpu'):
  """A ferjax export bundle as a ready PyTorch model with its preprocessing and class names
  (see ferjax.interop.torch_bundle)."""
  from ferjax.interop import torch_bundle
  return torch_bundle.load_bundle(path, device)


def _misfit(what: str, missing, unexpected, bad) -> None:
  if missing or unexpected or bad:
    msg = [f'{what}:']
    for label, keys in (('missing', missing), ('unexpected', unexpected), ('mis-shaped', bad)):
      if keys:
        msg.append(f'  {label} ({len(keys)}): {_short(keys)}')
    raise ConversionError('\n'.join(msg))


def named_to_torch(names: Mapping[tuple, tuple[str, Transform]], abstract: Mapping,
                   variables: Mapping, what: str) -> dict[str, np.ndarray]:
  """Flat ferjax variables -> {torch key: array} through a whole model's name table (Flax path
  -> (torch key, Transform)), strict about paths and shapes; BN `num_batches_tracked` added.
  `what` opens the error message ('variables do not fit the DAN ...')."""
  want = _leaves(abstract)
  flat = {p: v for p, v in _leaves(variables).items() if p in names or p not in want}
  missing = ['/'.join(p) for p in names if p not in flat]
  unexpected = ['/'.join(p) for p in flat if p not in names]
  bad = [f'{"/".join(p)}: {tuple(np.shape(flat[p]))}, expected {tuple(want[p].shape)}'
         for p in names if p in flat and tuple(np.shape(flat[p])) != tuple(want[p].shape)]
  _misfit(what, missing, unexpected, bad)
  out = {key: np.ascontiguousarray(tf.to_torch(np.asarray(jax.device_get(flat[p]), np.float32)))
         for p, (key, tf) in names.items()}
  for key, make in bn_tracked(out).items():
    out[key] = make()
  return out


def named_from_torch(names: Mapping[tuple, tuple[str, Transform]], abstract: Mapping,
                     state_dict: Mapping[str, Any], what: str) -> dict[tuple, np.ndarray]:
  """{torch key: array} -> flat ferjax variables through a name table: every key used once
  (BN `num_batches_tracked` is never read), shapes checked."""
  want = _leaves(abstract)
  sd = {k: to_numpy(v) for k, v in state_dict.items()}
  wanted = {key for key, _ in names.values()}
  extra = set(bn_tracked(dict.fromkeys(wanted)))
  missing = sorted(k for k in wanted if k not in sd)
  unexpected = sorted(k for k in sd if k not in wanted and k not in extra)
  flat, bad = {}, []
  for p, (key, tf) in names.items():
    if key not in sd:
      continue
    a = tf.to_flax(sd[key])
    if tuple(a.shape) != tuple(want[p].shape):
      bad.append(f'{key}: torch {tuple(sd[key].shape)}, ferjax {"/".join(p)} expects '
                 f'{tuple(want[p].shape)}')
      continue
    flat[p] = np.ascontiguousarray(a, np.float32)
  _misfit(what, missing, unexpected, bad)
  return flat
