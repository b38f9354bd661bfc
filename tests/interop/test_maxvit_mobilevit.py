"""MaxViT-T (torchvision) and MobileViTv2-100 (timm) parity in both directions, strict loads.

JAX CPU compiles of MaxViT dominate the run time, so the default MaxViT parity check uses a
reduced configuration (narrow, (1, 2, 1, 1) layers; still 224x224 input with 7x7 windows and
grids, the only size family that fits all four stages) and the full-size net gets one check
marked slow. Flax forwards are compiled once each with XLA's backend optimisation off (the
compile is 3x faster; the graph is the same). Weights are drawn at a fan-in scale so outputs
are O(1) and an absolute tolerance means something (torchvision's init gives logits ~0.03).

Directions: torch -> ferjax loads a (BatchNorm-randomised) reference and compares outputs;
ferjax -> torch exports independently drawn Flax variables into a fresh reference and compares
outputs; exporting the imported variables must also give back the very same state_dict.
"""
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')
timm = pytest.importorskip('timm')

from torchvision.models import maxvit as tv_maxvit  # noqa: E402

from ferjax.interop import torch as it  # noqa: E402
from ferjax.models import maxvit, mobilevit  # noqa: E402
from tests.interop.parity import randomize_bn, torch_out  # noqa: E402

# A small MaxViT that still has every kind of part: 2-8 heads, a stride-1 layer (identity
# shortcut) in block 1, 7x7 partitions.
SMALL = dict(stem_channels=16, block_channels=(16, 32, 32, 64), block_layers=(1, 2, 1, 1),
             head_dim=8)
_FAST = {'xla_backend_optimization_level': 0}


def compiled(module, variables, x, **kw):
  """module.apply(., x, **kw) compiled once for these shapes."""
  return jax.jit(functools.partial(module.apply, **kw)).lower(variables, x).compile(_FAST)


def spread(model, seed=0):
  """Re-draws a torch model's weights at O(1) output scale, deterministically."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('relative_position_bias_table'):
        p.copy_(torch.randn(p.shape, generator=g))
      elif p.ndim >= 2:
        p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
      elif name.endswith('bias'):
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
      else:  # norm scales
        p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
  return model


def random_variables(arch, seed=1, **overrides):
  """Flax variables drawn like `spread` + randomize_bn, without running Flax's init."""
  rng = np.random.default_rng(seed)
  draw = {'kernel': lambda s: rng.normal(size=s) / math.sqrt(math.prod(s[:-1])),
          'relative_position_bias_table': lambda s: rng.normal(size=s),
          'bias': lambda s: 0.1 * rng.normal(size=s),
          'scale': lambda s: 1 + 0.2 * rng.normal(size=s),
          'mean': lambda s: 0.2 * rng.normal(size=s),
          'var': lambda s: 0.5 + rng.random(size=s)}
  return jax.tree_util.tree_map_with_path(
      lambda path, a: draw[path[-1].key](a.shape).astype(np.float32),
      it.abstract_variables(arch, **overrides))


def roundtrip(arch, make_torch, x, overrides, atol):
  """Both directions (see the module docstring); returns the max abs errors (in, out)."""
  module = it.get(arch).build(**overrides)
  torch.manual_seed(0)
  ref = randomize_bn(spread(make_torch().eval()))
  want = torch_out(ref, x)
  assert np.abs(want).max() > 0.1
  variables = it.from_torch(arch, ref.state_dict(), **overrides)
  apply = compiled(module, variables, x)
  err_in = float(np.abs(np.asarray(apply(variables, x)) - want).max())
  back = it.to_torch(arch, variables, **overrides)
  assert sorted(back) == sorted(ref.state_dict())
  for k, v in ref.state_dict().items():
    np.testing.assert_array_equal(it.to_numpy(back[k]), it.to_numpy(v), err_msg=k)
  # ferjax -> torch, from variables the torch side has never seen.
  ours = random_variables(arch, **overrides)
  mine = np.asarray(apply(ours, x))
  exported = make_torch().eval()
  exported.load_state_dict(it.to_torch(arch, ours, **overrides), strict=True)
  err_out = float(np.abs(torch_out(exported, x) - mine).max())
  print(f'{arch} {overrides}: torch->ferjax {err_in:.2e}, ferjax->torch {err_out:.2e} '
        f'(output scales {np.abs(want).max():.2f}, {np.abs(mine).max():.2f})')
  assert err_in <= atol and err_out <= atol, (err_in, err_out)
  assert np.abs(mine).max() > 0.1
  return err_in, err_out


