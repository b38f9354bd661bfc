"""VGG, MobileNetV2 and EfficientNet parity with torchvision in both directions, strict-load
errors, full-size parameter counts, and the train-only layers (stochastic depth, dropout).

Both directions, per architecture (random-weight torchvision models, eval mode):
  torch -> ferjax: a torchvision model with randomised BatchNorm statistics, `from_torch`, the
    Flax output must match; `to_torch` of the result reproduces the state_dict exactly.
  ferjax -> torch: variables that did not come from torch (the imported ones, each leaf scaled
    by its own random factor) are exported with `to_torch` and loaded strictly into the
    torchvision model, whose output must match the Flax one.
The Flax forward is jitted once per architecture and reused for both directions. VGG's
classifier-free and EfficientNet-B2's classifier-free (num_classes=0) cases compare with the
torchvision trunk + global average pool.
"""
import time

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

from ferjax.interop import torch as it  # noqa: E402
from ferjax.models import efficientnet, vgg  # noqa: E402
from tests.interop.parity import randomize_bn, torch_out  # noqa: E402

tvm = torchvision.models
ATOL = 2e-4
# XLA's cheapest CPU codegen: these nets' eager first call compiles every op on its own (~40 s
# for EfficientNet-B0 on a loaded 2-core machine) and an optimised jit takes twice as long as
# this; the arithmetic is the same.
_FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


@pytest.fixture(scope='module', autouse=True)
def _torch_single_thread():
  # On a busy machine torch's worker threads wait on each other: a 50 ms forward took seconds.
  n = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(n)


@pytest.fixture(scope='module')
def x64():
  return np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def x32():
  return np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)


def _compiled(fn, *args):
  """jax.jit(fn) compiled for `args`' shapes (with the fast CPU settings)."""
  opts = _FAST_COMPILE if jax.default_backend() == 'cpu' else None
  return jax.jit(fn).lower(*args).compile(compiler_options=opts)


def _perturbed(variables, seed=1):
  # One random factor in [0.8, 1.2] per leaf: new values (BatchNorm variances stay positive),
  # cheap enough for VGG's 120M parameters. NumPy, as eager jnp would compile once per shape.
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda a: a * np.float32(rng.uniform(0.8, 1.2)), variables)


def _sd_equal(a, b):
  skip = lambda k: k.endswith('num_batches_tracked')
  assert sorted(k for k in a if not skip(k)) == sorted(k for k in b if not skip(k))
  for k in b:
    assert skip(k) or torch.equal(a[k], b[k]), k


def both_ways(arch, make_torch, x, overrides, atol=ATOL, exact=True):
  """Runs both directions; returns the max abs errors (torch->ferjax, ferjax->torch).

  exact: also check that to_torch(from_torch(sd)) reproduces sd bit for bit (seconds for VGG's
  classifier, whose export the ferjax->torch direction checks anyway).
  """
  torch.manual_seed(0)
  ref = randomize_bn(make_torch().eval())
  want, sd = torch_out(ref, x), ref.state_dict()
  variables = it.from_torch(arch, sd, **overrides)  # NumPy arrays
  if exact:
    _sd_equal(it.to_torch(arch, variables, **overrides), sd)
  apply = _compiled(it.get(arch).build(**overrides).apply, variables, x)
  got = np.asarray(apply(variables, x))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=atol, rtol=0)
  ours = _perturbed(variables)
  # Strict load into the reference itself (a second model would only cost time): every key must
  # be there with its shape, and every value is replaced.
  ref.load_state_dict(it.to_torch(arch, ours, **overrides), strict=True)
  got2, want2 = np.asarray(apply(ours, x)), torch_out(ref, x)
  np.testing.assert_allclose(got2, want2, atol=atol, rtol=0)
  assert np.abs(want2 - want).max() > 1e-3  # the export really carried the new values
  return float(np.abs(got - want).max()), float(np.abs(got2 - want2).max())


class _Trunk(torch.nn.Module):
  """A torchvision `features` Sequential + global average pool: ferjax's num_classes=0 output."""

  def __init__(self, features):
    super().__init__()
    self.features = features

  def forward(self, x):
    return self.features(x).mean((2, 3))


def _vgg_trunk(cfg, batch_norm):
  return lambda: _Trunk(tvm.vgg.make_layers(tvm.vgg.cfgs[cfg], batch_norm=batch_norm))


def _effnet_b2_trunk():
  m = tvm.efficientnet_b2()
  m.classifier = torch.nn.Identity()  # drops classifier.1 from the state_dict
  return m


