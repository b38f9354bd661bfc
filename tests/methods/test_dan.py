"""DAN (ferjax.methods.dan): losses against the official formulas in torch, forward parity with
the PyTorch DAN of third_party/torch_reference (official module names) in both directions,
strict conversion errors, the reference initialisation, MS-Celeb start and a smoke run."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import config as config_lib, methods, trainer
from ferjax.interop import dan as dan_interop
from ferjax.interop import torch as it
from ferjax.methods import dan
from tests.conftest import REPO

torch = pytest.importorskip('torch')

from tests.interop.parity import randomize_bn  # noqa: E402
from third_party.torch_reference import dan as ref  # noqa: E402

SYNTH = os.path.join(REPO, 'configs', 'dan_synthetic.py')


def t(a):
  return torch.from_numpy(np.array(a))


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('num_centres', [7, 8])   # 8: the RAF-DB script's centres for 7 classes
def test_affinity_loss_matches_official_formula(num_centres):
  rng = np.random.default_rng(0)
  feat_map = rng.normal(size=(6, 16, 3, 3)).astype(np.float32)   # NCHW, as the reference sees it
  centres = rng.normal(size=(num_centres, 16)).astype(np.float32)
  label = np.array([0, 3, 6, 6, 2, 1], np.int64)
  want = float(ref.affinity_loss(t(feat_map), t(centres), t(label)))
  emb = feat_map.mean(axis=(2, 3))
  got = float(dan.affinity_loss(jnp.asarray(emb), jnp.asarray(centres), jnp.asarray(label)))
  assert got == pytest.approx(want, rel=1e-5)
  # A padding row (mask 0) leaves the mean: the loss of the other five rows.
  mask = np.array([1, 1, 1, 1, 1, 0], np.float32)
  want5 = float(ref.affinity_loss(t(feat_map[:5]), t(centres), t(label[:5])))
  got5 = float(dan.affinity_loss(jnp.asarray(emb), jnp.asarray(centres), jnp.asarray(label),
                                 jnp.asarray(mask)))
  assert got5 == pytest.approx(want5, rel=1e-5)


def test_affinity_loss_by_hand():
  """Distance to the own centre over the centres' summed unbiased variance; clamped entries."""
  x = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
  c = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 1.0]], np.float32)
  y = np.array([1, 2])
  spread = c.var(axis=0, ddof=1).sum()
  rows = [((x[i] - c[y[i]]) ** 2).sum() / spread + 2 * 1e-12 for i in range(2)]
  got = dan.affinity_loss(jnp.asarray(x), jnp.asarray(c), jnp.asarray(y))
  assert float(got) == pytest.approx(np.mean(rows), rel=1e-6)


def test_partition_loss_matches_official_formula():
  rng = np.random.default_rng(1)
  heads = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(5, 4, 16)).astype(np.float32)), axis=1)
  want = float(ref.partition_loss(t(np.asarray(heads))))
  assert float(dan.partition_loss(heads)) == pytest.approx(want, rel=1e-5)
  by_hand = np.log(1 + 4 / np.asarray(heads).var(axis=1, ddof=1).mean())
  assert float(dan.partition_loss(heads)) == pytest.approx(by_hand, rel=1e-5)
  assert float(dan.partition_loss(heads[:, :1])) == 0.0   # one head: no partition term
  mask = jnp.array([1, 1, 1, 0, 0], jnp.float32)
  want3 = float(ref.partition_loss(t(np.asarray(heads[:3]))))
  assert float(dan.partition_loss(heads, mask)) == pytest.approx(want3, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Model parity with the PyTorch DAN (official names), both directions
# ---------------------------------------------------------------------------------------------

DIMS = dict(num_classes=7, num_heads=4, width=64, num_centers=8)   # the released RAF-DB model


@pytest.fixture(scope='module')
def image():
  # 96 px: a 3 x 3 layer4 map, so every tap of the 3x3 / 1x3 / 3x1 kernels sees data.
  return np.random.default_rng(2).normal(size=(3, 96, 96, 3)).astype(np.float32)


def _torch_forward(model, x_nhwc):
  with torch.no_grad():
    out, feat, heads = model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()))
  return out.numpy(), feat.numpy().mean(axis=(2, 3)), heads.numpy()


