"""The multi-task model of paper 004 (Jeong et al., ABAW4-LSD; the authors' `MTL_finetuning`).

Both branches see the same image.

  emotion     a ResNet to its last stage (VGGFace2 ResNet-50: 2048@7x7) -> 1x1 conv 1024 + BN +
              ReLU -> 1x1 conv 512 + BN + ReLU -> `num_heads` DAN cross-attention heads
              (ferjax.models.dan), summed raw (the authors' code; DAN's log_softmax over the
              heads is the switch `afn_logsoftmax`) -> (B, 512)
  appearance  a backbone's pooled features, then either
                'conv'    1x1 conv 512 + BN + ReLU (the VGGFace2 ResNet-50 and MobileViTv2
                          variants; on a 1x1 map this is a Linear + BatchNorm1d + ReLU), or
                'linear'  Linear(C, 512) (the DINO ResNet-50 variant's replaced fc)
  shared      hard sharing: the same Linear(512, 256) -> BN1d -> Linear(256, 128) -> BN1d,
              no activations, applied to each branch separately (BN statistics update once per
              branch in train mode, emotion first)
  expression  Linear(128, K) -> BN1d(K) on the emotion branch = logits
  landmarks   encode1, encode2: Linear(128, 68) on the appearance branch, stacked as (x, y)
              -> (B, 68, 2)

Module names mirror the PyTorch reference (third_party/torch_reference/mtl.py) with `_N` for a
Sequential index, so ferjax.interop.mtl is a renaming. `reduce`, `shared` and `hidden` shrink
the widths for CPU tests; the paper's sizes are the defaults. The affinity loss's centres live
here as the parameter `centers` (K, 512), as in ferjax.models.dan.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ferjax.models import dan, layers

APPEARANCE_HEADS = ('conv', 'linear')


def _conv1x1(features, name, dtype):
  return layers.conv(features, (1, 1), (1, 1), ((0, 0), (0, 0)), use_bias=True, dtype=dtype,
                     name=name)


def _linear(features, fan_in, name, dtype):
  init = dan._torch_linear_init(fan_in)
  return layers.dense(features, kernel_init=init, bias_init=init, dtype=dtype, name=name)


class MTL(nn.Module):
  """Returns logits, probs, landmarks (B, L, 2), heads (B, H, C), embedding (the GAP of the
  emotion branch's reduced map, the affinity loss's x) and the class centres.

  emotion: a ResNet whose `return_maps` gives the last stage's map.
  appearance: any backbone returning pooled features (B, C) (ResNet, MobileViTv2).
  """
  emotion: nn.Module
  appearance: nn.Module
  num_classes: int = 6
  appearance_head: str = 'conv'
  num_heads: int = 4
  hidden: int = 32
  reduce: Sequence[int] = (1024, 512)
  shared: Sequence[int] = (256, 128)
  num_landmarks: int = 68
  afn_logsoftmax: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    if self.appearance_head not in APPEARANCE_HEADS:
      raise ValueError(f'appearance_head={self.appearance_head!r}; known: {APPEARANCE_HEADS}')
    norm = dan.Norm(train, self.bn_momentum, self.dtype)
    d = self.dtype
    # Emotion branch.
    _, maps = self.emotion(image, train=train, return_maps=True)
    x = maps[-1]
    x = nn.relu(norm('em_reduce_1')(_conv1x1(self.reduce[0], 'em_reduce_0', d)(x)))
    x = nn.relu(norm('em_reduce_4')(_conv1x1(self.reduce[1], 'em_reduce_3', d)(x)))
    x = x.astype(jnp.float32)                                             # (B, h, w, C)
    heads = jnp.stack([dan.CrossAttentionHead(self.hidden, norm, d, name=f'cat_head{i}')(x)
                       for i in range(self.num_heads)], axis=1).astype(jnp.float32)
    if self.num_heads > 1 and self.afn_logsoftmax:
      heads = jax.nn.log_softmax(heads, axis=1)
    em = heads.sum(axis=1)                                                # (B, C)
    # Appearance branch.
    a = self.appearance(image, train=train).astype(jnp.float32)          # (B, C_a)
    c = self.reduce[1]
    if self.appearance_head == 'conv':
      a = _conv1x1(c, 'lm_reduce_0', d)(a[:, None, None, :])
      a = nn.relu(norm('lm_reduce_1')(a))[:, 0, 0, :]
    else:
      a = _linear(c, a.shape[-1], 'lm_fc', d)(a)
    # The hard-shared layers: one set of modules, called on each branch.
    fc1 = _linear(self.shared[0], c, 'sharedfc1', d)
    bn1 = norm('sharedbn1')
    fc2 = _linear(self.shared[1], self.shared[0], 'sharedfc2', d)
    bn2 = norm('sharedbn2')
    shared = lambda v: bn2(fc2(bn1(fc1(v))))
    em, a = shared(em), shared(a)
    logits = norm('bn')(_linear(self.num_classes, self.shared[1], 'fc', d)(em))
    logits = logits.astype(jnp.float32)
    lx = _linear(self.num_landmarks, self.shared[1], 'encode1', d)(a)
    ly = _linear(self.num_landmarks, self.shared[1], 'encode2', d)(a)
    centers = self.param('centers', nn.initializers.normal(1.0), (self.num_classes, c))
    return {'logits': logits, 'probs': jax.nn.softmax(logits),
            'landmarks': jnp.stack([lx, ly], axis=-1).astype(jnp.float32),
            'heads': heads, 'embedding': jnp.mean(x, axis=(1, 2)), 'centers': centers}
