"""The multi-task model of paper 004 (Jeong et al., "Facial Expression Recognition based on
Multi-head Cross Attention Network" for ABAW4 Learning from Synthetic Data; the authors' code
Yeonggi-hong/ECCV2022-ABAW-competition): a DAN-headed VGGFace2 ResNet-50 emotion branch and an
appearance branch that regresses 68 landmarks, joined by hard-shared FC layers
(ferjax.models.mtl).

  L = L_Em + landmark_weight * L_Ap
  L_Em  CE(logits, y) + affinity_weight * L_af + partition_weight * L_pt, DAN's losses
        (ferjax.methods.dan) on the emotion branch's reduced 512-channel map and heads
  L_Ap  MSE between predicted and target (B, 68, 2) landmarks, mean over points and both
        coordinates of the rows that have landmarks

Switches (`cfg.mtl`):
  emotion_backbone, appearance   the branches' backbones (resnet50_vggface2 for the emotion;
                 appearance resnet50_vggface2, resnet50 (any ResNet-50 state_dict: the authors'
                 DINO-VGGFace weights are unreleased, so a substitute) or mobilevitv2_200,
                 pooled globally: the code's AvgPool(8) fails at 224 px)
  appearance_head  'conv' (1x1 conv + BN + ReLU) or 'linear' (the DINO variant's fc); '' picks
                 linear for resnet50 and conv otherwise
  afn_logsoftmax  DAN's log_softmax over the heads (off: raw sum, the authors' code)
  class_weights  'none' (the paper) or 'code': CE weights 1 - n_c / sum n from the synthetic
                 LSD class counts, n = anger 18,286, disgust 15,150, fear 10,923, happiness
                 73,285, sadness 144,631, surprise 14,976 (torch's weighted-mean CE)
  landmark_scale  'unit' (landmarks as the pipeline gives them, [0, 1] of the crop) or
                 'pixel' (both sides times the image size, the scale of pixel landmark files)
  aux_loss       'clean' (the paper): under Mix-augment the mixed pass is scored by the CE
                 alone (Method.mix_loss), the clean passes by the whole loss; 'mixed': the
                 whole loss on every pass. (The authors' code counts the mixed pass's
                 affinity against y_b twice and scores x_j's clean pass with y_a: not ported.)
  reduce, shared, channel_hidden, num_heads  widths (reduced for CPU configs)
  emotion_weights, appearance_weights  torchvision-layout state_dicts for the backbones
Rows with label -1 and padding rows leave every term; rows without landmarks leave L_Ap.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ferjax import labels, losses, models
from ferjax.methods import Method
from ferjax.methods import dan as dan_method
from ferjax.models import mtl as mtl_model

# The authors' class counts of the synthetic LSD training set, by canonical class name.
LSD_COUNTS = {'anger': 18286, 'disgust': 15150, 'fear': 10923, 'happy': 73285, 'sad': 144631,
              'surprise': 14976}
CLASS_WEIGHTS = ('none', 'code')
LANDMARK_SCALES = ('unit', 'pixel')
AUX_LOSSES = ('clean', 'mixed')


def code_class_weights(names) -> np.ndarray:
  """1 - n_c / sum n in the order of `names` (the LSD classes in any order)."""
  missing = [n for n in names if n not in LSD_COUNTS]
  if missing:
    raise ValueError(f'mtl.class_weights=code has LSD counts only; no count for {missing}')
  n = np.array([LSD_COUNTS[c] for c in names], np.float64)
  return (1.0 - n / n.sum()).astype(np.float32)


def landmark_loss(pred, target, mask, scale: float = 1.0):
  """torch MSELoss (mean over points and coordinates) over the rows with mask 1."""
  err = ((pred - target) * scale) ** 2                                   # (B, L, 2)
  per = err.mean(axis=(1, 2))
  return (per * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def appearance_head(m) -> str:
  return m.appearance_head or ('linear' if m.appearance == 'resnet50' else 'conv')


def build_model(cfg) -> mtl_model.MTL:
  m, t = cfg.model, cfg.mtl
  dtype = jnp.dtype(m.dtype)
  if not t.emotion_backbone.startswith('resnet'):
    raise ValueError(f'the emotion branch needs a ResNet map, not {t.emotion_backbone!r}')
  res = dict(dtype=dtype, width=m.width, stage_sizes=tuple(m.stage_sizes),
             bn_momentum=m.bn_momentum)
  emotion = models.build(t.emotion_backbone, **res)
  if t.appearance.startswith('resnet'):
    appearance = models.build(t.appearance, **res)
  elif t.appearance.startswith('mobilevitv2'):
    extra = {'channels': tuple(t.mobilevit_channels),
             'stem_channels': t.mobilevit_channels[0] // 2} if t.mobilevit_channels else {}
    appearance = models.build(t.appearance, dtype=dtype, bn_momentum=m.bn_momentum, **extra)
  else:
    raise ValueError(f'mtl.appearance={t.appearance!r}; expected a ResNet or MobileViTv2')
  return mtl_model.MTL(emotion, appearance, len(labels.resolve(cfg)),
                       appearance_head=appearance_head(t), num_heads=t.num_heads,
                       hidden=t.channel_hidden, reduce=tuple(t.reduce), shared=tuple(t.shared),
                       afn_logsoftmax=t.afn_logsoftmax, bn_momentum=m.bn_momentum, dtype=dtype)


def _load(arch, path, cfg):
  """A backbone's variables from a torchvision/timm-layout state_dict; its classifier head
  (`fc.` / `head.`) is dropped, as the branches use pooled features."""
  from ferjax.interop import torch as interop
  sd = interop.load_state_dict(path)
  kw = {} if arch.startswith('mobilevit') else dict(width=cfg.model.width,
                                                    stage_sizes=tuple(cfg.model.stage_sizes))
  return jax.tree.map(jnp.asarray, interop.from_torch(arch, sd, ignore=('fc.', 'head.'), **kw))


def build(cfg) -> Method:
  t = cfg.mtl
  if t.class_weights not in CLASS_WEIGHTS:
    raise ValueError(f'mtl.class_weights={t.class_weights!r}; known: {CLASS_WEIGHTS}')
  if t.aux_loss not in AUX_LOSSES:
    raise ValueError(f'mtl.aux_loss={t.aux_loss!r}; known: {AUX_LOSSES}')
  if t.landmark_scale not in LANDMARK_SCALES:
    raise ValueError(f'mtl.landmark_scale={t.landmark_scale!r}; known: {LANDMARK_SCALES}')
  model = build_model(cfg)
  names = labels.resolve(cfg)
  weights = jnp.asarray(code_class_weights(names)) if t.class_weights == 'code' else None
  scale = float(cfg.data.image_size) if t.landmark_scale == 'pixel' else 1.0

  def loss(outputs, batch, step):
    del step
    mask = batch['mask'] * (batch['label'] >= 0)
    label = jnp.maximum(batch['label'], 0)
    ce = losses.cross_entropy(outputs['logits'], batch['label'], mask=mask,
                              class_weights=weights)
    af = dan_method.affinity_loss(outputs['embedding'], outputs['centers'], label, mask)
    pt = dan_method.partition_loss(outputs['heads'], mask)
    lm_mask = batch['mask'] * batch['landmarks_mask']
    ap = landmark_loss(outputs['landmarks'], batch['landmarks'], lm_mask, scale)
    total = ce + t.affinity_weight * af + t.partition_weight * pt + t.landmark_weight * ap
    correct = (jnp.argmax(outputs['logits'], -1) == batch['label']) * mask
    metrics = {'loss_ce': ce, 'loss_affinity': af, 'loss_partition': pt, 'loss_landmarks': ap,
               'accuracy': 100.0 * correct.sum() / jnp.maximum(mask.sum(), 1.0)}
    return total, metrics

  def mix_loss(outputs, batch, step):
    # Mix-augment's mixed pass: the CE against one label set; affinity, partition and the
    # landmarks stay on the clean passes with their correct labels (aux_loss=clean).
    del step
    mask = batch['mask'] * (batch['label'] >= 0)
    ce = losses.cross_entropy(outputs['logits'], batch['label'], mask=mask,
                              class_weights=weights)
    zero = jnp.zeros((), jnp.float32)
    return ce, {'loss_ce': ce, 'loss_affinity': zero, 'loss_partition': zero,
                'loss_landmarks': zero, 'accuracy': zero}

  def predict(outputs):
    return {k: outputs[k] for k in ('probs', 'logits', 'landmarks')}

  def init_variables(variables):
    parts = [('emotion', t.emotion_backbone, t.emotion_weights),
             ('appearance', t.appearance, t.appearance_weights)]
    if not any(p for _, _, p in parts):
      return variables
    params, stats = dict(variables['params']), dict(variables['batch_stats'])
    for name, arch, path in parts:
      if path:
        loaded = _load(arch, path, cfg)
        params[name], stats[name] = loaded['params'], loaded['batch_stats']
    return {**variables, 'params': params, 'batch_stats': stats}

  return Method('mtl', model, loss, predict, names, metrics=('classification', 'landmarks'),
                init_variables=init_variables,
                mix_loss=mix_loss if t.aux_loss == 'clean' else None)
