"""PyTorch GReFEL: the network of ferjax.models.grefel under POSTER++ and ARBEx module names.

Written from ferjax's model (eval and train forward) and the upstream architecture facts; no
upstream code is copied. The encoder keeps POSTER++'s names (`pyramid_trans_expr2` in
Talented-Q/POSTER_V2 `models/PosterV2_7cls.py`): `face_landback` (MobileFaceNet), `ir_back`
(IR-50, 3 stages, `body1`..`body3`), `last_face_conv`, `conv1`..`conv3`, `window{i}.norm`,
`attn{i}` (`qkv`, `proj`, `relative_position_bias_table`, the `relative_position_index`
buffer), `ffn{i}` (`gamma1`, `gamma2`, `norm`, `mlp.fc1`, `mlp.fc2`), `embed_q.0/1`,
`embed_k.0`, `embed_v.proj`, and `VIT` (`cls_token`, `pos_embed`, `blocks.N.{norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`, `se_block.linear1/2`). The reliability part keeps
ARBEx's names (takihasan/ARBEx `arbex/models/`): `classifier.net.N` (ClassificationHead),
`anchors.anchors` (Anchors), `self_attn.{Q, K, V, attn_fn}` (SelfAttn, attn_fn an
nn.MultiheadAttention). Parameters upstream modules hold but never use (POSTER++'s ViT
`patch_embed`, `CON1`, `IRLinear1/2`, `blocks.N.conv`, the IR-50 `output_layer`) are left out.

Beyond upstream, as ferjax's switches (defaults = the paper): `attn{i}.q` (eq 1's W_q; POSTER++
uses the raw landmark tokens), the raw-input shortcut (eq 4; POSTER++ adds LN(x)), the head's
ReLU-Dropout-BN order, K anchors, per-sample attention, eq 19's final mix. Reduced sizes
(`resize`, `ir_stages`, `landmark_blocks`, `embed_dim`) make test networks.

forward(x NCHW) -> (log p, p): p is the corrected distribution L (`correction=False`: the
primary head's l), log clamped at 1e-12, as ferjax's predict step. `outputs(x)` gives every
intermediate by ferjax's names (embedding, primary_logits, primary, distances, t_g, t_a, t,
final).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from third_party.torch_reference import faces

_EPS = 1e-12   # ferjax.models.grefel's clamp: log and division stay finite


def relative_position_index(w: int) -> torch.Tensor:
  """(w^2, w^2) indices into the ((2w-1)^2, heads) table: (dy + w-1)(2w-1) + dx + w-1."""
  coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing='ij')).flatten(1)
  rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)
  return rel[..., 0] * (2 * w - 1) + rel[..., 1]


def window_partition(x, w: int):
  """(B, H, W, C) -> (B * H/w * W/w, w*w, C), windows row-major."""
  b, h, wd, c = x.shape
  x = x.reshape(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, w * w, c)


def window_reverse(x, w: int, h: int, wd: int):
  c = x.shape[-1]
  x = x.reshape(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, h, wd, c)


class DropPath(nn.Module):
  """timm's stochastic depth: a sample's residual branch dropped, survivors scaled up."""

  def __init__(self, p: float):
    super().__init__()
    self.p = p

  def forward(self, x):
    if not self.training or self.p == 0.0:
      return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) >= self.p
    return x * keep / (1.0 - self.p)


class Window(nn.Module):
  """POSTER++'s `window`: the LayerNorm on the channels-last image map."""

  def __init__(self, dim: int):
    super().__init__()
    self.norm = nn.LayerNorm(dim)


