"""MTEN (paper 002's multi-task EfficientNet-B2, after Savchenko's HSEmotion `*_va_mtl` models,
av-savchenko/face-emotion-recognition): ferjax.models.mten, one head with C expression logits
and valence / arousal. The loss is upstream's multi-task loss with the study's classification
term:

  L = L_cls + va_weight * (CCCL(valence) + CCCL(arousal)),   CCCL = (1 - CCC) / 2

with the unbiased CCC of upstream's `ConcordanceCorCoeff` (torch.var / torch.std), over the
rows that have V/A labels (`va_mask`); without any the V/A term is 0. L_cls is
ferjax.methods.ran.classification_term(cfg): `config.loss` decides, as for every model of the
label-distribution study (upstream: class-weighted cross-entropy on the hard label).

The backbone is `cfg.model.backbone`, an EfficientNet (paper 002: efficientnet_b2), from
scratch or from a torchvision ImageNet state_dict through `model.backbone_weights`.
Options (`cfg.mten`, optional): va_weight (1.0; 0 drops the V/A loss and its metrics),
dropout (0.3, before the head, torchvision's and timm's B2 rate).
"""
from __future__ import annotations

import jax.numpy as jnp

from ferjax import labels, losses, models
from ferjax.methods import Method
from ferjax.methods.ran import accuracy, classification_term, options
from ferjax.models import mten as mten_model

DEFAULTS = dict(va_weight=1.0, dropout=0.3)


def va_loss(va, target, mask):
  """Upstream's CCCL(valence) + CCCL(arousal) = mean over the two of (1 - CCC), unbiased; 0 for
  a batch without V/A labels (where the CCC is undefined and ferjax.losses would give 1)."""
  return jnp.where(mask.sum() > 0, losses.ccc_loss(va, target, mask=mask, unbiased=True), 0.0)


def build_model(cfg, dropout: float = DEFAULTS['dropout']) -> mten_model.MTEN:
  m = cfg.model
  if not m.backbone.startswith('efficientnet'):
    raise ValueError(f"MTEN is a multi-task EfficientNet: set config.model.backbone="
                     f"'efficientnet_b2' (paper 002), not {m.backbone!r}")
  backbone = models.build(m.backbone, dtype=jnp.dtype(m.dtype), bn_momentum=m.bn_momentum)
  return mten_model.MTEN(backbone, len(labels.resolve(cfg)), dropout=float(dropout),
                         dtype=jnp.dtype(m.dtype))


def build(cfg) -> Method:
  o = options(cfg, 'mten', DEFAULTS)
  model = build_model(cfg, o['dropout'])
  names = labels.resolve(cfg)
  cls_term = classification_term(cfg)
  va_weight = float(o['va_weight'])

  def loss(outputs, batch, step):
    del step
    mask = batch['mask']
    cls = cls_term(outputs['logits'], batch, mask)
    metrics = {'loss_cls': cls, 'accuracy': accuracy(outputs['logits'], batch, mask)}
    total = cls
    if va_weight:
      va = va_loss(outputs['va'], batch['va'], mask * batch['va_mask'])
      metrics['loss_va'] = va
      total = total + va_weight * va
    return total, metrics

  def predict(outputs):
    keys = ('probs', 'logits', 'va') if va_weight else ('probs', 'logits')
    return {k: outputs[k] for k in keys}

  groups = ('classification', 'regression') if va_weight else ('classification',)
  return Method('mten', model, loss, predict, names, metrics=groups)
