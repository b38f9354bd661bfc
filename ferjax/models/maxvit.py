"""MaxViT-T in torchvision's layout (Flax Linen, NHWC), as used by CAGE.

Structure (torchvision `maxvit_t`): a stem of two 3x3 convolutions (the first with stride 2,
BatchNorm and GELU; the second with a bias and nothing after it), then four blocks of MaxViT
layers. Each layer is an MBConv (pre-norm BatchNorm, 1x1 expand x4, depthwise 3x3 -- stride 2 in
a block's first layer --, squeeze-excitation, 1x1 project; the shortcut is avg-pool + 1x1 conv
when the shape changes), then window attention (7x7 windows) and grid attention (a 7x7 grid
dilated over the map), each a pre-norm transformer layer with a relative position bias.

Module names mirror torchvision's state_dict keys, with `_<digits>` for a Sequential index
(`stem_0_0` <-> `stem.0.0`, `blocks_2` <-> `blocks.2`); the `layers.` containers that
torchvision wraps around a layer's parts are dropped here and restored by ferjax.interop.maxvit.

Quirks of the reference kept on purpose: keys are scaled by the full feature width
(`feat_dim ** -0.5`), not by the head width; BatchNorm has eps 1e-3 and torch momentum 0.01
(Flax momentum 0.99; torchvision notes its checkpoint was trained with torch momentum 0.99);
LayerNorm eps is torch's 1e-5; GELU is the exact erf form.

Features (num_classes=0) are the spatially averaged last map, (B, 512): what torchvision's
classifier sees after its AdaptiveAvgPool2d + Flatten and before its LayerNorm. num_classes > 0
adds torchvision's own head: LayerNorm (classifier.2) -> Linear (classifier.3) -> Tanh ->
Linear without bias (classifier.5). CAGE builds that same head with C + 2 outputs.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ferjax.models import layers
from ferjax.models.layers import Norm

# torchvision's MaxVit._init_weights: every conv and linear weight ~ N(0, 0.02), biases zero.
_init = nn.initializers.normal(0.02)


def relative_position_index(size: int) -> np.ndarray:
  """(size^2, size^2) int64: row of the bias table for each (query, key) pair in a window.

  A pair's offset (dh, dw), each in [-(size-1), size-1], is flattened row-major into the
  (2 size - 1)^2 table, as torchvision's buffer `relative_position_index` holds it.
  """
  h, w = np.meshgrid(np.arange(size), np.arange(size), indexing='ij')
  coords = np.stack([h.ravel(), w.ravel()])                   # (2, P)
  rel = coords[:, :, None] - coords[:, None, :] + size - 1    # (2, P, P), offsets >= 0
  return (rel[0] * (2 * size - 1) + rel[1]).astype(np.int64)


def drop_path(module: nn.Module, x, rate: float, train: bool):
  """Stochastic depth per example ('row' mode): zero a whole residual branch, rescale the rest.

  Draws from the 'dropout' rng stream; identity in eval or at rate 0.
  """
  if not train or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng('dropout'), keep,
                              (x.shape[0],) + (1,) * (x.ndim - 1))
  return x * (mask.astype(x.dtype) / keep)


def _gelu(x):
  return nn.gelu(x, approximate=False)  # torch.nn.GELU() is the erf form


_conv = functools.partial(layers.padded_conv, kernel_init=_init)


def _layer_norm(name, dtype):
  return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=dtype, name=name)


class SqueezeExcitation(nn.Module):
  squeeze: int
  dtype: Any

  @nn.compact
  def __call__(self, x):                                               # (B, H, W, C)
    s = jnp.mean(x, axis=(1, 2), keepdims=True)                         # (B, 1, 1, C)
    s = nn.silu(_conv(self.squeeze, 1, 1, 'fc1', self.dtype, use_bias=True)(s))
    s = nn.sigmoid(_conv(x.shape[-1], 1, 1, 'fc2', self.dtype, use_bias=True)(s))
    return x * s


class MBConv(nn.Module):
  features: int
  stride: int
  expansion: float
  squeeze: float
  drop_rate: float
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    res = x
    if self.stride != 1 or x.shape[-1] != self.features:
      if self.stride == 2:  # AvgPool2d(3, 2, padding=1) counts the padding, as Flax does
        res = nn.avg_pool(res, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
      res = _conv(self.features, 1, 1, f'proj_{1 if self.stride == 2 else 0}', self.dtype,
                  use_bias=True)(res)                                  # (B, H/s, W/s, F)
    mid = int(self.features * self.expansion)
    y = self.norm('pre_norm')(x)
    y = _gelu(self.norm('conv_a_1')(_conv(mid, 1, 1, 'conv_a_0', self.dtype)(y)))
    y = _conv(mid, 3, self.stride, 'conv_b_0', self.dtype, groups=mid)(y)
    y = _gelu(self.norm('conv_b_1')(y))                                # (B, H/s, W/s, mid)
    y = SqueezeExcitation(int(self.features * self.squeeze), self.dtype,
                          name='squeeze_excitation')(y)
    y = _conv(self.features, 1, 1, 'conv_c', self.dtype, use_bias=True)(y)
    return res + drop_path(self, y, self.drop_rate, train)


class RelativeAttention(nn.Module):
  """Multi-head self-attention within groups of tokens, plus a learned relative position bias."""
  head_dim: int
  size: int  # tokens form a size x size window
  dtype: Any

  @nn.compact
  def __call__(self, x):                                               # (B, G, P, D)
    b, g, p, d = x.shape
    heads = d // self.head_dim
    table = self.param('relative_position_bias_table', nn.initializers.truncated_normal(0.02),
                       ((2 * self.size - 1) ** 2, heads), jnp.float32)
    qkv = layers.dense(3 * d, kernel_init=_init, dtype=self.dtype, name='to_qkv')(x)
    q, k, v = (t.reshape(b, g, p, heads, self.head_dim) for t in jnp.split(qkv, 3, axis=-1))
    k = k * d ** -0.5  # torchvision scales by the full width, not the head width
    logits = jnp.einsum('bgihd,bgjhd->bghij', q, k).astype(jnp.float32)  # (B, G, H, P, P)
    index = relative_position_index(self.size).reshape(-1)
    bias = table[index].reshape(p, p, heads).transpose(2, 0, 1)          # (H, P, P)
    attn = jax.nn.softmax(logits + bias, axis=-1).astype(self.dtype)
    out = jnp.einsum('bghij,bgjhd->bgihd', attn, v).reshape(b, g, p, d)
    return layers.dense(d, kernel_init=_init, dtype=self.dtype, name='merge')(out)


def _partition(x, ph, pw):
  """(B, H, W, C) -> (B, H/ph * W/pw, ph * pw, C): non-overlapping ph x pw tiles, row-major."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // ph) * (w // pw), ph * pw, c)


