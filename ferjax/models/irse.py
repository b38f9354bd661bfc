"""IR-50 face backbone (face.evoLVe `Backbone([112, 112], 50, 'ir')`), Flax Linen, NHWC.

The reference is face.evoLVe.PyTorch's `backbone/model_irse.py`, the ArcFace-style "improved
residual" net that POSTER++ and GReFEL use as their image branch:

  input_layer   Conv3x3(3->64, no bias), BN, PReLU(64)                      (B, 112, 112, 64)
  body          24 bottleneck_IR units, 3/4/14/3 per stage, depths 64/128/256/512; the first
                unit of every stage (stage 1 included) has stride 2:
                  stage1 (B, 56, 56, 64), stage2 (B, 28, 28, 128), stage3 (B, 14, 14, 256),
                  stage4 (B, 7, 7, 512)
  output_layer  BN2d(512), Dropout, Flatten (NCHW order), Linear(512*7*7 -> 512), BN1d(512)

bottleneck_IR: res = BN -> Conv3x3 -> PReLU -> Conv3x3(stride) -> BN; shortcut = MaxPool(1,
stride) (a strided subsample) when in == out channels, else Conv1x1(stride) + BN; out = res +
shortcut (no activation after the sum).

POSTER++ (models/ir50.py) keeps only the first three stages, drops the output layer from its
forward, resizes the input to 112x112 (F.interpolate, mode 'nearest') and returns the three stage
maps: that is `ir50(num_stages=3)`.

Module names mirror the reference state_dict with `_N` for the Sequential index `.N`
(`body_12/res_layer_3` is `body.12.res_layer.3`), so the interop map is a rename plus transposes.
Padding is explicit as in PyTorch (Flax 'SAME' pads stride-2 convolutions asymmetrically).

Output: a dict of named arrays (NHWC maps), so callers pick what they need by name:
  {'stage1': ..., 'stage2': ..., 'stage3': ...[, 'stage4': ...][, 'embedding': (B, 512)]}
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ferjax.models import layers
from ferjax.models.layers import Norm

# face.evoLVe initialises convolutions and linear layers with xavier_uniform_.
_init = nn.initializers.xavier_uniform()


class PReLU(nn.Module):
  """torch.nn.PReLU(C): max(0, x) + a * min(0, x) with one slope per channel (last axis).

  Flax's nn.PReLU has a single scalar slope, which cannot hold PReLU(C) weights. The slope is
  kept in float32 (param 'slope', shape (C,)) and cast to the compute dtype.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    a = self.param('slope', nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, a.astype(self.dtype) * x)


# A bias-free Conv2d with PyTorch's symmetric padding (MobileFaceNet shares it).
conv = functools.partial(layers.padded_conv, kernel_init=_init)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
  # ATen's legacy 'nearest': src = min(floor(dst * (float)in / out), in - 1), in float32; doing
  # the same float32 arithmetic keeps the rare exact-boundary cases (e.g. 150 -> 112) identical.
  scale = np.float32(n_in) / np.float32(n_out)
  src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(src, n_in - 1)


def torch_nearest_resize(x, size: int):
  """F.interpolate(x, size=size) (mode 'nearest') for NHWC x: (B, H, W, C) -> (B, s, s, C).

  jax.image.resize('nearest') samples at pixel centres and picks different pixels.
  """
  h, w = x.shape[1:3]
  if (h, w) == (size, size):
    return x
  return x[:, _nearest_index(h, size)][:, :, _nearest_index(w, size)]


