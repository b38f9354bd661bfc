"""VGG-13/16/19 <-> torchvision `vgg13/16/19` state_dicts; with the override batch_norm=True,
torchvision `vgg13_bn/16_bn/19_bn`.

Names follow torchvision with '_' for '.' (see ferjax.models.vgg), Sequential indices included:
`features_0/kernel` is `features.0.weight`, `classifier_6/kernel` is `classifier.6.weight`.
The first classifier layer needs no reordering: the Flax model flattens its 7x7 map in torch's
(C, H, W) order.

  from_torch('vgg16', sd)                                  # vgg16, num_classes=0 needs
                                                           #   ignore=('classifier.',)
  from_torch('vgg16', sd, num_classes=1000)                # the full ImageNet net
  from_torch('vgg16_bn', sd_bn, num_classes=1000)         # same as vgg16 with batch_norm=True
"""
from __future__ import annotations

from ferjax.interop import mobilenet

KEYS = mobilenet.KEYS
