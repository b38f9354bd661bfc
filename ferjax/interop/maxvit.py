"""MaxViT-T <-> torchvision `maxvit_t` state_dicts.

ferjax.models.maxvit names modules after torchvision with `_<digits>` for a Sequential index;
torchvision additionally wraps a layer's parts in `layers` containers
(`blocks.0.layers.0.layers.MBconv.layers.conv_a.0.weight`), which are restored here.

The relative position bias tables map one to one (rows: (2*7 - 1)^2 offsets, columns: heads).
torchvision also stores each attention's `relative_position_index`, a constant buffer: it is
recomputed on export and ignored on import, like BatchNorm's `num_batches_tracked`. The qkv
projection is one Linear in both (q, k, v stacked along the output axis), so it only needs the
usual transpose.

The abstract tree is traced at 224x224, so conversions support torchvision's partition size 7
(any depth/width overrides); another partition size would need a matching input size.
"""
from __future__ import annotations

import math
import re

import numpy as np

from ferjax.interop import torch as it
from ferjax.models import maxvit

# Flax module name (after the `_<digits>` -> `.<digits>` rewrite) -> torchvision's.
_WRAPPED = ('MBconv', 'window_attention', 'grid_attention', 'pre_norm', 'conv_a', 'conv_b',
            'squeeze_excitation', 'conv_c')
_TABLE = 'relative_position_bias_table'
_INDEX = 'relative_position_index'


def _segment(name: str) -> str:
  # `stem_0_0` -> `stem.0.0`; names like `conv_a` keep their underscore (no digits after it).
  name = re.sub(r'_(\d+)(?=_|$)', r'.\1', name)
  head = name.split('.', 1)[0]
  return 'layers.' + name if head in _WRAPPED else name


def _name(collection, path, shape):
  del collection
  mods, leaf = path[:-1], path[-1]
  prefix = '.'.join(_segment(m) for m in mods)
  if leaf == _TABLE:
    return f'{prefix}.{_TABLE}', it.SAME
  tname, tf = it.default_leaf(leaf, len(shape))
  return f'{prefix}.{tname}', tf


def _extra_torch(keys):
  """BatchNorm counters and each attention's constant `relative_position_index` buffer."""
  out = it.bn_tracked(keys)
  for k in keys:
    if k.endswith('.' + _TABLE):
      # The table has (2 size - 1)^2 rows for size x size windows.
      size = (math.isqrt(int(np.shape(keys[k])[0])) + 1) // 2
      out[k[:-len(_TABLE)] + _INDEX] = (lambda s=size: maxvit.relative_position_index(s))
  return out


KEYS = it.KeyMap(_name, _extra_torch)
