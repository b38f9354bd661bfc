"""MobileViTv2-100 in timm's layout (Flax Linen, NHWC).

Structure (timm `mobilevitv2_100`, a ByobNet): a 3x3 stride-2 stem (conv, BatchNorm, SiLU), then
five stages of MobileNetV2-style inverted residuals (1x1 expand x2, depthwise 3x3 -- strided in
a stage's first block --, linear 1x1 project; a residual only where the shape is unchanged:
timm's ByobNet has no downsampling shortcut here). Stages 3-5 end with a MobileViTv2 block:
depthwise 3x3, 1x1 down to half the width, the map cut into 2x2 patches (unfold), a stack of
transformer layers with separable linear attention and GroupNorm(1 group) pre-norms, fold, then
a 1x1 conv with BatchNorm back to the stage width. No final conv; the head is average pooling
and `head.fc`.

Module names mirror timm's state_dict keys with `_<digits>` for a Sequential index
(`stages_2_1` <-> `stages.2.1`, `transformer_0` <-> `transformer.0`); see
ferjax.interop.mobilevit.

A map whose side is not a multiple of the patch size (e.g. 7x7 at 224x224 input) is resized
bilinearly with align_corners=True before a MobileViTv2 block, as timm does; that block then
returns the resized map (8x8 there).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ferjax.models import layers
from ferjax.models.layers import Norm

# torchvision/timm convs default to kaiming-uniform(a=sqrt(5)); a fan-in scaled init is close.
_init = nn.initializers.variance_scaling(1.0 / 3, 'fan_in', 'uniform')


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
  """Nearest multiple of `divisor` to v, never more than 10% below it (timm's channel rule)."""
  out = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return out + divisor if out < round_limit * v else out


def drop_path(module: nn.Module, x, rate: float, train: bool):
  """Stochastic depth per example (timm DropPath), 'dropout' rng stream; identity in eval."""
  if not train or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng('dropout'), keep,
                              (x.shape[0],) + (1,) * (x.ndim - 1))
  return x * (mask.astype(x.dtype) / keep)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of 1-D linear interpolation with align_corners=True."""
  src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
  lo = np.clip(np.floor(src).astype(int), 0, n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo
  m = np.zeros((n_out, n_in), np.float32)
  np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
  np.add.at(m, (np.arange(n_out), hi), frac)
  return m


def resize_align_corners(x, h: int, w: int):
  """Bilinear resize of (B, H, W, C) to (B, h, w, C) with torch's align_corners=True
  (jax.image.resize uses half-pixel centres, which would not match)."""
  mh = jnp.asarray(_interp_matrix(x.shape[1], h), x.dtype)
  mw = jnp.asarray(_interp_matrix(x.shape[2], w), x.dtype)
  x = jnp.einsum('oh,bhwc->bowc', mh, x)
  return jnp.einsum('pw,bowc->bopc', mw, x)


# timm's convolutions pad symmetrically, the stride-2 ones included.
_conv = functools.partial(layers.padded_conv, kernel_init=_init)


def _group_norm1(name, dtype):
  # timm GroupNorm1: one group, i.e. statistics over all of (P, N, C) of each example.
  return nn.GroupNorm(num_groups=1, epsilon=1e-5, use_fast_variance=False, dtype=dtype,
                      name=name)


class ConvNormAct(nn.Module):
  """timm ConvNormAct: conv without bias (`conv`), BatchNorm (`bn`), optional SiLU."""
  features: int
  kernel: int = 1
  stride: int = 1
  depthwise: bool = False
  act: bool = True
  norm: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    groups = x.shape[-1] if self.depthwise else 1
    x = _conv(self.features, self.kernel, self.stride, groups=groups, name='conv',
              dtype=self.dtype)(x)
    x = self.norm('bn')(x)
    return nn.silu(x) if self.act else x


class InvertedResidual(nn.Module):
  """timm BottleneckBlock(bottle_in=True, linear_out=True, depthwise): the inner width is
  make_divisible(in * ratio)."""
  features: int
  stride: int
  ratio: float
  drop_rate: float
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):                                  # (B, H, W, Cin)
    mid = make_divisible(x.shape[-1] * self.ratio)
    y = ConvNormAct(mid, norm=self.norm, dtype=self.dtype, name='conv1_1x1')(x)
    y = ConvNormAct(mid, 3, self.stride, depthwise=True, norm=self.norm, dtype=self.dtype,
                    name='conv2_kxk')(y)                               # (B, H/s, W/s, mid)
    y = ConvNormAct(self.features, act=False, norm=self.norm, dtype=self.dtype,
                    name='conv3_1x1')(y)
    # timm applies drop path even without a shortcut (each stage's first block), where it
    # zeroes the whole block output of a dropped example; kept for parity.
    y = drop_path(self, y, self.drop_rate, train)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


class LinearSelfAttention(nn.Module):
  """Separable attention: one softmax-normalised score per token over the N patches (per pixel
  position P), a context vector from the weighted keys, ReLU(values) scaled by it."""
  dtype: Any

  @nn.compact
  def __call__(self, x):                                               # (B, P, N, d)
    d = x.shape[-1]
    qkv = _conv(1 + 2 * d, use_bias=True, name='qkv_proj', dtype=self.dtype)(x)
    q, k, v = qkv[..., :1], qkv[..., 1:1 + d], qkv[..., 1 + d:]
    scores = jax.nn.softmax(q.astype(jnp.float32), axis=2).astype(k.dtype)  # (B, P, N, 1)
    context = jnp.sum(k * scores, axis=2, keepdims=True)              # (B, P, 1, d)
    return _conv(d, use_bias=True, name='out_proj', dtype=self.dtype)(nn.relu(v) * context)


class LinearTransformerBlock(nn.Module):
  mlp_ratio: float
  drop_rate: float
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):                                  # (B, P, N, d)
    d = x.shape[-1]
    y = LinearSelfAttention(self.dtype, name='attn')(_group_norm1('norm1', self.dtype)(x))
    x = x + drop_path(self, y, self.drop_rate, train)
    y = _group_norm1('norm2', self.dtype)(x)
    y = _conv(int(d * self.mlp_ratio), use_bias=True, name='mlp_fc1', dtype=self.dtype)(y)
    y = _conv(d, use_bias=True, name='mlp_fc2', dtype=self.dtype)(nn.silu(y))
    return x + drop_path(self, y, self.drop_rate, train)


class MobileVitV2Block(nn.Module):
  features: int
  depth: int
  ratio: float      # transformer width = make_divisible(ratio * in)
  mlp_ratio: float
  patch: int
  drop_rate: float
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):                                  # (B, H, W, C)
    b, h, w, c = x.shape
    p = self.patch
    nh, nw = math.ceil(h / p), math.ceil(w / p)
    if (nh * p, nw * p) != (h, w):
      x = resize_align_corners(x, nh * p, nw * p)
    x = ConvNormAct(c, 3, depthwise=True, norm=self.norm, dtype=self.dtype, name='conv_kxk')(x)
    d = make_divisible(self.ratio * c)
    x = _conv(d, name='conv_1x1', dtype=self.dtype)(x)                # (B, nh p, nw p, d)
    # Unfold: pixel (i, j) of patch (u, v) -> t[:, i * p + j, u * nw + v] as timm's reshape.
    t = x.reshape(b, nh, p, nw, p, d).transpose(0, 2, 4, 1, 3, 5).reshape(b, p * p, nh * nw, d)
    for i in range(self.depth):
      t = LinearTransformerBlock(self.mlp_ratio, self.drop_rate, self.dtype,
                                 name=f'transformer_{i}')(t, train)    # (B, P, N, d)
    t = _group_norm1('norm', self.dtype)(t)
    x = t.reshape(b, p, p, nh, nw, d).transpose(0, 3, 1, 4, 2, 5).reshape(b, nh * p, nw * p, d)
    return ConvNormAct(self.features, act=False, norm=self.norm, dtype=self.dtype,
                       name='conv_proj')(x)


class MobileViTv2(nn.Module):
  """Returns pooled features (B, channels[-1]), or `head.fc` logits when num_classes > 0.

  Stage i has `blocks[i]` inverted residuals (the first with stride `strides[i]`) and, when
  `transformer_depths[i]` > 0, a MobileViTv2 block of that many transformer layers.
  drop_path_rate rises linearly over all blocks (timm's schedule; 0 in timm's default).
  `return_maps` also gives each stage's output map.
  """
  stem_channels: int = 32
  channels: Sequence[int] = (64, 128, 256, 384, 512)
  blocks: Sequence[int] = (1, 2, 1, 1, 1)
  strides: Sequence[int] = (1, 2, 2, 2, 2)
  transformer_depths: Sequence[int] = (0, 0, 2, 4, 3)
  bottle_ratio: float = 2.0
  transformer_ratio: float = 0.5
  mlp_ratio: float = 2.0
  patch_size: int = 2
  drop_path_rate: float = 0.0
  bn_momentum: float = 0.9
  num_classes: int = 0
  bn_frozen: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, return_maps: bool = False):
    norm = Norm(train and not self.bn_frozen, self.bn_momentum, 1e-5, self.dtype)
    x = x.astype(self.dtype)
    x = ConvNormAct(self.stem_channels, 3, 2, norm=norm, dtype=self.dtype, name='stem')(x)
    depths = [n + (t > 0) for n, t in zip(self.blocks, self.transformer_depths)]
    rates = np.linspace(0, self.drop_path_rate, sum(depths)).tolist()
    maps, k = [], 0
    for s, (c, n, t) in enumerate(zip(self.channels, self.blocks, self.transformer_depths)):
      for j in range(n):
        x = InvertedResidual(c, self.strides[s] if j == 0 else 1, self.bottle_ratio, rates[k],
                             norm, self.dtype, name=f'stages_{s}_{j}')(x, train)
        k += 1
      if t:
        x = MobileVitV2Block(c, t, self.transformer_ratio, self.mlp_ratio, self.patch_size,
                             rates[k], norm, self.dtype, name=f'stages_{s}_{n}')(x, train)
        k += 1
      maps.append(x)
    feats = jnp.mean(x, axis=(1, 2))                                   # (B, C_last)
    if self.num_classes:
      feats = nn.Dense(self.num_classes, dtype=self.dtype, name='head_fc')(feats)
    return (feats, maps) if return_maps else feats


def mobilevitv2_100(**overrides):
  """timm `mobilevitv2_100` (4.9M parameters with the 1000-class head)."""
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  return MobileViTv2(**overrides)


def mobilevitv2_200(**overrides):
  """timm `mobilevitv2_200`: every width of mobilevitv2_100 doubled (stem 64, stages 128-1024;
  18.4M parameters with the 1000-class head), the appearance network of paper 004."""
  return mobilevitv2_100(**{'stem_channels': 64, 'channels': (128, 256, 512, 768, 1024),
                            **overrides})
