"""Window-based cross-attention (GReFEL eqs 1-5, POSTER++'s `window` + `WindowAttentionGlobal` +
`feedforward`), Flax Linen, NHWC.

One block at one scale: the image map X_img and the landmark map X_lm (same H, W, C) are cut
into w x w windows; inside each window the landmark tokens are the queries and the image tokens
the keys and values, with a learned relative-position bias per head (Swin's (2w-1)^2 table).

  X'  = shortcut + DropPath(gamma1 * O)          O = OCA(LN(X_img), X_lm) W_o
  X_o = X' + DropPath(gamma2 * MLP(LN2(X')))     MLP: Linear(C, rC), GELU, Linear(rC, C)

gamma1/gamma2 are per-channel layer-scale vectors (init 1e-5, as POSTER++). Two places where
the POSTER++ code and the paper's equations differ are switches:

  shortcut    'raw' (eq 4: X' = OCA(X) + X) | 'norm' (code: the shortcut is LN(X_img))
  query_proj  True (eq 1: q = z_lm W_q) | False (code: the landmark tokens are the queries as
              they are, split into heads by channel)

With GReFEL's sizes (28/14/7 maps, windows of the same size) every scale is one window, i.e. a
global cross-attention.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ferjax.models import layers

_trunc = nn.initializers.truncated_normal(0.02)


def relative_position_index(window: int) -> np.ndarray:
  """(w^2, w^2) indices into the ((2w-1)^2, heads) bias table: (dy + w-1) (2w-1) + dx + w-1."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing='ij'))
  flat = coords.reshape(2, -1)                                    # (2, N)
  rel = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0) + (window - 1)
  return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def window_partition(x, window: int):
  """(B, H, W, C) -> (B * H/w * W/w, w*w, C), windows in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, window * window, c)


def window_reverse(x, window: int, h: int, w: int):
  """The inverse of window_partition: (B * nW, w*w, C) -> (B, H, W, C)."""
  c = x.shape[-1]
  x = x.reshape(-1, h // window, w // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, h, w, c)


def drop_path(x, rate: float, module: nn.Module, train: bool):
  """Stochastic depth: the whole residual branch of a sample is dropped with probability `rate`
  (timm's DropPath: survivors are scaled by 1 / (1 - rate)); needs a 'dropout' rng."""
  if not train or rate == 0.0:
    return x
  keep = jax.random.bernoulli(module.make_rng('dropout'), 1.0 - rate,
                              (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class WindowCrossAttention(nn.Module):
  """Multi-head attention inside windows: queries from `q_tokens`, keys/values from `tokens`.

  Parameters: `qkv` (Linear(C, 2C), k then v, each head-major), `q` (Linear(C, C), only with
  query_proj), `proj` (Linear(C, C)) and `relative_position_bias_table` ((2w-1)^2, heads).
  """
  heads: int
  window: int
  query_proj: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, q_tokens):                           # (Bw, N, C) each
    bw, n, c = tokens.shape
    hd = c // self.heads
    kv = layers.dense(2 * c, kernel_init=_trunc, dtype=self.dtype, name='qkv')(tokens)
    kv = kv.reshape(bw, n, 2, self.heads, hd)
    k, v = kv[:, :, 0], kv[:, :, 1]                               # (Bw, N, h, hd)
    q = q_tokens
    if self.query_proj:
      q = layers.dense(c, kernel_init=_trunc, dtype=self.dtype, name='q')(q)
    q = q.reshape(bw, n, self.heads, hd) * hd ** -0.5
    table = self.param('relative_position_bias_table', _trunc,
                       ((2 * self.window - 1) ** 2, self.heads))
    bias = table[relative_position_index(self.window).reshape(-1)].reshape(n, n, self.heads)
    scores = jnp.einsum('bnhd,bmhd->bhnm', q, k) + bias.transpose(2, 0, 1)[None]
    attn = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum('bhnm,bmhd->bnhd', attn, v).reshape(bw, n, c)
    return layers.dense(c, kernel_init=_trunc, dtype=self.dtype, name='proj')(out)


class CrossAttentionBlock(nn.Module):
  """One scale of GReFEL's window cross-attention: (B, H, W, C) image and landmark maps ->
  (B, H, W, C). H and W must be multiples of `window`."""
  heads: int
  window: int
  drop_path: float = 0.0
  mlp_ratio: float = 4.0
  layer_scale: float = 1e-5
  shortcut: str = 'raw'
  query_proj: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_img, x_lm, train: bool = False):
    if self.shortcut not in ('raw', 'norm'):
      raise ValueError(f"shortcut={self.shortcut!r}; expected 'raw' (eq 4) or 'norm' (code)")
    b, h, w, c = x_img.shape
    if x_lm.shape != x_img.shape or h % self.window or w % self.window:
      raise ValueError(f'cross-attention needs equal image/landmark maps tiled by {self.window}x'
                       f'{self.window} windows, got {x_img.shape} and {x_lm.shape}')
    ln = lambda name: nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=self.dtype,
                                   name=name)
    x_n = ln('norm')(x_img)
    o = WindowCrossAttention(self.heads, self.window, self.query_proj, self.dtype, name='attn')(
        window_partition(x_n, self.window), window_partition(x_lm.astype(x_n.dtype), self.window))
    o = window_reverse(o, self.window, h, w)
    scale = lambda name: self.param(name, nn.initializers.constant(self.layer_scale), (c,))
    x = (x_img if self.shortcut == 'raw' else x_n)
    x = x + drop_path(scale('gamma1') * o, self.drop_path, self, train)
    y = layers.dense(int(c * self.mlp_ratio), kernel_init=_trunc, dtype=self.dtype,
                     name='mlp_fc1')(ln('norm2')(x))
    y = layers.dense(c, kernel_init=_trunc, dtype=self.dtype, name='mlp_fc2')(
        nn.gelu(y, approximate=False))
    return x + drop_path(scale('gamma2') * y, self.drop_path, self, train)
