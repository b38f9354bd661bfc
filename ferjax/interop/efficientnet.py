"""EfficientNet-B0/B2, EfficientNetV2-S <-> torchvision `efficientnet_b0/b2/v2_s` state_dicts.

Names follow torchvision with '_' for '.' (see ferjax.models.efficientnet): `features_2_1/
block_2/fc1/kernel` is `features.2.1.block.2.fc1.weight`, the Squeeze-Excitation 1x1 convs
transposed like any convolution. Stochastic depth has no parameters on either side.
"""
from __future__ import annotations

from ferjax.interop import mobilenet

KEYS = mobilenet.KEYS
