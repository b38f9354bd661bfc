"""Layers shared by the backbone families, and their CPU kernels.

conv, padded_conv, dense, max_pool and DepthwiseConv have the parameters and results of their
Flax / lax counterparts. For CPU they have kernels of their own that route around slow XLA:CPU
lowerings (the README's Benchmarks section has the measurements); on accelerators lax's own ops
are faster and are used instead.

Which kernels run is one switch, `kernels`:

  'auto'  (default) the choice is staged out with lax.platform_dependent and made when the
          computation is lowered, for the platform it is lowered for: a function traced on a
          CPU host but compiled for a GPU gets lax's ops.
  'cpu' / 'lax'  force one form on any platform (tests use them to check both forms on CPU).

  layers.kernels('lax')            # from now on
  with layers.kernels('cpu'): ...  # only inside the block

The switch is read when a function is traced, and jit's cache does not key on it: set it
before the first call of a jitted function (or trace a new one).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from flax.linen.dtypes import promote_dtype

KERNELS = ('auto', 'cpu', 'lax')
_kernels = 'auto'


def kernels(mode: str) -> contextlib.ExitStack:
  """Sets which kernels the layers trace: 'auto', 'cpu' or 'lax' (see the module docstring).

  Takes effect at once; the returned context restores the previous setting on exit.
  """
  global _kernels
  if mode not in KERNELS:
    raise ValueError(f'kernels must be one of {KERNELS}, got {mode!r}')
  restore = contextlib.ExitStack()
  restore.callback(functools.partial(_restore, _kernels))
  _kernels = mode
  return restore


def _restore(mode):
  global _kernels
  _kernels = mode


def current_kernels() -> str:
  return _kernels


def _dispatch(cpu: Callable, other: Callable, *args):
  """cpu(*args) or other(*args) according to the switch; 'auto' defers the choice to lowering.

  platform_dependent traces both branches into one conditional whose lowering keeps only the
  branch of the target platform, so the compiled program is the forced form's, with no branch;
  the price is tracing both forms, small next to compiling.
  """
  if _kernels == 'cpu':
    return cpu(*args)
  if _kernels == 'lax':
    return other(*args)
  return lax.platform_dependent(*args, cpu=cpu, default=other)


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
  """nn.Conv with the CPU kernels and unchanged parameters: a depthwise convolution
  (groups == features > 1) is a DepthwiseConv, any other one computes its kernel gradient as
  matmuls on CPU (see conv_general_dilated)."""
  if groups > 1 and groups == features:
    return DepthwiseConv(features, tuple(kernel_size), tuple(strides), padding, **kw)
  return nn.Conv(features, kernel_size, strides, padding=padding, feature_group_count=groups,
                 conv_general_dilated=conv_general_dilated, **kw)


def padded_conv(features: int, kernel: int = 1, stride: int = 1, name: str | None = None,
                dtype: Any = None, *, groups: int = 1, use_bias: bool = False,
                padding: int | None = None,
                kernel_init: Any = nn.initializers.lecun_normal()) -> nn.Module:
  """A square PyTorch Conv2d: `padding` zeros on every side, (kernel - 1) // 2 by default.

  PyTorch pads both sides alike, where Flax's 'SAME' puts the extra row of a stride-2
  convolution at the bottom/right only and would shift every later activation.
  """
  pad = (kernel - 1) // 2 if padding is None else padding
  return conv(features, (kernel, kernel), (stride, stride), ((pad, pad), (pad, pad)), groups,
              use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, name=name)


def dense(features: int, **kw) -> nn.Module:
  """nn.Dense (same parameters) whose backward pass on CPU reads its operands through an
  optimization barrier (see dot_general)."""
  return nn.Dense(features, dot_general=dot_general, **kw)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """lax.dot_general; on CPU, nn.Dense's contraction (x[..., K] . W[K, N]) gets a backward
  pass whose inputs go through an optimization barrier.

  The kernel gradient reads x and dy transposed. XLA:CPU fuses that transpose into the
  elementwise chain that produced x or dy, and in a transformer that chain is the residual
  stream's gradient through several blocks: fusions of hundreds of ops, read in transposed order
  and recomputed per consumer. Behind the barrier the chain is computed once and the transpose is
  a copy.
  """
  (lc, rc), (lb, rb) = dimension_numbers

  def other(lhs, rhs):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)

  plain = (rhs.ndim == 2 and tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb
           and not rb and preferred_element_type is None)
  if not plain:
    return other(lhs, rhs)
  return _dispatch(lambda x, w: _dense_matmul(x, w, precision), other, lhs, rhs)


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
  """lax.conv_general_dilated, except that the CPU kernels compute the kernel gradient of a
  plain 2-D NHWC convolution as one matmul per kernel tap.

  XLA:CPU lowers the kernel gradient of a convolution to another convolution whose contraction
  runs over the batch only (a few dozen values) with the whole feature map as its window, several
  times slower than matmuls over batch x height x width; in ResNet-18 it made the backward pass
  dominate a training step. Forward and input gradient stay XLA's convolutions, except pointwise
  ones (matmuls, see _forward_conv). Dilations, groups and other layouts always go to lax.
  """
  def other(lhs, rhs):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    precision=precision,
                                    preferred_element_type=preferred_element_type)

  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  pads = (_explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], window_strides)
          if lhs.ndim == 4 else None)
  plain = (lhs.ndim == 4 and feature_group_count == 1 and preferred_element_type is None
           and dn == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
           and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
           and all(p >= 0 for pair in pads for p in pair))
  if not plain:
    return other(lhs, rhs)
  strides = tuple(window_strides)
  return _dispatch(lambda x, w: _conv_matmul_kernel_grad(x, w, strides, pads, precision), other,
                   lhs, rhs)


def _forward_conv(x, w, strides, pads, precision):
  if w.shape[:2] == (1, 1) and not any(p for pair in pads for p in pair):
    # A pointwise convolution is a matmul, and so is its input gradient; XLA:CPU's convolution
    # was far slower for wide ones (MaxViT's 64 -> 256 expansions).
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
  # whatever elementwise chain produced them (in MaxViT, fusions of hundreds of ops, all read in
  # transposed order); with it the transpose is a plain copy.
  x, dy = lax.optimization_barrier((x, dy))
  d2 = dy.reshape(-1, cout)
  taps = [t.reshape(-1, cin) for t in _windows(x, (kh, kw), strides, pads)[1]]
  if cin < 16 and len(taps) > 1:
    return jnp.matmul(jnp.concatenate(taps, 1).T, d2, precision=precision).reshape(kernel_shape)
  return jnp.stack([jnp.matmul(t.T, d2, precision=precision) for t in taps]
                   ).reshape(kernel_shape)


class DepthwiseConv(nn.Module):
  """A depthwise convolution whose parameters are nn.Conv's ('kernel' (kh, kw, 1, C), 'bias').

  XLA:CPU lowers grouped convolutions with one group per channel to a very slow loop (MaxViT-T's
  56 x 56 x 256 depthwise layers were the bulk of its step). The CPU kernel writes the
  convolution as kh * kw shifted slices of the padded input times a per-channel weight, which XLA
  fuses into elementwise loops, and autodiff of that is equally simple. Elsewhere lax's grouped
  convolution is used.
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
    strides = tuple(self.strides)

    def grouped(x, kernel):
      return lax.conv_general_dilated(x, kernel, strides, pads, feature_group_count=c,
                                      dimension_numbers=_NHWC)

    y = _dispatch(lambda x, k: _shifted_depthwise(x, k[:, :, 0, :], strides, pads), grouped,
                  x, kernel)
    return y if bias is None else y + bias


