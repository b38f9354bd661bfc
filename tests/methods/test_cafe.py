"""CAFE: losses against a torch re-statement of eqs. (4)-(8) and of the official `supervisor`,
channel pieces, the drop mask, the feature cache, frozen CLIP in exact mode, a smoke run, export."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferjax import checkpoint, config as config_lib, sharding, trainer
from ferjax.data import pipeline
from ferjax.methods import cafe, cafe_features
from tests.conftest import REPO

CONFIG = os.path.join(REPO, 'configs', 'cafe_synthetic.py')


def smoke(tmp_path, arg='smoke', **overrides):
  cfg = config_lib.load(f'{CONFIG}:{arg}')
  with cfg.unlocked():
    cfg.cafe.cache_dir = str(tmp_path / 'features')
    cfg.data.eval_sets = 'synthetic:lab:test'
    cfg.update_from_flattened_dict(overrides)
  return cfg


@pytest.mark.parametrize('dim,pieces,want', [
    (512, 7, (73,) * 6 + (74,)), (512, 8, (64,) * 8), (512, 6, (85,) * 5 + (87,)),
    (32, 7, (4,) * 6 + (8,)), (128, 7, (18,) * 6 + (20,))])
def test_split_sizes(dim, pieces, want):
  assert cafe.split_sizes(dim, pieces) == want


def test_drop_mask_properties():
  m = np.asarray(cafe.step_drop_mask(0, 5, 512, 7, 10))
  sizes = cafe.split_sizes(512, 7)
  bounds = np.cumsum((0,) + sizes)
  for a, b in zip(bounds[:-1], bounds[1:]):   # 10 dropped per piece: 63 x 6 + 64 kept
    assert (m[a:b] == 0).sum() == 10
  assert m.sum() == 512 - 70
  again = np.asarray(cafe.step_drop_mask(0, 5, 512, 7, 10))
  np.testing.assert_array_equal(m, again)                                  # deterministic
  assert not np.array_equal(m, np.asarray(cafe.step_drop_mask(0, 6, 512, 7, 10)))  # per step
  assert not np.array_equal(m, np.asarray(cafe.step_drop_mask(1, 5, 512, 7, 10)))  # per seed
  assert m.shape == (512,)   # one mask, broadcast over the batch (the code's Mask(nb_batch))


def _torch_code_supervisor(x, targets, cnum, mask):
  """The official `supervisor` restated with torch ops (MaxPool2d over the channel axis)."""
  b, d = x.shape
  pool = lambda t: F.max_pool2d(t.reshape(b, d, 1, 1).transpose(3, 1), (1, cnum),
                                (1, cnum)).transpose(3, 1).reshape(b, -1, 1)
  branch = pool(x)
  loss_div = 1.0 - torch.mean(torch.sum(branch, 2)) / cnum
  loss_sep = F.cross_entropy(pool(x * mask[None]).reshape(b, -1), targets)
  return loss_sep, loss_div


def _torch_paper(x, targets, sizes, mask, c):
  """Eqs. (4)-(8) with pieces of `sizes` (the last piece includes channel 511)."""
  pieces = torch.split(x, sizes, dim=1)
  dropped = torch.split(x * mask[None], sizes, dim=1)
  fd = torch.stack([p.max(1).values for p in dropped], 1)                   # eq. (5)
  sep = F.cross_entropy(fd, targets)                                        # eq. (6)
  fmax = torch.stack([p.max(1).values for p in pieces], 1)                  # eq. (7)
  # Eq. (8) as printed divides the sum over (N, L) by N * c; the code (and ferjax) takes the
  # mean over N * L, i.e. another factor 1 / L. The printed form would be 7x larger here.
  div = 1.0 - fmax.sum() / (x.shape[0] * len(sizes) * c)                    # eq. (8), coded
  return sep, div


@pytest.mark.parametrize('pool', ['code', 'paper'])
def test_losses_match_torch(pool):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 512)).astype(np.float32) * 3
  y = rng.integers(0, 7, size=6)
  drop = np.asarray(cafe.step_drop_mask(3, 11, 512, 7, 10))
  ones = np.ones(6, np.float32)
  sep = cafe.sep_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(ones), jnp.asarray(drop),
                      7, pool)
  div = cafe.div_loss(jnp.asarray(z), jnp.asarray(ones), 7, pool, 73.0)
  zt, yt, mt = torch.from_numpy(z), torch.from_numpy(y), torch.from_numpy(drop.copy())
  if pool == 'code':
    want_sep, want_div = _torch_code_supervisor(zt, yt, 73, mt)
  else:
    want_sep, want_div = _torch_paper(zt, yt, [73] * 6 + [74], mt, 73.0)
  np.testing.assert_allclose(float(sep), float(want_sep), rtol=1e-5)
  np.testing.assert_allclose(float(div), float(want_div), rtol=1e-5)


def test_code_pool_never_sees_channel_511():
  z = np.zeros((2, 512), np.float32)
  z[:, 511] = 100.0
  assert float(jnp.max(cafe.piece_max(jnp.asarray(z), 7, 'code'))) == 0.0
  assert float(jnp.max(cafe.piece_max(jnp.asarray(z), 7, 'paper'))) == 100.0


def test_div_loss_is_unbounded_below():
  z = jnp.full((2, 512), 1e4)
  assert float(cafe.div_loss(z, jnp.ones(2), 7, 'paper', 73.0)) < -100


def test_cache_reused_and_invalidated(tmp_path):
  cfg = smoke(tmp_path)
  from ferjax.data import sources
  src = sources.make('synthetic:lab:test', 8, cfg.data.image_size, 0)
  f1, d1, computed = cafe_features.features_for(cfg, 'synthetic:lab:test', src, 0)
  assert computed and f1.shape == (8, 32)
  f2, d2, computed = cafe_features.features_for(cfg, 'synthetic:lab:test', src, 0)
  assert not computed and d2 == d1
  np.testing.assert_array_equal(f1, f2)
  for key, value in (('cafe.clip_seed', 1), ('cafe.clip_norm', 'imagenet')):
    other = smoke(tmp_path, **{key: value})
    f3, d3, computed = cafe_features.features_for(other, 'synthetic:lab:test', src, 0)
    assert computed and d3 != d1, key
    assert not np.allclose(f3, f1), key
  _, d4, computed = cafe_features.features_for(cfg, 'synthetic:lab:test', src, 0, bgr=True)
  assert computed and d4 != d1
  # A manifest that does not match its key (e.g. a stale or foreign file) is recomputed.
  with open(os.path.join(d1, 'manifest.json'), 'w') as f:
    f.write('{"key": {"version": -1}, "dim": 32}')
  _, _, computed = cafe_features.features_for(cfg, 'synthetic:lab:test', src, 0)
  assert computed


def test_exact_mode_keeps_clip_frozen(tmp_path):
  cfg = smoke(tmp_path, 'smoke,features=exact')
  run = trainer.Run(cfg)
  state = run.fresh_state()
  clip0 = checkpoint.to_numpy(state.params['clip'])
  mask0 = checkpoint.to_numpy(state.params['mask_net'])
  want = cafe_features.load_clip_params(cfg)   # the random-CLIP weights were loaded
  jax.tree.map(np.testing.assert_array_equal, clip0, jax.tree.map(np.asarray, want))
  it = iter(pipeline.train_dataset(cfg, cfg.seed))
  for _ in range(2):
    state, metrics = run.steps.train(state, sharding.to_global(next(it), run.mesh))
  assert np.isfinite(float(metrics['loss']))
  jax.tree.map(np.testing.assert_array_equal, clip0, checkpoint.to_numpy(state.params['clip']))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), mask0,
                         checkpoint.to_numpy(state.params['mask_net']))
  assert any(jax.tree.leaves(changed))


def test_smoke_training_run_cached(tmp_path):
  cfg = smoke(tmp_path)
  reports = trainer.train(cfg, str(tmp_path / 'run'))
  assert set(reports) == {'synthetic:lab:test'}
  # 7 classes: the synthetic set's contempt faces are dropped and counted, in training too.
  assert reports['synthetic:lab:test']['dropped_outside_space'] == {'contempt': 2}
  steps = (64 - 9) // cfg.batch_size
  out = tmp_path / 'run' / 'eval' / f'step_{steps}'
  for name in ('results.json', 'cafe_mask_lab_test.png', 'cafe_saliency_lab_test.png'):
    assert (out / name).exists(), name
  table = np.load(out / 'cafe_mask_lab_test.npy')
  finite = table[np.isfinite(table).all(1)]
  assert finite.size and finite.min() >= 0.5 and finite.max() < 1.0   # M in [0.5, 1)


def test_export_matches_official_model():
  import torchvision
  from ferjax.interop import torch as it

  class Official(torch.nn.Module):   # built like the official Model (ResNet-18 children)
    def __init__(self):
      super().__init__()
      res18 = torchvision.models.resnet18()
      self.features = torch.nn.Sequential(*list(res18.children())[:-2])
      self.features2 = torch.nn.Sequential(*list(res18.children())[-2:-1])
      self.fc = torch.nn.Linear(512, 7)

    def forward(self, x, image_features):
      h = self.features2(self.features(x)).view(x.shape[0], -1)
      return self.fc(image_features * torch.sigmoid(h))

  module = cafe.CAFE(7, 512, cafe.models.build('resnet18'))
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  feats = np.random.default_rng(1).normal(size=(2, 512)).astype(np.float32)
  variables = module.init(jax.random.key(0), jnp.asarray(x))
  stats = jax.tree.map(lambda a: a + 0.1 * np.abs(np.random.default_rng(2).normal(
      size=a.shape)).astype(np.float32), variables['batch_stats'])
  variables = {'params': variables['params'], 'batch_stats': stats}
  ref = Official().eval()
  ref.load_state_dict(it.to_torch('cafe', variables), strict=True)
  got = module.apply(variables, jnp.asarray(x), features=jnp.asarray(feats))['logits']
  with torch.no_grad():
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(feats)).numpy()
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_mask_net_starts_from_msceleb_style_torch_weights(tmp_path):
  """cafe.resnet_weights: a torchvision-layout ResNet-18 checkpoint ('state_dict' wrapper,
  'module.' prefixes, a face-identity fc) starts the mask net, BatchNorm statistics included."""
  from ferjax.interop import torch as it
  cfg = smoke(tmp_path)
  m = cfg.model
  net = cafe.models.build('resnet18', width=m.width, stage_sizes=tuple(m.stage_sizes))
  variables = net.init(jax.random.key(7), jnp.zeros((1, 32, 32, 3)))
  variables = jax.tree.map(lambda a: a + 0.05, dict(variables))   # stats away from the init
  sd = it.to_torch('resnet18', variables, width=m.width, stage_sizes=tuple(m.stage_sizes))
  sd = {f'module.{k}': v for k, v in sd.items()}
  sd['module.fc.weight'] = torch.zeros(12666, m.width * 8)       # MS-Celeb identities
  path = str(tmp_path / 'resnet18_msceleb.pth')
  torch.save({'state_dict': sd, 'epoch': 3}, path)
  with cfg.unlocked():
    cfg.cafe.resnet_weights = path
  state = trainer.Run(cfg).fresh_state()
  for col, got in (('params', state.params), ('batch_stats', state.batch_stats)):
    jax.tree.map(np.testing.assert_array_equal, checkpoint.to_numpy(got['mask_net']),
                 jax.tree.map(np.asarray, variables[col]))
  with cfg.unlocked():                                    # weights of another width: named keys
    cfg.model.width = 8
    cfg.cafe.clip_overrides.projection_dim = 16
  with pytest.raises(ValueError, match='does not fit resnet18'):
    trainer.Run(cfg).fresh_state()



def test_float16_clip_switch_gives_half_precision_features(tmp_path):
  """cafe.clip_dtype='float16' (the official CUDA run): the features are float16 values, close
  to the float32 ones but not equal, and cached under another key."""
  from ferjax.data import synthetic
  src = synthetic.SyntheticFaces('lab', 'test', 8, 48, 0)
  cfg32 = smoke(tmp_path)
  cfg16 = smoke(tmp_path, **{'cafe.clip_dtype': 'float16'})
  f32, d32, _ = cafe_features.features_for(cfg32, 'synthetic:lab:test', src, 0)
  f16, d16, _ = cafe_features.features_for(cfg16, 'synthetic:lab:test', src, 0)
  assert d32 != d16
  np.testing.assert_array_equal(f16, f16.astype(np.float16).astype(np.float32))
  assert not np.array_equal(f16, f32)
  np.testing.assert_allclose(f16, f32, rtol=0.05, atol=0.05 * np.abs(f32).max())
  rel = np.abs(f16 - f32).max() / np.abs(f32).max()
  assert 1e-5 < rel < 2e-2
