"""CAFE (paper 000, ECCV'24): sigmoid masks on frozen CLIP features, channel separation and a
channel-diverse loss. Official code: zyh-uaiaaaa/Generalizable-FER code/ours_CAFE.py.

Model: F = CLIP(x) (frozen, (B, D), D = 512); mask net = ResNet-18 trunk + global average pool,
no fc, giving h (B, D); M = sigmoid(h) (eq. 1). h follows a ReLU, so M lies in [0.5, 1), as the
official code has it. z = M * F; prediction = fc(z) (l_cls), in training and in testing.

Channel separation (eqs. 4-6): z is cut into L = num_classes pieces along channels: the first
L - 1 pieces have floor(D / L) channels and the last takes the rest (512 / 7: 73 x 6 + 74, the
code's `[1]*63+[0]*10` x 6 + `[1]*64+[0]*10`; 8 classes: 64 x 8). In each piece `num_drop` = 10
channels are dropped (zeroed, no rescaling) by ONE mask shared by the whole batch, redrawn every
step (the code's `Mask()` shuffles with Python `random` on every call); here it comes from
fold_in(key(seed), step) so it is deterministic in (seed, step). The max over each piece gives
L logits; l_sep = CE(logits, y) (eq. 6).

Channel-diverse loss (eqs. 7-8): l_div = 1 - mean_{b, k}(max of piece k of z_b) / c with
c = 73 (`div_c`, 0 = size of the first piece). As coded (`1 - mean(sum(branch, 2)) / cnum`), the
mean runs over B * L, whereas eq. (8) as printed divides the (N, L) sum by N * c only: ferjax
follows the code (the printed form is L times larger). There is no softmax, so l_div is
unbounded below: it rewards large per-piece maxima (bounded here only by M < 1 and |F|).

Total: l_cls + lam * l_sep + beta * l_div, lam = 1.5, beta = 5 (Sec. 4, code line `loss1 + 5 *
MC_loss[1] + 1.5 * MC_loss[0]`).

Where the official code differs from the paper (config `cafe.*`; defaults = paper):
- pool: 'paper' takes the max over each piece as split above; 'code' is the code's
  MaxPool(kernel = stride = 73) over the 512 channels: 7 windows of 73 covering channels
  0..510, so channel 511 is never pooled (and the drop mask's pieces, 73 x 6 + 74, are offset
  from the pooling windows in the last piece).
- clip_norm: 'clip' gives CLIP its own normalisation; 'imagenet' is the code (CLIP gets the
  ResNet's ImageNet-normalised tensor).
- bgr_eval_sets: comma-separated eval specs fed in BGR order, the code's bug for the AffectNet,
  SFEW and MMA test loaders (`img = image[:,:,::-1]` computed, `image` transformed).
- features: 'cached' (default; CLIP on the un-augmented image, computed once, see
  cafe_features) or 'exact' (CLIP inside the step on the augmented input, frozen via
  Method.frozen). The code is 'exact'.
Ablations (Table 2 / 5 / comparisons; `variant` in configs/cafe_synthetic.py): use_mask=False is
the baseline CLIP + fc; lam = beta = 0 is mask only; beta = 0 is mask + separation; sigmoid=False
uses h itself as the mask (Table 5); clip_trainable=True with features='exact' and
use_mask=False is 'CLIP + fine-tune' (CLIP trained with the fc).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ferjax import labels, losses, models
from ferjax.methods import Method, cafe_features


def split_sizes(dim: int, pieces: int) -> tuple[int, ...]:
  """Piece sizes: floor(dim / pieces) each, the remainder in the last (73 x 6 + 74 for 512/7)."""
  base = dim // pieces
  if base < 1:
    raise ValueError(f'cannot cut {dim} channels into {pieces} pieces')
  return (base,) * (pieces - 1) + (dim - base * (pieces - 1),)


def drop_mask(key, dim: int, pieces: int, num_drop: int) -> jax.Array:
  """(dim,) float mask with exactly `num_drop` zeros in each piece, uniformly placed.

  One mask for the whole batch, as the code's `Mask(nb_batch)` repeats one list B times.
  """
  parts = []
  for k, size in enumerate(split_sizes(dim, pieces)):
    if num_drop >= size:
      raise ValueError(f'num_drop={num_drop} >= piece size {size}')
    perm = jax.random.permutation(jax.random.fold_in(key, k), size)
    parts.append((perm >= num_drop).astype(jnp.float32))  # the first num_drop slots are dropped
  return jnp.concatenate(parts)


def step_drop_mask(seed: int, step, dim: int, pieces: int, num_drop: int) -> jax.Array:
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0x5EB), step)
  return drop_mask(key, dim, pieces, num_drop)


def piece_max(z, pieces: int, pool: str) -> jax.Array:
  """(B, D) -> (B, L): max over each piece ('paper') or over the code's 73-wide windows."""
  sizes = split_sizes(z.shape[-1], pieces)
  if pool == 'code':
    k = sizes[0]
    windows = (z.shape[-1] - k) // k + 1   # torch max_pool, no padding, floor mode
    if windows < pieces:
      raise ValueError(f'pool=code gives {windows} windows of {k} for {pieces} classes')
    return z[:, :pieces * k].reshape(z.shape[0], pieces, k).max(-1)
  if pool != 'paper':
    raise ValueError(f"cafe.pool={pool!r}; expected 'paper' or 'code'")
  bounds = np.cumsum((0,) + sizes)
  return jnp.stack([z[:, a:b].max(-1) for a, b in zip(bounds[:-1], bounds[1:])], -1)


