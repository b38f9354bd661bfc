"""MobileFaceNet as POSTER++'s frozen landmark branch (`MobileFaceNet([112, 112], 136)`), Flax.

The reference is the MobileFaceNet of InsightFace_Pytorch as trained for 68 landmarks by
pytorch_face_landmark (whose checkpoint POSTER++ loads strictly), with the GDC head:

  conv1       Conv_block 3x3 s2, 3 -> 64                                  (B, 56, 56, 64)
  conv2_dw    Conv_block 3x3 depthwise, 64                                (B, 56, 56, 64)
  conv_23     Depth_Wise 64 -> 64, s2, inner 128                          (B, 28, 28, 64)
  conv_3      Residual 64, 4 blocks, inner 128               -> 'out3'    (B, 28, 28, 64)
  conv_34     Depth_Wise 64 -> 128, s2, inner 256                         (B, 14, 14, 128)
  conv_4      Residual 128, 6 blocks, inner 256              -> 'out4'    (B, 14, 14, 128)
  conv_45     Depth_Wise 128 -> 128, s2, inner 512                        (B, 7, 7, 128)
  conv_5      Residual 128, 2 blocks, inner 256 (not 512)                 (B, 7, 7, 128)
  conv_6_sep  Conv_block 1x1, 128 -> 512                     -> 'conv_features' (B, 7, 7, 512)
  output_layer (GDC): conv_6_dw Linear_block 7x7 depthwise 512 (valid) -> (B, 1, 1, 512),
              flatten, linear Linear(512 -> 136, no bias), bn BatchNorm1d(136, affine)
                                                             -> 'landmarks' (B, 136)

Conv_block = Conv2d (no bias) + BN + PReLU(out); Linear_block = Conv2d (no bias) + BN;
Depth_Wise(in, out, groups=g) = Conv_block 1x1 in->g (`conv`), Conv_block kxk depthwise g->g with
the stride (`conv_dw`), Linear_block 1x1 g->out (`project`); inside Residual (`model`, a
Sequential) it adds the identity shortcut. The head sits under `output_layer.` in the state_dict
(GDC is a sub-module there), e.g. `output_layer.linear.weight`, `output_layer.bn.running_mean`.

Flax module names equal the reference names, with `model_N` for the Sequential index `model.N`.
Output: {'out3', 'out4', 'conv_features', 'landmarks'} (NHWC maps; POSTER++ uses the first
three and discards the landmarks).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ferjax.models.irse import PReLU, conv, torch_nearest_resize
from ferjax.models.layers import Norm

# The reference initialises convolutions and linear layers with kaiming_normal_(fan_out, relu).
_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class ConvBlock(nn.Module):
  """Conv_block: conv + bn + prelu (`linear=True`: Linear_block, no PReLU)."""
  features: int
  kernel: int
  stride: int
  padding: int
  groups: int
  norm: Any
  dtype: Any
  linear: bool = False

  @nn.compact
  def __call__(self, x):
    groups = x.shape[-1] if self.groups == -1 else self.groups   # -1: depthwise
    x = conv(self.features, self.kernel, self.stride, 'conv', self.dtype, padding=self.padding,
             groups=groups, kernel_init=_init)(x)
    x = self.norm('bn')(x)
    return x if self.linear else PReLU(self.dtype, name='prelu')(x)


class DepthWise(nn.Module):
  """Depth_Wise: 1x1 expand to `inner`, kxk depthwise with the stride, 1x1 linear project."""
  features: int
  inner: int  # the reference's `groups` argument
  stride: int
  residual: bool
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x):                                          # (B, H, W, C_in)
    y = ConvBlock(self.inner, 1, 1, 0, 1, self.norm, self.dtype, name='conv')(x)
    y = ConvBlock(self.inner, 3, self.stride, 1, -1, self.norm, self.dtype, name='conv_dw')(y)
    y = ConvBlock(self.features, 1, 1, 0, 1, self.norm, self.dtype, linear=True,
                  name='project')(y)                              # (B, H/s, W/s, features)
    return x + y if self.residual else y


class Residual(nn.Module):
  """Residual: `num_block` residual Depth_Wise blocks at stride 1 (children `model_N`)."""
  features: int
  num_block: int
  inner: int
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_block):
      x = DepthWise(self.features, self.inner, 1, True, self.norm, self.dtype,
                    name=f'model_{i}')(x)
    return x


class GDC(nn.Module):
  """Global depthwise conv head: 7x7 depthwise Linear_block, flatten, Linear (no bias), BN1d."""
  embedding_size: int
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x):                                          # (B, 7, 7, 512)
    x = ConvBlock(x.shape[-1], 7, 1, 0, -1, self.norm, self.dtype, linear=True,
                  name='conv_6_dw')(x)                            # (B, 1, 1, 512)
    x = x.reshape(x.shape[0], -1)                                 # 1x1: NCHW order irrelevant
    x = nn.Dense(self.embedding_size, use_bias=False, kernel_init=_init, dtype=self.dtype,
                 name='linear')(x)
    return self.norm('bn')(x)                                     # (B, embedding_size)


class MobileFaceNet(nn.Module):
  """POSTER++'s landmark MobileFaceNet; returns {'out3', 'out4', 'conv_features', 'landmarks'}.

  embedding_size: the head's output size (136 = 68 landmarks x 2 in POSTER++).
  resize: when set, the input is first resized with PyTorch's 'nearest' F.interpolate (POSTER++
    does this to 112 before calling the landmark net). The GDC head needs a 7x7 map (112 input).
  bn_frozen: BatchNorm keeps its running statistics even when train=True (POSTER++ freezes this
    net's parameters, but PyTorch's train() mode would still update its statistics).
  landmark_head: False drops the GDC head (GReFEL uses only the maps); the input may then be any
    multiple of 16 px. blocks: residual blocks of conv_3, conv_4, conv_5; others than (4, 6, 2)
    only make small test networks.
  """
  embedding_size: int = 136
  resize: Optional[int] = None
  bn_momentum: float = 0.9
  bn_frozen: bool = False
  dtype: Any = jnp.float32
  landmark_head: bool = True
  blocks: Sequence[int] = (4, 6, 2)

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = Norm(train and not self.bn_frozen, self.bn_momentum, 1e-5, self.dtype)
    d = self.dtype
    x = x.astype(d)
    if self.resize:
      x = torch_nearest_resize(x, self.resize)                    # (B, 112, 112, 3)
    x = ConvBlock(64, 3, 2, 1, 1, norm, d, name='conv1')(x)       # (B, 56, 56, 64)
    x = ConvBlock(64, 3, 1, 1, -1, norm, d, name='conv2_dw')(x)
    x = DepthWise(64, 128, 2, False, norm, d, name='conv_23')(x)  # (B, 28, 28, 64)
    out3 = Residual(64, self.blocks[0], 128, norm, d, name='conv_3')(x)
    x = DepthWise(128, 256, 2, False, norm, d, name='conv_34')(out3)  # (B, 14, 14, 128)
    out4 = Residual(128, self.blocks[1], 256, norm, d, name='conv_4')(x)
    x = DepthWise(128, 512, 2, False, norm, d, name='conv_45')(out4)  # (B, 7, 7, 128)
    x = Residual(128, self.blocks[2], 256, norm, d, name='conv_5')(x)
    feats = ConvBlock(512, 1, 1, 0, 1, norm, d, name='conv_6_sep')(x)  # (B, 7, 7, 512)
    out = {'out3': out3, 'out4': out4, 'conv_features': feats}
    if self.landmark_head:
      if feats.shape[1:3] != (7, 7):
        raise ValueError(f'the GDC head needs a 7x7 map (112x112 input), got {feats.shape[1:3]}')
      out['landmarks'] = GDC(self.embedding_size, norm, d, name='output_layer')(feats)
    return out


def mobilefacenet(**kw):
  return MobileFaceNet(**kw)
