"""ResNet-18/34/50 <-> torchvision `resnet18/34/50` state_dicts (and the VGGFace2 caffe ResNet-50,
whose pickle uses the same key names).

The MS-Celeb ResNet-18 of DAN/CAFE (`resnet18_msceleb.pth`, {'state_dict': ...}) loads as
resnet18 with ignore=('fc.',) (its fc classifies identities).

The Flax module names already follow torchvision (see ferjax.models.resnet); only the block
index separator (`layer1_0` -> `layer1.0`) and the downsample pair (`downsample_conv` ->
`downsample.0`, `downsample_bn` -> `downsample.1`) differ.
"""
from __future__ import annotations

from ferjax.interop import torch as it


def _name(collection, path, shape):
  mods, leaf = list(path[:-1]), path[-1]
  out = []
  for m in mods:
    if m.startswith('layer'):
      out.append(m.replace('_', '.'))
    elif m == 'downsample_conv':
      out.append('downsample.0')
    elif m == 'downsample_bn':
      out.append('downsample.1')
    else:
      out.append(m)
  tname, tf = it.default_leaf(leaf, len(shape))
  return '.'.join(out + [tname]), tf


KEYS = it.KeyMap(_name, it.bn_tracked)
