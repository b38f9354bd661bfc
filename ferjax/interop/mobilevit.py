"""MobileViTv2-100 <-> timm `mobilevitv2_100` state_dicts.

ferjax.models.mobilevit names modules after timm with `_<digits>` for a Sequential index
(`stages_3_1/transformer_0/attn/qkv_proj` <-> `stages.3.1.transformer.0.attn.qkv_proj`). All
of timm's 1x1 projections inside the transformer (qkv_proj, out_proj, mlp.fc1/fc2) are Conv2d,
kept as 1x1 convolutions here, so only the usual OIHW <-> HWIO transpose applies; GroupNorm's
weight/bias map like a LayerNorm's.
"""
from __future__ import annotations

import re

from ferjax.interop import torch as it

# Flax names whose torch counterpart is a nested module rather than a Sequential index.
_RENAME = {'mlp_fc1': 'mlp.fc1', 'mlp_fc2': 'mlp.fc2', 'head_fc': 'head.fc'}


def _segment(name: str) -> str:
  # `stages_2_1` -> `stages.2.1`; `conv1_1x1` and `conv_1x1` are left alone.
  return _RENAME.get(name, re.sub(r'_(\d+)(?=_|$)', r'.\1', name))


def _name(collection, path, shape):
  del collection
  mods, leaf = path[:-1], path[-1]
  tname, tf = it.default_leaf(leaf, len(shape))
  return '.'.join([_segment(m) for m in mods] + [tname]), tf


KEYS = it.KeyMap(_name, it.bn_tracked)
