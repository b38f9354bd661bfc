"""MobileNetV2 in torchvision's layout (Flax Linen, NHWC), and the conv-BN-activation unit that
the torchvision-style mobile nets (here and in ferjax.models.efficientnet) are built from.

  features_0      Conv3x3 s2 3 -> 32, BN, ReLU6                            (B, H/2, W/2, 32)
  features_1..17  InvertedResidual, per stage (t, c, n, s) =
                  (1, 16, 1, 1) (6, 24, 2, 2) (6, 32, 3, 2) (6, 64, 4, 2)
                  (6, 96, 3, 1) (6, 160, 3, 2) (6, 320, 1, 1)              (B, H/32, W/32, 320)
  features_18     Conv1x1 320 -> 1280, BN, ReLU6                           (B, H/32, W/32, 1280)
  mean over H, W                                                           (B, 1280)
  classifier_0/1  Dropout(0.2), Linear(1280 -> num_classes)  (only when num_classes > 0)

InvertedResidual(in, out, stride, t) holds a Sequential `conv`: a 1x1 expansion to round(in * t)
channels (ConvNormAct, absent when t == 1), a 3x3 depthwise ConvNormAct with the stride, then a
bare 1x1 projection conv and its BN (no activation: the "linear bottleneck"). The identity is
added when stride == 1 and in == out.

Module names are torchvision's state_dict names with '_' for '.': `features_2/conv_1/0` is
`features.2.conv.1.0`, so the interop map is a rename plus transposes. Padding is explicit,
(k - 1) // 2 on every side as in torchvision; Flax 'SAME' pads stride-2 convolutions
asymmetrically and would not match the reference numerically.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ferjax.models import layers
from ferjax.models.layers import Norm

# torchvision initialises these nets' convolutions with kaiming_normal_(mode='fan_out') (gain
# sqrt(2)) and their classifiers' Linear weights with normal(0, 0.01).
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_linear_init = nn.initializers.normal(0.01)

# (expansion t, output channels c, blocks n, first stride s) of torchvision's MobileNetV2.
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
  """torchvision's channel rounding: nearest multiple of `divisor`, never more than 10% down."""
  min_value = divisor if min_value is None else min_value
  out = max(min_value, int(v + divisor / 2) // divisor * divisor)
  return out + divisor if out < 0.9 * v else out


# A Conv2d with torchvision's symmetric padding (EfficientNet shares it).
conv = functools.partial(layers.padded_conv, kernel_init=conv_init)


class ConvNormAct(nn.Module):
  """torchvision's Conv2dNormActivation: bias-free conv `0`, BatchNorm `1`, then `act`.

  groups=-1 means depthwise (one group per input channel).
  """
  features: int
  kernel: int
  stride: int
  norm: Any
  act: Optional[Callable] = None
  groups: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):                                     # (B, H, W, C_in)
    groups = x.shape[-1] if self.groups == -1 else self.groups
    x = conv(self.features, self.kernel, self.stride, '0', self.dtype, groups=groups)(x)
    x = self.norm('1')(x)                                    # (B, H/s, W/s, features)
    return x if self.act is None else self.act(x)


class InvertedResidual(nn.Module):
  features: int
  stride: int
  expand_ratio: int
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x):                                     # (B, H, W, C_in)
    c_in = x.shape[-1]
    hidden = int(round(c_in * self.expand_ratio))
    k, y = 0, x
    if self.expand_ratio != 1:
      y = ConvNormAct(hidden, 1, 1, self.norm, jax.nn.relu6, dtype=self.dtype, name='conv_0')(y)
      k = 1
    y = ConvNormAct(hidden, 3, self.stride, self.norm, jax.nn.relu6, groups=-1,
                    dtype=self.dtype, name=f'conv_{k}')(y)   # (B, H/s, W/s, hidden)
    y = conv(self.features, 1, 1, f'conv_{k + 1}', self.dtype)(y)
    y = self.norm(f'conv_{k + 2}')(y)                        # (B, H/s, W/s, features)
    return x + y if self.stride == 1 and c_in == self.features else y


class MobileNetV2(nn.Module):
  """Returns pooled features (B, 1280), or logits (B, num_classes) when num_classes > 0.

  bn_frozen=True keeps BatchNorm on its running statistics even when train=True; the classifier
  dropout is active whenever train=True (it needs a 'dropout' rng then).
  """
  width_mult: float = 1.0
  round_nearest: int = 8
  dropout: float = 0.2
  bn_momentum: float = 0.9
  num_classes: int = 0
  bn_frozen: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = Norm(train and not self.bn_frozen, self.bn_momentum, 1e-5, self.dtype)
    width = lambda c: make_divisible(c * self.width_mult, self.round_nearest)
    last = make_divisible(1280 * max(1.0, self.width_mult), self.round_nearest)
    x = x.astype(self.dtype)
    x = ConvNormAct(width(32), 3, 2, norm, jax.nn.relu6, dtype=self.dtype,
                    name='features_0')(x)                    # (B, H/2, W/2, 32)
    i = 1
    for t, c, n, s in _SETTING:
      for j in range(n):
        x = InvertedResidual(width(c), s if j == 0 else 1, t, norm, self.dtype,
                             name=f'features_{i}')(x)
        i += 1
    x = ConvNormAct(last, 1, 1, norm, jax.nn.relu6, dtype=self.dtype,
                    name=f'features_{i}')(x)                 # (B, H/32, W/32, 1280)
    feats = jnp.mean(x, axis=(1, 2))                         # (B, 1280)
    if self.num_classes:
      feats = nn.Dropout(self.dropout, deterministic=not train, name='classifier_0')(feats)
      feats = nn.Dense(self.num_classes, kernel_init=_linear_init, dtype=self.dtype,
                       name='classifier_1')(feats)
    return feats


def mobilenet_v2(**kw):
  return MobileNetV2(**kw)