class WindowAttentionGlobal(nn.Module):
  """Cross-attention in windows: landmark queries, image keys/values, relative-position bias."""

  def __init__(self, dim: int, num_heads: int, window_size: int, query_proj: bool = True):
    super().__init__()
    self.num_heads, self.window_size = num_heads, window_size
    self.scale = (dim // num_heads) ** -0.5
    self.relative_position_bias_table = nn.Parameter(
        torch.zeros((2 * window_size - 1) ** 2, num_heads))
    nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
    self.register_buffer('relative_position_index', relative_position_index(window_size))
    self.qkv = nn.Linear(dim, 2 * dim)
    self.q = nn.Linear(dim, dim) if query_proj else None
    self.proj = nn.Linear(dim, dim)

  def forward(self, x, q):                                        # (Bw, N, C) each
    bw, n, c = x.shape
    hd = c // self.num_heads
    kv = self.qkv(x).reshape(bw, n, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]                                           # (Bw, h, N, hd)
    if self.q is not None:
      q = self.q(q)
    q = q.reshape(bw, n, self.num_heads, hd).transpose(1, 2) * self.scale
    bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
    attn = q @ k.transpose(-2, -1) + bias.reshape(n, n, -1).permute(2, 0, 1)[None]
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c)
    return self.proj(out)


class Mlp(nn.Module):

  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class FeedForward(nn.Module):
  """POSTER++'s `feedforward`: layer-scaled residual of the attention output, then the MLP."""

  def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
               layer_scale: float = 1e-5):
    super().__init__()
    self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
    self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))
    self.mlp = Mlp(dim, int(dim * mlp_ratio))
    self.norm = nn.LayerNorm(dim)
    self.drop_path = DropPath(drop_path)

  def forward(self, x, shortcut):
    x = shortcut + self.drop_path(self.gamma1 * x)
    return x + self.drop_path(self.gamma2 * self.mlp(self.norm(x)))


class PatchEmbed(nn.Module):
  """POSTER++'s `embed_v`: a 1x1 conv to the token width, flattened to tokens."""

  def __init__(self, cin: int, dim: int):
    super().__init__()
    self.proj = nn.Conv2d(cin, dim, 1)

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):

  def __init__(self, dim: int, num_heads: int):
    super().__init__()
    self.num_heads = num_heads
    self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

  def forward(self, x):
    b, n, d = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(
        2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1) * (d // self.num_heads) ** -0.5).softmax(-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
  """timm's pre-norm ViT block (LayerNorm eps 1e-6)."""

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = Attention(dim, num_heads)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class SEBlock(nn.Module):

  def __init__(self, dim: int):
    super().__init__()
    self.linear1, self.linear2 = nn.Linear(dim, dim), nn.Linear(dim, dim)

  def forward(self, x):
    return x * torch.sigmoid(self.linear2(F.relu(self.linear1(x))))


class VisionTransformer(nn.Module):
  """cls + tokens + position embedding -> blocks -> LayerNorm -> cls -> SE block."""

  def __init__(self, num_tokens: int, dim: int, depth: int, num_heads: int,
               mlp_ratio: float = 4.0):
    super().__init__()
    self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, dim))
    nn.init.trunc_normal_(self.cls_token, std=0.02)
    nn.init.trunc_normal_(self.pos_embed, std=0.02)
    self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.se_block = SEBlock(dim)

  def forward(self, x):
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
    return self.se_block(self.norm(self.blocks(x))[:, 0])


class IR50(nn.Module):
  """POSTER++'s 3-stage IR-50 (`ir_back`): input_layer, body1..body3 of bottleneck_IR units
  (face.evoLVe's units split by stage). It takes the already resized image."""

  def __init__(self, stages=(3, 4, 14)):
    super().__init__()
    self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                     nn.PReLU(64))
    cin = 64
    for i, n in enumerate(stages):
      depth = 64 * 2**i
      setattr(self, f'body{i + 1}', nn.Sequential(*[
          faces.BottleneckIR(cin if j == 0 else depth, depth, 2 if j == 0 else 1)
          for j in range(n)]))
      cin = depth

  def forward(self, x):
    x1 = self.body1(self.input_layer(x))
    x2 = self.body2(x1)
    return x1, x2, self.body3(x2)


