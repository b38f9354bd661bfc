"""RAN (Wang et al., Region Attention Networks, TIP 2020; kaiwang960112/Challenge-condition-
FER-dataset), one of paper 002's four models. The model is ferjax.models.ran; the loss is

  L = L_cls + rb_weight * L_RB,   L_RB = mean_i max(0, margin - (mu_max,i - mu_0,i))

with mu the softmaxed self-attention weights, mu_max the largest crop weight and mu_0 the whole
face's (the authors' `MyLoss`). The margin is 0.02 by default, as in the authors' AffectNet
script (`unbalanced_sample_train/part_attention.py`); their other scripts use 0.03 (AffectNet,
simple sampler) and 0.1 (FERPlus, `attention_rank_loss.py`).

L_cls is `classification_term(cfg)`: the run's classification loss on hard labels or on the
target distributions (`label_dist`), shared with ferjax.methods.mten so that every model of the
label-distribution study is trained with the same loss.

Options (`cfg.ran`, every one optional; a config without the section gets these defaults):
  margin (0.02), rb_weight (1.0), crops (ferjax.models.ran.DEFAULT_CROPS, (left, top, right,
  bottom) fractions; the whole face is always added as the last region).
The backbone is `cfg.model.backbone` (a ResNet; upstream ResNet-18), from scratch or from an
ImageNet state_dict through `model.backbone_weights` like any backbone.
"""
from __future__ import annotations

import jax.numpy as jnp

from ferjax import labels, losses, models
from ferjax.data import label_modes
from ferjax.methods import Method
from ferjax.models import ran as ran_model

DEFAULTS = dict(margin=0.02, rb_weight=1.0, crops=ran_model.DEFAULT_CROPS)


def options(cfg, section: str, defaults: dict) -> dict:
  """A method section of the config laid over its defaults (the section may be absent)."""
  given = cfg.get(section) if hasattr(cfg, 'get') else None
  given = dict(given) if given is not None else {}
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f'config.{section} has unknown keys {unknown}; known: {sorted(defaults)}')
  return {**defaults, **given}


def classification_term(cfg):
  """(logits, batch, mask) -> scalar: the run's classification loss, chosen as the baseline
  method chooses it, so that every model of the label-distribution study trains on the same
  loss. `config.loss.target='soft'`: the distribution loss `label_modes.loss_name(cfg)`
  (`config.loss.name`, or the one a FERPlus label mode brings) against `label_dist`, 'cce'
  being the plain soft cross-entropy; 'hard': the cross-entropy against `label` (label
  smoothing from `config.loss.label_smoothing`).
  """
  target, smoothing = cfg.loss.target, cfg.loss.label_smoothing
  if target == 'soft':
    name = label_modes.loss_name(cfg)
    if name == 'cce':   # unlabelled rows (all-zero targets) count, as in the baseline
      return lambda logits, batch, mask: losses.softmax_cross_entropy(
          logits, batch['label_dist'], mask=mask)
    return lambda logits, batch, mask: losses.distribution_loss(
        name, logits, batch['label_dist'], mask=mask)
  if target == 'hard':
    return lambda logits, batch, mask: losses.cross_entropy(
        logits, batch['label'], mask=mask, label_smoothing=smoothing)
  raise ValueError(f"config.loss.target={target!r}; expected 'hard' or 'soft'")


def accuracy(logits, batch, mask):
  """Top-1 accuracy in percent against the hard label (rows with label -1 count as wrong)."""
  correct = (jnp.argmax(logits, -1) == batch['label']) * mask
  return 100.0 * correct.sum() / jnp.maximum(mask.sum(), 1.0)


def region_biased_loss(part_max, org, margin: float = 0.02, mask=None):
  """mean_i max(0, margin - (part_max_i - org_i)) over the real rows of the batch."""
  per = jnp.maximum(margin - (part_max - org), 0.0)
  mask = jnp.ones_like(per) if mask is None else mask
  return (per * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def build_model(cfg, crops=None) -> ran_model.RAN:
  m = cfg.model
  if not m.backbone.startswith('resnet'):
    raise ValueError(f'RAN takes a ResNet backbone (upstream ResNet-18), not {m.backbone!r}')
  kw = dict(dtype=jnp.dtype(m.dtype), width=m.width, stage_sizes=tuple(m.stage_sizes),
            bn_momentum=m.bn_momentum)
  backbone = models.build(m.backbone, **kw)
  crops = DEFAULTS['crops'] if crops is None else crops
  return ran_model.RAN(backbone, len(labels.resolve(cfg)),
                       crops=tuple(tuple(float(f) for f in b) for b in crops),
                       dtype=jnp.dtype(m.dtype))


def build(cfg) -> Method:
  o = options(cfg, 'ran', DEFAULTS)
  model = build_model(cfg, o['crops'])
  names = labels.resolve(cfg)
  cls_term = classification_term(cfg)
  margin, rb_weight = float(o['margin']), float(o['rb_weight'])

  def loss(outputs, batch, step):
    del step
    mask = batch['mask']
    cls = cls_term(outputs['logits'], batch, mask)
    rb = region_biased_loss(outputs['part_max'], outputs['org'], margin, mask)
    metrics = {'loss_cls': cls, 'loss_rb': rb, 'accuracy': accuracy(outputs['logits'], batch,
                                                                        mask)}
    return cls + rb_weight * rb, metrics

  def predict(outputs):
    return {k: outputs[k] for k in ('probs', 'logits')}

  return Method('ran', model, loss, predict, names)
