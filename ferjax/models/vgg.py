"""VGG-13/16/19 (and their BatchNorm variants) in torchvision's layout (Flax Linen, NHWC).

  features_N      torchvision's `features` Sequential: per config entry either Conv3x3 (pad 1,
                  with bias) [+ BatchNorm] + ReLU, or 'M', MaxPool 2x2 s2   (B, H/32, W/32, 512)
  avgpool         AdaptiveAvgPool2d((7, 7)), torchvision's bin edges        (B, 7, 7, 512)
  flatten         in torch's (C, H, W) order                                (B, 25088)
  classifier_N    Linear(25088, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout,
                  Linear(4096, num_classes)

The Flax index N of `features_N`/`classifier_N` is torchvision's Sequential index, counting the
parameter-free ReLU/MaxPool/Dropout entries, so `features_10` is `features.10`.

Outputs, by configuration:
  num_classes > 0                 the full torchvision net: logits (B, num_classes).
  num_classes == 0                the conv trunk, global-average pooled: (B, 512); no classifier
                                  parameters (load an ImageNet checkpoint with
                                  ignore=('classifier.',)).
  num_classes == 0, fc_features   the ImageNet classifier's first two layers kept:
                                  torchvision's classifier[:-1], (B, 4096); load with
                                  ignore=('classifier.6.',).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ferjax.models import layers
from ferjax.models.layers import Norm

# torchvision: convolutions kaiming_normal_(fan_out, relu), Linear weights normal(0, 0.01).
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_linear_init = nn.initializers.normal(0.01)

CFGS = {
    'vgg13': (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    'vgg16': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512,
              'M'),
    'vgg19': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512,
              512, 512, 512, 'M'),
}


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) averaging weights of AdaptiveAvgPool along one axis.

  Bin i covers [floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out)): bins overlap when n_in
  is not a multiple of n_out, and repeat inputs when n_in < n_out (a 1x1 map becomes 7x7 copies).
  """
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def adaptive_avg_pool(x, out_hw: Sequence[int]):
  """torch.nn.AdaptiveAvgPool2d(out_hw) on NHWC: (B, H, W, C) -> (B, oh, ow, C)."""
  (h, w), (oh, ow) = x.shape[1:3], tuple(out_hw)
  if (h, w) == (oh, ow):
    return x
  mh = jnp.asarray(_pool_matrix(h, oh), x.dtype)
  mw = jnp.asarray(_pool_matrix(w, ow), x.dtype)
  # Full precision: an accelerator's default bf16 matmul passes would blur a plain average.
  return jnp.einsum('ih,bhwc,jw->bijc', mh, x, mw, precision=jax.lax.Precision.HIGHEST)


class VGG(nn.Module):
  """See the module docstring for the outputs. bn_frozen=True keeps BatchNorm (batch_norm=True
  only) on its running statistics even when train=True; the classifier dropout is active whenever
  train=True (it needs a 'dropout' rng then)."""
  cfg: Sequence[Any] = CFGS['vgg16']
  batch_norm: bool = False
  dropout: float = 0.5
  fc_features: bool = False
  bn_momentum: float = 0.9
  num_classes: int = 0
  bn_frozen: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = Norm(train and not self.bn_frozen, self.bn_momentum, 1e-5, self.dtype)
    x = x.astype(self.dtype)
    i = 0
    for v in self.cfg:
      if v == 'M':
        # Floors odd sizes, as torch's MaxPool2d(2, 2) does.
        x = layers.max_pool(x, (2, 2), (2, 2))
        i += 1
        continue
      x = layers.conv(v, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_conv_init,
                      dtype=self.dtype, name=f'features_{i}')(x)
      if self.batch_norm:
        i += 1
        x = norm(f'features_{i}')(x)
      x = nn.relu(x)
      i += 2                                                 # the conv (or BN) and its ReLU
    if not self.num_classes and not self.fc_features:
      return jnp.mean(x, axis=(1, 2))                        # (B, 512)
    x = adaptive_avg_pool(x, (7, 7))                         # (B, 7, 7, 512)
    x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)      # (B, 512 * 49), torch's order
    dense = lambda n, name: nn.Dense(n, kernel_init=_linear_init, dtype=self.dtype, name=name)
    x = nn.relu(dense(4096, 'classifier_0')(x))
    x = nn.Dropout(self.dropout, deterministic=not train, name='classifier_2')(x)
    x = nn.relu(dense(4096, 'classifier_3')(x))
    x = nn.Dropout(self.dropout, deterministic=not train, name='classifier_5')(x)
    if not self.num_classes:
      return x                                               # (B, 4096)
    return dense(self.num_classes, 'classifier_6')(x)        # (B, num_classes)


def vgg13(**kw):
  return VGG(cfg=kw.pop('cfg', CFGS['vgg13']), **kw)


def vgg16(**kw):
  return VGG(cfg=kw.pop('cfg', CFGS['vgg16']), **kw)


def vgg19(**kw):
  return VGG(cfg=kw.pop('cfg', CFGS['vgg19']), **kw)


# torchvision's vgg*_bn are the same nets with batch_norm=True; through the registries (which
# know the plain names) that is e.g. build('vgg16', batch_norm=True).
def vgg13_bn(**kw):
  return vgg13(batch_norm=True, **kw)


def vgg16_bn(**kw):
  return vgg16(batch_norm=True, **kw)


def vgg19_bn(**kw):
  return vgg19(batch_norm=True, **kw)
