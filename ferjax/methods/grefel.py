"""GReFEL (paper 001): geometry-aware reliability balancing on a POSTER++-style encoder.

The network is ferjax.models.grefel.GReFEL (IR-50 image stream, MobileFaceNet landmark stream,
window cross-attention at three scales, ViT, SE block, primary head, anchors and attentive
correction). This module builds it from `config.grefel` and adds the losses (eqs 20-23):

  L = lambda_cls L_cls + tau (lambda_a L_a + lambda_c L_c)

  L_cls  NLL of the final distribution L (eq 20), config.loss.label_smoothing as torch's
         (eps 0.11 is the paper's "smoothing 11", Table 8), optional class weights
  L_a    'paper' (eq 21): minus the mean squared distance between anchors of different
         classes, over all (k, l) anchor pairs and per dimension
         'arbex': -sum_{i,j} ||A_i - A_j||^2 / sqrt(E) / K^2, A_i the class's K anchors
         flattened, so only same-index anchors are paired
  L_c    'paper' (eq 22): mean over the batch of min_k ||e - a_{y,k}||^2
         'arbex': mean of min_k ||e - a_{y,k}|| * C_f(l) / sqrt(E) (unsquared, confidence-
         weighted)
  tau    1, or ARBEx's trust ramp step / trust_ramp_steps (capped at 1) when that is > 0; the
         ramp also moves the final distribution from l towards L in training.

Where ARBEx's code differs from the paper there is a switch in `config.grefel`; the default is
the paper's (see `config_section`). The prediction is argmax L; `eval_correction=False`
evaluates the primary head alone, as ARBEx does by default.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import ml_collections
import numpy as np

from ferjax import labels, losses, runtime
from ferjax.methods import Method
from ferjax.models import grefel as net, mobilefacenet
from ferjax.models.irse import ir50

ANCHOR_LOSSES = ('paper', 'arbex')
CENTER_LOSSES = ('paper', 'arbex')
HEADS = {'paper': ((64, 64), 'paper'), 'arbex': ((384, 192, 96), 'arbex')}
FREEZE = ('landmark', 'both', 'none')


def config_section() -> ml_collections.ConfigDict:
  """`config.grefel` with the paper's values; the ARBEx alternative is named beside each."""
  return ml_collections.ConfigDict(dict(
      # Network. resize: both streams see a nearest resize of the input (code: 112).
      resize=112, ir_stages=(3, 4, 14), heads=(2, 4, 8), drop_paths=(0.0, 0.125, 0.25),
      embed_dim=768, vit_depth=2, vit_heads=8,
      landmark_head=True,        # MobileFaceNet's unused GDC head (needs resize 112)
      landmark_blocks=(4, 6, 2),   # MobileFaceNet's residual blocks (fewer: test networks)
      xattn_shortcut='raw',      # eq 4 adds X | 'norm': the code adds LN(X)
      xattn_query_proj=True,     # eq 1's W_q | False: the code's raw landmark tokens
      head='paper',              # 2 x 64, ReLU-Dropout-BN | 'arbex': 384/192/96, ReLU-BN-Dropout
      head_dropout=0.5,
      temperature=1.0,           # l = softmax(logits / T) (ARBEx flag; the paper has none)
      # Reliability balancing.
      rb='both',                 # Table 2: 'both' | 'anchors' | 'attention' | 'none'
      num_anchors=10,            # K per class (Table 6) | ARBEx: 1
      anchor_init='normal',      # N(0, 0.02^2) | 'zeros' (ARBEx: L_a's gradient is 0 there)
      delta=1.0,                 # eq 14 (ARBEx reads it from the temperature flag: set equal)
      attn_heads=1,
      attn_mode='sample',        # per-sample attention | 'batch': ARBEx mixes the batch
      final_mix='paper',         # eq 19 | 'arbex': c_l l + (1 - c_l) t
      trust_ramp_steps=0,        # > 0: ARBEx's ramp tau = step / steps on correction and aux
      eval_correction=True,      # predict with L | False: the primary head (ARBEx default)
      # Losses.
      anchor_loss='paper',       # eq 21 over all anchor pairs | 'arbex'
      center_loss='paper',       # eq 22 | 'arbex'
      lambda_cls=1.0, lambda_anchor=1.0, lambda_center=1.0,
      class_weights=(),          # () = none (paper: balanced sampler) | C floats (ARBEx: N/C/n_c)
      # Backbones: the landmark net is frozen (paper); its BatchNorm statistics stay fixed
      # unless frozen_bn_update (PyTorch's train-mode update in POSTER++/ARBEx).
      freeze='landmark',         # | 'both' (ARBEx also freezes IR-50) | 'none'
      frozen_bn_update=False,
      # Pre-trained streams for a fresh run (PyTorch checkpoints on the user's disk): IR-50 from
      # face.evoLVe (MS-Celeb-1M; all four stages, or POSTER++'s body1/2/3 layout) and POSTER++'s
      # 68-landmark MobileFaceNet (mobilefacenet_model_best.pth.tar).
      ir50_weights='', mobilefacenet_weights='',
  ))