class BottleneckIR(nn.Module):
  depth: int
  stride: int
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x):                                          # (B, H, W, C_in)
    s = self.stride
    if x.shape[-1] == self.depth:
      shortcut = x[:, ::s, ::s]                                   # MaxPool2d(1, s): a subsample
    else:
      shortcut = conv(self.depth, 1, s, 'shortcut_layer_0', self.dtype)(x)
      shortcut = self.norm('shortcut_layer_1')(shortcut)
    y = self.norm('res_layer_0')(x)
    y = conv(self.depth, 3, 1, 'res_layer_1', self.dtype)(y)
    y = PReLU(self.dtype, name='res_layer_2')(y)
    y = conv(self.depth, 3, s, 'res_layer_3', self.dtype)(y)       # (B, H/s, W/s, depth)
    y = self.norm('res_layer_4')(y)
    return y + shortcut


class IRNet(nn.Module):
  """IR backbone; returns {'stageK': (B, h, w, C)..., 'embedding': (B, E) if output_layer}.

  num_stages: 4 for face.evoLVe's backbone, 3 for POSTER++'s (stages 1-3 only; its body indices
    still run 0..20 in one `body` Sequential, as in face.evoLVe).
  output_layer: the BN2d/Dropout/Linear/BN1d head giving the 512-d embedding; needs all four
    stages and a 7x7 final map (112x112 input), as the Linear is sized 512*7*7.
  resize: when set, the input is first resized to resize x resize with PyTorch's 'nearest'
    F.interpolate, as POSTER++ does inside its backbone (112).
  bn_frozen: BatchNorm keeps its running statistics even when train=True (a frozen backbone).
  dropout: the output layer's Dropout rate (face.evoLVe's nn.Dropout() default 0.5; it needs a
    'dropout' rng when train=True).
  """
  stage_sizes: Sequence[int] = (3, 4, 14, 3)
  num_stages: int = 4
  output_layer: bool = True
  embedding_size: int = 512
  dropout: float = 0.5
  resize: Optional[int] = None
  bn_momentum: float = 0.9
  bn_frozen: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not 1 <= self.num_stages <= len(self.stage_sizes):
      raise ValueError(f'num_stages={self.num_stages} with stage_sizes={self.stage_sizes}')
    if self.output_layer and self.num_stages != 4:
      raise ValueError('the output layer (Linear 512*7*7 -> 512) needs num_stages=4')
    norm = Norm(train and not self.bn_frozen, self.bn_momentum, 1e-5, self.dtype)
    x = x.astype(self.dtype)
    if self.resize:
      x = torch_nearest_resize(x, self.resize)                    # (B, 112, 112, 3)
    x = conv(64, 3, 1, 'input_layer_0', self.dtype)(x)            # (B, 112, 112, 64)
    x = PReLU(self.dtype, name='input_layer_2')(norm('input_layer_1')(x))
    out, unit = {}, 0
    for i, n in enumerate(self.stage_sizes[:self.num_stages]):
      for j in range(n):
        # Every stage starts with stride 2, the first included: 112 -> 56 -> 28 -> 14 -> 7.
        x = BottleneckIR(64 * 2**i, 2 if j == 0 else 1, norm, self.dtype, name=f'body_{unit}')(x)
        unit += 1
      out[f'stage{i + 1}'] = x
    if self.output_layer:
      if x.shape[1:3] != (7, 7):
        raise ValueError(f'the output layer needs a 7x7 final map (112x112 input), got '
                         f'{x.shape[1:3]}')
      y = norm('output_layer_0')(x)
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
      # torch flattens NCHW: flatten in that order so the Linear weight is used unchanged.
      y = y.transpose(0, 3, 1, 2).reshape(y.shape[0], -1)         # (B, 512*7*7)
      y = nn.Dense(self.embedding_size, kernel_init=_init, dtype=self.dtype,
                   name='output_layer_3')(y)
      out['embedding'] = norm('output_layer_4')(y)                # (B, 512)
    return out


def ir50(**kw):
  """IR-50. `num_stages=3` is POSTER++'s variant: no output layer, input resized to 112."""
  num_stages = kw.pop('num_stages', 4)
  kw.setdefault('output_layer', num_stages == 4)
  if num_stages == 3:
    kw.setdefault('resize', 112)
  return IRNet(num_stages=num_stages, **kw)
