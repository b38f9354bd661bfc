"""RAN, the Region Attention Network (Wang et al., "Region Attention Networks for Pose and
Occlusion Robust Facial Expression Recognition", TIP 2020; authors' code
kaiwang960112/Challenge-condition-FER-dataset), one of paper 002's four models.

  regions    R - 1 fixed crops of the face, each resized back to the input size, and the whole
             face last: (B, R, H, W, 3)
  backbone   one shared network per region (upstream: ResNet-18) -> f_r (B, C)
  alpha      self-attention: mu_r = sigmoid(Linear(C, 1)(f_r)), softmaxed over the R regions
             (the authors' code softmaxes the sigmoid outputs); the global feature
             f_m = sum_r mu_r f_r / sum_r mu_r
  beta       relation attention: nu_r = sigmoid(Linear(2C, 1)([f_r; f_m])), softmaxed over R
  fc         P = sum_r mu_r nu_r [f_r; f_m] / sum_r mu_r nu_r -> Linear(2C, K)

The region-biased loss (ferjax.methods.ran) reads the softmaxed self-attention weights: the
largest crop weight `part_max` and the whole face's weight `org`.

Crops (`DEFAULT_CROPS`) are the authors' on-the-fly AffectNet sampler's seven boxes, as
(left, top, right, bottom) fractions of the face, each boundary floored to a pixel as PIL's
crop box is; the whole face is the eighth region. Each crop is resized to the input size with
bilinear interpolation (half-pixel centres, torch's align_corners=False). The crops are taken
inside the model, so training, evaluation, prediction and export all see the same regions.

The backbone runs once per region, as upstream does: in training each region's batch gets its
own BatchNorm statistics and the running averages update once per region, in region order.

Module names follow the authors' state_dict (`alpha.0` is `alpha_0` here); the backbone is the
submodule `backbone` (ferjax.interop.ran maps it to the authors' top-level conv1, layer1, ...),
so `model.backbone_weights` loads an ImageNet ResNet into it as for any backbone.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# (left, top, right, bottom) fractions: centre-down, top-left, top-right, three centre crops
# (0.05, 0.1, 0.125 margins) and centre-top, in the authors' sampler's order.
DEFAULT_CROPS = ((0.125, 0.25, 0.875, 1.0), (0.0, 0.0, 0.75, 0.75), (0.25, 0.0, 1.0, 0.75),
                 (0.05, 0.05, 0.95, 0.95), (0.1, 0.1, 0.9, 0.9), (0.125, 0.125, 0.875, 0.875),
                 (0.125, 0.0, 0.875, 0.75))


def crop_boxes(crops: Sequence[Sequence[float]], height: int, width: int) -> list[tuple]:
  """Fractional boxes -> pixel (x0, y0, x1, y1), floored as the authors' int(f * size)."""
  out = []
  for box in crops:
    x0, y0, x1, y1 = (int(f * s) for f, s in zip(box, (width, height, width, height)))
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
      raise ValueError(f'crop {tuple(box)} is empty or outside a {height} x {width} face')
    out.append((x0, y0, x1, y1))
  return out


def region_crops(image, crops: Sequence[Sequence[float]] = DEFAULT_CROPS):
  """(B, H, W, C) faces -> (B, R, H, W, C): each crop resized to H x W, the whole face last."""
  b, h, w, c = image.shape
  regions = []
  for x0, y0, x1, y1 in crop_boxes(crops, h, w):
    part = image[:, y0:y1, x0:x1]
    # Upsampling only (a crop is never larger than the face), where the antialiased and the
    # plain bilinear kernels coincide with torch's bilinear resize.
    regions.append(jax.image.resize(part, (b, h, w, c), 'linear'))
  regions.append(image)
  return jnp.stack(regions, axis=1)


def _torch_linear_init(fan_in: int):
  """torch's default nn.Linear init, U(+-1/sqrt(fan_in)) (the authors keep it for alpha, beta
  and fc)."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class RAN(nn.Module):
  """Returns logits, probs, the aggregated feature P (`embedding`, (B, 2C)), the softmaxed
  self- and relation-attention weights (`alphas`, `betas`, (B, R)), `part_max` (B,) and `org`
  (B,).

  backbone: a module whose call (x, train=...) returns pooled features (B, C).
  crops: the R - 1 crop boxes (fractions); the input may also be precomputed regions
    (B, R, H, W, 3), whole face last.
  """
  backbone: nn.Module
  num_classes: int
  crops: Sequence[Sequence[float]] = DEFAULT_CROPS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image, train: bool = False):
    regions = image if image.ndim == 5 else region_crops(image, self.crops)
    feats = jnp.stack([self.backbone(regions[:, r], train=train).astype(jnp.float32)
                       for r in range(regions.shape[1])], axis=1)         # (B, R, C)
    c = feats.shape[-1]

    def dense(n, fan_in, name):
      return nn.Dense(n, kernel_init=_torch_linear_init(fan_in),
                      bias_init=_torch_linear_init(fan_in), dtype=self.dtype, name=name)

    alphas = jax.nn.softmax(jax.nn.sigmoid(dense(1, c, 'alpha_0')(feats)[..., 0]
                                           .astype(jnp.float32)), axis=1)  # (B, R)
    glob = (feats * alphas[..., None]).sum(1) / alphas.sum(1, keepdims=True)   # (B, C)
    cat = jnp.concatenate([feats, jnp.broadcast_to(glob[:, None], feats.shape)], -1)  # (B,R,2C)
    betas = jax.nn.softmax(jax.nn.sigmoid(dense(1, 2 * c, 'beta_0')(cat)[..., 0]
                                          .astype(jnp.float32)), axis=1)   # (B, R)
    w = alphas * betas
    pooled = (cat * w[..., None]).sum(1) / w.sum(1, keepdims=True)        # (B, 2C)
    logits = dense(self.num_classes, 2 * c, 'fc')(pooled).astype(jnp.float32)
    return {'logits': logits, 'probs': jax.nn.softmax(logits), 'embedding': pooled,
            'alphas': alphas, 'betas': betas, 'part_max': alphas[:, :-1].max(1),
            'org': alphas[:, -1]}