def small_maxvit(num_classes=10):
  return tv_maxvit.MaxVit(
      input_size=(224, 224), stem_channels=SMALL['stem_channels'], partition_size=7,
      block_channels=list(SMALL['block_channels']), block_layers=list(SMALL['block_layers']),
      head_dim=SMALL['head_dim'], stochastic_depth_prob=0.2, num_classes=num_classes)


@pytest.fixture(scope='module')
def x224():
  return np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def small_maxvit_sd():
  return spread(small_maxvit()).state_dict()


@pytest.fixture(scope='module')
def mobilevit_sd():
  return timm.create_model('mobilevitv2_100', pretrained=False, num_classes=10).state_dict()


def test_mobilevitv2_parity_both_ways():
  # 96x96: the last stage's 3x3 map is resized to 4x4 (align_corners bilinear), as in timm.
  x = np.random.default_rng(1).normal(size=(2, 96, 96, 3)).astype(np.float32)
  roundtrip('mobilevitv2_100',
            lambda: timm.create_model('mobilevitv2_100', pretrained=False, num_classes=10), x,
            dict(num_classes=10), atol=2e-4)


def test_maxvit_small_parity_both_ways(x224):
  roundtrip('maxvit_t', small_maxvit, x224, dict(SMALL, num_classes=10), atol=2e-4)


@pytest.mark.slow
def test_maxvit_t_full_parity_both_ways(x224):
  roundtrip('maxvit_t', lambda: torchvision.models.maxvit_t(weights=None), x224,
            dict(num_classes=1000), atol=2e-4)


def test_maxvit_features_are_the_pooled_map_before_the_head(x224, small_maxvit_sd):
  ref = small_maxvit().eval()
  ref.load_state_dict(small_maxvit_sd)
  ref.classifier = ref.classifier[:2]  # AdaptiveAvgPool2d(1), Flatten: the (B, 64) vector
  want = torch_out(ref, x224)
  variables = it.from_torch('maxvit_t', small_maxvit_sd, ignore=('classifier.',), **SMALL)
  module = maxvit.maxvit_t(**SMALL)
  got = compiled(module, variables, x224)(variables, x224)
  assert got.shape == (1, 64)
  np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)


def test_full_size_shapes_and_param_counts():
  n_tv = tv_maxvit.MaxVit_T_Weights.IMAGENET1K_V1.meta['num_params']  # no download
  n_timm = sum(p.numel() for p in
               timm.create_model('mobilevitv2_100', pretrained=False).parameters())
  assert (n_tv, n_timm) == (30_919_624, 4_901_841)
  for arch, n_ref in (('maxvit_t', n_tv), ('mobilevitv2_100', n_timm)):
    abstract = it.abstract_variables(arch, num_classes=1000)
    assert sum(math.prod(v.shape) for v in jax.tree.leaves(abstract['params'])) == n_ref, arch
    # num_classes=0: the pooled 512-d feature vector, for any batch size.
    module = it.get(arch).build()
    abstract['params'] = {k: v for k, v in abstract['params'].items()
                          if not k.startswith(('classifier', 'head'))}
    feats = jax.eval_shape(module.apply, abstract,
                           jax.ShapeDtypeStruct((3, 224, 224, 3), jnp.float32))
    assert feats.shape == (3, 512), arch


def test_maxvit_input_size_must_fit_the_partitions():
  module = maxvit.maxvit_t()
  with pytest.raises(ValueError, match='divisible by the partition size 7'):
    jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 112, 112, 3)))
  with pytest.raises(ValueError):  # torchvision refuses it too
    torchvision.models.maxvit_t(weights=None, input_size=(112, 112))


