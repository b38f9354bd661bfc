"""IR-50 and MobileFaceNet (POSTER++ / GReFEL face backbones): parity both ways, key errors.

The references are the PyTorch modules of third_party/torch_reference/faces.py. Both directions
are checked from a fresh start: torch weights -> ferjax (outputs match, and exporting gives the
original state_dict back), and ferjax weights -> torch (the exported model, loaded strictly,
gives ferjax's outputs). BatchNorm statistics and PReLU slopes are randomised on both sides.
Run with -s to see the maximum absolute error of every check.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from flax import traverse_util  # noqa: E402

from ferjax.interop import irse as irse_map  # noqa: E402
from ferjax.interop import torch as it  # noqa: E402
from third_party.torch_reference import faces as fr  # noqa: E402
from tests.interop.parity import randomize_bn  # noqa: E402

ATOL = 1e-4
POSTER_MAPS = {'stage1': (56, 56, 64), 'stage2': (28, 28, 128), 'stage3': (14, 14, 256)}
IR50_OUTS = {**POSTER_MAPS, 'stage4': (7, 7, 512), 'embedding': (512,)}
MFN_OUTS = {'out3': (28, 28, 64), 'out4': (14, 14, 128), 'conv_features': (7, 7, 512),
            'landmarks': (136,)}
IR50 = (lambda: fr.IRBackbone(4), fr.ir50_outputs)
IR50_POSTER = (lambda: fr.IRBackbone(3), fr.ir50_outputs)
MFN = (fr.MobileFaceNet, fr.mfn_outputs)


def _shapes(outputs):
  return {k: v.shape[1:] for k, v in outputs.items()}


def _images(n, size, seed=0):
  return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


def _torch_apply(ref, to_dict, x):
  with torch.no_grad():
    outs = to_dict(ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())))
  return {k: v.numpy().transpose(0, 2, 3, 1) if v.ndim == 4 else v.numpy()
          for k, v in outs.items()}


@functools.lru_cache(maxsize=None)
def _jitted_apply(arch, overrides):
  # One compiled graph, reused by both directions, is faster than op-by-op dispatch.
  return jax.jit(it.get(arch).build(**dict(overrides)).apply)


def _flax_apply(arch, variables, x, overrides):
  out = _jitted_apply(arch, tuple(sorted(overrides.items())))(variables, jnp.asarray(x))
  return {k: np.asarray(v) for k, v in out.items()}


def _max_err(got, want):
  assert sorted(got) == sorted(want)
  for k in want:
    assert got[k].shape == want[k].shape, k
  return max(float(np.abs(got[k] - want[k]).max()) for k in want)


def _n_params(tree):
  return sum(int(np.prod(np.shape(v))) for v in jax.tree_util.tree_leaves(tree))


def torch_to_ferjax(arch, ref_fns, x, overrides=None):
  """Torch weights -> ferjax: outputs within ATOL, and the export is the original state_dict."""
  overrides = overrides or {}
  make, to_dict = ref_fns
  torch.manual_seed(0)
  ref = fr.randomize_prelu(randomize_bn(make().eval()))
  want = _torch_apply(ref, to_dict, x)
  sd0 = ref.state_dict()
  variables = it.from_torch(arch, sd0, **overrides)
  err = _max_err(_flax_apply(arch, variables, x, overrides), want)
  print(f'\n{arch} {overrides} torch->ferjax max abs err {err:.2e}')
  assert err <= ATOL
  back = it.to_torch(arch, variables, **overrides)
  assert sorted(back) == sorted(sd0)
  for k, v in back.items():
    if not k.endswith('num_batches_tracked'):
      np.testing.assert_array_equal(v.numpy(), sd0[k].numpy(), err_msg=k)
  assert _n_params(variables['params']) == sum(p.numel() for p in ref.parameters())
  return variables, want


def _random_variables(arch, overrides, seed):
  """ferjax variables drawn in numpy at PyTorch's default scales, with random BN/PReLU values.

  Weights are U(+-1/sqrt(fan_in)) as torch's default init: Flax's xavier init together with
  random BN statistics grows IR-50's activations to ~60, where float32 summation-order noise
  alone passes an absolute 1e-4. (Drawing in numpy also skips a slow eager Flax init.)
  """
  rng = np.random.default_rng(seed)
  abstract = traverse_util.flatten_dict(it.abstract_variables(arch, **overrides))

  def draw(path, shape):
    leaf = path[-1]
    if leaf == 'kernel':
      bound = 1 / np.sqrt(np.prod(shape[:-1]))  # HWIO or (in, out): all but the last axis
      return rng.uniform(-bound, bound, shape)
    return {'mean': lambda: 0.2 * rng.normal(size=shape),
            'var': lambda: 0.5 + rng.random(shape),
            'scale': lambda: 1 + 0.2 * rng.normal(size=shape),
            'bias': lambda: 0.2 * rng.normal(size=shape),
            'slope': lambda: 0.25 + 0.2 * rng.normal(size=shape)}[leaf]()

  return traverse_util.unflatten_dict(
      {p: draw(p, a.shape).astype(np.float32) for p, a in abstract.items()})


def ferjax_to_torch(arch, ref_fns, x, overrides=None, seed=1):
  """ferjax weights -> torch: the strictly loaded export gives ferjax's outputs within ATOL."""
  overrides = overrides or {}
  make, to_dict = ref_fns
  variables = _random_variables(arch, overrides, seed)
  ref = make().eval()
  ref.load_state_dict(it.to_torch(arch, variables, **overrides), strict=True)
  err = _max_err(_flax_apply(arch, variables, x, overrides), _torch_apply(ref, to_dict, x))
  print(f'\n{arch} {overrides} ferjax->torch max abs err {err:.2e}')
  assert err <= ATOL


