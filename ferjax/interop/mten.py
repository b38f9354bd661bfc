"""A ferjax MTEN (ferjax.models.mten) <-> torchvision's `efficientnet_b2(num_classes=C + 2)`
state_dict, both ways through ferjax.interop.torch (`from_torch('mten', sd, num_classes=C)`,
`to_torch('mten', variables, num_classes=C)`).

The backbone's names are torchvision's with '_' for '.' below the `backbone` level
(ferjax.interop.efficientnet); the head `classifier_1` is `classifier.1`. A run's model:
`to_numpy_state_dict('mten', variables, **config_dims(cfg))`.
"""
from __future__ import annotations

from ferjax.interop import mobilenet
from ferjax.interop import torch as it
from ferjax.models import efficientnet, mten


def build(num_classes: int = 8, backbone: str = 'efficientnet_b2', **kw) -> mten.MTEN:
  """The MTEN on `backbone` (an EfficientNet of ferjax.models.efficientnet)."""
  return mten.MTEN(getattr(efficientnet, backbone)(**kw), num_classes)


def config_dims(cfg) -> dict:
  """build() arguments that give an MTEN run's variable tree (e.g. for `to_numpy_state_dict`)."""
  from ferjax import labels
  return dict(num_classes=len(labels.resolve(cfg)), backbone=cfg.model.backbone)


def name(collection: str, path: tuple, shape: tuple) -> tuple[str, it.Transform]:
  if path[0] == 'backbone':
    return mobilenet.dotted_name(collection, path[1:], shape)
  if path[0] != 'classifier_1' or len(path) != 2:
    raise it.ConversionError(f'{collection}/{"/".join(path)} has no torchvision name')
  return mobilenet.dotted_name(collection, path, shape)


KEYS = it.KeyMap(name, it.bn_tracked)
