"""CAFE's evaluation pictures (its `Method.report`, fed the one evaluation pass).

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

from ferjax.data import augment, sources


def class_mask_means(masks: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(N, D) masks, (N,) labels -> (K, D) means (NaN rows for absent classes)."""
  out = np.full((num_classes, masks.shape[1]), np.nan, np.float32)
  for k in range(num_classes):
    sel = labels == k
    if sel.any():
      out[k] = masks[sel].mean(0)
  return out


def write(cfg, result) -> list[str]:
  """The pictures of one evaluation set (`evaluate.SetResult`): its gathered masks and labels,
  and a saliency map of the first few images of its first batch."""
  if not cfg.cafe.use_mask or 'mask' not in result.predictions:
    return []
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  method, spec, out_dir = result.method, result.spec, result.out_dir
  names = method.class_names
  variables = result.variables
  extra = method.model_inputs or (lambda b: {})
  stem = sources.display_name(spec).replace('/', '_')
  written = []
  table = class_mask_means(np.asarray(result.predictions['mask']),
                           np.asarray(result.targets['label']), len(names))
  np.save(os.path.join(out_dir, f'cafe_mask_{stem}.npy'), table)
  fig, ax = plt.subplots(figsize=(12, 0.45 * len(names) + 1.2))
  im = ax.imshow(table, aspect='auto', cmap='viridis', interpolation='nearest')
  ax.set_yticks(range(len(names)), names)
  ax.set_xlabel('feature channel')
  ax.set_title(f'CAFE mean sigmoid mask per class: {spec}')
  fig.colorbar(im, ax=ax)
  path = os.path.join(out_dir, f'cafe_mask_{stem}.png')
  fig.savefig(path, dpi=100, bbox_inches='tight')
  plt.close(fig)
  written.append(path)

  local = result.sample
  n = min(int(cfg.cafe.report_samples), int((local['mask'] > 0).sum()))
  if n:
    sub = augment.eval_preprocess(jax.tree.map(lambda x: jnp.asarray(x[:n]), local), cfg.augment)

    def mask_mean(image):
      return method.model.apply(variables, image, train=False, **extra(sub))['mask'].mean()

    sal = np.abs(np.asarray(jax.grad(mask_mean)(sub['image']))).max(-1)      # (n, H, W)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for i in range(n):
      y = int(local['label'][i])
      axes[0, i].imshow(local['image'][i])
      axes[0, i].set_title(names[y] if y >= 0 else '?', fontsize=9)
      axes[1, i].imshow(sal[i] / max(sal[i].max(), 1e-12), cmap='inferno')
      for a in axes[:, i]:
        a.axis('off')
    fig.suptitle(f'mask-net saliency |d mean(M) / d x|: {spec}', fontsize=10)
    path = os.path.join(out_dir, f'cafe_saliency_{stem}.png')
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
    written.append(path)
  return written
