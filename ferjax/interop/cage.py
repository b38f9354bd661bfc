"""A CAGE model (ferjax.methods.cage) <-> the official PyTorch model's state_dict.

The official model is torchvision's `maxvit_t` whose `classifier` is replaced by
`Sequential(AdaptiveAvgPool2d(1), Flatten(), LayerNorm(512), Linear(512, 512), Tanh(),
Linear(512, C + 2, bias=False))` (the VA model: `..., Tanh(), Dropout(0.3), Linear(512, 2,
bias=False)`), or torchvision's `efficientnet_v2_s` with `classifier[1] = Linear(1280, C + 2)`
(wagner-niklas/CAGE_expression_inference, models/*/train.py). ferjax names the head modules by
those Sequential indices (`classifier_2` <-> `classifier.2`), so the backbone goes through the
registered architecture map (ferjax.interop.maxvit / .efficientnet, strict in both directions)
and the head is a renaming: LayerNorm scale/bias -> weight/bias, Linear kernel (in, out) ->
weight (out, in). Like the backbone maps, both directions refuse missing or left-over keys.

  sd = to_numpy_state_dict(cfg, variables)     # {torch key: np.ndarray}
  variables = from_torch(cfg, state_dict)      # strict
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.interop import torch as it

_HEAD = re.compile(r'classifier_(\d+)$')


def backbone_spec(cfg) -> tuple[str, dict, tuple[int, ...]]:
  """(registered arch, its overrides, the input shape to trace it at) for a CAGE config."""
  arch = cfg.model.backbone
  overrides = {'num_classes': 0}
  if arch == 'maxvit_t':
    overrides.update({k: tuple(v) if isinstance(v, (list, tuple)) else v
                      for k, v in dict(cfg.cage.maxvit).items()})
  size = cfg.data.image_size
  return arch, overrides, (1, size, size, 3)


def _split(variables: Mapping) -> tuple[dict, dict]:
  """(backbone variables, head params) of a CAGE variable tree."""
  params = variables['params']
  heads = {k: v for k, v in params.items() if k != 'backbone'}
  bad = [k for k in heads if not _HEAD.match(k)]
  if bad or 'backbone' not in params:
    raise it.ConversionError(f'not a CAGE variable tree: top-level params {sorted(params)}')
  backbone = {'params': params['backbone']}
  stats = variables.get('batch_stats') or {}
  if stats.get('backbone'):
    backbone['batch_stats'] = stats['backbone']
  return backbone, heads


def _head_to_torch(heads: Mapping) -> dict[str, np.ndarray]:
  out = {}
  for name, leaves in heads.items():
    prefix = 'classifier.' + _HEAD.match(name).group(1)
    for leaf, value in leaves.items():
      value = np.asarray(jax.device_get(value), np.float32)
      if leaf == 'kernel':
        out[f'{prefix}.weight'] = np.ascontiguousarray(value.T)
      elif leaf in ('scale', 'bias'):
        out[f'{prefix}.{"weight" if leaf == "scale" else "bias"}'] = value
      else:
        raise it.ConversionError(f'CAGE head leaf {name}/{leaf} has no torch name')
  return out


def to_numpy_state_dict(cfg, variables: Mapping) -> dict[str, np.ndarray]:
  """ferjax CAGE variables -> the official model's state_dict as numpy arrays."""
  backbone, heads = _split(variables)
  arch, overrides, shape = backbone_spec(cfg)
  sd = it.to_numpy_state_dict(arch, backbone, input_shape=shape, **overrides)
  head = _head_to_torch(heads)
  clash = sorted(set(sd) & set(head))
  if clash:
    raise it.ConversionError(f'head keys {clash} collide with backbone keys')
  return {**sd, **head}


def to_torch(cfg, variables: Mapping) -> dict:
  import torch
  return {k: torch.from_numpy(np.array(v)) for k, v in to_numpy_state_dict(cfg, variables).items()}


def from_torch(cfg, state_dict: Mapping[str, Any]) -> dict:
  """The official model's state_dict -> ferjax CAGE variables (strict: every key used once)."""
  from ferjax.methods import cage
  arch, overrides, shape = backbone_spec(cfg)
  model = cage.build_model(cfg)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32)))
  _, head_abstract = _split(abstract)
  variables = it.from_torch(arch, state_dict, ignore=('classifier.',), input_shape=shape,
                            **overrides)
  params = {'backbone': variables['params']}
  wanted = _head_to_torch(jax.tree.map(lambda a: np.zeros(a.shape, np.float32), head_abstract))
  given = {k: it.to_numpy(v) for k, v in state_dict.items() if k.startswith('classifier.')}
  missing, unexpected = sorted(set(wanted) - set(given)), sorted(set(given) - set(wanted))
  wrong = sorted(f'{k}: {given[k].shape} vs {wanted[k].shape}' for k in set(wanted) & set(given)
                 if given[k].shape != wanted[k].shape)
  if missing or unexpected or wrong:
    raise it.ConversionError(f'CAGE head does not fit cage.version={cfg.cage.version!r}: '
                             f'missing {missing}, unexpected {unexpected}, shapes {wrong}')
  for name, leaves in head_abstract.items():
    prefix = 'classifier.' + _HEAD.match(name).group(1)
    params[name] = {}
    for leaf in leaves:
      if leaf == 'kernel':
        params[name][leaf] = np.ascontiguousarray(given[f'{prefix}.weight'].T, np.float32)
      else:
        key = f'{prefix}.{"weight" if leaf == "scale" else "bias"}'
        params[name][leaf] = np.asarray(given[key], np.float32)
  out = {'params': params}
  if variables.get('batch_stats'):
    out['batch_stats'] = {'backbone': variables['batch_stats']}
  return out
