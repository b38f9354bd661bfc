"""A ferjax MTEN (ferjax.models.mten) <-> torchvision's `efficientnet_b2(num_classes=C + 2)`
state_dict, both ways through ferjax.interop.torch (`from_torch('mten', sd, num_classes=C)`,
`to_torch('mten', variables, num_classes=C)`).

The backbone's names are torchvision's with '_' for '.' below the `backbone` level
(ferjax.interop.efficientnet); the head `classifier_1` is `classifier.1`.
"""
from __future__ import annotations

from ferjax.interop import mobilenet
from ferjax.interop import torch as it
from ferjax.models import efficientnet, mten


def build(num_classes: int = 8, **kw) -> mten.MTEN:
  backbone = efficientnet.efficientnet_b2(**kw)
  return mten.MTEN(backbone, num_classes)


def name(collection: str, path: tuple, shape: tuple) -> tuple[str, it.Transform]:
  if path[0] == 'backbone':
    return mobilenet.dotted_name(collection, path[1:], shape)
  if path[0] != 'classifier_1' or len(path) != 2:
    raise it.ConversionError(f'{collection}/{"/".join(path)} has no torchvision name')
  return mobilenet.dotted_name(collection, path, shape)


KEYS = it.KeyMap(name, it.bn_tracked)
