"""MTEN, the multi-task EfficientNet-B2 of paper 002, after Savchenko's HSEmotion models
(av-savchenko/face-emotion-recognition: `enet_b2_8`, and the multi-task `*_va_mtl` models whose
classifier is replaced by one Linear(features, C + 2)).

  backbone     EfficientNet-B2 (ferjax.models.efficientnet, torchvision's layout) -> (B, 1408)
  classifier   Dropout(0.3), Linear(1408, C + 2): the first C outputs are the expression
               logits, the last two valence and arousal, unbounded (no tanh), as upstream

One head serves both tasks, so the expression and the V/A outputs share every weight but the
last layer's rows. The head is named as torchvision's efficientnet_b2 classifier
(`classifier_1` = `classifier.1`), so the reference is torchvision's efficientnet_b2 with
num_classes = C + 2, and an ImageNet B2 state_dict starts the backbone through
`model.backbone_weights` like any backbone.

Upstream builds on timm's `tf_efficientnet_b*_ns` (TensorFlow 'same' padding, BatchNorm
epsilon 1e-3, timm key names), so its released checkpoints are not this layout: what carries
over is the head, the task split of the outputs and the loss (ferjax.methods.mten).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _classifier_init(key, shape, dtype=jnp.float32):
  # torchvision's EfficientNet classifier: uniform(+-1/sqrt(out features)), bias zero.
  r = 1.0 / math.sqrt(shape[-1])
  return jax.random.uniform(key, shape, dtype, -r, r)


class MTEN(nn.Module):
  """Returns logits (B, C), probs, va (B, 2) and the pooled features (`embedding`).

  backbone: a module whose call (x, train=...) returns pooled features (B, F).
  """
  backbone: nn.Module
  num_classes: int
  dropout: float = 0.3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    feats = self.backbone(image, train=train).astype(jnp.float32)           # (B, F)
    h = nn.Dropout(self.dropout, deterministic=not train, name='classifier_0')(feats)
    out = nn.Dense(self.num_classes + 2, kernel_init=_classifier_init, dtype=self.dtype,
                   name='classifier_1')(h).astype(jnp.float32)              # (B, C + 2)
    logits = out[:, :self.num_classes]
    return {'logits': logits, 'probs': jax.nn.softmax(logits), 'va': out[:, self.num_classes:],
            'embedding': feats}