def _check(name, value, options):
  if value not in options:
    raise ValueError(f'config.grefel.{name}={value!r}; expected one of {options}')


def build_model(cfg, num_classes: int) -> net.GReFEL:
  g, dtype = cfg.grefel, jnp.dtype(cfg.model.dtype)
  _check('head', g.head, tuple(HEADS))
  _check('freeze', g.freeze, FREEZE)
  hidden, order = HEADS[g.head]
  bn_fixed = lambda part: g.freeze in part and not g.frozen_bn_update
  image_net = ir50(num_stages=3, stage_sizes=tuple(g.ir_stages) + (3,), output_layer=False,
                   resize=None, bn_momentum=cfg.model.bn_momentum,
                   bn_frozen=bn_fixed(('both',)), dtype=dtype)
  landmark_net = mobilefacenet.MobileFaceNet(
      bn_momentum=cfg.model.bn_momentum, bn_frozen=bn_fixed(('landmark', 'both')), dtype=dtype,
      landmark_head=g.landmark_head, blocks=tuple(g.landmark_blocks))
  rb = net.ReliabilityBalancing(num_classes, g.num_anchors, g.anchor_init, g.attn_heads,
                                g.attn_mode, g.delta, g.rb, g.final_mix, name='rb')
  return net.GReFEL(num_classes, image_net, landmark_net, g.resize, tuple(g.heads),
                    tuple(g.drop_paths), None, g.xattn_shortcut, g.xattn_query_proj,
                    g.embed_dim, g.vit_depth, g.vit_heads, 4.0, hidden, order, g.head_dropout,
                    g.temperature, rb, dtype)


def anchor_loss(anchors, mode: str = 'paper'):
  """L_a of anchors (C, K, E) (eq 21, or ARBEx's form): lower when classes lie further apart."""
  c, k, e = anchors.shape
  if mode == 'paper':
    flat = anchors.reshape(c * k, e)
    sq = jnp.sum(jnp.square(flat[:, None] - flat[None]), -1)          # (CK, CK)
    cls = np.repeat(np.arange(c), k)
    other = (cls[:, None] != cls[None]).astype(np.float32)
    return -jnp.sum(sq * other) / (other.sum() * e)
  if mode == 'arbex':
    flat = anchors.reshape(c, k * e)
    sq = jnp.sum(jnp.square(flat[:, None] - flat[None]), -1)          # (C, C)
    return -jnp.sum(sq) / np.sqrt(e) / k ** 2
  raise ValueError(f'anchor_loss={mode!r}; expected one of {ANCHOR_LOSSES}')


def center_loss(distances, label, mask, mode: str = 'paper', conf=None, dim: int = 768):
  """L_c from the (B, C, K) Euclidean distances to the anchors (eq 22, or ARBEx's form, which
  weights by the primary confidence `conf` (B,) and divides by sqrt of the embedding size)."""
  valid = mask * (label >= 0)
  own = jnp.take_along_axis(distances, jnp.maximum(label, 0)[:, None, None], axis=1)[:, 0]
  nearest = own.min(-1)                                               # (B,)
  if mode == 'paper':
    per = jnp.square(nearest)
  elif mode == 'arbex':
    per = nearest * conf / np.sqrt(dim)
  else:
    raise ValueError(f'center_loss={mode!r}; expected one of {CENTER_LOSSES}')
  return jnp.sum(per * valid) / jnp.maximum(valid.sum(), 1.0)


@functools.cache
def _state_dict(path: str, arch: str) -> dict:
  from ferjax.interop import irse, torch as interop
  sd = interop.load_state_dict(path)
  if arch == 'ir50' and any(k.startswith('body1.') for k in sd):   # POSTER++'s own layout
    sd = irse.from_poster_keys(sd)
  runtime.say(f'grefel: {arch} weights from {path}')
  return sd


def pretrained(cfg):
  """Method.init_variables: the streams named by grefel.ir50_weights / mobilefacenet_weights
  put into a fresh initialisation (parameters and BatchNorm statistics), or None."""
  g = cfg.grefel
  if not (g.ir50_weights or g.mobilefacenet_weights):
    return None

  def init_variables(variables):
    from ferjax.interop import irse, torch as interop
    params, stats = dict(variables['params']), dict(variables['batch_stats'])
    parts = (('image_net', 'ir50', g.ir50_weights, irse.STAGE4_KEYS),
             ('landmark_net', 'mobilefacenet', g.mobilefacenet_weights,
              () if g.landmark_head else ('output_layer.',)))
    for part, arch, path, ignore in parts:
      if path:
        loaded = interop.from_torch(arch, _state_dict(path, arch), ignore=ignore,
                                    abstract={'params': params[part],
                                              'batch_stats': stats.get(part, {})})
        params[part] = loaded['params']
        stats[part] = loaded.get('batch_stats', stats.get(part, {}))
    return {'params': params, 'batch_stats': stats}
  return init_variables


