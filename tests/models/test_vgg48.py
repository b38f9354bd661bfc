"""Paper 002's baseline: VGG-16 on 48 px grey faces replicated to 3 channels. The full
torchvision net at 48 px (a 1 x 1 map that AdaptiveAvgPool2d((7, 7)) copies 49 times) matches
torchvision both ways, and `augment.grayscale` turns every image grey in training and
evaluation alike."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import config as config_lib, methods
from ferjax.data import augment
from ferjax.interop import torch as it

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

from tests.interop.parity import check_roundtrip  # noqa: E402


def _grey_faces(n=2, size=48, seed=0):
  grey = np.random.default_rng(seed).uniform(size=(n, size, size, 1)).astype(np.float32)
  return np.repeat(grey, 3, -1)


def test_vgg16_at_48px_grey_matches_torchvision_both_ways():
  x = _grey_faces()
  check_roundtrip('vgg16', lambda: torchvision.models.vgg16(num_classes=8), x,
                  dict(num_classes=8), atol=1e-4)


def test_baseline_vgg16_at_48px_is_the_pooled_512_trunk():
  c = config_lib.base_config()
  c.model.backbone = 'vgg16'
  c.model.va_head = False
  c.data.image_size = 48
  method = methods.build(config_lib.finalize(c))
  variables = jax.eval_shape(method.model.init, jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
  assert variables['params']['fc']['kernel'].shape == (512, 8)
  assert 'classifier_0' not in variables['params']['backbone']   # ImageNet loads with
  sd = {k: v for k, v in torchvision.models.vgg16().state_dict().items()}   # classifier.
  loaded = it.from_torch('vgg16', sd, ignore=('classifier.',),
                         abstract={'params': variables['params']['backbone']})
  assert set(loaded['params']) == set(variables['params']['backbone'])


def test_grayscale_option_in_training_and_evaluation():
  c = config_lib.base_config()
  c.augment.grayscale = True
  c.augment.flip = False
  c.augment.crop_pad = 0.0
  c.augment.rotate_deg = 0.0
  c.augment.brightness = 0.0
  c.augment.contrast = 0.0
  rgb = np.random.default_rng(1).integers(0, 256, size=(2, 8, 8, 3)).astype(np.uint8)
  batch = {'image': jnp.asarray(rgb), 'index': jnp.arange(2)}
  luma = rgb.astype(np.float32) / 255.0 @ np.array([0.299, 0.587, 0.114], np.float32)
  want = (luma[..., None] - np.array(c.augment.mean)) / np.array(c.augment.std)
  for out in (augment.eval_preprocess(batch, c.augment),
              augment.augment_batch(batch, 0, 0, c.augment)):
    np.testing.assert_allclose(np.asarray(out['image']), want, atol=1e-5)
  grey = np.repeat(rgb[..., :1], 3, -1)              # an already grey source is unchanged
  same = augment.eval_preprocess({'image': jnp.asarray(grey)}, c.augment)['image']
  c.augment.grayscale = False
  np.testing.assert_allclose(same, augment.eval_preprocess({'image': jnp.asarray(grey)},
                                                           c.augment)['image'], atol=1e-5)
  colour = augment.eval_preprocess(batch, c.augment)['image']
  assert np.abs(np.asarray(colour) - want).max() > 0.1   # off: colour kept