def _flax_forward(variables, x_nhwc, dims=DIMS):
  out = dan_interop.build(**dims).apply(variables, jnp.asarray(x_nhwc))
  return np.asarray(out['logits']), np.asarray(out['embedding']), np.asarray(out['heads'])


# The spatial attention multiplies x by a sum over C channels with no normalisation: with
# BatchNorm affines of order 1 the heads reach 1e5 and float32 rounding alone exceeds 1e-4.
# Branch BN affines of order 0.1 / C keep the outputs of order 10, where 1e-4 is a real test.
_BRANCH_BN = ('conv_3x3_1', 'conv_1x3_1', 'conv_3x1_1')
_BRANCH_SCALE = 0.1


def _scale_torch(model, seed):
  """Head Linear weights of std 0.1 instead of 0.001 (so the channel attention varies) and
  branch BN affines scaled by 0.1 / C."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if '.ca.attention.' in name and p.ndim == 2:
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
      if any(f'.{b[:-2]}.1.' in name for b in _BRANCH_BN):
        p.mul_(_BRANCH_SCALE / p.shape[0])
  return model


def _scale_flax(variables, seed):
  """The same on a Flax tree, BN affines and statistics drawn as parity.randomize_bn draws them
  (scale 1 + 0.2 n, bias 0.2 n, mean 0.2 n, var 0.5 + U(0, 1))."""
  rng = np.random.default_rng(seed)
  normal = lambda a: rng.normal(size=np.shape(a)).astype(np.float32)

  def params(path, a):
    names = [''] + [getattr(k, 'key', '') for k in path]   # '' pads the top-level centres
    a = np.asarray(a)
    if names[-1] == 'scale':
      a = 1 + 0.2 * normal(a)
    elif names[-1] == 'bias' and 'scale' in _parent(variables['params'], path):
      a = 0.2 * normal(a)
    elif names[-2].startswith('attention') and a.ndim == 2:
      a = 0.1 * normal(a)
    return a * (_BRANCH_SCALE / a.shape[0]) if names[-2] in _BRANCH_BN else a

  def stats(path, a):
    if getattr(path[-1], 'key', '') == 'mean':
      return 0.2 * normal(a)
    return (0.5 + rng.uniform(size=np.shape(a))).astype(np.float32)

  return {'params': jax.tree_util.tree_map_with_path(params, variables['params']),
          'batch_stats': jax.tree_util.tree_map_with_path(stats, variables['batch_stats'])}


def _parent(tree, path):
  for k in path[:-1]:
    tree = tree[k.key]
  return tree


def _max_errors(got, want):
  return {what: (float(np.abs(g - w).max()), float(np.abs(w).max()))
          for g, w, what in zip(got, want, ('logits', 'embedding', 'heads'))}


@pytest.fixture(scope='module')
def official():
  torch.manual_seed(0)
  return _scale_torch(randomize_bn(ref.DAN(num_class=7, num_head=4).eval(), 0), 0)


def test_official_names_and_parameter_count(official):
  sd = official.state_dict()
  for key in ('features.0.weight', 'features.7.1.bn2.running_var', 'features.5.0.downsample.1.'
              'weight', 'cat_head3.sa.conv_1x3.0.bias', 'cat_head0.ca.attention.3.weight',
              'cat_head2.ca.attention.1.running_mean', 'fc.weight', 'bn.num_batches_tracked'):
    assert key in sd, key
  variables = dan_interop.from_torch(sd, **DIMS)
  n_torch = sum(p.numel() for p in official.parameters())
  n_flax = sum(a.size for a in jax.tree.leaves(variables['params']))
  assert n_flax == n_torch + 8 * 512   # + the affinity centres, outside the torch model


def test_torch_to_ferjax_forward_parity(official, image):
  variables = dan_interop.from_torch(official.state_dict(), **DIMS)
  want = _torch_forward(official, image)
  got = _flax_forward(variables, image)
  errors = _max_errors(got, want)
  print('max |diff|, max |value|:', errors)
  assert all(err <= 1e-4 for err, _ in errors.values()), errors
  assert errors['logits'][1] > 0.5   # not a trivially small output


def test_ferjax_to_torch_forward_parity(image):
  model = dan_interop.build(**DIMS)
  variables = model.init(jax.random.key(3), jnp.zeros((1, 32, 32, 3)))
  variables = _scale_flax(variables, 3)
  back = ref.DAN(num_class=7, num_head=4).eval()
  back.load_state_dict(dan_interop.to_torch(variables, **DIMS), strict=True)
  want = _flax_forward(variables, image)
  got = _torch_forward(back, image)
  errors = _max_errors(got, want)
  print('max |diff|, max |value|:', errors)
  assert all(err <= 1e-4 for err, _ in errors.values()), errors
  # The centres stay outside the state_dict and come back through from_torch's argument.
  again = dan_interop.from_torch(back.state_dict(), centers=dan_interop.centres(variables),
                                 **DIMS)
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_conversion_is_strict_both_ways(official):
  sd = dict(official.state_dict())
  bad = dict(sd)
  del bad['cat_head1.sa.conv_3x1.1.running_mean']
  bad['cat_head4.sa.conv1x1.0.weight'] = sd['cat_head0.sa.conv1x1.0.weight']
  bad['fc.weight'] = torch.zeros(8, 512)
  with pytest.raises(it.ConversionError) as e:
    dan_interop.from_torch(bad, **DIMS)
  msg = str(e.value)
  for part in ('missing (1): cat_head1.sa.conv_3x1.1.running_mean',
               'unexpected (1): cat_head4.sa.conv1x1.0.weight', 'fc.weight: torch (8, 512)'):
    assert part in msg
  variables = dan_interop.from_torch(sd, **DIMS)
  params = dict(variables['params'])
  params['extra'] = {'kernel': np.zeros((2, 2), np.float32)}
  del params['fc']
  with pytest.raises(it.ConversionError, match=r'missing \(2\): params/fc/bias, params/fc/'
                     r'kernel(.|\n)*unexpected \(1\): params/extra/kernel'):
    dan_interop.to_numpy_state_dict({**variables, 'params': params}, **DIMS)
  with pytest.raises(it.ConversionError, match='centers have shape'):
    dan_interop.from_torch(sd, centers=np.zeros((7, 512)), **DIMS)


def test_heads_initialise_as_the_reference():
  model = dan_interop.build(num_classes=7, width=64)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  head = params['cat_head0']
  assert np.std(head['ca']['attention_0']['kernel']) == pytest.approx(0.001, rel=0.05)
  assert np.all(head['ca']['attention_3']['bias'] == 0)
  k = head['sa']['conv_3x3_0']['kernel']            # (3, 3, 256, 512): fan_out = 9 * 512
  assert np.std(k) == pytest.approx(np.sqrt(2 / (9 * 512)), rel=0.05)
  assert np.all(head['sa']['conv_3x3_0']['bias'] == 0)
  fc = params['fc']['kernel']                        # torch's default Linear init
  assert np.abs(fc).max() <= 1 / np.sqrt(512) and np.std(fc) > 0.5 / np.sqrt(3 * 512)
  assert np.std(params['centers']) == pytest.approx(1.0, rel=0.1)   # torch.randn


def test_afn_logsoftmax_switch():
  """afn_logsoftmax=False sums the raw heads (the multi-task model of paper 004)."""
  x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 32, 32, 3)), jnp.float32)
  on = dan_interop.build(num_classes=7, width=8)
  variables = on.init(jax.random.key(0), x)
  raw = dan_interop.build(num_classes=7, width=8, afn_logsoftmax=False).apply(variables, x)
  heads = on.apply(variables, x)['heads']
  np.testing.assert_allclose(jax.nn.log_softmax(raw['heads'], axis=1), heads, atol=1e-6)
  assert not np.allclose(raw['heads'], heads)


# ---------------------------------------------------------------------------------------------
# The method: MS-Celeb start, smoke training run
# ---------------------------------------------------------------------------------------------


def test_recipes_follow_the_official_scripts():
  raf = config_lib.load(os.path.join(REPO, 'configs', 'dan_rafdb.py'))
  assert raf.data.class_space == 'rafdb7' and raf.dan.centres == 8   # the script's 8 centres
  assert (raf.optim.name, raf.optim.lr, raf.optim.momentum, raf.optim.weight_decay) == (
      'sgd', 0.1, 0.9, 1e-4)
  assert raf.optim.schedule == 'step' and tuple(raf.optim.step_epochs) == (10, 20, 30)
  assert raf.optim.decay_rate == 0.1 and raf.train.epochs == 40 and raf.batch_size == 256
  assert config_lib.load(os.path.join(REPO, 'configs', 'dan_rafdb.py:centres=7')).dan.centres == 7
  an8 = config_lib.load(os.path.join(REPO, 'configs', 'dan_affectnet8.py'))
  assert an8.data.class_space == 'affectnet8' and an8.dan.centres == 0
  assert (an8.optim.name, an8.optim.lr, an8.optim.weight_decay) == ('adam', 1e-4, 0.0)
  assert (an8.optim.schedule, an8.optim.decay_rate, an8.optim.decay_per) == (
      'exponential', 0.6, 'epoch')
  assert an8.data.sampler == 'imbalance' and an8.data.sampler_power == 1.0
  with pytest.raises(ValueError, match='fewer than the 8 classes'):
    methods.build(config_lib.load(os.path.join(REPO, 'configs', 'dan_affectnet8.py:centres=7')))


def smoke_cfg(tmp_path, **overrides):
  cfg = config_lib.load(f'{SYNTH}:smoke')
  with cfg.unlocked():
    cfg.update_from_flattened_dict(overrides)
  return cfg


def test_features_start_from_msceleb_style_weights(tmp_path):
  cfg = smoke_cfg(tmp_path)
  m = cfg.model
  net = dan.models.build('resnet18', width=m.width, stage_sizes=tuple(m.stage_sizes))
  v = jax.jit(net.init)(jax.random.key(7), jnp.zeros((1, 32, 32, 3)))
  v = jax.tree.map(lambda a: a + 0.05, dict(v))   # statistics away from their init
  sd = it.to_torch('resnet18', v, width=m.width, stage_sizes=tuple(m.stage_sizes))
  sd['fc.weight'] = torch.zeros(10, m.width * 2)   # the identity classifier is dropped
  path = str(tmp_path / 'resnet18_msceleb.pth')
  torch.save({'state_dict': {'module.' + k: x for k, x in sd.items()}}, path)
  cfg = smoke_cfg(tmp_path, **{'dan.resnet_weights': path})
  method = methods.build(cfg)
  fresh = jax.jit(method.model.init)(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
  loaded = method.init_variables(fresh)
  jax.tree.map(np.testing.assert_allclose, loaded['params']['features'], v['params'])
  jax.tree.map(np.testing.assert_allclose, loaded['batch_stats']['features'], v['batch_stats'])
  assert set(loaded['params']) == set(fresh['params'])


def test_run_starts_from_an_official_checkpoint(tmp_path):
  """dan.official_weights: a released-style checkpoint ({'iter', 'model_state_dict', ...})
  becomes the whole model; eval outputs equal the PyTorch DAN's, the centres stay fresh."""
  torch.manual_seed(1)
  official = _scale_torch(randomize_bn(ref.DAN(num_class=8, num_head=2, width=8).eval(), 1), 1)
  path = str(tmp_path / 'affecnet8_epoch5_acc0.6209.pth')
  torch.save({'iter': 5, 'model_state_dict': official.state_dict(), 'optimizer_state_dict': {}},
             path)
  cfg = smoke_cfg(tmp_path, **{'dan.official_weights': path, 'model.stage_sizes': (2, 2, 2, 2)})
  method = methods.build(cfg)
  fresh = jax.jit(method.model.init)(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
  loaded = method.init_variables(fresh)
  np.testing.assert_array_equal(loaded['params']['centers'], fresh['params']['centers'])
  x = np.random.default_rng(4).normal(size=(2, 48, 48, 3)).astype(np.float32)
  got = method.model.apply(loaded, jnp.asarray(x))
  want, _, _ = _torch_forward(official, x)
  np.testing.assert_allclose(np.asarray(got['logits']), want, atol=1e-4, rtol=0)
  with pytest.raises(ValueError, match='leave dan.resnet_weights empty'):
    methods.build(smoke_cfg(tmp_path, **{'dan.official_weights': path,
                                         'dan.resnet_weights': path}))


def test_training_loss_and_gradients_match_the_official_step(tmp_path):
  """Train mode (batch statistics): CE + affinity + partition of the method equals the
  official scripts' loss on the same weights, and so do the gradients of fc and the centres."""
  torch.manual_seed(2)
  official = _scale_torch(randomize_bn(ref.DAN(num_class=8, num_head=2, width=8), 2), 2).train()
  rng = np.random.default_rng(5)
  x = rng.normal(size=(6, 48, 48, 3)).astype(np.float32)
  label = np.array([0, 1, 7, 3, 3, 5])
  centres = torch.randn(8, 64, requires_grad=True)
  out, feat, heads = official(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  want = (torch.nn.functional.cross_entropy(out, torch.from_numpy(label))
          + ref.affinity_loss(feat, centres, torch.from_numpy(label)) + ref.partition_loss(heads))
  want.backward()
  cfg = smoke_cfg(tmp_path, **{'model.stage_sizes': (2, 2, 2, 2)})
  method = methods.build(cfg)
  variables = dan_interop.from_torch(official.state_dict(), centers=centres.detach(),
                                     **dan_interop.config_dims(cfg))
  batch = {'label': jnp.asarray(label), 'mask': jnp.ones(6)}

  def total(params):
    outputs, _ = method.model.apply({**variables, 'params': params}, jnp.asarray(x), train=True,
                                    mutable=['batch_stats'])
    return method.loss(outputs, batch, 0)[0]

  got, grads = jax.jit(jax.value_and_grad(total))(variables['params'])
  assert float(got) == pytest.approx(want.item(), rel=1e-5)
  np.testing.assert_allclose(grads['centers'], centres.grad.numpy(), atol=1e-5, rtol=1e-4)
  # The nearly equal heads give fc outputs with a tiny batch spread, which the train-mode
  # BatchNorm1d divides by: the reference's own float32 fc gradient is 3e-5 off its float64
  # value here, so 1e-4 is the closest meaningful tolerance.
  np.testing.assert_allclose(grads['fc']['kernel'], official.fc.weight.grad.numpy().T,
                             atol=1e-4, rtol=0)


def test_smoke_training_run(tmp_path):
  cfg = smoke_cfg(tmp_path)
  assert cfg.method == 'dan' and cfg.dan.num_heads == 2
  reports = trainer.train(cfg, str(tmp_path / 'run'))
  report = reports['synthetic:lab:test']
  assert 0.0 <= report['accuracy'] <= 100.0
  steps = 64 // cfg.batch_size
  assert (tmp_path / 'run' / 'eval' / f'step_{steps}' / 'results.json').exists()
  lines = (tmp_path / 'run' / 'metrics.jsonl').read_text()
  for key in ('loss_ce', 'loss_affinity', 'loss_partition'):
    assert key in lines
  # The whole run exports with the official names, strictly, through ferjax.convert.
  from ferjax import convert
  sd = convert.whole_model_state_dict(str(tmp_path / 'run'), None)
  want = dan_interop.to_numpy_state_dict(
      convert.load_run(str(tmp_path / 'run'), None)[1], **dan_interop.config_dims(cfg))
  assert sorted(sd) == sorted(want) and 'cat_head0.sa.conv1x1.0.weight' in sd
  assert sd['fc.weight'].shape[0] == len(methods.build(cfg).class_names)