# (arch, torchvision factory, overrides, input fixture, exact). Through VGG's classifier, 32x32
# leaves a 1x1 map that the adaptive pool repeats 7x7, and 64x64 a 2x2 map pooled into
# overlapping bins; maps larger than 7 are checked against torch's pool on their own below.
CASES = {
    'vgg13': ('vgg13', lambda: tvm.vgg13(num_classes=5), dict(num_classes=5), 'x32', False),
    'vgg16': ('vgg16', lambda: tvm.vgg16(num_classes=7), dict(num_classes=7), 'x64', False),
    'vgg13_trunk': ('vgg13', _vgg_trunk('B', False), {}, 'x32', True),
    'vgg19_bn_trunk': ('vgg19', _vgg_trunk('E', True), dict(batch_norm=True), 'x32', True),
    'mobilenet_v2': ('mobilenet_v2', lambda: tvm.mobilenet_v2(num_classes=7),
                     dict(num_classes=7), 'x64', True),
    'efficientnet_b0': ('efficientnet_b0', lambda: tvm.efficientnet_b0(num_classes=7),
                        dict(num_classes=7), 'x64', True),
    'efficientnet_b2_trunk': ('efficientnet_b2', _effnet_b2_trunk, {}, 'x64', True),
    'efficientnet_v2_s': ('efficientnet_v2_s', lambda: tvm.efficientnet_v2_s(num_classes=7),
                          dict(num_classes=7), 'x64', True),
}


@pytest.mark.parametrize('case', list(CASES))
def test_parity_both_ways(case, request):
  arch, make_torch, overrides, xname, exact = CASES[case]
  t0 = time.time()
  errs = both_ways(arch, make_torch, request.getfixturevalue(xname), overrides, exact=exact)
  print(f'{case}: max abs err torch->ferjax {errs[0]:.2e}, ferjax->torch {errs[1]:.2e} '
        f'({time.time() - t0:.1f} s)')


@pytest.mark.parametrize('n_in', [1, 2, 3, 6, 7, 8, 13, 15, 20])
def test_adaptive_avg_pool_matches_torch(n_in):
  a = np.random.default_rng(n_in).normal(size=(2, n_in, n_in + 1, 3)).astype(np.float32)
  want = torch.nn.functional.adaptive_avg_pool2d(
      torch.from_numpy(a.transpose(0, 3, 1, 2).copy()), (7, 5)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(vgg.adaptive_avg_pool(a, (7, 5))), want, atol=1e-6)


def _meta(fn, **kw):
  with torch.device('meta'):  # shapes only: no memory, no initialisation time
    return fn(**kw)


def _torch_shapes(arch, **overrides):
  """{torch key: shape} that ferjax's tree for `arch` maps to, via the registered name map."""
  m = it.get(arch)
  flat, _ = jax.tree_util.tree_flatten_with_path(it.abstract_variables(arch, **overrides))
  out = {}
  for path, leaf in flat:
    keys = tuple(p.key for p in path)
    key, tf = m.name(keys[0], keys[1:], tuple(leaf.shape))
    out[key] = tf.to_torch(np.broadcast_to(np.float32(0), leaf.shape)).shape
  return out


@pytest.mark.parametrize('arch,tv_name,overrides,weights', [
    ('vgg13', 'vgg13', {}, 'VGG13_Weights'),
    ('vgg16', 'vgg16', {}, 'VGG16_Weights'),
    ('vgg19', 'vgg19', {}, 'VGG19_Weights'),
    ('vgg16', 'vgg16_bn', {'batch_norm': True}, 'VGG16_BN_Weights'),
    ('mobilenet_v2', 'mobilenet_v2', {}, 'MobileNet_V2_Weights'),
    ('efficientnet_b0', 'efficientnet_b0', {}, 'EfficientNet_B0_Weights'),
    ('efficientnet_b2', 'efficientnet_b2', {}, 'EfficientNet_B2_Weights'),
    ('efficientnet_v2_s', 'efficientnet_v2_s', {}, 'EfficientNet_V2_S_Weights'),
])
def test_full_size_parameter_counts(arch, tv_name, overrides, weights):
  abstract = it.abstract_variables(arch, num_classes=1000, **overrides)
  n = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(abstract['params']))
  ref = _meta(getattr(tvm, tv_name))
  assert n == sum(p.numel() for p in ref.parameters())
  assert n == getattr(tvm, weights).IMAGENET1K_V1.meta['num_params']
  # Every key and shape of the 1000-class reference, not only at the sizes the parity uses.
  want = {k: tuple(v.shape) for k, v in ref.state_dict().items()
          if not k.endswith('num_batches_tracked')}
  assert _torch_shapes(arch, num_classes=1000, **overrides) == want


def test_vgg_fc_features_keeps_imagenet_fc_layers():
  got = _torch_shapes('vgg16', fc_features=True)
  want = {k: tuple(v.shape) for k, v in _meta(tvm.vgg16).state_dict().items()
          if not k.startswith('classifier.6.')}
  assert got == want


