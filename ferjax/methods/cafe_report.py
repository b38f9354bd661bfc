"""CAFE's evaluation pictures (called through evaluate.py's method-report hook).

- `cafe_mask_<set>.png`: the mean sigmoid mask per true class, a classes x D heatmap (the
  analogue of the paper's Fig. 5), plus `cafe_mask_<set>.npy` with the numbers.
- `cafe_saliency_<set>.png`: for the first `cafe.report_samples` images, the input and the
  gradient magnitude of the mean mask w.r.t. the input pixels (max over colour channels): where
  the mask net looks.
Only when the method has a mask (cafe.use_mask).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.data import augment, pipeline, sources


def _variables(state):
  v = {'params': state.params}
  if state.batch_stats:
    v['batch_stats'] = state.batch_stats
  return v


def class_mask_means(masks: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(N, D) masks, (N,) labels -> (K, D) means (NaN rows for absent classes)."""
  out = np.full((num_classes, masks.shape[1]), np.nan, np.float32)
  for k in range(num_classes):
    sel = labels == k
    if sel.any():
      out[k] = masks[sel].mean(0)
  return out


def write(cfg, state, specs, out_dir) -> list[str]:
  if not cfg.cafe.use_mask:
    return []
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  from ferjax import methods
  method = methods.build(cfg)
  model, variables = method.model, jax.device_get(_variables(state))
  extra = method.model_inputs or (lambda b: {})

  @jax.jit
  def masks_of(variables, batch):
    return model.apply(variables, batch['image'], train=False, **extra(batch))['mask']

  def mask_mean(image, batch):
    m = model.apply(variables, image, train=False, **extra(batch))['mask']
    return m.mean()

  written = []
  for spec in specs:
    eval_set = pipeline.EvalSet(spec, cfg, cfg.seed)
    stem = sources.display_name(spec).replace('/', '_')
    masks, labels, first = [], [], None
    for local in eval_set.local_batches():
      batch = augment.eval_preprocess(jax.tree.map(jnp.asarray, local), cfg.augment)
      keep = local['mask'] > 0
      masks.append(np.asarray(masks_of(variables, batch))[keep])
      labels.append(local['label'][keep])
      first = first or (local, batch)
    table = class_mask_means(np.concatenate(masks), np.concatenate(labels),
                             cfg.model.num_classes)
    np.save(os.path.join(out_dir, f'cafe_mask_{stem}.npy'), table)
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(method.class_names) + 1.2))
    im = ax.imshow(table, aspect='auto', cmap='viridis', interpolation='nearest')
    ax.set_yticks(range(len(method.class_names)), method.class_names)
    ax.set_xlabel('feature channel')
    ax.set_title(f'CAFE mean sigmoid mask per class: {spec}')
    fig.colorbar(im, ax=ax)
    path = os.path.join(out_dir, f'cafe_mask_{stem}.png')
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
    written.append(path)

    local, batch = first
    n = min(int(cfg.cafe.report_samples), len(local['label']))
    if n:
      sub = jax.tree.map(lambda x: x[:n], batch)
      grads = jax.grad(lambda im: mask_mean(im, sub))(sub['image'])
      sal = np.abs(np.asarray(grads)).max(-1)                                # (n, H, W)
      fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
      for i in range(n):
        y = int(local['label'][i])
        axes[0, i].imshow(local['image'][i])
        axes[0, i].set_title(method.class_names[y] if y >= 0 else '?', fontsize=9)
        axes[1, i].imshow(sal[i] / max(sal[i].max(), 1e-12), cmap='inferno')
        for a in axes[:, i]:
          a.axis('off')
      fig.suptitle(f'mask-net saliency |d mean(M) / d x|: {spec}', fontsize=10)
      path = os.path.join(out_dir, f'cafe_saliency_{stem}.png')
      fig.savefig(path, dpi=100, bbox_inches='tight')
      plt.close(fig)
      written.append(path)
  return written