class ClassificationHead(nn.Module):
  """ARBEx's MLP head (`net`): per hidden layer Linear, ReLU, then Dropout, BatchNorm1d
  (order 'paper') or BatchNorm1d, Dropout (order 'arbex'); then Linear -> C."""

  def __init__(self, size_in: int, size_out: int, size_hidden, dropout: float = 0.5,
               order: str = 'paper'):
    super().__init__()
    net = []
    for h in size_hidden:
      net += [nn.Linear(size_in, h), nn.ReLU()]
      pair = [nn.Dropout(dropout), nn.BatchNorm1d(h)]
      net += pair if order == 'paper' else pair[::-1]
      size_in = h
    net.append(nn.Linear(size_in, size_out))
    self.net = nn.Sequential(*net)

  def forward(self, x):
    return self.net(x)


class Anchors(nn.Module):
  """ARBEx's Anchors: (C, K, E) learnable anchors; forward -> Euclidean distances (B, C, K)."""

  def __init__(self, size_emb: int, n_classes: int, n_anchors: int):
    super().__init__()
    self.anchors = nn.Parameter(0.02 * torch.randn(n_classes, n_anchors, size_emb))

  def forward(self, e):
    sq = (e[:, None, None, :] - self.anchors[None]).square().sum(-1)
    return torch.sqrt(sq + _EPS)


class SelfAttn(nn.Module):
  """ARBEx's SelfAttn: Q, K, V = Linear(E, C*K), nn.MultiheadAttention, softmax, sum per class.

  mode 'sample': each sample is its own sequence of length 1; 'batch' (ARBEx): the 2-D (B, C*K)
  input is one unbatched sequence, so samples attend to each other.
  """

  def __init__(self, n_anchors: int, n_classes: int, size_emb: int, nhead: int = 1,
               mode: str = 'sample'):
    super().__init__()
    self.n_classes, self.n_anchors, self.mode = n_classes, n_anchors, mode
    w = n_classes * n_anchors
    self.Q, self.K, self.V = nn.Linear(size_emb, w), nn.Linear(size_emb, w), nn.Linear(size_emb, w)
    self.attn_fn = nn.MultiheadAttention(w, num_heads=nhead)

  def forward(self, x):
    q, k, v = self.Q(x), self.K(x), self.V(x)
    if self.mode == 'sample':   # (L=1, N=B, w)
      out = self.attn_fn(q[None], k[None], v[None], need_weights=False)[0][0]
    else:
      out = self.attn_fn(q, k, v, need_weights=False)[0]
    return out.softmax(-1).view(-1, self.n_classes, self.n_anchors).sum(-1)


def confidence(p):
  """C_f(p) = 1 - H(p) / log C."""
  return 1.0 - -(p * p.clamp_min(_EPS).log()).sum(-1) / math.log(p.shape[-1])


def weighted_pair(p, q):
  cp, cq = confidence(p)[:, None], confidence(q)[:, None]
  return (cp * p + cq * q) / (cp + cq + _EPS)