def test_ir50_full_parity_both_ways():
  x = _images(1, 112)
  variables, want = torch_to_ferjax('ir50', IR50, x)
  assert _shapes(want) == IR50_OUTS  # the ferjax outputs have been checked against these
  assert _n_params(variables['params']) == 43_574_976
  ferjax_to_torch('ir50', IR50, x)


def test_ir50_poster_variant_parity_both_ways():
  # 150 px exercises the in-model nearest resize to 112, including float32 boundary indices.
  x = _images(1, 150, seed=1)
  variables, want = torch_to_ferjax('ir50', IR50_POSTER, x, dict(num_stages=3))
  assert _shapes(want) == POSTER_MAPS
  assert _n_params(variables['params']) == 17_611_968
  ferjax_to_torch('ir50', IR50_POSTER, x, dict(num_stages=3))


def test_full_ir50_checkpoint_into_poster_variant():
  sd = fr.IRBackbone(4).state_dict()
  with pytest.raises(it.ConversionError,
                     match=r'unexpected keys \(48\): body\.21\..*pass ignore='):
    it.from_torch('ir50', sd, num_stages=3)
  variables = it.from_torch('ir50', sd, ignore=irse_map.STAGE4_KEYS, num_stages=3)
  back = it.to_torch('ir50', variables, num_stages=3)
  # POSTER++'s 3 + 4 + 14 units are body.0 .. body.20; the 3-stage parity test covers numerics.
  assert {int(k.split('.')[1]) for k in back if k.startswith('body.')} == set(range(21))
  kept = {k: v for k, v in sd.items() if not k.startswith(irse_map.STAGE4_KEYS)}
  assert sorted(back) == sorted(kept)
  for k, v in back.items():
    np.testing.assert_array_equal(v.numpy(), kept[k].numpy(), err_msg=k)


def test_poster_key_layout_round_trip():
  sd = {k: v.shape for k, v in fr.IRBackbone(3).state_dict().items()}
  poster = irse_map.to_poster_keys(sd)
  for stage, n in ((1, 3), (2, 4), (3, 14)):
    assert {int(k.split('.')[1]) for k in poster if k.startswith(f'body{stage}.')} == set(
        range(n))
  assert poster['body2.0.shortcut_layer.0.weight'] == (128, 64, 1, 1)
  assert poster['body3.13.res_layer.3.weight'] == (256, 256, 3, 3)
  assert irse_map.from_poster_keys(poster) == sd


