"""A ferjax multi-task model of paper 004 (ferjax.models.mtl) <-> the PyTorch reference's
state_dict (third_party/torch_reference/mtl.py), both ways.

The backbones keep their own key maps under a prefix (`emotion/...` <-> `em_features.*` with
the torchvision ResNet names, `appearance/...` <-> `lm_features.*` with the ResNet or timm
MobileViTv2 names); every other module is named as in the reference with `_N` for a
Sequential index (`em_reduce_0` <-> `em_reduce.0`, `cat_head0/sa/conv1x1_0` <->
`cat_head0.sa.conv1x1.0`). The affinity loss's centres are not in the reference's state_dict:
`from_torch` takes them or draws fresh N(0, 1) centres. Strict both ways: a missing,
unexpected or mis-shaped key is a ConversionError naming it.

  sd = to_numpy_state_dict(variables, **dims)
  variables = from_torch(state_dict, **dims)        # dims: config_dims(cfg) for a run
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

from ferjax.interop import mobilevit as mobilevit_map
from ferjax.interop import resnet as resnet_map
from ferjax.interop import torch as it
from ferjax.models import mobilevit, mtl, resnet

_INDEX = re.compile(r'_(\d+)$')
CENTRES = ('params', 'centers')


def _appearance(appearance: str, width: int, stage_sizes, mobilevit_channels):
  if appearance.startswith('mobilevitv2'):
    extra = ({'channels': tuple(mobilevit_channels), 'stem_channels': mobilevit_channels[0] // 2}
             if mobilevit_channels else {})
    return getattr(mobilevit, appearance)(**extra)
  return getattr(resnet, appearance)(width=width, stage_sizes=tuple(stage_sizes))


def build(num_classes: int = 6, num_heads: int = 4, width: int = 64, stage_sizes=(3, 4, 6, 3),
          reduce=(1024, 512), shared=(256, 128), hidden: int = 32,
          appearance: str = 'resnet50_vggface2', appearance_head: str = 'conv',
          mobilevit_channels=(), afn_logsoftmax: bool = False) -> mtl.MTL:
  emotion = resnet.resnet50_vggface2(width=width, stage_sizes=tuple(stage_sizes))
  return mtl.MTL(emotion, _appearance(appearance, width, stage_sizes, mobilevit_channels),
                 num_classes, appearance_head=appearance_head, num_heads=num_heads,
                 hidden=hidden, reduce=tuple(reduce), shared=tuple(shared),
                 afn_logsoftmax=afn_logsoftmax)


def config_dims(cfg) -> dict:
  """build() arguments of an mtl run's config."""
  from ferjax import labels
  from ferjax.methods import mtl as mtl_method
  t, m = cfg.mtl, cfg.model
  if t.emotion_backbone != 'resnet50_vggface2':
    raise it.ConversionError(f'the reference has a VGGFace2 ResNet-50, not {t.emotion_backbone}')
  return dict(num_classes=len(labels.resolve(cfg)), num_heads=t.num_heads, width=m.width,
              stage_sizes=tuple(m.stage_sizes), reduce=tuple(t.reduce), shared=tuple(t.shared),
              hidden=t.channel_hidden, appearance=t.appearance,
              appearance_head=mtl_method.appearance_head(t),
              mobilevit_channels=tuple(t.mobilevit_channels), afn_logsoftmax=t.afn_logsoftmax)


def name(collection: str, path: tuple, shape: tuple, appearance: str) -> tuple[str, it.Transform]:
  """A Flax variable path (below its collection) -> (reference key, transform)."""
  if path[0] == 'emotion':
    key, tf = resnet_map._name(collection, path[1:], shape)
    return f'em_features.{key}', tf
  if path[0] == 'appearance':
    rule = mobilevit_map._name if appearance.startswith('mobilevit') else resnet_map._name
    key, tf = rule(collection, path[1:], shape)
    return f'lm_features.{key}', tf
  leaf, tf = it.default_leaf(path[-1], len(shape))
  return '.'.join([_INDEX.sub(r'.\1', m) for m in path[:-1]] + [leaf]), tf


def abstract_variables(**dims) -> dict:
  return it.traced(build, (1, 64, 64, 3), **dims)


def _names(abstract, appearance) -> dict:
  return {p: name(p[0], p[1:], tuple(a.shape), appearance)
          for p, a in it._leaves(abstract).items() if p != CENTRES}


def to_numpy_state_dict(variables: Mapping, **dims) -> dict[str, np.ndarray]:
  """ferjax variables -> the reference state_dict (numpy), BN `num_batches_tracked` 0."""
  abstract = abstract_variables(**dims)
  names = _names(abstract, dims.get('appearance', 'resnet50_vggface2'))
  given = {k: variables[k] for k in ('params', 'batch_stats') if k in variables}
  return it.named_to_torch(names, abstract, given,
                           f'variables do not fit the multi-task model {dict(dims)}')


def to_torch(variables: Mapping, **dims) -> dict:
  import torch
  return {k: torch.from_numpy(v.copy()) for k, v in to_numpy_state_dict(variables, **dims).items()}


def from_torch(state_dict: Mapping[str, Any], centers=None, seed: int = 0, **dims) -> dict:
  """The reference state_dict -> ferjax variables; every key used once, shapes checked."""
  abstract = abstract_variables(**dims)
  names = _names(abstract, dims.get('appearance', 'resnet50_vggface2'))
  want = it._leaves(abstract)
  flat = it.named_from_torch(names, abstract, state_dict,
                             f'state_dict does not fit the multi-task model {dict(dims)}')
  shape = tuple(want[CENTRES].shape)
  if centers is None:
    centers = np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)
  centers = it.to_numpy(centers).astype(np.float32)
  if centers.shape != shape:
    raise it.ConversionError(f'centers have shape {centers.shape}, expected {shape}')
  flat[CENTRES] = centers
  return it._nest(flat)