class GReFEL(nn.Module):
  """The whole network; the arguments are ferjax's `config.grefel` switches (see the module
  docstring and ferjax.methods.grefel.config_section)."""

  def __init__(self, num_classes: int, resize: int = 112, ir_stages=(3, 4, 14),
               landmark_blocks=(4, 6, 2), landmark_head: bool = True, heads=(2, 4, 8),
               drop_paths=(0.0, 0.125, 0.25), xattn_shortcut: str = 'raw',
               xattn_query_proj: bool = True, embed_dim: int = 768, vit_depth: int = 2,
               vit_heads: int = 8, mlp_ratio: float = 4.0, head_hidden=(64, 64),
               head_order: str = 'paper', head_dropout: float = 0.5, temperature: float = 1.0,
               rb: str = 'both', num_anchors: int = 10, attn_heads: int = 1,
               attn_mode: str = 'sample', delta: float = 1.0, final_mix: str = 'paper',
               correction: bool = True):
    super().__init__()
    if resize % 16:
      raise ValueError(f'resize={resize}: the three scales need a multiple of 16')
    self.resize, self.shortcut, self.temperature = resize, xattn_shortcut, temperature
    self.rb, self.delta, self.final_mix, self.correction = rb, delta, final_mix, correction
    dims, e = (64, 128, 256), embed_dim
    self.windows = (resize // 4, resize // 8, resize // 16)   # one window per scale
    self.face_landback = faces.MobileFaceNet(136, tuple(landmark_blocks), landmark_head)
    self.ir_back = IR50(tuple(ir_stages))
    self.last_face_conv = nn.Conv2d(512, 256, 3, padding=1)
    for i, (d, h, w, dp) in enumerate(zip(dims, heads, self.windows, drop_paths)):
      setattr(self, f'conv{i + 1}', nn.Conv2d(d, d, 3, 2, 1))
      setattr(self, f'window{i + 1}', Window(d))
      setattr(self, f'attn{i + 1}', WindowAttentionGlobal(d, h, w, xattn_query_proj))
      setattr(self, f'ffn{i + 1}', FeedForward(d, mlp_ratio, dp))
    self.embed_q = nn.Sequential(nn.Conv2d(64, e, 3, 2, 1), nn.Conv2d(e, e, 3, 2, 1))
    self.embed_k = nn.Sequential(nn.Conv2d(128, e, 3, 2, 1))
    self.embed_v = PatchEmbed(256, e)
    self.VIT = VisionTransformer(3 * (resize // 16) ** 2, e, vit_depth, vit_heads, mlp_ratio)
    self.classifier = ClassificationHead(e, num_classes, tuple(head_hidden), head_dropout,
                                         head_order)
    k = max(num_anchors, 1)
    if rb in ('both', 'anchors'):
      self.anchors = Anchors(e, num_classes, num_anchors)
    if rb in ('both', 'attention'):
      self.self_attn = SelfAttn(k, num_classes, e, attn_heads, attn_mode)

  def cross(self, i: int, x_img, x_lm):
    """One scale: NCHW image and landmark maps -> the block's NHWC output."""
    x_img, x_lm = x_img.permute(0, 2, 3, 1), x_lm.permute(0, 2, 3, 1)
    _, h, w, _ = x_img.shape
    win = self.windows[i]
    x_n = getattr(self, f'window{i + 1}').norm(x_img)
    o = getattr(self, f'attn{i + 1}')(window_partition(x_n, win), window_partition(x_lm, win))
    o = window_reverse(o, win, h, w)
    return getattr(self, f'ffn{i + 1}')(o, x_img if self.shortcut == 'raw' else x_n)

  def embedding(self, x):
    x = F.interpolate(x, size=self.resize)                       # nearest, as POSTER++
    img = self.ir_back(x)
    lm = self.face_landback(x)
    lm = (lm[0], lm[1], self.last_face_conv(lm[2]))
    tokens = []
    for i, embed in enumerate((self.embed_q, self.embed_k, self.embed_v)):
      o = self.cross(i, getattr(self, f'conv{i + 1}')(img[i]), lm[i]).permute(0, 3, 1, 2)
      o = embed(o)
      tokens.append(o if o.ndim == 3 else o.flatten(2).transpose(1, 2))
    return self.VIT(torch.cat(tokens, 1))

  def outputs(self, x) -> dict:
    e = self.embedding(x)
    logits = self.classifier(e) / self.temperature
    primary = logits.softmax(-1)
    out = {'embedding': e, 'primary_logits': logits, 'primary': primary}
    if hasattr(self, 'anchors'):
      d = self.anchors(e)
      b, c, k = d.shape
      out['distances'] = d
      out['t_g'] = (-d.reshape(b, c * k) / self.delta).softmax(-1).reshape(b, c, k).sum(-1)
    if hasattr(self, 'self_attn'):
      out['t_a'] = self.self_attn(e)
    if self.rb == 'both':
      out['t'] = weighted_pair(out['t_g'], out['t_a'])
    elif self.rb != 'none':
      out['t'] = out['t_g' if self.rb == 'anchors' else 't_a']
    if 't' not in out:
      out['final'] = primary
    elif self.final_mix == 'paper':
      out['final'] = weighted_pair(primary, out['t'])
    else:
      c = confidence(primary)[:, None]
      out['final'] = c * primary + (1.0 - c) * out['t']
    return out

  def forward(self, x):
    out = self.outputs(x)
    p = out['final'] if self.correction else out['primary']
    return p.clamp_min(_EPS).log(), p

