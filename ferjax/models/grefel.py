"""GReFEL (paper 001): two streams, window cross-attention at three scales, a ViT, and reliability
balancing. Flax Linen, NHWC. The losses and the config live in ferjax.methods.grefel.

Encoder (POSTER++ layout, the code GReFEL's predecessor ARBEx builds on):
  x -> nearest resize to 112 (PyTorch F.interpolate) -> both streams
  image stream     IR-50, 3 stages: 64@56, 128@28, 256@14 -> Conv3x3 s2 each -> 64@28, 128@14,
                   256@7
  landmark stream  MobileFaceNet: out3 64@28, out4 128@14, conv_features 512@7 -> Conv3x3 -> 256@7
  per scale        CrossAttentionBlock (window_attention.py): landmark queries, image keys/values
  tokens           64@28 -> Conv s2 -> Conv s2 -> 49 x E; 128@14 -> Conv s2 -> 49 x E;
                   256@7 -> Conv1x1 -> 49 x E (E = 768)
  ViT              cls + 147 tokens + position embedding -> `depth` pre-norm blocks -> LayerNorm
                   -> cls -> SE block -> embedding e (E)

Primary head: `hidden` Linear layers, each Linear -> ReLU -> Dropout -> BatchNorm (the paper's
order, 2 x 64) or Linear -> ReLU -> BatchNorm -> Dropout (ARBEx, 384/192/96); Linear -> C;
l = softmax(logits / T).

Reliability balancing (eqs 10-19):
  anchors      a (C, K, E), initialised N(0, 0.02^2) (paper) or zeros (ARBEx)
  t_g          softmax over all C*K anchors of -||e - a||_2 / delta, summed over each class's K
  t_a          attentive correction: Q, K, V = Linear(E, C*K) of e, then multi-head attention
               of width C*K (ARBEx's layout, the size of Table 2's +0.2M), softmax, summed per
               class. attn_mode 'sample' (paper: "applied to individual visual embeddings"):
               each sample attends to itself only, so the attention weights are 1 and the term
               is a learned map of e alone; 'batch' (ARBEx): the batch is one sequence, so
               samples attend to each other (and predictions depend on the batch).
  C_f(p)       1 - H(p) / log C
  t            (c_g t_g + c_a t_a) / (c_g + c_a)
  final        'paper' (eq 19): L = (c_l l + c_t t) / (c_l + c_t);
               'arbex': L = c_l l + (1 - c_l) t
`rb` picks Table 2's variants: 'both', 'anchors' (t = t_g), 'attention' (t = t_a), 'none'
(L = l; no anchors and no attention parameters).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ferjax.models import layers
from ferjax.models.irse import torch_nearest_resize
from ferjax.models.window_attention import CrossAttentionBlock

RB_MODES = ('both', 'anchors', 'attention', 'none')
FINAL_MIXES = ('paper', 'arbex')
ATTN_MODES = ('sample', 'batch')
ANCHOR_INITS = ('normal', 'zeros')
HEAD_ORDERS = ('paper', 'arbex')

_trunc = nn.initializers.truncated_normal(0.02)
_EPS = 1e-12   # keeps log and division finite where a distribution or confidence reaches 0


def confidence(p):
  """C_f(p) = 1 - H(p) / log C over the last axis (eqs 10-11); 1 for one-hot, 0 for uniform."""
  ent = -jnp.sum(p * jnp.log(jnp.maximum(p, _EPS)), axis=-1)
  return 1.0 - ent / np.log(p.shape[-1])


def anchor_distances(e, anchors):
  """||e_b - a_ck||_2: (B, E), (C, K, E) -> (B, C, K) (eq 13)."""
  sq = jnp.sum(jnp.square(e[:, None, None, :] - anchors[None]), axis=-1)
  return jnp.sqrt(sq + _EPS)   # sqrt's gradient at an anchor that equals e would be infinite


def geometric_similarity(distances, delta: float = 1.0):
  """t_g (eqs 14-15): softmax over all C*K anchors of -d / delta, summed per class."""
  b, c, k = distances.shape
  s = jax.nn.softmax(-distances.reshape(b, c * k) / delta, axis=-1)
  return s.reshape(b, c, k).sum(-1)


def weighted_pair(p, q):
  """(C_f(p) p + C_f(q) q) / (C_f(p) + C_f(q)): eq 18 for (t_g, t_a), eq 19 for (l, t)."""
  cp, cq = confidence(p)[:, None], confidence(q)[:, None]
  return (cp * p + cq * q) / (cp + cq + _EPS)


def final_distribution(primary, correction, mode: str = 'paper', trust=1.0):
  """The corrected distribution from l and t; `trust` < 1 moves it back towards l (ARBEx's
  ramp (1 - tau) l + tau L). `correction` None (rb='none') gives l."""
  if correction is None:
    return primary
  if mode == 'paper':
    mixed = weighted_pair(primary, correction)
  elif mode == 'arbex':
    c = confidence(primary)[:, None]
    mixed = c * primary + (1.0 - c) * correction
  else:
    raise ValueError(f'final_mix={mode!r}; expected one of {FINAL_MIXES}')
  return (1.0 - trust) * primary + trust * mixed


class SEBlock(nn.Module):
  """x * sigmoid(fc2(relu(fc1(x)))), both Linear(E, E) (POSTER++'s SE_block)."""

  @nn.compact
  def __call__(self, x):
    g = nn.relu(layers.dense(x.shape[-1], kernel_init=_trunc, name='fc1')(x))
    return x * jax.nn.sigmoid(layers.dense(x.shape[-1], kernel_init=_trunc, name='fc2')(g))


class ViTBlock(nn.Module):
  """Pre-norm transformer block (timm's Block: qkv bias, GELU MLP, LayerNorm eps 1e-6)."""
  heads: int
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, x):
    b, n, d = x.shape
    ln = lambda name: nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, name=name)
    qkv = layers.dense(3 * d, kernel_init=_trunc, name='qkv')(ln('norm1')(x))
    q, k, v = qkv.reshape(b, n, 3, self.heads, d // self.heads).transpose(2, 0, 3, 1, 4)
    attn = jax.nn.softmax(q @ k.swapaxes(-1, -2) * (d // self.heads) ** -0.5, axis=-1)
    o = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
    x = x + layers.dense(d, kernel_init=_trunc, name='proj')(o)
    y = nn.gelu(layers.dense(int(d * self.mlp_ratio), kernel_init=_trunc, name='fc1')(
        ln('norm2')(x)), approximate=False)
    return x + layers.dense(d, kernel_init=_trunc, name='fc2')(y)


class PrimaryHead(nn.Module):
  hidden: Sequence[int]
  num_classes: int
  order: str = 'paper'
  dropout: float = 0.5
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.order not in HEAD_ORDERS:
      raise ValueError(f'head order {self.order!r}; expected one of {HEAD_ORDERS}')
    for i, h in enumerate(self.hidden):
      x = nn.relu(layers.dense(h, name=f'fc{i}')(x))
      drop = nn.Dropout(self.dropout, deterministic=not train)
      bn = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                        name=f'bn{i}')
      x = bn(drop(x)) if self.order == 'paper' else drop(bn(x))
    return layers.dense(self.num_classes, name='out')(x)


class ReliabilityBalancing(nn.Module):
  """(embedding, primary distribution) -> t_g, t_a, t and the corrected distribution."""
  num_classes: int
  num_anchors: int = 10
  anchor_init: str = 'normal'
  attn_heads: int = 1
  attn_mode: str = 'sample'
  delta: float = 1.0
  rb: str = 'both'
  final_mix: str = 'paper'

  @nn.compact
  def __call__(self, e, primary):
    for name, value, options in (('rb', self.rb, RB_MODES), ('attn_mode', self.attn_mode,
                                 ATTN_MODES), ('anchor_init', self.anchor_init, ANCHOR_INITS)):
      if value not in options:
        raise ValueError(f'{name}={value!r}; expected one of {options}')
    c, k = self.num_classes, self.num_anchors
    out = {}
    if self.rb in ('both', 'anchors'):
      if k < 1:
        raise ValueError(f"num_anchors={k} leaves no anchors; set rb='attention' or 'none'")
      init = _normal(0.02) if self.anchor_init == 'normal' else nn.initializers.zeros
      anchors = self.param('anchors', init, (c, k, e.shape[-1]))
      out['anchors'] = anchors
      out['distances'] = anchor_distances(e, anchors)                  # (B, C, K)
      out['t_g'] = geometric_similarity(out['distances'], self.delta)   # (B, C)
    if self.rb in ('both', 'attention'):
      out['t_a'] = self.attentive(e, c, max(k, 1))
    if self.rb == 'both':
      out['t'] = weighted_pair(out['t_g'], out['t_a'])
    elif self.rb != 'none':
      out['t'] = out['t_g' if self.rb == 'anchors' else 't_a']
    out['final'] = final_distribution(primary, out.get('t'), self.final_mix)
    return out

  def attentive(self, e, c, k):
    """t_a: nn.MultiheadAttention(C*K, heads) on Q, K, V = Linear(E, C*K)(e) (eqs 16-17)."""
    w = c * k
    q, kk, v = (layers.dense(w, name=f'{n}_proj')(e) for n in ('query', 'key', 'value'))
    hd = w // self.attn_heads
    split = lambda x, n: layers.dense(w, name=n)(x).reshape(-1, self.attn_heads, hd)
    qh, kh, vh = split(q, 'in_q'), split(kk, 'in_k'), split(v, 'in_v')   # (B, h, hd)
    scores = jnp.einsum('bhd,chd->hbc', qh, kh) * hd ** -0.5               # (h, B, B)
    if self.attn_mode == 'sample':   # a sequence of one: every sample attends to itself
      eye = jnp.eye(e.shape[0], dtype=bool)
      scores = jnp.where(eye[None], scores, -jnp.inf)
    o = jnp.einsum('hbc,chd->bhd', jax.nn.softmax(scores, axis=-1), vh).reshape(-1, w)
    o = layers.dense(w, name='out_proj')(o)
    return jax.nn.softmax(o, axis=-1).reshape(-1, c, k).sum(-1)          # (B, C)


def _normal(std):
  return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)


class GReFEL(nn.Module):
  """The whole network: image (B, H, W, 3) -> dict of outputs (see `__call__`).

  image_net: an IRNet(num_stages=3, output_layer=False) (maps 'stage1'..'stage3');
  landmark_net: a MobileFaceNet ('out3', 'out4', 'conv_features'), frozen in the paper.
  rb: the ReliabilityBalancing (None: its defaults).
  windows: the window side per scale; None = the map's size (one window, as GReFEL).
  """
  num_classes: int
  image_net: nn.Module
  landmark_net: nn.Module
  resize: int = 112
  heads: Sequence[int] = (2, 4, 8)
  drop_paths: Sequence[float] = (0.0, 0.125, 0.25)
  windows: Sequence[int] | None = None
  xattn_shortcut: str = 'raw'
  xattn_query_proj: bool = True
  embed_dim: int = 768
  vit_depth: int = 2
  vit_heads: int = 8
  mlp_ratio: float = 4.0
  head_hidden: Sequence[int] = (64, 64)
  head_order: str = 'paper'
  head_dropout: float = 0.5
  temperature: float = 1.0
  rb: nn.Module | None = None   # a ReliabilityBalancing (its parameters under 'rb')
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    x = torch_nearest_resize(image.astype(self.dtype), self.resize)
    img = self.image_net(x, train=train)
    lm = self.landmark_net(x, train=train)
    conv = lambda f, k, s, name: layers.padded_conv(f, k, s, name, self.dtype, use_bias=True)
    lm_maps = (lm['out3'], lm['out4'],
               conv(256, 3, 1, 'last_face_conv')(lm['conv_features']))
    tokens = []
    for i, (stage, q) in enumerate(zip(('stage1', 'stage2', 'stage3'), lm_maps)):
      m = img[stage]
      m = conv(m.shape[-1], 3, 2, f'conv{i + 1}')(m)                  # (B, s, s, d)
      window = self.windows[i] if self.windows else m.shape[1]
      o = CrossAttentionBlock(self.heads[i], window, self.drop_paths[i], self.mlp_ratio,
                              shortcut=self.xattn_shortcut, query_proj=self.xattn_query_proj,
                              dtype=self.dtype, name=f'xattn{i + 1}')(m, q, train)
      tokens.append(self.embed(o, i))
    t = jnp.concatenate(tokens, axis=1).astype(jnp.float32)           # (B, 3 x 49, E)
    b, n, d = t.shape
    cls = self.param('cls_token', _trunc, (1, 1, d))
    t = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), t], axis=1)
    t = t + self.param('pos_embed', _trunc, (1, n + 1, d))
    for j in range(self.vit_depth):
      t = ViTBlock(self.vit_heads, self.mlp_ratio, name=f'vit_block{j}')(t)
    cls_out = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, name='vit_norm')(t[:, 0])
    e = SEBlock(name='se')(cls_out)                                   # (B, E)
    logits = PrimaryHead(tuple(self.head_hidden), self.num_classes, self.head_order,
                         self.head_dropout, name='head')(e, train) / self.temperature
    primary = jax.nn.softmax(logits)
    rb = (self.rb or ReliabilityBalancing(self.num_classes))(e, primary)
    final = rb.pop('final')
    return {'embedding': e, 'primary_logits': logits, 'primary': primary, 'probs': final,
            'logits': jnp.log(jnp.maximum(final, _EPS)), **rb}

  def embed(self, o, i):
    """A scale's map -> (B, tokens, E): two stride-2 convs, one, or a 1x1 (POSTER++)."""
    e = self.embed_dim
    conv = lambda k, s, name: layers.padded_conv(e, k, s, name, self.dtype, use_bias=True)
    if i == 0:
      o = conv(3, 2, 'embed1_1')(conv(3, 2, 'embed1_0')(o))
    elif i == 1:
      o = conv(3, 2, 'embed2')(o)
    else:
      o = conv(1, 1, 'embed3')(o)
    return o.reshape(o.shape[0], -1, e)