def _departition(x, ph, pw, nh, nw):
  """Inverse of `_partition` for an (nh x nw) arrangement of ph x pw tiles."""
  b, c = x.shape[0], x.shape[-1]
  x = x.reshape(b, nh, nw, ph, pw, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, nh * ph, nw * pw, c)


class PartitionAttention(nn.Module):
  """Window (grid=False) or grid (grid=True) attention followed by an MLP, both pre-norm.

  Window: tokens are a size x size tile. Grid: tokens are size x size positions spaced H/size
  apart (tiles of (H/size) x (W/size), then the tile and position axes swapped).
  """
  head_dim: int
  size: int
  grid: bool
  mlp_ratio: int
  drop_rate: float
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):                                  # (B, H, W, C)
    _, h, w, c = x.shape
    ph, pw = (h // self.size, w // self.size) if self.grid else (self.size, self.size)
    t = _partition(x, ph, pw)                                          # (B, G, ph*pw, C)
    if self.grid:
      t = t.swapaxes(1, 2)                                             # (B, ph*pw, size^2, C)
    y = _layer_norm('attn_layer_0', self.dtype)(t)
    y = RelativeAttention(self.head_dim, self.size, self.dtype, name='attn_layer_1')(y)
    t = t + drop_path(self, y, self.drop_rate, train)
    y = _layer_norm('mlp_layer_0', self.dtype)(t)
    y = layers.dense(c * self.mlp_ratio, kernel_init=_init, dtype=self.dtype,
                     name='mlp_layer_1')(y)
    y = layers.dense(c, kernel_init=_init, dtype=self.dtype, name='mlp_layer_3')(_gelu(y))
    t = t + drop_path(self, y, self.drop_rate, train)
    if self.grid:
      t = t.swapaxes(1, 2)
    return _departition(t, ph, pw, h // ph, w // pw)


class _Cfg(NamedTuple):
  """Hyper-parameters shared by all layers."""
  head_dim: int
  partition_size: int
  mlp_ratio: int
  expansion_ratio: float
  squeeze_ratio: float
  dtype: Any


class MaxVitLayer(nn.Module):
  features: int
  stride: int
  drop_rate: float
  cfg: _Cfg
  norm: Any

  @nn.compact
  def __call__(self, x, train: bool):
    cfg = self.cfg
    x = MBConv(self.features, self.stride, cfg.expansion_ratio, cfg.squeeze_ratio,
               self.drop_rate, self.norm, cfg.dtype, name='MBconv')(x, train)
    for kind in ('window', 'grid'):
      x = PartitionAttention(cfg.head_dim, cfg.partition_size, kind == 'grid', cfg.mlp_ratio,
                             self.drop_rate, cfg.dtype, name=f'{kind}_attention')(x, train)
    return x


class MaxVitBlock(nn.Module):
  features: int
  drop_rates: Sequence[float]  # one per layer
  cfg: _Cfg
  norm: Any

  @nn.compact
  def __call__(self, x, train: bool):
    for j, rate in enumerate(self.drop_rates):
      x = MaxVitLayer(self.features, 2 if j == 0 else 1, rate, self.cfg, self.norm,
                      name=f'layers_{j}')(x, train)
    return x


class MaxViT(nn.Module):
  """Returns pooled features (B, block_channels[-1]), or logits when num_classes > 0.

  The input's height and width after the stem and after each block's stride-2 must divide by
  `partition_size` (224 -> 112 -> 56/28/14/7 for MaxViT-T; any multiple of 224 also works).
  train=True enables stochastic depth (rng stream 'dropout'; rates rise linearly from 0 to
  `stochastic_depth_prob` over all layers, as torchvision) and BatchNorm statistics updates
  unless bn_frozen. `return_maps` also gives each block's output map.
  """
  stem_channels: int = 64
  block_channels: Sequence[int] = (64, 128, 256, 512)
  block_layers: Sequence[int] = (2, 2, 5, 2)
  head_dim: int = 32
  partition_size: int = 7
  stochastic_depth_prob: float = 0.2
  expansion_ratio: float = 4.0
  squeeze_ratio: float = 0.25
  mlp_ratio: int = 4
  bn_momentum: float = 0.99
  num_classes: int = 0
  bn_frozen: bool = False
  dtype: Any = jnp.float32

  def _check_size(self, h, w):
    sizes, p = [], self.partition_size
    for _ in range(len(self.block_channels) + 1):
      h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # 3x3, stride 2, padding 1
      sizes.append((h, w))
    if any(a % p or b % p for a, b in sizes[1:]):
      raise ValueError(f'MaxViT: block input sizes {sizes[1:]} must all be divisible by the '
                       f'partition size {p}; use an input size such as {32 * p}x{32 * p}')

  @nn.compact
  def __call__(self, x, train: bool = False, return_maps: bool = False):
    self._check_size(*x.shape[1:3])
    norm = Norm(train and not self.bn_frozen, self.bn_momentum, 1e-3, self.dtype)
    x = x.astype(self.dtype)
    x = _conv(self.stem_channels, 3, 2, 'stem_0_0', self.dtype)(x)     # (B, H/2, W/2, stem)
    x = _gelu(norm('stem_0_1')(x))
    x = _conv(self.stem_channels, 3, 1, 'stem_1_0', self.dtype, use_bias=True)(x)
    cfg = _Cfg(self.head_dim, self.partition_size, self.mlp_ratio, self.expansion_ratio,
               self.squeeze_ratio, self.dtype)
    rates = np.linspace(0, self.stochastic_depth_prob, sum(self.block_layers)).tolist()
    maps, start = [], 0
    for i, (c, n) in enumerate(zip(self.block_channels, self.block_layers)):
      x = MaxVitBlock(c, tuple(rates[start:start + n]), cfg, norm, name=f'blocks_{i}')(x, train)
      start += n
      maps.append(x)                                                   # (B, H/2^(i+2), ., c)
    feats = jnp.mean(x, axis=(1, 2))                                   # (B, C_last)
    if self.num_classes:
      c = feats.shape[-1]
      y = _layer_norm('classifier_2', self.dtype)(feats)
      y = jnp.tanh(layers.dense(c, kernel_init=_init, dtype=self.dtype, name='classifier_3')(y))
      feats = layers.dense(self.num_classes, use_bias=False, kernel_init=_init,
                           dtype=self.dtype, name='classifier_5')(y)
    return (feats, maps) if return_maps else feats


def maxvit_t(**overrides):
  """torchvision `maxvit_t` (30.9M parameters with the 1000-class head). Overrides are MaxViT
  fields, e.g. block_layers=(1, 1, 1, 1), block_channels=(32, 32, 64, 64) for a small test net."""
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  return MaxViT(**overrides)
