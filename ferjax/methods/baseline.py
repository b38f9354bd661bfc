"""Baseline: a backbone, a linear classifier (hard or soft targets), optional V/A head."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ferjax import labels, losses, models
from ferjax.data import label_modes
from ferjax.models import vgg
from ferjax.methods import Method


class Classifier(nn.Module):
  backbone: nn.Module
  num_classes: int
  va_head: bool = True
  dropout: float = 0.0

  @nn.compact
  def __call__(self, image, train: bool = False):
    emb = self.backbone(image, train=train)
    if isinstance(emb, dict):             # face backbones return named maps + an embedding
      emb = emb['embedding']
    emb = emb.astype(jnp.float32)                                          # (B, C)
    h = nn.Dropout(self.dropout, deterministic=not train)(emb)
    logits = nn.Dense(self.num_classes, name='fc')(h)                     # (B, K)
    out = {'embedding': emb, 'logits': logits, 'probs': jax.nn.softmax(logits)}
    if self.va_head:
      out['va'] = jnp.tanh(nn.Dense(2, name='va_fc')(h))                  # (B, 2) in [-1, 1]
    return out


def build(cfg) -> Method:
  m = cfg.model
  kw = {'dtype': jnp.dtype(m.dtype)}
  if m.backbone.startswith('resnet'):   # width/depth knobs exist for the ResNet family only
    kw.update(width=m.width, stage_sizes=tuple(m.stage_sizes), bn_momentum=m.bn_momentum)
  elif m.backbone.startswith('vgg') and m.width != 64:   # narrow VGGs for CPU budgets
    kw['cfg'] = tuple(v if v == 'M' else v * m.width // 64 for v in vgg.CFGS[m.backbone[:5]])
  backbone = models.build(m.backbone, **kw)
  names = labels.resolve(cfg)
  model = Classifier(backbone, len(names), m.va_head, m.dropout)
  target, smoothing, va_weight = cfg.loss.target, cfg.loss.label_smoothing, cfg.loss.va_weight
  soft_loss = label_modes.loss_name(cfg)
  if target not in ('hard', 'soft'):
    raise ValueError(f"config.loss.target={target!r}; expected 'hard' or 'soft'")

  def loss(outputs, batch, step):
    del step
    mask = batch['mask']
    if target == 'soft':
      if soft_loss == 'cce':   # unlabelled rows (all-zero targets) count as before
        cls = losses.softmax_cross_entropy(outputs['logits'], batch['label_dist'], mask=mask)
      else:
        cls = losses.distribution_loss(soft_loss, outputs['logits'], batch['label_dist'],
                                       mask=mask)
    else:
      cls = losses.cross_entropy(outputs['logits'], batch['label'], mask=mask,
                                 label_smoothing=smoothing)
    metrics = {'loss_cls': cls}
    total = cls
    if m.va_head:
      va = losses.mse(outputs['va'], batch['va'], mask=mask * batch['va_mask'])
      metrics['loss_va'] = va
      total = total + va_weight * va
    correct = (jnp.argmax(outputs['logits'], -1) == batch['label']) * mask
    metrics['accuracy'] = 100.0 * correct.sum() / jnp.maximum(mask.sum(), 1.0)
    return total, metrics

  def predict(outputs):
    return {k: outputs[k] for k in ('probs', 'logits', 'va') if k in outputs}

  groups = ('classification', 'regression') if m.va_head else ('classification',)
  return Method('baseline', model, loss, predict, names, metrics=groups)
