"""CLIP ViT-B/32 image tower with its projection (Flax Linen, NHWC).

The parameter tree is the one of transformers' Flax CLIP (`vision_model/...` plus
`visual_projection`), so the `flax_model.msgpack` of openai/clip-vit-base-patch32 (a full
CLIPModel) loads as it is with `ferjax.interop.clip.load_hf_flax`, and the PyTorch map (also
ferjax.interop.clip) is a rename plus transposes. Semantics follow the reference: pre-norm
transformer with QuickGELU, LayerNorm eps 1e-5, queries scaled by head_dim**-0.5, the pooled
output is the CLS token after `post_layernorm`, projected without bias. The embedding is NOT
L2-normalised (as OpenAI's `encode_image`); normalise it yourself for cosine similarities.

  module = clip_vit_b32()                        # or clip_vit_b32(hidden_size=64, ...) in tests
  emb = module.apply(variables, normalize(images), train=False)               # (B, 512)
  out = module.apply(variables, x, return_all=True)  # {'image_embeds', 'pooler_output',
                                                     #  'last_hidden_state'}
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

def normalize(images, mode: str = 'clip'):
  """uint8 images in [0, 255] or float images in [0, 1], (..., 3) -> normalised float32.

  mode='clip' uses the statistics CLIP was trained with (CLIP_MEAN/CLIP_STD, what
  transformers' CLIPImageProcessor applies); mode='imagenet' uses the ImageNet ones. Both exist
  on purpose: the official CAFE code feeds its CLIP backbone ImageNet-normalised input, so a
  faithful reproduction needs 'imagenet', while zero-shot CLIP use needs 'clip'. Float input is
  taken to be in [0, 1] already (it is not rescaled).
  """
  if mode == 'clip':
    mean, std = CLIP_MEAN, CLIP_STD
  elif mode == 'imagenet':
    mean, std = IMAGENET_MEAN, IMAGENET_STD
  else:
    raise ValueError(f"normalize: mode must be 'clip' or 'imagenet', got {mode!r}")
  x = jnp.asarray(images)
  if x.shape[-1] != 3:
    raise ValueError(f'normalize: expected channels-last RGB (..., 3), got shape {x.shape}')
  if x.dtype == jnp.uint8:
    x = x.astype(jnp.float32) / 255.0
  x = x.astype(jnp.float32)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def quick_gelu(x):
  # The activation CLIP was trained with; the erf GELU differs by ~1e-2 and breaks parity.
  return x * jax.nn.sigmoid(1.702 * x)


def _normal(std):
  return nn.initializers.normal(stddev=std)


class Embeddings(nn.Module):
  """Patchify + CLS token + learned positions: (B, H, W, 3) -> (B, 1 + N, D).

  At the configured image_size the learned position table is used as it is. Another input size
  is an error unless `interpolate_pos` (then the position grid is resized bicubically, which is
  NOT bit-equal to torch's interpolate) or during init, where only the parameter shapes matter
  (they depend on the configuration alone, so an example input of any size builds the tree).
  """
  hidden_size: int
  patch_size: int
  image_size: int
  interpolate_pos: bool
  dtype: Any

  @nn.compact
  def __call__(self, x):
    d, p = self.hidden_size, self.patch_size
    grid = self.image_size // p
    cls = self.param('class_embedding', _normal(d**-0.5), (d,))
    patches = nn.Conv(d, (p, p), (p, p), padding='VALID', use_bias=False, dtype=self.dtype,
                      kernel_init=_normal(0.02), name='patch_embedding')(x)  # (B, h, w, D)
    b, h, w, _ = patches.shape
    patches = patches.reshape(b, h * w, d)                                    # (B, N, D)
    pos = nn.Embed(grid * grid + 1, d, embedding_init=_normal(0.02),
                   name='position_embedding').embedding                      # (1 + g*g, D)
    if (h, w) != (grid, grid):
      if not (self.interpolate_pos or self.is_initializing()):
        raise ValueError(f'CLIP: input {x.shape[1]}x{x.shape[2]} gives a {h}x{w} patch grid, '
                         f'the model was built for {self.image_size}x{self.image_size} '
                         f'({grid}x{grid}); resize the input or set interpolate_pos=True')
      table = jax.image.resize(pos[1:].reshape(grid, grid, d), (h, w, d), 'bicubic')
      pos = jnp.concatenate([pos[:1], table.reshape(h * w, d)], axis=0)
    tokens = jnp.concatenate(
        [jnp.broadcast_to(cls.astype(self.dtype), (b, 1, d)), patches], axis=1)  # (B, 1+N, D)
    return tokens + pos.astype(self.dtype)[None]


class Attention(nn.Module):
  """Multi-head self-attention with separate q/k/v/out projections (the reference's layout)."""
  hidden_size: int
  num_heads: int
  dtype: Any

  @nn.compact
  def __call__(self, x):  # (B, T, D)
    d, h = self.hidden_size, self.num_heads
    if d % h:
      raise ValueError(f'CLIP: hidden_size {d} is not divisible by num_heads {h}')
    hd = d // h
    dense = lambda name: nn.Dense(d, dtype=self.dtype, kernel_init=_normal(d**-0.5), name=name)
    split = lambda t: t.reshape(t.shape[:2] + (h, hd))                      # (B, T, h, hd)
    q = split(dense('q_proj')(x)) * jnp.asarray(hd**-0.5, self.dtype)
    k = split(dense('k_proj')(x))
    v = split(dense('v_proj')(x))
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k)                             # (B, h, T, T)
    # Softmax in float32 whatever the compute dtype: bf16 logits lose the small differences.
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(x.shape[:2] + (d,))
    return dense('out_proj')(out)


class MLP(nn.Module):
  hidden_size: int
  mlp_dim: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_normal(self.hidden_size**-0.5),
                 name='fc1')(x)
    x = quick_gelu(x)
    return nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=_normal(self.mlp_dim**-0.5),
                    name='fc2')(x)


