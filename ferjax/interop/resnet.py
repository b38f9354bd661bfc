"""ResNet-18/34/50 <-> torchvision `resnet18/34/50` state_dicts.

The Flax module names already follow torchvision (see ferjax.models.resnet); only the block
index separator (`layer1_0` -> `layer1.0`) and the downsample pair (`downsample_conv` ->
`downsample.0`, `downsample_bn` -> `downsample.1`) differ.
"""
from __future__ import annotations

from ferjax.interop import torch as it
from ferjax.models import resnet


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


for _arch, _build in (('resnet18', resnet.resnet18), ('resnet34', resnet.resnet34),
                      ('resnet50', resnet.resnet50)):
  it.register(_arch, it.ArchMap(build=_build, input_shape=(1, 32, 32, 3), name=_name,
                                extra_torch=it.bn_tracked,
                                reference=f'torchvision.models.{_arch}'))
