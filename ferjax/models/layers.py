"""Layers shared by the backbone families, and their CPU-fast forms.

conv, dense, max_pool and DepthwiseConv have the parameters and results of their Flax / lax
counterparts; on CPU they route around XLA:CPU lowerings that were 2-20x slower than PyTorch
(measured in README, Benchmarks). Other backends get lax's own ops.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
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
  """nn.Conv with CPU-fast kernels and unchanged parameters: a depthwise convolution
  (groups == features > 1) is a DepthwiseConv, any other one computes its kernel gradient as
  matmuls on CPU (see conv_general_dilated)."""
  if groups > 1 and groups == features:
    return DepthwiseConv(features, tuple(kernel_size), tuple(strides), padding, **kw)
  return nn.Conv(features, kernel_size, strides, padding=padding, feature_group_count=groups,
                 conv_general_dilated=conv_general_dilated, **kw)


def dense(features: int, **kw) -> nn.Module:
  """nn.Dense (same parameters) whose backward pass on CPU reads its operands through an
  optimization barrier (see dot_general)."""
  return nn.Dense(features, dot_general=dot_general, **kw)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """lax.dot_general; on CPU, nn.Dense's contraction (x[..., K] . W[K, N]) gets a backward
  pass whose inputs go through an optimization barrier.

  The kernel gradient reads x and dy transposed. XLA:CPU fuses that transpose into the
  elementwise chain that produced x or dy, and in a transformer that chain is the residual
  stream's gradient through several blocks: MaxViT-T's step had fusions of ~1000 ops over 100
  inputs, all read in transposed order and recomputed per consumer (100-220 ms each, 1.7 s of a
  7.5 s step). Behind the barrier the chain is computed once and the transpose is a copy.
  """
  (lc, rc), (lb, rb) = dimension_numbers
  plain = (jax.default_backend() == 'cpu' and rhs.ndim == 2 and tuple(lc) == (lhs.ndim - 1,)
           and tuple(rc) == (0,) and not lb and not rb and preferred_element_type is None)
  if not plain:
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)
  return _dense_matmul(lhs, rhs, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_matmul(x, w, precision):
  return jnp.matmul(x, w, precision=precision)


def _dense_fwd(x, w, precision):
  return _dense_matmul(x, w, precision), (x, w)


def _dense_bwd(precision, res, dy):
  x, w = res
  x, dy = lax.optimization_barrier((x, dy))
  dx = jnp.matmul(dy, w.T, precision=precision)
  dw = jnp.matmul(x.reshape(-1, w.shape[0]).T, dy.reshape(-1, w.shape[1]), precision=precision)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_dense_matmul.defvjp(_dense_fwd, _dense_bwd)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, preferred_element_type=None):
  """lax.conv_general_dilated, except for plain 2-D NHWC convolutions on CPU, whose kernel
  gradient is computed as one matmul per kernel tap.

  XLA:CPU lowers the kernel gradient of a convolution to another convolution whose contraction
  runs over the batch only (16-32 values) with the whole feature map as its window; for
  ResNet-18's 28 x 28 x 64 layers at batch 32 it took 110-440 ms against 73 ms as matmuls over
  batch x height x width, and the backward pass was 40% of a training step. Forward and input
  gradient stay XLA's convolutions, except pointwise ones (matmuls, see _forward_conv). Other
  backends, dilations, groups and layouts go to lax.
  """
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  pads = (_explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], window_strides)
          if lhs.ndim == 4 else None)
  plain = (jax.default_backend() == 'cpu' and lhs.ndim == 4 and feature_group_count == 1
           and preferred_element_type is None
           and dn == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
           and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
           and all(p >= 0 for pair in pads for p in pair))
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                     rhs_dilation, dimension_numbers, feature_group_count,
                                     precision=precision,
                                     preferred_element_type=preferred_element_type)
  return _conv_matmul_kernel_grad(lhs, rhs, tuple(window_strides), pads, precision)


def _forward_conv(x, w, strides, pads, precision):
  if w.shape[:2] == (1, 1) and not any(p for pair in pads for p in pair):
    # A pointwise convolution is a matmul, and so is its input gradient. As a convolution,
    # XLA:CPU took 370 ms for the input gradient of MaxViT's first 64 -> 256 expansion.
    return jnp.matmul(x[:, ::strides[0], ::strides[1]], w[0, 0], precision=precision)
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC,
                                  precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_matmul_kernel_grad(x, w, strides, pads, precision):
  return _forward_conv(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
  return _forward_conv(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, res, dy):
  x, w = res
  dx = jax.vjp(lambda x: _forward_conv(x, w, strides, pads, precision), x)[1](dy)[0]
  return dx, kernel_grad(x, dy, w.shape, strides, pads, precision).astype(w.dtype)


_conv_matmul_kernel_grad.defvjp(_conv_fwd, _conv_bwd)


def kernel_grad(x, dy, kernel_shape, strides, pads, precision=None):
  """d(loss)/d(kernel) of an NHWC convolution: for each tap (i, j), the strided window of the
  padded input that tap saw, as a (B*Ho*Wo, Cin) matrix, transposed times dy as (B*Ho*Wo, Cout).

  With few input channels (a stem) the taps are concatenated into one im2col matmul instead,
  since a matmul with 3 rows wastes the machine.
  """
  kh, kw, cin, cout = kernel_shape
  # The matmuls read x and dy transposed. Without the barrier XLA fuses that transpose into
  # whatever elementwise chain produced them (in MaxViT, a 980-op fusion over 100 inputs, all
  # read in transposed order: 100-270 ms each); with it the transpose is a plain copy.
  x, dy = lax.optimization_barrier((x, dy))
  d2 = dy.reshape(-1, cout)
  taps = [t.reshape(-1, cin) for t in _windows(x, (kh, kw), strides, pads)[1]]
  if cin < 16 and len(taps) > 1:
    return jnp.matmul(jnp.concatenate(taps, 1).T, d2, precision=precision).reshape(kernel_shape)
  return jnp.stack([jnp.matmul(t.T, d2, precision=precision) for t in taps]
                   ).reshape(kernel_shape)


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
    if _impl(self.impl) == 'lax':
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


def _windows(x, kernel, strides, pads, pad_value=0.0):
  """The padded input's shape and, per kernel tap (i, j) in row-major order, the strided window
  of the padded input that the tap reads for every output position."""
  (pt, pb), (pl, pr) = pads
  (kh, kw), (sh, sw) = kernel, strides
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
  b, hp, wp, c = xp.shape
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  return xp.shape, [lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * sh + 1,
                                                 j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
                    for i in range(kh) for j in range(kw)]


def _impl(impl):
  """'auto' is the CPU form ('shift') on CPU and lax's op elsewhere."""
  return impl if impl != 'auto' else ('shift' if jax.default_backend() == 'cpu' else 'lax')


