"""DAN (Wen et al., "Distract Your Attention: Multi-head Cross Attention Network for Facial
Expression Recognition", official code yaoing/DAN), the expression model of paper 004.

The model (ferjax.models.dan) is a ResNet-18 feature network, a multi-head cross-attention
network (MAN) and an attention fusion network (AFN). The loss is the official one:

  L = CE(logits, y) + affinity_weight * L_af + partition_weight * L_pt

  L_af  x_i = GAP of the feature map, centres c (K_c x C, learned):
        mean_i clamp(||x_i - c_{y_i}||^2 / sum_d Var_unbiased(c[:, d]), 1e-12, 1e12)
        The reference clamps the whole masked (B, K_c) distance matrix, so each of the K_c - 1
        zeroed entries of a row adds 1e-12; that is kept (a few 1e-12 per row).
  L_pt  H heads after the AFN's log_softmax: log(1 + H / (mean_{b,d} Var_unbiased,k + eps)),
        eps = the float64 machine epsilon as in the reference; 0 for a single head.

Switches (`cfg.dan`): `centres` (0 = the class count; the RAF-DB script builds 8 centres for 7
classes, the official issue #31 says it should be 7), `num_heads`, `afn_logsoftmax`,
`affinity_weight`, `partition_weight`, `channel_hidden` (the channel attention's bottleneck,
32), `resnet_weights` (the MS-Celeb ResNet-18 state_dict the feature network starts from),
`official_weights` (a whole official DAN checkpoint, e.g. the released RAF-DB or AffectNet-8
model, converted strictly by ferjax.interop.dan; the centres, which the checkpoints do not hold,
start fresh). Rows with label -1 and padding rows leave every term.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

from ferjax import labels, losses, models
from ferjax.data import label_modes
from ferjax.methods import Method
from ferjax.models import dan as dan_model

# The reference's `sys.float_info.epsilon`; in float32 it vanishes next to any real variance.
PARTITION_EPS = sys.float_info.epsilon


def _row_mean(values, mask):
  return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def affinity_loss(embedding, centers, label, mask=None):
  """The official AffinityLoss: (B, C) features, (K_c, C) centres, (B,) labels -> scalar."""
  b, k = embedding.shape[0], centers.shape[0]
  mask = jnp.ones((b,), jnp.float32) if mask is None else mask
  dist = (jnp.sum(embedding ** 2, 1, keepdims=True) + jnp.sum(centers ** 2, 1)[None]
          - 2.0 * embedding @ centers.T)                                   # (B, K_c)
  onehot = jax.nn.one_hot(label, k, dtype=dist.dtype)
  spread = jnp.var(centers, axis=0, ddof=1).sum()
  per = jnp.clip(dist * onehot / spread, 1e-12, 1e12).sum(axis=1)          # (B,)
  return _row_mean(per, mask)


def partition_loss(heads, mask=None):
  """The official PartitionLoss on (B, H, C) head outputs."""
  b, h = heads.shape[:2]
  if h <= 1:
    return jnp.zeros((), jnp.float32)
  mask = jnp.ones((b,), jnp.float32) if mask is None else mask
  var = jnp.var(heads, axis=1, ddof=1).mean(axis=1)                        # (B,)
  return jnp.log1p(h / (_row_mean(var, mask) + PARTITION_EPS))


def build_model(cfg) -> dan_model.DAN:
  m, d = cfg.model, cfg.dan
  if not m.backbone.startswith('resnet'):
    raise ValueError(f'DAN needs a ResNet feature network (its last stage map), not '
                     f'{m.backbone!r}')
  features = models.build(m.backbone, dtype=jnp.dtype(m.dtype), width=m.width,
                          stage_sizes=tuple(m.stage_sizes), bn_momentum=m.bn_momentum)
  k = len(labels.resolve(cfg))
  if d.centres and d.centres < k:
    raise ValueError(f'dan.centres={d.centres} is fewer than the {k} classes')
  return dan_model.DAN(features, k, num_heads=d.num_heads, hidden=d.channel_hidden,
                       num_centers=d.centres, afn_logsoftmax=d.afn_logsoftmax,
                       bn_momentum=m.bn_momentum, dtype=jnp.dtype(m.dtype))


def load_features(cfg) -> dict:
  """The feature network's variables from `dan.resnet_weights`: a torchvision-layout ResNet
  state_dict (`resnet18_msceleb.pth`, {'state_dict': ...}); its identity fc is dropped, as the
  reference's children[:-2] drops it. Any other mismatch is an error naming the keys."""
  from ferjax.interop import torch as interop
  m = cfg.model
  sd = interop.load_state_dict(cfg.dan.resnet_weights)
  return jax.tree.map(jnp.asarray, interop.from_torch(
      m.backbone, sd, ignore=('fc.',), width=m.width, stage_sizes=tuple(m.stage_sizes)))


def load_official(cfg, variables) -> dict:
  """`variables` with every part of the official DAN state_dict at `dan.official_weights`
  ({'iter', 'model_state_dict', ...} as released) in place; the centres are kept."""
  from ferjax.interop import dan as dan_interop
  from ferjax.interop import torch as interop
  sd = interop.load_state_dict(cfg.dan.official_weights)
  loaded = dan_interop.from_torch(sd, centers=variables['params']['centers'],
                                  **dan_interop.config_dims(cfg))
  return {**variables, **jax.tree.map(jnp.asarray, loaded)}


def build(cfg) -> Method:
  d = cfg.dan
  model = build_model(cfg)
  names = labels.resolve(cfg)
  soft, soft_loss = cfg.loss.target == 'soft', label_modes.loss_name(cfg)

  def loss(outputs, batch, step):
    del step
    mask = batch['mask'] * (batch['label'] >= 0)
    label = jnp.maximum(batch['label'], 0)
    if soft:   # targets are distributions (paper 002): the configured loss replaces the CE
      ce = losses.distribution_loss(soft_loss, outputs['logits'], batch['label_dist'], mask=mask)
    else:
      ce = losses.cross_entropy(outputs['logits'], batch['label'], mask=mask)
    af = affinity_loss(outputs['embedding'], outputs['centers'], label, mask)
    pt = partition_loss(outputs['heads'], mask)
    total = ce + d.affinity_weight * af + d.partition_weight * pt
    correct = (jnp.argmax(outputs['logits'], -1) == batch['label']) * mask
    metrics = {'loss_ce': ce, 'loss_affinity': af, 'loss_partition': pt,
               'accuracy': 100.0 * correct.sum() / jnp.maximum(mask.sum(), 1.0)}
    return total, metrics

  def predict(outputs):
    return {k: outputs[k] for k in ('probs', 'logits')}

  if d.official_weights and d.resnet_weights:
    raise ValueError('dan.official_weights holds the whole model, features included; leave '
                     'dan.resnet_weights empty')

  def init_variables(variables):
    if d.official_weights:
      return load_official(cfg, variables)
    if not d.resnet_weights:
      return variables
    params, stats = dict(variables['params']), dict(variables['batch_stats'])
    loaded = load_features(cfg)
    params['features'], stats['features'] = loaded['params'], loaded['batch_stats']
    return {**variables, 'params': params, 'batch_stats': stats}

  return Method('dan', model, loss, predict, names, init_variables=init_variables)