def sep_loss(z, label, mask, drop, pieces: int, pool: str):
  """Eqs. (4)-(6): CE of the per-piece maxima of the channel-dropped features."""
  return losses.cross_entropy(piece_max(z * drop[None], pieces, pool), label, mask=mask)


def div_loss(z, weight, pieces: int, pool: str, c: float):
  """Eqs. (7)-(8) as coded: 1 - mean over (B, L) of the per-piece maxima / c."""
  mx = piece_max(z, pieces, pool)                                             # (B, L)
  w = weight[:, None] * jnp.ones_like(mx)
  return 1.0 - (mx * w).sum() / jnp.maximum(w.sum(), 1.0) / c


class CAFE(nn.Module):
  """image (B, S, S, 3) normalised by config.augment, features (B, D) or None -> outputs."""
  num_classes: int
  feature_dim: int
  mask_net: nn.Module | None
  clip: nn.Module | None = None      # exact mode only
  clip_cfg: Any = None               # exact mode: the config, for clip_input
  aug_mean: tuple = (0.485, 0.456, 0.406)
  aug_std: tuple = (0.229, 0.224, 0.225)
  sigmoid: bool = True
  clip_trainable: bool = False

  @nn.compact
  def __call__(self, image, train: bool = False, features=None):
    if features is None:
      if self.clip is None:   # cached mode at init time: shapes only
        features = jnp.zeros((image.shape[0], self.feature_dim), jnp.float32)
      else:
        # Undo the pipeline's normalisation, then give CLIP its own input (clip_norm, size).
        x01 = image * jnp.asarray(self.aug_std) + jnp.asarray(self.aug_mean)
        features = self.clip(cafe_features.clip_input(x01, self.clip_cfg))
        if cafe_features.half_precision(self.clip_cfg):   # the official fp16 features
          features = features.astype(jnp.float16)
        if not self.clip_trainable:
          features = jax.lax.stop_gradient(features)
    features = features.astype(jnp.float32)                                  # (B, D)
    out = {'features': features}
    z = features
    if self.mask_net is not None:
      h = self.mask_net(image, train=train).astype(jnp.float32)             # (B, D)
      if h.shape[-1] != features.shape[-1]:
        raise ValueError(f'mask net gives {h.shape[-1]} channels, CLIP {features.shape[-1]}')
      m = jax.nn.sigmoid(h) if self.sigmoid else h
      z = features * m
      out['mask'] = m
    logits = nn.Dense(self.num_classes, name='fc')(z)
    out.update(embedding=z, logits=logits, probs=jax.nn.softmax(logits))
    return out


def mask_net_dim(m) -> int:
  return int(m.width) * 2 ** (len(m.stage_sizes) - 1)


def build_model(cfg) -> CAFE:
  m, c = cfg.model, cfg.cafe
  labels.resolve(cfg)
  mask_net = None
  if c.use_mask:
    mask_net = models.build(m.backbone, dtype=jnp.dtype(m.dtype), width=m.width,
                            stage_sizes=tuple(m.stage_sizes), bn_momentum=m.bn_momentum)
  clip = cafe_features.clip_module(cfg) if c.features == 'exact' else None
  if c.features not in ('cached', 'exact'):
    raise ValueError(f"cafe.features={c.features!r}; expected 'cached' or 'exact'")
  dim = dict(c.clip_overrides).get('projection_dim', 512)
  return CAFE(m.num_classes, dim, mask_net, clip=clip, clip_cfg=cfg if clip else None,
              aug_mean=tuple(cfg.augment.mean), aug_std=tuple(cfg.augment.std),
              sigmoid=c.sigmoid, clip_trainable=c.clip_trainable)