def _zeros_state_dict(fn, **kw):
  # Broadcast views: a checkpoint of the right shapes without allocating it.
  return {k: np.broadcast_to(np.float32(0), tuple(v.shape))
          for k, v in _meta(fn, **kw).state_dict().items()}


def test_wrong_efficientnet_checkpoint_names_keys():
  sd = tvm.efficientnet_b0(num_classes=7).state_dict()
  with pytest.raises(it.ConversionError) as e:
    it.from_torch('efficientnet_b2', sd, num_classes=7)
  msg = str(e.value)
  assert 'does not fit efficientnet_b2' in msg
  # B2 has ceil(1 * 1.2) = 2 blocks in stage 1 and 48 (not 40) channels in stage 3.
  assert 'missing keys (128): features.1.1.block.0.0.weight' in msg
  assert 'features.3.0.block.3.1.running_mean: torch (40,) -> (40,), ferjax ' in msg


def test_wrong_vgg_checkpoint_names_keys():
  sd = _zeros_state_dict(tvm.vgg16)
  with pytest.raises(it.ConversionError) as e:
    it.from_torch('vgg13', sd, ignore=('classifier.',))
  msg = str(e.value)
  assert 'missing keys (6): features.15.bias, features.15.weight, features.20.bias' in msg
  assert 'unexpected keys (12): features.14.bias' in msg
  assert 'features.17.weight: torch (512, 256, 3, 3)' in msg
  # A plain checkpoint does not load as the BatchNorm variant either.
  with pytest.raises(it.ConversionError, match=r'missing keys \(62\): features.1.bias'):
    it.from_torch('vgg16', sd, batch_norm=True, ignore=('classifier.',))


def test_mobilenet_checkpoint_into_efficientnet():
  sd = _zeros_state_dict(tvm.mobilenet_v2, num_classes=7)
  with pytest.raises(it.ConversionError, match=r'unexpected keys \(\d+\): features.1.conv'):
    it.from_torch('efficientnet_b0', sd, num_classes=7)


def test_stochastic_depth_drops_whole_examples():
  x = np.ones((64, 2, 2, 3), np.float32)
  sd = efficientnet.StochasticDepth(0.25)
  np.testing.assert_array_equal(sd.apply({}, x, deterministic=True), x)
  y = np.asarray(sd.apply({}, x, deterministic=False, rngs={'dropout': jax.random.PRNGKey(0)}))
  per_example = y.reshape(64, -1)
  assert np.all(per_example == per_example[:, :1])         # one decision per example
  assert set(np.unique(per_example)) == {0.0, np.float32(1 / 0.75)}
  y2 = sd.apply({}, x, deterministic=False, rngs={'dropout': jax.random.PRNGKey(1)})
  assert not np.array_equal(y, y2)


def test_mbconv_block_train_mode():
  # A residual MBConv with drop rate 0.5: in train mode some examples keep only the identity.
  norm = efficientnet.Norm(True, 0.9, 1e-3, np.float32)
  block = efficientnet.MBConv(8, 4, 3, 1, False, 0.5, norm, np.float32)
  x = np.random.default_rng(0).normal(size=(16, 4, 4, 8)).astype(np.float32)
  variables = block.init(jax.random.PRNGKey(0), x)
  y, upd = block.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(3)},
                       mutable=['batch_stats'])
  same = np.all(np.asarray(y) == x, axis=(1, 2, 3))
  assert 0 < same.sum() < 16
  assert not np.allclose(upd['batch_stats']['block_0']['1']['mean'], 0)


def test_efficientnet_train_mode_with_frozen_bn(x32):
  # bn_frozen: train=True needs no mutable batch_stats; stochastic depth and dropout still draw
  # from the 'dropout' stream, so two keys give two outputs. (torch weights with random BN
  # statistics: at init the depthwise layers' fan-out scaling shrinks eval outputs to ~1e-14.)
  sd = randomize_bn(tvm.efficientnet_b0(num_classes=3)).state_dict()
  variables = it.from_torch('efficientnet_b0', sd, num_classes=3)
  module = efficientnet.efficientnet_b0(num_classes=3, bn_frozen=True)
  train = _compiled(lambda v, key: module.apply(v, x32, train=True, rngs={'dropout': key}),
                    variables, jax.random.PRNGKey(0))
  a, b = (np.asarray(train(variables, jax.random.PRNGKey(k))) for k in (1, 2))
  assert a.shape == (2, 3) and np.abs(a - b).max() > 1e-2 * np.abs(a).max()


def test_bn_variants_by_name():
  sd = torchvision.models.vgg13_bn(num_classes=3).state_dict()
  a = it.from_torch('vgg13_bn', sd, num_classes=3)
  b = it.from_torch('vgg13', sd, batch_norm=True, num_classes=3)
  assert jax.tree.all(jax.tree.map(lambda x, y: bool((x == y).all()), a, b))
