"""The CAFE training step: what caching the frozen CLIP features buys.

CAFE (paper 000) trains a ResNet-18 whose sigmoid output masks frozen CLIP ViT-B/32 image
features, followed by a linear classifier. The official PyTorch code runs CLIP (under no_grad)
on every batch of every epoch; ferjax computes the features once and trains on the cache. Both
steps here are that structure (224 px, Adam): ferjax = ResNet-18 + mask + fc on cached
features, PyTorch = CLIP forward + ResNet-18 + mask + fc. The one-off cost of filling the cache
is the CLIP feature figure of bench.models.clip_features. `ferjax_exact` is ferjax's own exact
mode (CLIP inside the step) and `cache_gain` the cached / exact throughput ratio.
"""
from __future__ import annotations

import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.common import interleave, summary


class _MaskNet(nn.Module):
  num_classes: int = 7

  @nn.compact
  def __call__(self, x, feats, train=True):
    from ferjax.models import resnet
    h = resnet.resnet18()(x, train=train)                                 # (B, 512)
    return nn.Dense(self.num_classes)(jax.nn.sigmoid(h) * feats)


def step(batch: int, repeats: int) -> dict:
  import torch
  import torchvision
  from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
  torch.set_num_threads(os.cpu_count())
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, 224, 224, 3)).astype(np.float32)
  feats = rng.normal(size=(batch, 512)).astype(np.float32)
  y = rng.integers(0, 7, batch)

  model = _MaskNet()
  v = model.init(jax.random.key(0), x[:1], feats[:1], train=False)
  tx = optax.adam(2e-4)
  state = (v['params'], v['batch_stats'], tx.init(v['params']))

  def train(state, x, feats, y):
    params, stats, opt = state

    def loss_fn(p):
      logits, mut = model.apply({'params': p, 'batch_stats': stats}, x, feats, train=True,
                                mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), mut

    (loss, mut), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, upd), mut['batch_stats'], opt), loss

  t = time.perf_counter()
  compiled = jax.jit(train, donate_argnums=0).lower(state, x, feats, y).compile()
  compile_s = time.perf_counter() - t
  box = {'s': state}

  def fj():
    box['s'], loss = compiled(box['s'], x, feats, y)
    jax.block_until_ready(loss)

  # ferjax's exact mode: the same step with CLIP recomputed inside it (frozen, no gradient), so
  # the caching gain is also measured within one framework.
  from ferjax.models import clip as clip_lib
  clip_module = clip_lib.clip_vit_b32()
  clip_vars = clip_module.init(jax.random.key(1), x[:1])

  def train_exact(state, x, y):
    feats = jax.lax.stop_gradient(clip_module.apply(clip_vars, x))
    return train(state, x, feats, y)

  # Its own copy of the initial state: the cached step donates (deletes) the one it is given.
  state_exact = jax.tree.map(jnp.copy, (v['params'], v['batch_stats'], tx.init(v['params'])))
  compiled_exact = jax.jit(train_exact, donate_argnums=0).lower(state_exact, x, y).compile()
  box_exact = {'s': state_exact}

  def fj_exact():
    box_exact['s'], loss = compiled_exact(box_exact['s'], x, y)
    jax.block_until_ready(loss)

  clip = CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=512)).eval()
  net = torchvision.models.resnet18()
  net.fc = torch.nn.Identity()
  fc = torch.nn.Linear(512, 7)
  params = list(net.parameters()) + list(fc.parameters())
  opt = torch.optim.Adam(params, lr=2e-4)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  yt = torch.from_numpy(y).long()

  def pt():
    with torch.no_grad():
      f = clip(pixel_values=xt).image_embeds
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(fc(torch.sigmoid(net(xt)) * f), yt)
    loss.backward()
    opt.step()

  times = interleave({'ferjax': fj, 'torch': pt, 'ferjax_exact': fj_exact}, repeats)
  exact = summary(times['ferjax_exact'], batch)
  cached = summary(times['ferjax'], batch)
  return {'ferjax': cached, 'torch': summary(times['torch'], batch),
          'ferjax_exact': exact, 'cache_gain': cached['per_s'] / exact['per_s'],
          'compile_s': compile_s,
          'notes': f"ferjax exact mode {exact['per_s']:.1f} img/s: caching gains "
                   f"{cached['per_s'] / exact['per_s']:.2f}x"}
