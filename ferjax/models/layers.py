"""Layers shared by the backbone families."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype


class Norm:
  """BatchNorm factory with the reference's epsilon; `train` decides whether statistics update.

  Flax's momentum is the weight of the old running value: torch momentum 0.1 is Flax 0.9.
  `zero_scale` starts the scale at 0 (torchvision's zero_init_residual option).
  """

  def __init__(self, train: bool, momentum: float, epsilon: float, dtype):
    self.train, self.momentum, self.epsilon, self.dtype = train, momentum, epsilon, dtype

  def __call__(self, name, zero_scale=False):
    return nn.BatchNorm(use_running_average=not self.train, momentum=self.momentum,
                        epsilon=self.epsilon, dtype=self.dtype, name=name,
                        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones)


def conv(features: int, kernel_size, strides=(1, 1), padding='SAME', groups: int = 1,
         **kw) -> nn.Module:
  """nn.Conv, except that a depthwise convolution (groups == features > 1) is a DepthwiseConv:
  same parameters, same result, but fast on CPU (see DepthwiseConv)."""
  if groups > 1 and groups == features:
    return DepthwiseConv(features, tuple(kernel_size), tuple(strides), padding, **kw)
  return nn.Conv(features, kernel_size, strides, padding=padding, feature_group_count=groups,
                 **kw)


class DepthwiseConv(nn.Module):
  """A depthwise convolution whose parameters are nn.Conv's ('kernel' (kh, kw, 1, C), 'bias').

  XLA:CPU lowers grouped convolutions with one group per channel to a very slow loop: for
  MaxViT-T's 56 x 56 x 256 depthwise layer, forward + backward takes 3.9 s against torch's
  52 ms. On CPU (impl 'auto'), the convolution is written as kh * kw shifted slices of the padded
  input times a per-channel weight, which XLA fuses into elementwise loops, and autodiff of that
  is equally simple (185 ms for the same layer). Elsewhere (GPU, TPU) lax's grouped convolution
  is used; 'lax' / 'shift' force one form (tests compare them).
  """
  features: int
  kernel_size: tuple
  strides: tuple = (1, 1)
  padding: Any = 'SAME'
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if c != self.features:
      raise ValueError(f'{self.name}: a depthwise convolution needs {self.features} input '
                       f'channels, got {c}')
    kh, kw = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (kh, kw, 1, c), self.param_dtype)
    bias = self.param('bias', self.bias_init, (c,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    pads = _explicit_padding(self.padding, x.shape[1:3], self.kernel_size, self.strides)
    impl = self.impl if self.impl != 'auto' else (
        'shift' if jax.default_backend() == 'cpu' else 'lax')
    if impl == 'lax':
      y = jax.lax.conv_general_dilated(x, kernel, self.strides, pads, feature_group_count=c,
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    else:
      y = _shifted_depthwise(x, kernel[:, :, 0, :], self.strides, pads)
    return y if bias is None else y + bias


def _explicit_padding(padding, spatial, kernel, strides):
  """((top, bottom), (left, right)) for 'SAME' / 'VALID' or explicit pairs, as lax pads."""
  if isinstance(padding, str):
    return jax.lax.padtype_to_pads(spatial, kernel, strides, padding)
  return tuple(tuple(p) for p in padding)


def _shifted_depthwise(x, w, strides, pads):
  """sum over (i, j) of the strided window of the padded x starting at (i, j), times w[i, j]."""
  (pt, pb), (pl, pr) = pads
  sh, sw = strides
  kh, kw = w.shape[:2]
  b, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho, wo = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      win = jax.lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                          (1, sh, sw, 1))
      out = win * w[i, j] if out is None else out + win * w[i, j]
  return out