def _shifted_depthwise(x, w, strides, pads):
  """sum over taps (i, j) of the tap's strided window of the padded x, times w[i, j]."""
  kh, kw = w.shape[:2]
  wins = _windows(x, (kh, kw), strides, pads)[1]
  return functools.reduce(jnp.add, (win * w[t // kw, t % kw] for t, win in enumerate(wins)))


def max_pool(x, window, strides, padding='VALID', impl='auto'):
  """nn.max_pool over NHWC with PyTorch's gradient: each window's gradient goes to its first
  maximum.

  On CPU (impl 'auto') the pool is a running maximum of strided slices with a hand-written
  backward pass; XLA:CPU's own gradient of a max pool (select-and-scatter, expanded into a
  reduce-window that tracks indices) took 130 ms of ResNet-18's 1.5 s step at 112 px, batch 32.
  'lax' / 'shift' force one form (tests compare them).
  """
  if _impl(impl) == 'lax':
    return nn.max_pool(x, tuple(window), tuple(strides), padding)
  pads = _explicit_padding(padding, x.shape[1:3], tuple(window), tuple(strides))
  return _shifted_max_pool(x, tuple(window), tuple(strides), pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _shifted_max_pool(x, window, strides, pads):
  return functools.reduce(jnp.maximum, _windows(x, window, strides, pads, -jnp.inf)[1])


def _max_pool_fwd(x, window, strides, pads):
  y = _shifted_max_pool(x, window, strides, pads)
  return y, (x, y)


def _max_pool_bwd(window, strides, pads, res, dy):
  x, y = res
  padded, wins = _windows(x, window, strides, pads, -jnp.inf)
  (_, kw), (sh, sw) = window, strides
  _, hp, wp, _ = padded
  _, ho, wo, _ = y.shape
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(padded, dy.dtype)
  for t, win in enumerate(wins):
    i, j = divmod(t, kw)
    hit = (win == y) & ~taken
    taken = taken | hit
    # Scatter this tap's share back to where the tap read it: interior padding undoes the stride.
    dxp = dxp + lax.pad(jnp.where(hit, dy, 0).astype(dy.dtype), jnp.zeros((), dy.dtype),
                        ((0, 0, 0), (i, hp - i - (ho - 1) * sh - 1, sh - 1),
                         (j, wp - j - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))
  (pt, _), (pl, _) = pads
  return (dxp[:, pt:pt + x.shape[1], pl:pl + x.shape[2]],)


_shifted_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
