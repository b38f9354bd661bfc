"""A ferjax DAN (ferjax.models.dan) <-> the official DAN's state_dict (yaoing/DAN), both ways.

The official model keeps torchvision's ResNet-18 as `features = Sequential(*children[:-2])`
(conv1, bn1, relu, maxpool, layer1..4 -> indices 0, 1, 4, 5, 6, 7), the heads as
`cat_head{i}.sa.conv1x1.0` ... and the AFN as `fc`, `bn`; ferjax names the same modules with
`_` for the Sequential index (`cat_head0/sa/conv1x1_0`), so the map is a renaming plus the
usual transposes. Released checkpoints are `{'iter', 'model_state_dict', ...}`;
ferjax.interop.torch.load_state_dict unwraps them.

The class centres of the affinity loss are not in the official state_dict (they live in the
training script's loss module): `from_torch` takes them as an argument or draws fresh N(0, 1)
centres, `to_numpy_state_dict` leaves them out and `centres(variables)` returns them.

Strict both ways: a missing, unexpected or mis-shaped key is a ConversionError naming it.

  sd = to_numpy_state_dict(variables, **dims)         # {torch key: np.ndarray}
  variables = from_torch(state_dict, **dims)          # dims: config_dims(cfg) for a run
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

from ferjax.interop import resnet as resnet_map
from ferjax.interop import torch as it
from ferjax.models import dan, resnet

# Official Sequential index of each ResNet-18 child that has parameters.
_TRUNK_INDEX = {'conv1': 0, 'bn1': 1, 'layer1': 4, 'layer2': 5, 'layer3': 6, 'layer4': 7}
_INDEX = re.compile(r'_(\d+)$')
CENTRES = ('params', 'centers')


def build(num_classes: int = 7, num_heads: int = 4, width: int = 64, hidden: int = 32,
          num_centers: int = 0, stage_sizes=(2, 2, 2, 2), **kw) -> dan.DAN:
  features = resnet.resnet18(width=width, stage_sizes=tuple(stage_sizes))
  return dan.DAN(features, num_classes, num_heads=num_heads, hidden=hidden,
                 num_centers=num_centers, **kw)


def config_dims(cfg) -> dict:
  """build() arguments of a DAN run's config."""
  from ferjax import labels
  d, m = cfg.dan, cfg.model
  if m.backbone != 'resnet18':
    raise it.ConversionError(f'the official DAN has a ResNet-18, not {m.backbone!r}')
  return dict(num_classes=len(labels.resolve(cfg)), num_heads=d.num_heads, width=m.width,
              hidden=d.channel_hidden, num_centers=d.centres,
              stage_sizes=tuple(m.stage_sizes))


def name(collection: str, path: tuple, shape: tuple) -> tuple[str, it.Transform]:
  """A Flax variable path (collection, path below it) -> (official key, transform)."""
  if path[0] == 'features':
    key, tf = resnet_map._name(collection, path[1:], shape)
    stage, _, rest = key.partition('.')
    if stage not in _TRUNK_INDEX:
      raise it.ConversionError(f'no official name for {"/".join(path)}')
    return f'features.{_TRUNK_INDEX[stage]}.{rest}', tf
  if len(path) < 2:
    raise it.ConversionError(f'{collection}/{"/".join(path)} has no official name')
  leaf, tf = it.default_leaf(path[-1], len(shape))
  return '.'.join([_INDEX.sub(r'.\1', m) for m in path[:-1]] + [leaf]), tf


def abstract_variables(**dims) -> dict:
  """The DAN's variable tree (shapes only), traced at 32 x 32 (no size-dependent shapes)."""
  return it.traced(build, (1, 32, 32, 3), **dims)


def _names(abstract) -> dict[tuple, tuple[str, it.Transform]]:
  return {p: name(p[0], p[1:], tuple(a.shape)) for p, a in it._leaves(abstract).items()
          if p != CENTRES}


def to_numpy_state_dict(variables: Mapping, **dims) -> dict[str, np.ndarray]:
  """ferjax DAN variables -> the official state_dict (numpy), BN `num_batches_tracked` 0."""
  abstract = abstract_variables(**dims)
  names = _names(abstract)
  given = {k: variables[k] for k in ('params', 'batch_stats') if k in variables}
  return it.named_to_torch(names, abstract, given,
                           f'variables do not fit the DAN {dict(dims)}')


def to_torch(variables: Mapping, **dims) -> dict:
  import torch
  return {k: torch.from_numpy(v.copy()) for k, v in to_numpy_state_dict(variables, **dims).items()}


def centres(variables: Mapping) -> np.ndarray:
  """The affinity loss's learned centres (K_c, C), kept outside the official state_dict."""
  return np.asarray(jax.device_get(variables['params']['centers']), np.float32)


def from_torch(state_dict: Mapping[str, Any], centers=None, seed: int = 0, **dims) -> dict:
  """The official state_dict -> ferjax DAN variables; every key used once, shapes checked.

  centers: (K_c, C) centres (e.g. a training script's `AffinityLoss.centers`); None draws
  fresh N(0, 1) centres with `seed`, as the reference's loss module starts.
  """
  abstract = abstract_variables(**dims)
  names = _names(abstract)
  want = it._leaves(abstract)
  flat = it.named_from_torch(names, abstract, state_dict,
                             f'state_dict does not fit the DAN {dict(dims)}')
  shape = tuple(want[CENTRES].shape)
  if centers is None:
    centers = np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)
  centers = it.to_numpy(centers).astype(np.float32)
  if centers.shape != shape:
    raise it.ConversionError(f'centers have shape {centers.shape}, the DAN {dict(dims)} '
                             f'expects {shape}')
  flat[CENTRES] = centers
  return it._nest(flat)
