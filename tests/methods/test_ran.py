"""The RAN method (ferjax.methods.ran): the region-biased loss against the authors' formula in
torch, the whole loss on soft and hard targets, its options, and a smoke training run."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import config as config_lib, losses, methods, trainer
from ferjax.methods import ran
from tests.conftest import REPO

torch = pytest.importorskip('torch')

from third_party.torch_reference import ran as ref  # noqa: E402


def smoke_cfg(**overrides):
  c = config_lib.base_config()
  c.method = 'ran'
  c.model.va_head = False
  c.loss.target = 'soft'
  c.data.train = 'synthetic:lab:train'
  c.data.eval_sets = 'synthetic:lab:test'
  config_lib.shrink_for_smoke(c)
  c.data.train_examples = 32
  c.data.eval_examples = 16
  c.ran = dict(ran.DEFAULTS)
  c.update_from_flattened_dict(overrides)
  return config_lib.finalize(c)


@pytest.mark.parametrize('margin', [0.02, 0.1])
def test_region_biased_loss_matches_the_authors(margin):
  rng = np.random.default_rng(0)
  alphas = jax.nn.softmax(jnp.asarray(rng.normal(size=(6, 8)) * 0.2, jnp.float32), axis=1)
  part_max, org = alphas[:, :-1].max(1), alphas[:, -1]
  want = ref.region_biased_loss(torch.from_numpy(np.array(part_max))[:, None],
                                torch.from_numpy(np.array(org))[:, None], margin)
  got = ran.region_biased_loss(part_max, org, margin)
  assert float(got) == pytest.approx(float(want), rel=1e-6)
  assert 0 < float(got)                      # some rows violate the margin at this spread
  by_hand = np.mean([max(0.0, margin - (p - o)) for p, o in zip(np.array(part_max),
                                                                 np.array(org))])
  assert float(got) == pytest.approx(by_hand, rel=1e-6)
  mask = jnp.array([1, 1, 1, 0, 0, 0], jnp.float32)   # padding rows leave the mean
  want3 = ref.region_biased_loss(torch.from_numpy(np.array(part_max[:3]))[:, None],
                                 torch.from_numpy(np.array(org[:3]))[:, None], margin)
  assert float(ran.region_biased_loss(part_max, org, margin, mask)) == pytest.approx(
      float(want3), rel=1e-6)


def _outputs(b=4, k=8):
  rng = np.random.default_rng(1)
  alphas = jax.nn.softmax(jnp.asarray(rng.normal(size=(b, 8)), jnp.float32), axis=1)
  logits = jnp.asarray(rng.normal(size=(b, k)), jnp.float32)
  return {'logits': logits, 'part_max': alphas[:, :-1].max(1), 'org': alphas[:, -1]}


def _batch(b=4, k=8):
  rng = np.random.default_rng(2)
  dist = rng.dirichlet(np.ones(k), size=b).astype(np.float32)
  return {'label_dist': jnp.asarray(dist), 'label': jnp.asarray(dist.argmax(1)),
          'mask': jnp.ones(b)}


def test_loss_is_classification_plus_weighted_region_term():
  out, batch = _outputs(), _batch()
  method = methods.build(smoke_cfg(**{'ran.rb_weight': 0.5, 'ran.margin': 0.3}))
  total, metrics = method.loss(out, batch, 0)
  logp = jax.nn.log_softmax(out['logits'])
  soft_ce = -np.mean(np.sum(np.asarray(batch['label_dist']) * np.asarray(logp), 1))
  rb = np.mean(np.maximum(0.3 - (np.asarray(out['part_max']) - np.asarray(out['org'])), 0))
  assert float(metrics['loss_cls']) == pytest.approx(soft_ce, rel=1e-5)
  assert float(metrics['loss_rb']) == pytest.approx(rb, rel=1e-5) and rb > 0
  assert float(total) == pytest.approx(soft_ce + 0.5 * rb, rel=1e-5)
  hard = methods.build(smoke_cfg(**{'loss.target': 'hard'}))
  _, m_hard = hard.loss(out, batch, 0)
  nll = -np.mean(np.take_along_axis(np.asarray(logp), np.asarray(batch['label'])[:, None], 1))
  assert float(m_hard['loss_cls']) == pytest.approx(nll, rel=1e-5)


def test_options_and_backbone_checks():
  c = config_lib.base_config()
  c.method = 'ran'
  assert ran.options(c, 'ran', ran.DEFAULTS)['margin'] == 0.02    # no section: defaults
  c.ran = {'margni': 0.1}
  with pytest.raises(ValueError, match=r"unknown keys \['margni'\]"):
    ran.options(c, 'ran', ran.DEFAULTS)
  with pytest.raises(ValueError, match='ResNet backbone'):
    methods.build(smoke_cfg(**{'model.backbone': 'vgg16'}))
  method = methods.build(smoke_cfg(**{'ran.crops': ((0.0, 0.0, 0.5, 0.5),)}))
  v = jax.eval_shape(method.model.init, jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
  out = jax.eval_shape(method.model.apply, v, jnp.zeros((2, 48, 48, 3)))
  assert out['alphas'].shape == (2, 2)    # one crop + the whole face


def test_imagenet_resnet18_fits_the_shared_backbone():
  """An ImageNet torchvision resnet18 state_dict, fc dropped, is what the trainer's
  model.backbone_weights loads into the RAN's params['backbone']."""
  import torchvision
  c = config_lib.base_config()
  c.method = 'ran'
  c.ran = dict(ran.DEFAULTS, crops=((0.0, 0.0, 0.75, 0.75),))   # the same tree, traced faster
  method = methods.build(config_lib.finalize(c))
  abstract = jax.eval_shape(method.model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  target = {k: abstract[k]['backbone'] for k in ('params', 'batch_stats')}
  from ferjax.interop import torch as it
  loaded = it.from_torch('resnet18', torchvision.models.resnet18().state_dict(),
                         ignore=('fc.',), abstract=target)
  assert jax.tree.map(np.shape, loaded) == jax.tree.map(lambda a: a.shape, target)


def test_study_cell_uses_the_configured_distribution_loss():
  """configs/_ran.py puts RAN into the label-distribution study's cells; the classification
  term is the cell's loss (here MSE on softmax outputs), as for the baseline."""
  cfg = config_lib.load(os.path.join(REPO, 'configs', 'ldl_synthetic.py:model=ran,loss=mse,'
                                     'nhot=3,smoke'))
  assert (cfg.method, cfg.model.backbone, cfg.ran.margin) == ('ran', 'resnet18', 0.02)
  assert ran.options(cfg, 'ran', ran.DEFAULTS)['rb_weight'] == 1.0   # locked config
  out, batch = _outputs(), _batch()
  _, metrics = methods.build(cfg).loss(out, batch, 0)
  want = losses.distribution_loss('mse', out['logits'], batch['label_dist'])
  assert float(metrics['loss_cls']) == pytest.approx(float(want), rel=1e-6)


def test_smoke_training_run(tmp_path):
  # One crop + the face: two backbone copies to compile instead of eight.
  cfg = smoke_cfg(**{'loss.name': 'mse', 'ran.crops': ((0.0, 0.0, 0.75, 0.75),)})
  reports = trainer.train(cfg, str(tmp_path / 'run'))
  assert 0.0 <= reports['synthetic:lab:test']['accuracy'] <= 100.0
  lines = (tmp_path / 'run' / 'metrics.jsonl').read_text()
  assert 'loss_rb' in lines and 'loss_cls' in lines
  # The trained model exports with the authors' names, strictly, and comes back unchanged.
  from ferjax import convert
  from ferjax.interop import ran as ran_interop
  from ferjax.interop import torch as it
  variables = convert.load_run(str(tmp_path / 'run'), None)[1]
  dims = ran_interop.config_dims(cfg)
  sd = it.to_numpy_state_dict('ran', variables, **dims)
  assert {'conv1.weight', 'layer2.0.downsample.1.running_var', 'alpha.0.weight',
          'beta.0.bias', 'fc.weight'} <= set(sd) and sd['fc.weight'].shape == (8, 32)
  again = it.from_torch('ran', sd, **dims)
  jax.tree.map(np.testing.assert_array_equal, again, jax.tree.map(np.asarray, variables))