def build(cfg) -> Method:
  g = cfg.grefel
  names = labels.resolve(cfg)
  _check('anchor_loss', g.anchor_loss, ANCHOR_LOSSES)
  _check('center_loss', g.center_loss, CENTER_LOSSES)
  model = build_model(cfg, len(names))
  weights = None
  if len(g.class_weights):
    weights = np.asarray(g.class_weights, np.float32)
    if weights.shape != (len(names),):
      raise ValueError(f'config.grefel.class_weights has {weights.shape[0]} entries for '
                       f'{len(names)} classes')
  smoothing = cfg.loss.label_smoothing

  def loss(outputs, batch, step):
    mask, label = batch['mask'], batch['label']
    trust = 1.0
    if g.trust_ramp_steps > 0:
      trust = jnp.minimum(step / g.trust_ramp_steps, 1.0)
    final = net.final_distribution(outputs['primary'], outputs.get('t'), g.final_mix, trust)
    log_final = jnp.log(jnp.maximum(final, 1e-12))
    # log_softmax of log L is log L: cross_entropy gives the NLL of L with torch's smoothing.
    cls = losses.cross_entropy(log_final, label, mask=mask, class_weights=weights,
                               label_smoothing=smoothing)
    total = g.lambda_cls * cls
    metrics = {'loss_cls': cls, 'trust': jnp.asarray(trust, jnp.float32)}
    if 'anchors' in outputs:
      la = anchor_loss(outputs['anchors'], g.anchor_loss)
      lc = center_loss(outputs['distances'], label, mask, g.center_loss,
                       net.confidence(outputs['primary']), g.embed_dim)
      metrics.update(loss_anchor=la, loss_center=lc)
      total = total + trust * (g.lambda_anchor * la + g.lambda_center * lc)
    valid = mask * (label >= 0)
    for key, p in (('accuracy', final), ('accuracy_primary', outputs['primary'])):
      correct = (jnp.argmax(p, -1) == label) * valid
      metrics[key] = 100.0 * correct.sum() / jnp.maximum(valid.sum(), 1.0)
    return total, metrics

  def predict(outputs):
    probs = outputs['probs'] if g.eval_correction else outputs['primary']
    return {'probs': probs, 'logits': jnp.log(jnp.maximum(probs, 1e-12)),
            'primary_probs': outputs['primary'], 'embedding': outputs['embedding']}

  frozen_parts = {'landmark': ('landmark_net',), 'both': ('landmark_net', 'image_net'),
                  'none': ()}[g.freeze]
  frozen = (lambda path: path[0] in frozen_parts) if frozen_parts else None
  return Method('grefel', model, loss, predict, names, metrics=('classification',),
                frozen=frozen, init_variables=pretrained(cfg), report=report)


def spread(probs, valid) -> dict:
  """Fig. 9's numbers of a set's distributions: mean max and min probability, mean std."""
  p = np.asarray(probs, np.float64)[valid]
  return {'max': float(p.max(-1).mean()), 'min': float(p.min(-1).mean()),
          'std': float(p.std(-1).mean())}


def report(result) -> list:
  """The primary head's confusion matrix next to the evaluation's corrected one (Fig. 4:
  without and with RB) and the probability spread before and after RB (Fig. 9)."""
  import json
  import os
  from ferjax import metrics, plots
  from ferjax.data import sources
  pred, data, out_dir = result.predictions, result.targets, result.out_dir
  stem = sources.display_name(result.spec).replace('/', '_')
  valid = (np.asarray(data['mask']) > 0) & (np.asarray(data['label']) >= 0)
  if not valid.any():
    return []
  names = result.method.class_names
  cls = metrics.classification_report(data['label'], pred['primary_probs'], names,
                                      mask=data['mask'])
  paths = [plots.plot_confusion(np.asarray(cls['confusion']), names,
                                os.path.join(out_dir, f'confusion_primary_{stem}.png'),
                                title=f'{result.spec}: primary head (without RB)')]
  numbers = {'accuracy_primary': 100.0 * float(cls['accuracy']),
             'spread_primary': spread(pred['primary_probs'], valid),
             'spread_final': spread(pred['probs'], valid)}
  paths.append(os.path.join(out_dir, f'grefel_rb_{stem}.json'))
  with open(paths[-1], 'w') as f:
    json.dump(numbers, f, indent=1)
  return paths
