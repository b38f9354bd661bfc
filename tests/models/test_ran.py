"""RAN (ferjax.models.ran, ferjax.interop.ran): the region crops against PIL-style boxes and
torch's bilinear resize, forward parity with the PyTorch RAN of third_party/torch_reference
(the authors' module names) in both directions, eval and train mode, and strict conversion."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax.interop import ran as ran_interop
from ferjax.interop import torch as it
from ferjax.models import ran

torch = pytest.importorskip('torch')

from tests.interop.parity import randomize_bn  # noqa: E402
from third_party.torch_reference import ran as ref  # noqa: E402

DIMS = dict(num_classes=8, width=16)   # a narrow ResNet-18: 8 regions stay cheap


def nchwr(regions):
  """(B, R, H, W, C) -> the reference's (B, C, H, W, R)."""
  return torch.from_numpy(np.asarray(regions).transpose(0, 4, 2, 3, 1).copy())


@pytest.fixture(scope='module')
def faces():
  return np.random.default_rng(0).normal(size=(3, 48, 48, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def authors(faces):
  """The reference with random weights and BN statistics. A random ResNet gives nearly equal
  features for every region (their spread is 1e-2 of their mean), so the attention layers are
  rescaled about these faces' mean feature: pre-sigmoid values of spread ~1 and mean ~0, where
  a mix-up of regions, softmax axes or the concatenation would show."""
  torch.manual_seed(0)
  model = randomize_bn(ref.RAN(num_classes=8, width=16), 0).eval()
  regions = nchwr(ran.region_crops(jnp.asarray(faces)))
  with torch.no_grad():
    feats = torch.stack([model.features(regions[..., r]) for r in range(8)], 1)   # (B, R, C)
    cat = torch.cat([feats, feats.mean(1, keepdim=True).expand_as(feats)], -1)
    for layer, x in ((model.alpha[0], feats), (model.beta[0], cat)):
      spread = (x - x.mean(1, keepdim=True)) @ layer.weight[0]
      layer.weight.mul_(1.0 / spread.std())
      layer.bias.copy_(-(x @ layer.weight[0]).mean().reshape(1))
  return model


def test_crop_boxes_floor_like_the_authors_int():
  boxes = ran.crop_boxes(ran.DEFAULT_CROPS, 48, 48)
  assert boxes[0] == (6, 12, 42, 48)           # centre-down: int(0.125 * 48) = 6 ...
  assert boxes[3] == (2, 2, 45, 45)            # int(0.05 * 48) = 2, int(0.95 * 48) = 45
  assert ran.crop_boxes([(0.1, 0.1, 0.9, 0.9)], 50, 50) == [(5, 5, 45, 45)]
  with pytest.raises(ValueError, match='empty or outside'):
    ran.crop_boxes([(0.5, 0.0, 0.5, 1.0)], 48, 48)


def test_region_crops_match_torch_bilinear(faces):
  regions = np.asarray(ran.region_crops(jnp.asarray(faces)))
  assert regions.shape == (3, 8, 48, 48, 3)
  np.testing.assert_array_equal(regions[:, -1], faces)          # the whole face is last
  x = torch.from_numpy(faces.transpose(0, 3, 1, 2).copy())
  for r, (x0, y0, x1, y1) in enumerate(ran.crop_boxes(ran.DEFAULT_CROPS, 48, 48)):
    want = torch.nn.functional.interpolate(x[:, :, y0:y1, x0:x1], size=(48, 48),
                                           mode='bilinear', align_corners=False)
    np.testing.assert_allclose(regions[:, r], want.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_authors_names_and_parameter_count():
  abstract = it.abstract_variables('ran', num_classes=8)   # width 64: the authors' ResNet-18
  sd = it.to_numpy_state_dict('ran', jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                                                  abstract), num_classes=8)
  want = ref.RAN(num_classes=8).state_dict()
  assert sorted(sd) == sorted(want)
  for key in ('conv1.weight', 'layer4.1.bn2.running_var', 'alpha.0.weight', 'beta.0.bias',
              'fc.weight'):
    assert sd[key].shape == tuple(want[key].shape), key


def _outputs(variables, regions, train=False):
  model = ran_interop.build(**DIMS)
  if train:
    out, new = model.apply(variables, jnp.asarray(regions), train=True, mutable=['batch_stats'])
    return out, new['batch_stats']
  return model.apply(variables, jnp.asarray(regions)), None


def _torch_outputs(model, regions):
  with torch.no_grad():
    logits, part_max, org = model(nchwr(regions))
  return logits.numpy(), part_max.numpy()[:, 0], org.numpy()[:, 0]


def test_torch_to_ferjax_forward_parity(authors, faces):
  regions = np.asarray(ran.region_crops(jnp.asarray(faces)))
  variables = it.from_torch('ran', authors.state_dict(), **DIMS)
  out, _ = _outputs(variables, faces)            # the model crops the faces itself
  want = _torch_outputs(authors, regions)
  errors = [float(np.abs(np.asarray(out[k]) - w).max())
            for k, w in zip(('logits', 'part_max', 'org'), want)]
  print('max |diff| logits, part_max, org:', errors, 'max |logit|:', np.abs(want[0]).max())
  assert max(errors) <= 1e-4, errors
  assert np.abs(want[0]).max() > 0.3 and np.ptp(np.asarray(out['alphas'])) > 0.01


def test_ferjax_to_torch_forward_parity(authors, faces):
  regions = np.asarray(ran.region_crops(jnp.asarray(faces)))
  variables = it.from_torch('ran', authors.state_dict(), **DIMS)
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda a: a + 0.05 * rng.normal(size=a.shape).astype(np.float32)
                           if a.ndim else a, variables)
  back = ref.RAN(num_classes=8, width=16).eval()
  back.load_state_dict(it.to_torch('ran', variables, **DIMS), strict=True)
  out, _ = _outputs(variables, regions)          # precomputed regions are accepted too
  got = _torch_outputs(back, regions)
  np.testing.assert_allclose(got[0], np.asarray(out['logits']), atol=1e-4, rtol=0)
  np.testing.assert_allclose(got[1], np.asarray(out['part_max']), atol=1e-5, rtol=0)


def test_train_mode_normalises_each_region_on_its_own(authors, faces):
  """Train mode: one BatchNorm batch per region and R running-average updates in region order,
  as the authors' per-region backbone calls do."""
  regions = np.asarray(ran.region_crops(jnp.asarray(faces)))
  variables = it.from_torch('ran', authors.state_dict(), **DIMS)
  model = ref.RAN(num_classes=8, width=16)
  model.load_state_dict(authors.state_dict())
  model.train()
  with torch.no_grad():
    want_logits, _, _ = model(nchwr(regions))
  out, stats = _outputs(variables, regions, train=True)
  np.testing.assert_allclose(np.asarray(out['logits']), want_logits.numpy(), atol=1e-4, rtol=0)
  after = it.from_torch('ran', model.state_dict(), **DIMS)['batch_stats']
  once = it.from_torch('ran', authors.state_dict(), **DIMS)['batch_stats']

  def check(path, got, want, before):
    if path[-1].key == 'mean':
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    else:   # torch averages the unbiased batch variance, Flax the biased one: n / (n - 1)
      # apart, 9% at layer4's 3 x 2 x 2 values per channel, 0.57 of it left after 8 updates
      np.testing.assert_allclose(got, want, rtol=6e-2)
    assert np.abs(want - before).max() > 1e-3   # the statistics did move

  jax.tree_util.tree_map_with_path(check, stats, after, once)


def test_conversion_is_strict(authors):
  sd = dict(authors.state_dict())
  del sd['beta.0.weight']
  sd['gamma.0.weight'] = torch.zeros(1, 256)
  with pytest.raises(it.ConversionError, match=r'missing keys \(1\): beta.0.weight(.|\n)*'
                     r'unexpected keys \(1\): gamma.0.weight'):
    it.from_torch('ran', sd, **DIMS)