def _explicit_padding(padding, spatial, kernel, strides):
  """((top, bottom), (left, right)) for 'SAME' / 'VALID' or explicit pairs, as lax pads."""
  if isinstance(padding, str):
    return lax.padtype_to_pads(spatial, kernel, strides, padding)
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


def _shifted_depthwise(x, w, strides, pads):
  """sum over taps (i, j) of the tap's strided window of the padded x, times w[i, j]."""
  kh, kw = w.shape[:2]
  wins = _windows(x, (kh, kw), strides, pads)[1]
  return functools.reduce(jnp.add, (win * w[t // kw, t % kw] for t, win in enumerate(wins)))


def max_pool(x, window, strides, padding='VALID'):
  """nn.max_pool over NHWC with PyTorch's gradient: each window's gradient goes to its first
  maximum.

  The CPU kernel is a running maximum of strided slices with a hand-written backward pass that
  applies that rule; XLA:CPU's own gradient of a max pool (select-and-scatter, expanded into a
  reduce-window that tracks indices) was a sizeable part of a ResNet-18 step. lax's form leaves
  ties to XLA's select-and-scatter, which picks the first maximum on CPU too (the tests check
  both forms).
  """
  window, strides = tuple(window), tuple(strides)
  pads = _explicit_padding(padding, x.shape[1:3], window, strides)
  return _dispatch(lambda x: _shifted_max_pool(x, window, strides, pads),
                   lambda x: nn.max_pool(x, window, strides, padding), x)


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
