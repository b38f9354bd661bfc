"""CAFE (cached-features model: ResNet-18 mask net + fc) <-> the official `Model` state_dict.

The official `Model` (zyh-uaiaaaa/Generalizable-FER code/ours_CAFE.py) wraps a ResNet-18 as
`features = Sequential(*children[:-2])` (conv1, bn1, relu, maxpool, layer1..layer4 -> indices
0, 1, 4, 5, 6, 7), `features2 = Sequential(avgpool)` (no parameters) and `fc = Linear(512, 7)`.
CLIP lives outside `Model` and is not part of the export. Block-internal names are torchvision's
(conv1, bn1, conv2, bn2, downsample.0/.1), as in ferjax.interop.resnet.

  python -m ferjax.convert --arch cafe --from ferjax --in runs/cafe --out cafe.pth
"""
from __future__ import annotations

from ferjax.interop import resnet as resnet_map
from ferjax.interop import torch as it
from ferjax.methods import cafe
from ferjax.models import resnet

# Official Sequential index of each ResNet-18 child that has parameters.
_TRUNK_INDEX = {'conv1': 0, 'bn1': 1, 'layer1': 4, 'layer2': 5, 'layer3': 6, 'layer4': 7}


def build(num_classes: int = 7, width: int = 64, **kw):
  return cafe.CAFE(num_classes, width * 8, resnet.resnet18(width=width, **kw))


def name(collection, path, shape):
  if path[0] == 'fc':
    leaf, tf = it.default_leaf(path[-1], len(shape))
    return f'fc.{leaf}', tf
  if path[0] != 'mask_net':   # exact mode's CLIP: outside the official Model
    raise it.ConversionError(f'{"/".join(path)} has no counterpart in the official Model '
                             '(export a cached-features CAFE, or drop the clip subtree)')
  key, tf = resnet_map._name(collection, path[1:], shape)
  head, _, rest = key.partition('.')
  stage = head.split('.')[0]
  if stage not in _TRUNK_INDEX:
    raise it.ConversionError(f'no official name for {"/".join(path)}')
  return f'features.{_TRUNK_INDEX[stage]}.{rest}', tf


KEYS = it.KeyMap(name, it.bn_tracked)