def test_mobilefacenet_parity_both_ways():
  x = _images(2, 112, seed=2)
  variables, want = torch_to_ferjax('mobilefacenet', MFN, x)
  assert _shapes(want) == MFN_OUTS
  assert _n_params(variables['params']) == 1_007_248
  ferjax_to_torch('mobilefacenet', MFN, x)


def _out_shapes(arch, size, dtype=jnp.float32, **kw):
  module = it.get(arch).build(dtype=dtype, **kw)
  out, _ = jax.eval_shape(lambda x: module.init_with_output(jax.random.PRNGKey(0), x),
                          jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
  assert all(v.dtype == dtype for v in out.values())
  return _shapes(out)


def test_output_shapes_dtype_and_size_checks():
  # The float32 shapes at 112 (150 for the resizing variant) are checked by the parity tests.
  assert _out_shapes('ir50', 224, jnp.bfloat16, num_stages=3) == POSTER_MAPS
  assert _out_shapes('mobilefacenet', 112, jnp.bfloat16) == MFN_OUTS
  with pytest.raises(ValueError, match='7x7'):
    _out_shapes('ir50', 224)


def test_mobilefacenet_wrong_checkpoints_are_named():
  sd = fr.MobileFaceNet().state_dict()
  # The head at the top level (conv_6_dw.*, linear.*, bn.*) instead of under output_layer.
  flat_head = {k.replace('output_layer.', ''): v for k, v in sd.items()}
  with pytest.raises(it.ConversionError) as e:
    it.from_torch('mobilefacenet', flat_head)
  msg = str(e.value)
  assert 'missing keys (10): output_layer.bn.bias' in msg
  assert 'unexpected keys (10): bn.bias' in msg
  # A 512-d face-recognition head where POSTER++ has 136 landmark outputs.
  sd512 = fr.MobileFaceNet(512).state_dict()
  with pytest.raises(it.ConversionError, match=r'output_layer\.linear\.weight: torch \(512, '):
    it.from_torch('mobilefacenet', sd512)
  it.from_torch('mobilefacenet', sd512, embedding_size=512)
  with pytest.raises(it.ConversionError, match='does not fit mobilefacenet'):
    it.from_torch('mobilefacenet', fr.IRBackbone(3).state_dict())


def test_ir50_wrong_checkpoints_are_named():
  sd = fr.IRBackbone(3).state_dict()
  del sd['body.7.shortcut_layer.1.running_var']
  sd['body.3.res_layer.2.weight'] = sd['body.3.res_layer.2.weight'][:64]
  with pytest.raises(it.ConversionError) as e:
    it.from_torch('ir50', sd, num_stages=3)
  msg = str(e.value)
  assert 'missing keys (1): body.7.shortcut_layer.1.running_var' in msg
  assert 'body.3.res_layer.2.weight: torch (64,)' in msg
  poster = irse_map.to_poster_keys(fr.IRBackbone(3).state_dict())
  with pytest.raises(it.ConversionError, match=r'unexpected keys \(\d+\): body1\.0\.'):
    it.from_torch('ir50', poster, num_stages=3)


def test_bn_frozen():
  # A one-unit IR net keeps this cheap; MobileFaceNet shares the same BatchNorm factory.
  x = jnp.asarray(_images(2, 32, seed=3))
  net = functools.partial(it.get('ir50').build, stage_sizes=(1,), num_stages=1)
  variables = jax.jit(net().init)(jax.random.PRNGKey(0), x)
  train = functools.partial(jax.jit, static_argnames=('train', 'mutable'))
  out, upd = train(net(bn_frozen=True).apply)(variables, x, train=True,
                                              mutable=('batch_stats',))
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda a, b: bool(np.array_equal(a, b)), upd['batch_stats'], variables['batch_stats']))
  np.testing.assert_allclose(out['stage1'], jax.jit(net().apply)(variables, x)['stage1'],
                             atol=1e-6)
  _, upd = train(net().apply)(variables, x, train=True, mutable=('batch_stats',))
  assert not np.allclose(upd['batch_stats']['input_layer_1']['mean'],
                         variables['batch_stats']['input_layer_1']['mean'])
