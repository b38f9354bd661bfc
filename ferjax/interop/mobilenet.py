"""MobileNetV2 <-> torchvision `mobilenet_v2` state_dicts.

The Flax module names are torchvision's state_dict names with '_' for '.' (see
ferjax.models.mobilenet), so a torch key is the Flax path with each '_' turned into '.' plus the
usual leaf renames (kernel -> weight, transposed; scale -> weight; mean/var -> running_*).
ferjax.interop.vgg and ferjax.interop.efficientnet use the same rule.
"""
from __future__ import annotations

from ferjax.interop import torch as it


def dotted_name(collection, path, shape):
  """Flax path ('features_1', 'conv_0', '0', 'kernel') -> 'features.1.conv.0.0.weight'.

  Sound only for modules whose own names contain no '_' (true of the torchvision nets here).
  """
  del collection  # BatchNorm statistics and parameters share their module's torch prefix
  mods = [m.replace('_', '.') for m in path[:-1]]
  tname, tf = it.default_leaf(path[-1], len(shape))
  return '.'.join(mods + [tname]), tf


KEYS = it.KeyMap(dotted_name, it.bn_tracked)
