"""MTEN (ferjax.models.mten, ferjax.methods.mten): forward parity with torchvision's
efficientnet_b2(num_classes=C + 2) in both directions, built through the method, and the
multi-task loss against upstream's CCC loss restated in torch."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import config as config_lib, losses, methods
from ferjax.interop import torch as it
from ferjax.methods import mten
from tests.conftest import REPO

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

from tests.interop.parity import randomize_bn  # noqa: E402


def cfg_for(**overrides):
  c = config_lib.base_config()
  c.method = 'mten'
  c.model.backbone = 'efficientnet_b2'
  c.loss.target = 'soft'
  c.mten = dict(mten.DEFAULTS)
  c.update_from_flattened_dict(overrides)
  return config_lib.finalize(c)


@pytest.fixture(scope='module')
def method():
  return methods.build(cfg_for())      # affectnet8: 8 classes, a 10-output head


@pytest.fixture(scope='module')
def reference():
  torch.manual_seed(0)
  return randomize_bn(torchvision.models.efficientnet_b2(num_classes=10), 0).eval()


@pytest.fixture(scope='module')
def faces():
  return np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)


def _torch(model, x):
  with torch.no_grad():
    return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def test_torch_to_ferjax_forward_parity(method, reference, faces):
  from ferjax.interop import mten as mten_interop
  dims = mten_interop.config_dims(cfg_for())
  assert dims == {'num_classes': 8, 'backbone': 'efficientnet_b2'}
  variables = it.from_torch('mten', reference.state_dict(), **dims)
  apply = jax.jit(method.model.apply)
  out = apply(variables, jnp.asarray(faces))
  want = _torch(reference, faces)
  err_logits = float(np.abs(np.asarray(out['logits']) - want[:, :8]).max())
  err_va = float(np.abs(np.asarray(out['va']) - want[:, 8:]).max())
  print('max |diff| logits, va:', err_logits, err_va, 'max |output|:', np.abs(want).max())
  assert max(err_logits, err_va) <= 1e-4 and np.abs(want).max() > 0.1
  # ferjax -> torch: perturbed variables load strictly into a fresh torchvision B2.
  rng = np.random.default_rng(1)
  moved = jax.tree.map(lambda a: a + 0.02 * rng.normal(size=a.shape).astype(np.float32),
                       variables)
  back = torchvision.models.efficientnet_b2(num_classes=10).eval()
  back.load_state_dict(it.to_torch('mten', moved, num_classes=8), strict=True)
  out = apply(moved, jnp.asarray(faces))
  got = _torch(back, faces)
  np.testing.assert_allclose(got[:, :8], np.asarray(out['logits']), atol=1e-4, rtol=0)
  np.testing.assert_allclose(got[:, 8:], np.asarray(out['va']), atol=1e-4, rtol=0)


def test_imagenet_backbone_keys_fit_the_method_backbone(method):
  """An ImageNet efficientnet_b2 state_dict, classifier dropped, is what the trainer's
  model.backbone_weights loads into params['backbone']."""
  abstract = jax.eval_shape(method.model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  target = {'params': abstract['params']['backbone'],
            'batch_stats': abstract['batch_stats']['backbone']}
  sd = torchvision.models.efficientnet_b2().state_dict()
  loaded = it.from_torch('efficientnet_b2', sd, ignore=('classifier.',), abstract=target)
  assert jax.tree.map(np.shape, loaded) == jax.tree.map(lambda a: a.shape, target)


def _upstream_ccc_loss(pred, gt):
  """HSEmotion's ConcordanceCorCoeffLoss, restated in torch (unbiased var / std)."""
  mp, mg = pred.mean(0), gt.mean(0)
  vp, vg = pred - mp, gt - mg
  cor = (vp * vg).sum() / (torch.sqrt((vp ** 2).sum()) * torch.sqrt((vg ** 2).sum()))
  ccc = 2 * cor * gt.std() * pred.std() / (gt.var() + pred.var() + (mg - mp) ** 2)
  return (1 - ccc) / 2


def test_loss_is_classification_plus_upstream_ccc(method):
  rng = np.random.default_rng(2)
  out = {'logits': jnp.asarray(rng.normal(size=(6, 8)), jnp.float32),
         'va': jnp.asarray(rng.normal(size=(6, 2)) * 0.5, jnp.float32)}
  dist = rng.dirichlet(np.ones(8), size=6).astype(np.float32)
  va = rng.uniform(-1, 1, size=(6, 2)).astype(np.float32)
  batch = {'label_dist': jnp.asarray(dist), 'label': jnp.asarray(dist.argmax(1)),
           'mask': jnp.ones(6), 'va': jnp.asarray(va),
           'va_mask': jnp.array([1, 1, 1, 1, 1, 0], jnp.float32)}
  total, metrics = method.loss(out, batch, 0)
  p, g = torch.from_numpy(np.array(out['va'])[:5]), torch.from_numpy(va[:5])
  want_va = float(_upstream_ccc_loss(p[:, 0], g[:, 0]) + _upstream_ccc_loss(p[:, 1], g[:, 1]))
  ce = -np.mean(np.sum(dist * np.asarray(jax.nn.log_softmax(out['logits'])), 1))
  assert float(metrics['loss_va']) == pytest.approx(want_va, rel=1e-5)
  assert float(metrics['loss_cls']) == pytest.approx(ce, rel=1e-5)
  assert float(total) == pytest.approx(ce + want_va, rel=1e-5)
  no_va = methods.build(cfg_for(**{'mten.va_weight': 0.0}))
  assert no_va.metrics == ('classification',)
  assert float(no_va.loss(out, batch, 0)[0]) == pytest.approx(ce, rel=1e-5)


def test_backbone_must_be_an_efficientnet():
  with pytest.raises(ValueError, match="model.backbone='efficientnet_b2'"):
    methods.build(cfg_for(**{'model.backbone': 'resnet18'}))


def test_study_cell_uses_the_configured_distribution_loss():
  """configs/_mten.py puts MTEN into the label-distribution study's cells with the cell's loss
  and, as paper 002 (FERPlus has no V/A), no V/A term."""
  cfg = config_lib.load(os.path.join(REPO, 'configs', 'ldl_synthetic.py:model=mten,'
                                     'loss=log_cosh,nhot=2,smoke'))
  assert (cfg.method, cfg.model.backbone, cfg.mten.va_weight) == ('mten', 'efficientnet_b2', 0)
  rng = np.random.default_rng(3)
  out = {'logits': jnp.asarray(rng.normal(size=(4, 8)), jnp.float32),
         'va': jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)}
  dist = jnp.asarray(rng.dirichlet(np.ones(8), size=4), jnp.float32)
  batch = {'label_dist': dist, 'label': jnp.argmax(dist, 1), 'mask': jnp.ones(4),
           'va': jnp.zeros((4, 2)), 'va_mask': jnp.zeros(4)}
  total, metrics = methods.build(cfg).loss(out, batch, 0)
  want = losses.distribution_loss('log_cosh', out['logits'], dist)
  assert float(metrics['loss_cls']) == pytest.approx(float(want), rel=1e-6)
  assert 'loss_va' not in metrics and float(total) == pytest.approx(float(want))
  # With the V/A term on, a batch without V/A labels adds 0 (the CCC is undefined there).
  with_va = methods.build(cfg_for(**{'loss.name': 'log_cosh'}))
  assert float(with_va.loss(out, batch, 0)[1]['loss_va']) == 0.0
