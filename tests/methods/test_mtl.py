"""Paper 004's multi-task model: parity with the PyTorch reference both ways (VGGFace2 ResNet-50,
ResNet-50 / linear and MobileViTv2 appearance branches), the losses against independent
computations, the stratified weak-model folds and a smoke training run."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import config as config_lib, methods, trainer
from ferjax.data import samplers
from ferjax.interop import mtl as mtl_interop
from ferjax.methods import mtl
from tests.conftest import REPO

torch = pytest.importorskip('torch')

from third_party.torch_reference import mtl as ref  # noqa: E402

SYNTH = os.path.join(REPO, 'configs', 'mtl_synthetic.py')
SMALL = dict(num_classes=6, num_heads=4, width=8, stage_sizes=(1, 1, 1, 1), reduce=(32, 16),
             shared=(16, 8), hidden=4)
# The spatial attention multiplies its input by an unnormalised channel sum: branch BN affines
# of 1 / C keep the heads of order 1, where 1e-4 is a meaningful tolerance.
_BRANCH = ('conv_3x3', 'conv_1x3', 'conv_3x1')


def _branch_bn(name: str) -> bool:
  return any(f'.{b}.1.' in name or f'/{b}_1/' in name for b in _BRANCH)


def spread_torch(model, seed):
  """All weights at a fan-in scale, BN affines and statistics random (as parity.randomize_bn)."""
  g = torch.Generator().manual_seed(seed)
  n = lambda s: torch.randn(s, generator=g)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim >= 2:
        p.copy_(n(p.shape) / math.sqrt(p[0].numel()))
      elif name.endswith('bias'):
        p.copy_(0.2 * n(p.shape))
      else:
        p.copy_(1 + 0.2 * n(p.shape))
      if _branch_bn(name):
        p.mul_(1.0 / p.shape[0])
    for name, b in model.named_buffers():
      if name.endswith('running_mean'):
        b.copy_(0.2 * n(b.shape))
      elif name.endswith('running_var'):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))
  return model


def spread_flax(dims, seed):
  """Flax variables drawn by the same rules, never seen by the torch side."""
  rng = np.random.default_rng(seed)

  def draw(path, a):
    keys = [getattr(k, 'key', '') for k in path]
    s = a.shape
    v = {'kernel': lambda: rng.normal(size=s) / math.sqrt(math.prod(s[:-1])),
         'bias': lambda: 0.2 * rng.normal(size=s), 'scale': lambda: 1 + 0.2 * rng.normal(size=s),
         'mean': lambda: 0.2 * rng.normal(size=s), 'var': lambda: 0.5 + rng.random(size=s),
         'centers': lambda: rng.normal(size=s)}[keys[-1]]()
    if keys[-1] in ('scale', 'bias') and _branch_bn('/' + '/'.join(keys)):
      v = v / s[0]
    return v.astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, mtl_interop.abstract_variables(**dims))


def torch_model(dims, **kw):
  if kw:
    raise TypeError(f'unexpected {sorted(kw)}')
  return ref.from_dims(**dims)


def torch_forward(model, x):
  with torch.no_grad():
    out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  return [o.numpy() for o in out[:3]]


_FAST = {'xla_backend_optimization_level': 0}   # a 3x faster CPU compile of the same graph


def flax_forward(dims, variables, x):
  apply = jax.jit(mtl_interop.build(**dims).apply).lower(variables, jnp.asarray(x))
  out = apply.compile(_FAST)(variables, jnp.asarray(x))
  return [np.asarray(out[k]) for k in ('logits', 'landmarks', 'heads')]


CASES = {
    'vggface2_conv': dict(SMALL),
    'resnet50_linear_logsoftmax': dict(SMALL, appearance='resnet50', appearance_head='linear',
                                       afn_logsoftmax=True),
    'mobilevit_conv': dict(SMALL, appearance='mobilevitv2_200',
                           mobilevit_channels=(16, 32, 64, 96, 128)),
}


@pytest.mark.parametrize('case', list(CASES))
def test_forward_parity_both_ways(case):
  dims = CASES[case]
  x = np.random.default_rng(1).normal(size=(3, 64, 64, 3)).astype(np.float32)
  torch.manual_seed(0)
  official = spread_torch(torch_model(dims), 0).eval()
  want = torch_forward(official, x)
  got = flax_forward(dims, mtl_interop.from_torch(official.state_dict(), **dims), x)
  err_in = [float(np.abs(g - w).max()) for g, w in zip(got, want)]
  ours = spread_flax(dims, 1)
  back = torch_model(dims).eval()
  back.load_state_dict(mtl_interop.to_torch(ours, **dims), strict=True)
  mine = flax_forward(dims, ours, x)
  err_out = [float(np.abs(g - w).max()) for g, w in zip(torch_forward(back, x), mine)]
  print(f'{case}: torch->ferjax {err_in}, ferjax->torch {err_out} (logits, landmarks, heads; '
        f'scales {[float(np.abs(w).max()) for w in want]})')
  assert max(err_in) <= 1e-4 and max(err_out) <= 1e-4, (err_in, err_out)
  assert min(float(np.abs(w).max()) for w in want + mine) > 0.1   # not trivially small
  # The hard-shared layers are one set of weights: no per-branch copies.
  assert not any('shared' in k and ('em' in k or 'lm' in k) for k in official.state_dict())


def test_conversion_is_strict():
  dims = CASES['vggface2_conv']
  sd = torch_model(dims).state_dict()
  with pytest.raises(Exception, match='missing'):
    mtl_interop.from_torch({k: v for k, v in sd.items() if k != 'encode2.weight'}, **dims)
  with pytest.raises(Exception, match='unexpected'):
    mtl_interop.from_torch({**sd, 'extra.weight': sd['fc.weight']}, **dims)


def test_code_class_weights():
  # The authors' 1 - n_c / sum n, in their alphabetical order (anger .. surprise).
  w = mtl.code_class_weights(('anger', 'disgust', 'fear', 'happy', 'sad', 'surprise'))
  np.testing.assert_allclose(w, [.934, .945, .961, .736, .478, .946], atol=6e-4)
  lsd6 = mtl.code_class_weights(('happy', 'sad', 'surprise', 'fear', 'disgust', 'anger'))
  np.testing.assert_array_equal(lsd6, w[[3, 4, 5, 2, 1, 0]])   # the run's class order
  with pytest.raises(ValueError, match='neutral'):
    mtl.code_class_weights(('neutral', 'happy'))


def test_landmark_loss_against_numpy():
  rng = np.random.default_rng(0)
  pred, target = rng.random((4, 68, 2)), rng.random((4, 68, 2))
  mask = np.array([1.0, 0.0, 1.0, 1.0])
  want = np.mean([np.mean((pred[i] - target[i]) ** 2) for i in (0, 2, 3)])
  got = mtl.landmark_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask))
  assert float(got) == pytest.approx(want, rel=1e-5)
  got = mtl.landmark_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask), 64.0)
  assert float(got) == pytest.approx(want * 64 ** 2, rel=1e-5)


def smoke_cfg(**overrides):
  cfg = config_lib.load(f'{SYNTH}:smoke')
  with cfg.unlocked():
    cfg.update_from_flattened_dict(overrides)
  return cfg


def test_training_loss_and_gradients_match_the_reference():
  """Train mode (batch statistics, the shared BN run twice): weighted CE + affinity +
  partition + pixel landmark MSE of the method equals the same terms computed in torch."""
  cfg = smoke_cfg(**{'mtl.class_weights': 'code', 'mtl.landmark_scale': 'pixel',
                     'model.width': 8, 'mtl.reduce': (32, 16), 'mtl.shared': (16, 8),
                     'mtl.channel_hidden': 4})
  dims = mtl_interop.config_dims(cfg)
  torch.manual_seed(2)
  official = spread_torch(torch_model(dims), 2).train()
  rng = np.random.default_rng(5)
  b, size = 6, cfg.data.image_size
  x = rng.normal(size=(b, size, size, 3)).astype(np.float32)
  label = np.array([0, 1, 5, 3, 3, 2])
  lms = rng.random((b, 68, 2)).astype(np.float32)
  centres = torch.randn(6, 16, requires_grad=True)
  logits, landmarks, heads, feat = official(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  from third_party.torch_reference import dan as dan_ref
  method = methods.build(cfg)
  weights = torch.from_numpy(mtl.code_class_weights(method.class_names))
  y = torch.from_numpy(label)
  want = (ref.weighted_ce(logits, y, weights) + dan_ref.affinity_loss(feat, centres, y)
          + dan_ref.partition_loss(heads)
          + ref.landmark_mse(landmarks * size, torch.from_numpy(lms) * size))
  want.backward()
  variables = mtl_interop.from_torch(official.state_dict(), centers=centres.detach(), **dims)
  batch = {'label': jnp.asarray(label), 'mask': jnp.ones(b), 'landmarks': jnp.asarray(lms),
           'landmarks_mask': jnp.ones(b)}

  def total(params):
    outputs, _ = method.model.apply({**variables, 'params': params}, jnp.asarray(x), train=True,
                                    mutable=['batch_stats'])
    return method.loss(outputs, batch, 0)[0]

  step = jax.jit(jax.value_and_grad(total)).lower(variables['params']).compile(_FAST)
  got, grads = step(variables['params'])
  assert float(got) == pytest.approx(want.item(), rel=1e-5)
  np.testing.assert_allclose(grads['centers'], centres.grad.numpy(), atol=1e-5, rtol=1e-4)
  np.testing.assert_allclose(grads['encode2']['kernel'], official.encode2.weight.grad.numpy().T,
                             atol=1e-4, rtol=1e-4)


def test_stratified_folds_partition_every_class():
  y = np.repeat(np.arange(6), [50, 41, 33, 12, 7, 3])
  folds = [samplers.stratified_fold(y, 5, m, seed=3) for m in range(5)]
  assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(y.size))   # a partition
  counts = np.array([np.bincount(y[f], minlength=6) for f in folds])          # (fold, class)
  want = np.bincount(y) / 5
  assert np.all(counts >= np.floor(want)) and np.all(counts <= np.ceil(want))
  sizes = [f.size for f in folds]
  assert max(sizes) - min(sizes) <= 1
  assert not np.array_equal(folds[0], samplers.stratified_fold(y, 5, 0, seed=4))


def test_configs():
  lsd = config_lib.load(os.path.join(REPO, 'configs', 'mtl_lsd.py') + ':member=2')
  assert (lsd.method, lsd.data.class_space, lsd.batch_size, lsd.train.epochs) == (
      'mtl', 'lsd6', 128, 12)
  assert lsd.optim.name == 'adam' and lsd.optim.lr == 1e-4 and lsd.optim.decay_rate == 0.6
  assert lsd.train.best_metric == 'lsd:val/macro_f1'
  assert lsd.data.bagging_fraction == 0.2 and lsd.data.bagging_stratified
  assert lsd.mtl.reduce == (1024, 512) and lsd.mtl.shared == (256, 128)
  cpu = config_lib.load(f'{SYNTH}:cpu,train=wild,val=lab')
  assert cpu.data.train == 'synthetic:wild:train' and cpu.data.eval_sets.startswith(
      'synthetic:lab:val')


def test_smoke_training_run_and_ensemble(tmp_path):
  # Mix-up (one forward pass): Mix-augment's three passes through two ResNet-50s triple the
  # CPU compile; the step itself is tested for every method in tests/test_mix_step.py.
  cfg = smoke_cfg(**{'augment.mix': 'mixup'})
  run = tmp_path / 'members' / 'a'
  reports = trainer.train(cfg, str(run))
  report = reports['synthetic:lab:val']
  assert 0.0 <= report['macro_f1'] <= 100.0
  lines = (run / 'metrics.jsonl').read_text()
  for key in ('loss_ce', 'loss_affinity', 'loss_partition', 'loss_landmarks'):
    assert key in lines
  # The study's ensemble path: a run voting with itself scores as the run alone, by either vote.
  from ferjax.studies import ensembles
  alone = ensembles.evaluate(str(tmp_path), 'alone', ['a'], 'probs')
  for vote in ('probs', 'logits'):
    assert ensembles.evaluate(str(tmp_path), 'twice', ['a', 'a'], vote) == alone
  assert (tmp_path / 'eval' / 'twice-logits' / 'results.json').exists()


def test_ensemble_study_plan():
  from ferjax.studies import ensembles
  assert ensembles.member_args('weak-ma-mvit-3') == (
      'mix=mix_augment,appearance=mobilevitv2_200,member=3')
  assert ensembles.member_args('strong-mu-dino') == 'mix=mixup,appearance=resnet50'
  assert ensembles.ensemble_members('best3', 2) == [
      'strong-mu-dino', 'weak-ma-vgg-0', 'weak-ma-vgg-1', 'weak-mu-mvit-0', 'weak-mu-mvit-1']
  names = ensembles.plan({2, 3}, list(ensembles.ENSEMBLES), 5)
  assert len(names) == len(set(names)) == 4 + 6 * 5   # every ensemble reuses table members
  assert ensembles.plan(set(), ['mu_mvit_weak'], 5) == [f'weak-mu-mvit-{i}' for i in range(5)]
  assert ensembles.ensemble_members('x:strong-ma-vgg+weak-mu-dino', 2) == [
      'strong-ma-vgg', 'weak-mu-dino-0', 'weak-mu-dino-1']
  with pytest.raises(Exception, match='strong-MIX-APP'):
    ensembles.parse_ensemble('x:strong-mx-vgg')


def test_mix_loss_is_the_ce_alone_and_switches_off():
  rng = np.random.default_rng(0)
  b = 5
  outputs = {'logits': jnp.asarray(rng.normal(size=(b, 6)), jnp.float32),
             'embedding': jnp.asarray(rng.normal(size=(b, 16)), jnp.float32),
             'centers': jnp.asarray(rng.normal(size=(6, 16)), jnp.float32),
             'heads': jnp.asarray(rng.normal(size=(b, 2, 16)), jnp.float32),
             'landmarks': jnp.asarray(rng.random((b, 68, 2)), jnp.float32)}
  batch = {'label': jnp.array([0, 1, 2, 3, -1]), 'mask': jnp.ones(b),
           'landmarks': jnp.asarray(rng.random((b, 68, 2)), jnp.float32),
           'landmarks_mask': jnp.ones(b)}
  method = methods.build(smoke_cfg())
  total, metrics = method.loss(outputs, batch, 0)
  mixed, _ = method.mix_loss(outputs, batch, 0)
  assert float(mixed) == pytest.approx(float(metrics['loss_ce']), rel=1e-6)
  assert float(total) > float(mixed) + 0.1   # the auxiliary terms are not in the mixed pass
  assert methods.build(smoke_cfg(**{'mtl.aux_loss': 'mixed'})).mix_loss is None
