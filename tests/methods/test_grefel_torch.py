"""GReFEL against its PyTorch module (third_party/torch_reference/grefel.py) through the key map
ferjax.interop.grefel, both directions, at the smoke config's size.

Random weights everywhere a default would hide a mistake: BatchNorm statistics and affine,
PReLU slopes, LayerNorm affine, layer-scale (its 1e-5 init would make the cross-attention
invisible), the cls / position embeddings and the relative-position tables. The paper's
switches and ARBEx's (`arbex`: batch attention, its head, final mix, raw queries, LN shortcut,
one anchor per class) are both checked.
"""
import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from ferjax import config as config_lib, labels  # noqa: E402
from ferjax.interop import grefel as gmap, torch as it  # noqa: E402
from ferjax.methods import grefel  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.interop.parity import randomize_bn  # noqa: E402
from third_party.torch_reference import faces, grefel as tg  # noqa: E402

ATOL = 1e-4
# The outputs compared, by ferjax's names ('probs' is the corrected distribution L).
COMPARED = ('embedding', 'primary_logits', 'primary', 't_g', 't_a', 't', 'probs')


def _cfg(arg):
  return config_lib.load(f'{REPO}/configs/grefel_synthetic.py:{arg}')


def randomize(model, seed=0):
  randomize_bn(model, seed)
  faces.randomize_prelu(model, seed)
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for mod in model.modules():
      if isinstance(mod, torch.nn.LayerNorm):
        mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=g))
        mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=g))
    for n, p in model.named_parameters():
      if n.split('.')[-1] in ('gamma1', 'gamma2'):
        p.copy_(0.5 + torch.rand(p.shape, generator=g))
      elif n.split('.')[-1] in ('cls_token', 'pos_embed', 'relative_position_bias_table'):
        p.copy_(0.5 * torch.randn(p.shape, generator=g))
      elif n == 'anchors.anchors':
        p.copy_(0.3 * torch.randn(p.shape, generator=g))
  return model


def _images(cfg, seed=1):
  s = cfg.data.image_size
  return np.random.default_rng(seed).normal(size=(3, s, s, 3)).astype(np.float32)


def _torch_outputs(model, x_nhwc):
  with torch.no_grad():
    out = model.outputs(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()))
  out['probs'] = out.pop('final')
  return {k: it.to_numpy(v) for k, v in out.items()}


_APPLY: dict = {}


def _ferjax_outputs(cfg, variables, x_nhwc):
  # One jitted apply per config: op-by-op dispatch of this network costs more than compiling it.
  key = cfg.to_json()
  if key not in _APPLY:
    model = grefel.build_model(cfg, len(labels.resolve(cfg)))
    _APPLY[key] = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return jax.device_get(_APPLY[key](variables, jnp.asarray(x_nhwc)))


def random_variables(cfg, seed=0):
  """Variables drawn by hand on the traced tree (cheaper than init; every leaf off its default):
  fan-in scaled kernels, LayerNorm / BatchNorm affine near 1 / 0, statistics off 0 / 1."""
  rng = np.random.default_rng(seed)
  n = lambda shape, s=1.0: (s * rng.normal(size=shape)).astype(np.float32)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      return n(shape, float(np.prod(shape[:-1])) ** -0.5)
    return {'scale': lambda: 1 + n(shape, 0.2), 'bias': lambda: n(shape, 0.1),
            'mean': lambda: n(shape, 0.2), 'var': lambda: (0.5 + rng.random(shape)),
            'slope': lambda: 0.25 + n(shape, 0.2), 'anchors': lambda: n(shape, 0.3),
            'gamma1': lambda: 0.5 + rng.random(shape), 'gamma2': lambda: 0.5 + rng.random(shape),
            }.get(name, lambda: n(shape, 0.5))().astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, gmap.abstract_variables(cfg))


def _compare(got, want, atol, what):
  for k in COMPARED:
    if k in want:
      assert np.abs(want[k]).max() > 1e-3, k
      np.testing.assert_allclose(got[k], want[k], atol=atol, rtol=0, err_msg=f'{what}: {k}')


@pytest.mark.parametrize('arg', ['smoke', 'smoke,arbex'])
def test_torch_weights_give_the_same_outputs_in_ferjax_and_back(arg):
  cfg = _cfg(arg)
  kw = gmap.torch_kwargs(cfg)
  torch.manual_seed(0)
  ref = randomize(tg.GReFEL(**kw)).eval()
  x = _images(cfg)
  want = _torch_outputs(ref, x)
  # Not degenerate: the corrected distribution is not one-hot and differs from the primary one.
  assert want['probs'].max() < 0.99 and np.abs(want['probs'] - want['primary']).max() > 1e-3
  variables = gmap.from_torch(ref.state_dict(), cfg)
  _compare(_ferjax_outputs(cfg, variables, x), want, ATOL, 'torch -> ferjax')
  back = tg.GReFEL(**kw).eval()
  back.load_state_dict(gmap.to_torch(variables, cfg), strict=True)
  _compare(_torch_outputs(back, x), want, 1e-6, 'ferjax -> torch')
  for k, v in ref.state_dict().items():
    if not k.endswith('num_batches_tracked'):
      np.testing.assert_array_equal(it.to_numpy(back.state_dict()[k]), it.to_numpy(v), err_msg=k)


def test_ferjax_weights_give_the_same_outputs_in_torch():
  cfg = _cfg('smoke')
  x = _images(cfg, seed=2)
  v = random_variables(cfg)
  want = _ferjax_outputs(cfg, v, x)
  ref = tg.GReFEL(**gmap.torch_kwargs(cfg)).eval()
  ref.load_state_dict(gmap.to_torch(v, cfg), strict=True)
  _compare(_torch_outputs(ref, x), want, ATOL, 'ferjax -> torch')
  log_p, p = (it.to_numpy(a) for a in ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())))
  np.testing.assert_allclose(p, want['probs'], atol=ATOL)
  np.testing.assert_allclose(log_p, want['logits'], atol=ATOL)
  back = gmap.from_torch(ref.state_dict(), cfg)
  flat, flat_back = it._leaves(v), it._leaves(back)
  assert sorted(flat_back) == sorted(flat)
  for path, a in flat.items():
    np.testing.assert_array_equal(flat_back[path], a, err_msg='/'.join(path))


def test_conversion_is_strict_and_names_the_keys():
  cfg = _cfg('smoke')
  sd = tg.GReFEL(**gmap.torch_kwargs(cfg)).state_dict()
  with pytest.raises(it.ConversionError, match='missing.*self_attn.attn_fn.in_proj_weight'):
    gmap.from_torch({k: v for k, v in sd.items() if 'in_proj_weight' not in k}, cfg)
  upstream = {**sd, 'VIT.CON1.weight': torch.zeros(768, 256, 1, 1),
              'VIT.blocks.0.conv.weight': torch.zeros(13, 13, 1)}
  with pytest.raises(it.ConversionError, match='unexpected.*VIT.CON1.weight'):
    gmap.from_torch(upstream, cfg)
  gmap.from_torch(upstream, cfg, ignore=gmap.UPSTREAM_UNUSED)
  bad = dict(sd)
  bad['attn2.relative_position_index'] = torch.zeros_like(sd['attn2.relative_position_index'])
  with pytest.raises(it.ConversionError, match='attn2.relative_position_index'):
    gmap.from_torch(bad, cfg)
  shaped = dict(sd)
  shaped['anchors.anchors'] = torch.zeros(8, 3, 32)
  with pytest.raises(it.ConversionError, match='anchors.anchors'):
    gmap.from_torch(shaped, cfg)
