"""EfficientNet-B0/B2, EfficientNetV2-S <-> torchvision `efficientnet_b0/b2/v2_s` state_dicts.

Names follow torchvision with '_' for '.' (see ferjax.models.efficientnet): `features_2_1/
block_2/fc1/kernel` is `features.2.1.block.2.fc1.weight`, the Squeeze-Excitation 1x1 convs
transposed like any convolution. Stochastic depth has no parameters on either side.
"""
from __future__ import annotations

from ferjax.interop import torch as it
from ferjax.interop.mobilenet import dotted_name
from ferjax.models import efficientnet

for _arch, _build in (('efficientnet_b0', efficientnet.efficientnet_b0),
                      ('efficientnet_b2', efficientnet.efficientnet_b2),
                      ('efficientnet_v2_s', efficientnet.efficientnet_v2_s)):
  it.register(_arch, it.ArchMap(build=_build, input_shape=(1, 32, 32, 3), name=dotted_name,
                                extra_torch=it.bn_tracked,
                                reference=f'torchvision.models.{_arch}'))
