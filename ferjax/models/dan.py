"""DAN (Wen et al., "Distract Your Attention", the yaoing/DAN code): feature network, MAN, AFN.

  features   a ResNet up to its last stage: (B, h, w, C), C = 512 for ResNet-18
  MAN        `num_heads` cross-attention heads, each a spatial then a channel attention:
    spatial  1x1 conv C -> C/2 + BN (no ReLU); 3x3, 1x3 and 3x1 convs C/2 -> C, each + BN,
             summed; ReLU; summed over channels to (B, h, w, 1); the map times x (no sigmoid)
    channel  GAP -> Linear(C, 32) -> BN1d -> ReLU -> Linear(32, C) -> sigmoid, times the GAP
  AFN        the (B, heads, C) head outputs get a log_softmax over the head axis (when there is
             more than one head), are summed over heads, then Linear(C, K) -> BatchNorm1d(K)

Module names follow the official PyTorch module names (`cat_head0.sa.conv1x1.0` is
`cat_head0/sa/conv1x1_0` here), so ferjax.interop.dan is a renaming plus transposes.
Initialisation follows the reference: the heads' convolutions kaiming-normal (fan_out, gain
sqrt(2)) with zero bias, their Linear layers N(0, 0.001) with zero bias; the final fc keeps
torch's default nn.Linear init, U(+-1/sqrt(fan_in)) for weight and bias, because the reference
initialises only the heads. The learned class centres of the affinity loss live here as the
parameter `centers` (K_c, C), drawn N(0, 1) as torch.randn; in the reference they belong to
the loss module, so they are not part of the model's state_dict.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ferjax.models import layers

conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
linear_init = nn.initializers.normal(0.001)


def _conv(features, kernel, padding, name, dtype):
  """A PyTorch Conv2d with bias and explicit (h, w) padding (the 1x3 / 3x1 kernels are not
  square, so layers.padded_conv does not fit)."""
  return layers.conv(features, kernel, (1, 1), ((padding[0],) * 2, (padding[1],) * 2),
                     use_bias=True, kernel_init=conv_init, bias_init=nn.initializers.zeros,
                     dtype=dtype, name=name)


class SpatialAttention(nn.Module):
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    y = self.norm('conv1x1_1')(_conv(c // 2, (1, 1), (0, 0), 'conv1x1_0', self.dtype)(x))
    branches = [('conv_3x3', (3, 3), (1, 1)), ('conv_1x3', (1, 3), (0, 1)),
                ('conv_3x1', (3, 1), (1, 0))]
    z = sum(self.norm(f'{n}_1')(_conv(c, k, p, f'{n}_0', self.dtype)(y)) for n, k, p in branches)
    z = nn.relu(z).sum(axis=-1, keepdims=True)                            # (B, h, w, 1)
    return x * z


class ChannelAttention(nn.Module):
  hidden: int
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    gap = jnp.mean(x, axis=(1, 2))                                        # (B, C)
    dense = lambda n, name: layers.dense(n, kernel_init=linear_init, dtype=self.dtype,
                                         bias_init=nn.initializers.zeros, name=name)
    y = nn.relu(self.norm('attention_1')(dense(self.hidden, 'attention_0')(gap)))
    y = jax.nn.sigmoid(dense(gap.shape[-1], 'attention_3')(y))
    return gap * y


class CrossAttentionHead(nn.Module):
  hidden: int
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    sa = SpatialAttention(self.norm, self.dtype, name='sa')(x)
    return ChannelAttention(self.hidden, self.norm, self.dtype, name='ca')(sa)   # (B, C)


class Norm:
  """BatchNorm factory with torch's epsilon and a two-pass variance: the AFN's fc outputs (and
  the spatial attention's maps) carry means far above their spread, where Flax's default
  E[x^2] - E[x]^2 loses float32 precision and the train-mode gradients drift by percents."""

  def __init__(self, train: bool, momentum: float, dtype):
    self.train, self.momentum, self.dtype = train, momentum, dtype

  def __call__(self, name):
    return nn.BatchNorm(use_running_average=not self.train, momentum=self.momentum,
                        epsilon=1e-5, dtype=self.dtype, use_fast_variance=False, name=name)


def _torch_linear_init(fan_in: int):
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class DAN(nn.Module):
  """Returns logits (the BN'd fc output), probs, the GAP of the feature map (`embedding`, the
  affinity loss's x), the head outputs after the AFN's log_softmax (`heads`, (B, H, C)) and
  the class centres.

  features: a ResNet (ferjax.models.resnet) whose `return_maps` gives the last stage's map.
  num_centers: rows of the affinity loss's centre matrix (0 = num_classes).
  afn_logsoftmax: the AFN's log_softmax over the heads (off: raw heads summed, the multi-task
    model of paper 004).
  """
  features: nn.Module
  num_classes: int
  num_heads: int = 4
  hidden: int = 32
  num_centers: int = 0
  afn_logsoftmax: bool = True
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    _, maps = self.features(image, train=train, return_maps=True)
    x = maps[-1].astype(jnp.float32)                                      # (B, h, w, C)
    norm = Norm(train, self.bn_momentum, self.dtype)
    heads = jnp.stack([CrossAttentionHead(self.hidden, norm, self.dtype, name=f'cat_head{i}')(x)
                       for i in range(self.num_heads)], axis=1).astype(jnp.float32)  # (B, H, C)
    if self.num_heads > 1 and self.afn_logsoftmax:
      heads = jax.nn.log_softmax(heads, axis=1)
    c = x.shape[-1]
    out = layers.dense(self.num_classes, kernel_init=_torch_linear_init(c),
                       bias_init=_torch_linear_init(c), dtype=self.dtype,
                       name='fc')(heads.sum(axis=1))
    logits = norm('bn')(out).astype(jnp.float32)                          # (B, K)
    centers = self.param('centers', nn.initializers.normal(1.0),
                         (self.num_centers or self.num_classes, c))
    return {'logits': logits, 'probs': jax.nn.softmax(logits), 'heads': heads,
            'embedding': jnp.mean(x, axis=(1, 2)), 'centers': centers}