def test_relative_position_index_matches_torchvision():
  for size in (2, 7):
    np.testing.assert_array_equal(maxvit.relative_position_index(size),
                                  tv_maxvit._get_relative_position_index(size, size).numpy())


def test_head_not_silently_dropped(small_maxvit_sd, mobilevit_sd):
  with pytest.raises(it.ConversionError, match=r'unexpected keys \(5\): classifier.2.bias, '
                                               r'classifier.2.weight, classifier.3.bias'):
    it.from_torch('maxvit_t', small_maxvit_sd, **SMALL)
  with pytest.raises(it.ConversionError, match=r'unexpected keys \(2\): head.fc.bias'):
    it.from_torch('mobilevitv2_100', mobilevit_sd)
  assert 'stages_4_1' in it.from_torch('mobilevitv2_100', mobilevit_sd, ignore=('head.',))[
      'params']


def test_checkpoint_of_another_architecture(small_maxvit_sd, mobilevit_sd):
  with pytest.raises(it.ConversionError, match='does not fit maxvit_t') as e:
    it.from_torch('maxvit_t', mobilevit_sd, num_classes=10)
  assert re.search(r'missing keys \(\d+\): blocks.0.layers.0.layers.MBconv', str(e.value))
  assert re.search(r'unexpected keys \(\d+\): head.fc.bias, head.fc.weight, stages.0.0',
                   str(e.value))
  with pytest.raises(it.ConversionError, match='does not fit mobilevitv2_100') as e:
    it.from_torch('mobilevitv2_100', small_maxvit_sd, num_classes=10)
  assert re.search(r'missing keys \(\d+\): head.fc.bias, head.fc.weight, stages.0.0.conv1_1x1',
                   str(e.value))
  assert 'blocks.0.layers.0.layers.MBconv.layers.conv_a.0.weight' in str(e.value)
  # Full-width maxvit_t against the narrow one (same depth): the keys fit, the shapes do not.
  with pytest.raises(it.ConversionError, match=r'shape mismatches \(\d+\)') as e:
    it.from_torch('maxvit_t', small_maxvit_sd, block_layers=(1, 2, 1, 1), num_classes=10)
  assert ('blocks.0.layers.0.layers.MBconv.layers.pre_norm.running_mean: torch (16,) -> (16,), '
          'ferjax batch_stats/blocks_0/layers_0/MBconv/pre_norm/mean expects (64,)') in str(e.value)
  assert 'missing keys' not in str(e.value)


def test_mobilevit_train_mode_updates_bn_and_uses_drop_path():
  small = dict(stem_channels=8, channels=(8, 16, 16, 16, 16), blocks=(1, 1, 1, 1, 1),
               transformer_depths=(0, 0, 1, 1, 1), drop_path_rate=0.5)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 32, 32, 3)), jnp.float32)
  v = random_variables('mobilevitv2_100', **small)

  def step(frozen):
    def fwd(v, key):
      return mobilevit.mobilevitv2_100(**small, bn_frozen=frozen).apply(
          v, x, train=True, rngs={'dropout': key}, mutable=['batch_stats'])
    return jax.jit(fwd).lower(v, jax.random.PRNGKey(0)).compile(_FAST)

  train = step(False)
  a, new = train(v, jax.random.PRNGKey(1))
  b, _ = train(v, jax.random.PRNGKey(2))
  assert not np.allclose(a, b)  # another drop-path draw
  same = jax.tree.map(lambda p, q: bool(np.all(p == q)), v['batch_stats'], new['batch_stats'])
  assert not any(jax.tree.leaves(same))  # every BatchNorm updated its statistics
  _, kept = step(True)(v, jax.random.PRNGKey(1))
  jax.tree.map(np.testing.assert_array_equal, v['batch_stats'], kept['batch_stats'])


def test_mobilevitv2_200_parity_both_ways():
  # The width-2.0 net of paper 004's appearance branch: same key map, every width doubled.
  x = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype(np.float32)
  roundtrip('mobilevitv2_200',
            lambda: timm.create_model('mobilevitv2_200', pretrained=False, num_classes=10), x,
            dict(num_classes=10), atol=2e-4)
