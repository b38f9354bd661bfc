"""EfficientNet-B0/B2 and EfficientNetV2-S in torchvision's layout (Flax Linen, NHWC).

  features_0        Conv3x3 s2 3 -> C0, BN, SiLU                           (B, H/2, W/2, C0)
  features_1..S     one stage per config row; block j of stage s is `features_s_j`
                    (torchvision `features.s.j`), an MBConv or a FusedMBConv      (B, H/32, W/32, C)
  features_S+1      Conv1x1 -> last channels (4 * C, or 1280 for V2), BN, SiLU
  mean over H, W                                                           (B, C_last)
  classifier_0/1    Dropout, Linear(C_last -> num_classes)   (only when num_classes > 0)

Config rows are (kind, expand ratio, kernel, stride, in, out, blocks). B-models scale channels by
width_mult (rounded to multiples of 8) and blocks by depth_mult (ceil): B0 is (1.0, 1.0), B2 is
(1.1, 1.2). Only the first block of a stage has the stride and the stage's input width.

MBConv `block`: [1x1 expand ConvNormAct, SiLU] (absent when the expanded width equals the input),
kxk depthwise ConvNormAct with the stride, SqueezeExcitation (avg pool, 1x1 conv `fc1` to
max(1, in // 4), SiLU, 1x1 conv `fc2`, sigmoid, rescale), 1x1 projection ConvNormAct without
activation. FusedMBConv `block`: kxk ConvNormAct with the stride to the expanded width, then a
1x1 projection without activation; with expand ratio 1 a single kxk ConvNormAct with SiLU.
Blocks with stride 1 and in == out add the identity after stochastic depth, whose drop rate grows
linearly with the block's global index: stochastic_depth_prob * index / total blocks.

BatchNorm epsilon is torchvision's: 1e-5 (BatchNorm2d's default) for B0/B2, 1e-3 for V2-S.
Module names are torchvision's state_dict names with '_' for '.' (`features_2_1/block_2/fc1` is
`features.2.1.block.2.fc1`).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ferjax.models.layers import Norm
from ferjax.models.mobilenet import ConvNormAct, conv, make_divisible

# (kind, expand ratio, kernel, stride, in channels, out channels, blocks), torchvision's tables.
_B_STAGES = (('mb', 1, 3, 1, 32, 16, 1), ('mb', 6, 3, 2, 16, 24, 2), ('mb', 6, 5, 2, 24, 40, 2),
             ('mb', 6, 3, 2, 40, 80, 3), ('mb', 6, 5, 1, 80, 112, 3),
             ('mb', 6, 5, 2, 112, 192, 4), ('mb', 6, 3, 1, 192, 320, 1))
_V2_S_STAGES = (('fused', 1, 3, 1, 24, 24, 2), ('fused', 4, 3, 2, 24, 48, 4),
                ('fused', 4, 3, 2, 48, 64, 4), ('mb', 4, 3, 2, 64, 128, 6),
                ('mb', 6, 3, 1, 128, 160, 9), ('mb', 6, 3, 2, 160, 256, 15))


def _classifier_init(key, shape, dtype=jnp.float32):
  # torchvision: uniform(-1/sqrt(out), 1/sqrt(out)) for the classifier's Linear weight.
  r = 1.0 / math.sqrt(shape[-1])
  return jax.random.uniform(key, shape, dtype, -r, r)


class SqueezeExcitation(nn.Module):
  squeeze: int
  dtype: Any

  @nn.compact
  def __call__(self, x):                                     # (B, H, W, C)
    s = jnp.mean(x, axis=(1, 2), keepdims=True)              # (B, 1, 1, C)
    s = jax.nn.silu(conv(self.squeeze, 1, 1, 'fc1', self.dtype, use_bias=True)(s))
    s = jax.nn.sigmoid(conv(x.shape[-1], 1, 1, 'fc2', self.dtype, use_bias=True)(s))
    return x * s


class StochasticDepth(nn.Module):
  """torchvision's StochasticDepth(p, 'row'): in training, zero each example's residual branch
  with probability p and scale survivors by 1 / (1 - p); identity in eval.

  Draws from the 'dropout' rng stream, so a train step must pass rngs={'dropout': key}.
  """
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):               # (B, H, W, C)
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0], 1, 1, 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x)) if keep > 0 else jnp.zeros_like(x)


class MBConv(nn.Module):
  """An MBConv (fused=False) or FusedMBConv (fused=True) block; see the module docstring."""
  features: int
  expand_ratio: float
  kernel: int
  stride: int
  fused: bool
  drop_rate: float
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool = False):               # (B, H, W, C_in)
    c_in = x.shape[-1]
    hidden = make_divisible(c_in * self.expand_ratio, 8)
    silu, d = jax.nn.silu, self.dtype
    if self.fused and hidden != c_in:
      y = ConvNormAct(hidden, self.kernel, self.stride, self.norm, silu, dtype=d,
                      name='block_0')(x)                      # (B, H/s, W/s, hidden)
      y = ConvNormAct(self.features, 1, 1, self.norm, dtype=d, name='block_1')(y)
    elif self.fused:
      y = ConvNormAct(self.features, self.kernel, self.stride, self.norm, silu, dtype=d,
                      name='block_0')(x)
    else:
      k, y = 0, x
      if hidden != c_in:
        y = ConvNormAct(hidden, 1, 1, self.norm, silu, dtype=d, name='block_0')(y)
        k = 1
      y = ConvNormAct(hidden, self.kernel, self.stride, self.norm, silu, groups=-1, dtype=d,
                      name=f'block_{k}')(y)                   # (B, H/s, W/s, hidden)
      y = SqueezeExcitation(max(1, c_in // 4), d, name=f'block_{k + 1}')(y)
      y = ConvNormAct(self.features, 1, 1, self.norm, dtype=d, name=f'block_{k + 2}')(y)
    if self.stride == 1 and c_in == self.features:
      y = StochasticDepth(self.drop_rate, name='stochastic_depth')(y, deterministic=not train)
      y = y + x
    return y                                                 # (B, H/s, W/s, features)


class EfficientNet(nn.Module):
  """Returns pooled features (B, C_last), or logits (B, num_classes) when num_classes > 0.

  bn_frozen=True keeps BatchNorm on its running statistics even when train=True. Stochastic depth
  and the classifier dropout are active whenever train=True (they need a 'dropout' rng then).
  """
  stages: Sequence[tuple] = _B_STAGES
  width_mult: float = 1.0
  depth_mult: float = 1.0
  last_channel: Optional[int] = None
  dropout: float = 0.2
  stochastic_depth_prob: float = 0.2
  bn_eps: float = 1e-5
  bn_momentum: float = 0.9
  num_classes: int = 0
  bn_frozen: bool = False
  dtype: Any = jnp.float32

  def _stages(self):
    """The config rows with channels and depths scaled (torchvision's MBConvConfig)."""
    width = lambda c: make_divisible(c * self.width_mult, 8)
    return [(kind, t, k, s, width(c_in), width(c_out), int(math.ceil(n * self.depth_mult)))
            for kind, t, k, s, c_in, c_out, n in self.stages]

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = Norm(train and not self.bn_frozen, self.bn_momentum, self.bn_eps, self.dtype)
    stages = self._stages()
    total = sum(row[-1] for row in stages)
    x = x.astype(self.dtype)
    x = ConvNormAct(stages[0][4], 3, 2, norm, jax.nn.silu, dtype=self.dtype,
                    name='features_0')(x)                    # (B, H/2, W/2, C0)
    index = 0
    for s, (kind, t, k, stride, _, c_out, n) in enumerate(stages, start=1):
      for j in range(n):
        x = MBConv(c_out, t, k, stride if j == 0 else 1, kind == 'fused',
                   self.stochastic_depth_prob * index / total, norm, self.dtype,
                   name=f'features_{s}_{j}')(x, train)
        index += 1
    last = self.last_channel or 4 * stages[-1][5]
    x = ConvNormAct(last, 1, 1, norm, jax.nn.silu, dtype=self.dtype,
                    name=f'features_{len(stages) + 1}')(x)  # (B, H/32, W/32, C_last)
    feats = jnp.mean(x, axis=(1, 2))                         # (B, C_last)
    if self.num_classes:
      feats = nn.Dropout(self.dropout, deterministic=not train, name='classifier_0')(feats)
      feats = nn.Dense(self.num_classes, kernel_init=_classifier_init, dtype=self.dtype,
                       name='classifier_1')(feats)
    return feats


def efficientnet_b0(**kw):
  return EfficientNet(**{'stages': _B_STAGES, 'width_mult': 1.0, 'depth_mult': 1.0,
                         'dropout': 0.2, 'bn_eps': 1e-5, **kw})


def efficientnet_b2(**kw):
  return EfficientNet(**{'stages': _B_STAGES, 'width_mult': 1.1, 'depth_mult': 1.2,
                         'dropout': 0.3, 'bn_eps': 1e-5, **kw})


def efficientnet_v2_s(**kw):
  return EfficientNet(**{'stages': _V2_S_STAGES, 'last_channel': 1280, 'dropout': 0.2,
                         'bn_eps': 1e-3, **kw})