class EncoderLayer(nn.Module):
  """Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x))."""
  hidden_size: int
  num_heads: int
  mlp_dim: int
  eps: float
  dtype: Any

  @nn.compact
  def __call__(self, x):
    ln = lambda name: nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name=name)
    x = x + Attention(self.hidden_size, self.num_heads, self.dtype, name='self_attn')(
        ln('layer_norm1')(x))
    return x + MLP(self.hidden_size, self.mlp_dim, self.dtype, name='mlp')(ln('layer_norm2')(x))


class Layers(nn.Module):
  """The block stack; its own scope so that blocks sit at `encoder/layers/<i>` as in HF Flax."""
  num_layers: int
  hidden_size: int
  num_heads: int
  mlp_dim: int
  eps: float
  dtype: Any

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      x = EncoderLayer(self.hidden_size, self.num_heads, self.mlp_dim, self.eps, self.dtype,
                       name=str(i))(x)
    return x


class Encoder(nn.Module):
  num_layers: int
  hidden_size: int
  num_heads: int
  mlp_dim: int
  eps: float
  dtype: Any

  @nn.compact
  def __call__(self, x):
    return Layers(self.num_layers, self.hidden_size, self.num_heads, self.mlp_dim, self.eps,
                  self.dtype, name='layers')(x)


class VisionTransformer(nn.Module):
  """(B, H, W, 3) -> last hidden state (B, 1 + N, D) and pooled CLS (B, D)."""
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  image_size: int
  eps: float
  interpolate_pos: bool
  dtype: Any

  @nn.compact
  def __call__(self, x):
    ln = lambda name: nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name=name)
    x = Embeddings(self.hidden_size, self.patch_size, self.image_size, self.interpolate_pos,
                   self.dtype, name='embeddings')(x)
    x = ln('pre_layrnorm')(x)  # sic: the reference's spelling, kept so checkpoints load
    hidden = Encoder(self.num_layers, self.hidden_size, self.num_heads, self.mlp_dim, self.eps,
                     self.dtype, name='encoder')(x)                         # (B, 1+N, D)
    pooled = ln('post_layernorm')(hidden[:, 0])                              # (B, D)
    return hidden, pooled


class CLIPVisionWithProjection(nn.Module):
  """CLIP image encoder: NHWC float images (already `normalize`d) -> (B, projection_dim).

  __call__(x, train=False, return_all=False): `train` is accepted for the uniform backbone
  interface and changes nothing (CLIP has no dropout or BatchNorm). return_all=True returns
  {'image_embeds': (B, P), 'pooler_output': (B, D), 'last_hidden_state': (B, 1 + N, D)}.
  `dtype` is the compute dtype (e.g. jnp.bfloat16); parameters stay float32, LayerNorm
  statistics and the attention softmax are computed in float32.
  """
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = 32
  image_size: int = 224
  projection_dim: int = 512
  layer_norm_eps: float = 1e-5
  interpolate_pos: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, return_all: bool = False):
    del train  # nothing in CLIP behaves differently in training
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'CLIP: expected NHWC RGB images (B, H, W, 3), got shape {x.shape}')
    x = x.astype(self.dtype)
    hidden, pooled = VisionTransformer(
        self.hidden_size, self.num_layers, self.num_heads, self.mlp_dim, self.patch_size,
        self.image_size, self.layer_norm_eps, self.interpolate_pos, self.dtype,
        name='vision_model')(x)
    embeds = nn.Dense(self.projection_dim, use_bias=False, dtype=self.dtype,
                      kernel_init=_normal(self.hidden_size**-0.5),
                      name='visual_projection')(pooled)                     # (B, P)
    if return_all:
      return {'image_embeds': embeds, 'pooler_output': pooled, 'last_hidden_state': hidden}
    return embeds


def clip_vit_b32(**overrides) -> CLIPVisionWithProjection:
  """ViT-B/32 at 224x224 with a 512-d projection; overrides (hidden_size, num_layers, num_heads,
  mlp_dim, patch_size, image_size, projection_dim, dtype, ...) make tiny test configurations."""
  return CLIPVisionWithProjection(**overrides)
