"""ResNet-18/34/50 in torchvision's layout (Flax Linen, NHWC).

Module names mirror torchvision's state_dict keys (conv1, bn1, layer1_0.conv1, ...,
layer2_0.downsample_conv) so that the PyTorch interop map is a rename plus transposes.
Padding is explicit, as in torchvision: Flax 'SAME' pads stride-2 convolutions asymmetrically
and would not match the reference numerically.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ferjax.models import layers
from ferjax.models.layers import Norm

# torchvision initialises convolutions with kaiming_normal_(mode='fan_out', relu).
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_conv = functools.partial(layers.padded_conv, kernel_init=conv_init)


class BasicBlock(nn.Module):
  features: int
  stride: int
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x):
    y = _conv(self.features, 3, self.stride, 'conv1', self.dtype)(x)
    y = nn.relu(self.norm('bn1')(y))
    y = _conv(self.features, 3, 1, 'conv2', self.dtype)(y)
    y = self.norm('bn2')(y)
    if x.shape[-1] != self.features or self.stride != 1:
      x = _conv(self.features, 1, self.stride, 'downsample_conv', self.dtype)(x)
      x = self.norm('downsample_bn')(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  features: int  # the block's inner width; output is 4x
  stride: int
  norm: Any
  dtype: Any
  stride_in_1x1: bool = False  # caffe-converted nets (VGGFace2) stride the first 1x1

  @nn.compact
  def __call__(self, x):
    s1, s3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
    y = nn.relu(self.norm('bn1')(_conv(self.features, 1, s1, 'conv1', self.dtype)(x)))
    # torchvision (v1.5) strides the 3x3 convolution, not the first 1x1.
    y = nn.relu(self.norm('bn2')(_conv(self.features, 3, s3, 'conv2', self.dtype)(y)))
    y = self.norm('bn3')(_conv(self.features * 4, 1, 1, 'conv3', self.dtype)(y))
    if x.shape[-1] != self.features * 4 or self.stride != 1:
      x = _conv(self.features * 4, 1, self.stride, 'downsample_conv', self.dtype)(x)
      x = self.norm('downsample_bn')(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Returns pooled features (B, C_last); `return_maps` also gives each stage's map.

  num_classes > 0 adds torchvision's `fc` layer and returns its logits instead of the features
  (the ImageNet checkpoints carry it). bn_frozen=True keeps BatchNorm on its running statistics
  even when train=True (a frozen backbone); PyTorch's reference code often leaves frozen nets in
  train() mode, where the statistics keep updating: that is bn_frozen=False.
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = 'basic'
  width: int = 64
  bn_momentum: float = 0.9
  num_classes: int = 0
  bn_frozen: bool = False
  # The caffe-converted VGGFace2 ResNet-50 (the multi-task paper's backbone): strides in the
  # first 1x1 of each bottleneck and max-pools with ceil_mode=True and no padding.
  caffe: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, return_maps: bool = False):
    norm = Norm(train and not self.bn_frozen, self.bn_momentum, 1e-5, self.dtype)
    block = {'basic': BasicBlock, 'bottleneck': Bottleneck}[self.block]
    x = x.astype(self.dtype)
    x = _conv(self.width, 7, 2, 'conv1', self.dtype)(x)                   # (B, H/2, W/2, w)
    x = nn.relu(norm('bn1')(x))
    if self.caffe:   # ceil_mode: extend the right/bottom edge so the last window fits
      pad = [(0, (-(-(n - 3) // 2)) * 2 + 3 - n) for n in x.shape[1:3]]
      x = layers.max_pool(x, (3, 3), (2, 2), pad)
    else:
      x = layers.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))  # (B, H/4, W/4, w)
    extra = {'stride_in_1x1': True} if self.caffe and self.block == 'bottleneck' else {}
    maps = []
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        x = block(self.width * 2**i, stride, norm, self.dtype, name=f'layer{i + 1}_{j}',
                  **extra)(x)
      maps.append(x)
    feats = jnp.mean(x, axis=(1, 2))                                       # (B, C_last)
    if self.num_classes:
      feats = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(feats)
    return (feats, maps) if return_maps else feats


def resnet18(**kw):
  return ResNet(stage_sizes=kw.pop('stage_sizes', (2, 2, 2, 2)), block='basic', **kw)


def resnet34(**kw):
  return ResNet(stage_sizes=kw.pop('stage_sizes', (3, 4, 6, 3)), block='basic', **kw)


def resnet50(**kw):
  return ResNet(stage_sizes=kw.pop('stage_sizes', (3, 4, 6, 3)), block='bottleneck', **kw)


def resnet50_vggface2(**kw):
  """The caffe-converted VGGFace2 ResNet-50 (`resnet50_ft_weight.pkl`, 8631 identities)."""
  return resnet50(caffe=True, **kw)