def load_mask_net(cfg) -> dict:
  """The mask net's variables from `cafe.resnet_weights`: a torchvision-layout ResNet state_dict
  (the code's `resnet18_msceleb.pth`, as SCN and DAN distribute it; a 'state_dict' wrapper and
  'module.' prefixes are unwrapped). The face-identity fc is dropped, as the code's
  children[:-2] drops it; any other mismatch is an error naming the keys."""
  from ferjax.interop import torch as interop
  m = cfg.model
  sd = interop.load_state_dict(cfg.cafe.resnet_weights)
  return jax.tree.map(jnp.asarray, interop.from_torch(
      m.backbone, sd, ignore=('fc.',), width=m.width, stage_sizes=tuple(m.stage_sizes)))


def build(cfg) -> Method:
  c, seed, num_classes = cfg.cafe, cfg.seed, len(labels.resolve(cfg))
  model = build_model(cfg)
  exact = c.features == 'exact'

  def loss(outputs, batch, step):
    mask = batch['mask'] * (batch['label'] >= 0)
    cls = losses.cross_entropy(outputs['logits'], batch['label'], mask=mask)
    metrics, total = {'loss_cls': cls}, cls
    z = outputs['embedding']
    if c.use_mask and c.lam:
      drop = step_drop_mask(seed, step, z.shape[-1], num_classes, c.num_drop)
      sep = sep_loss(z, batch['label'], mask, drop, num_classes, c.pool)
      metrics['loss_sep'], total = sep, total + c.lam * sep
    if c.use_mask and c.beta:
      cdiv = c.div_c or split_sizes(z.shape[-1], num_classes)[0]
      div = div_loss(z, batch['mask'], num_classes, c.pool, cdiv)
      metrics['loss_div'], total = div, total + c.beta * div
    if 'mask' in outputs:
      w = batch['mask'][:, None]
      metrics['mask_mean'] = (outputs['mask'] * w).sum() / jnp.maximum(w.sum() * z.shape[-1], 1)
    correct = (jnp.argmax(outputs['logits'], -1) == batch['label']) * mask
    metrics['accuracy'] = 100.0 * correct.sum() / jnp.maximum(mask.sum(), 1.0)
    return total, metrics

  def predict(outputs):
    # The mask feeds the report's per-class mask picture (not scored).
    keep = ('probs', 'logits', 'mask') if c.use_mask else ('probs', 'logits')
    return {k: outputs[k] for k in keep if k in outputs}

  def init_variables(variables):
    params, stats = dict(variables['params']), dict(variables['batch_stats'])
    if exact:
      params['clip'] = jax.tree.map(jnp.asarray, cafe_features.load_clip_params(cfg))
    if c.resnet_weights and c.use_mask:
      loaded = load_mask_net(cfg)
      params['mask_net'] = loaded['params']
      stats['mask_net'] = loaded['batch_stats']
    return {'params': params, 'batch_stats': stats}

  frozen = None
  if exact and not c.clip_trainable:
    frozen = lambda path: path[:1] == ('clip',)
  inputs = None if exact else (lambda batch: {'features': batch['features']})
  return Method('cafe', model, loss, predict, labels.class_names(cfg.data.class_space),
                model_inputs=inputs, frozen=frozen, init_variables=init_variables,
                pipeline_transform=functools.partial(pipeline_transform, cfg),
                report=functools.partial(report, cfg))


def _bgr_specs(cfg) -> set[str]:
  return {s.strip() for s in cfg.cafe.bgr_eval_sets.split(',') if s.strip()}


def pipeline_transform(cfg, spec: str, source, seed: int):
  """Per-example: BGR order for the listed eval sets; cached CLIP features by position."""
  bgr = spec in _bgr_specs(cfg)
  feats = None
  if cfg.cafe.features == 'cached':
    feats, _, _ = cafe_features.features_for(cfg, spec, source, seed, bgr=bgr)

  def fn(example, position):
    if bgr:
      example = dict(example, image=np.ascontiguousarray(example['image'][..., ::-1]))
    if feats is not None:
      example = dict(example, features=np.asarray(feats[position], np.float32))
    return example

  return fn


def report(cfg, result):
  """Mask heatmap per class (Fig. 5 analogue) and mask-net saliency PNGs (cafe_report.py)."""
  from ferjax.methods import cafe_report
  return cafe_report.write(cfg, result)
