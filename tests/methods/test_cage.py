"""CAGE (ferjax.methods.cage): losses against torch/numpy, Table 4, heads, export, training.

The official losses are written out here in torch, independently of ferjax.losses: CCCLoss with
torch.var (unbiased) and an (n - 1) covariance, nn.CrossEntropyLoss(weight), nn.MSELoss and
nn.BCEWithLogitsLoss(pos_weight), combined as models/*/train.py and EMOTIC_Model_Discrete+VAD.py
combine them.
"""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import checkpoint, config as config_lib, losses, methods, metrics, trainer
from ferjax.data import samplers
from ferjax.methods import cage
from ferjax.steps import dummy_input
from tests.conftest import REPO

torch = pytest.importorskip('torch')

SYNTH = os.path.join(REPO, 'configs', 'cage_synthetic.py')
# AffectNet training counts per canonical class (the 287,651 rows of the 224 px release).
AFFECTNET_TRAIN = np.array([74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750])


def load(path, arg='', **overrides):
  cfg = config_lib.load(f'{path}:{arg}' if arg else path)
  with cfg.unlocked():
    cfg.update_from_flattened_dict(overrides)
  return cfg


def t(a):
  return torch.from_numpy(np.asarray(a, np.float32))


def official_ccc_loss(x, y):
  """The official CCCLoss (-CCC), unbiased variances and covariance."""
  xm, ym = x.mean(0), y.mean(0)
  cov = torch.sum((x - xm) * (y - ym)) / (x.shape[0] - 1)
  return -(2 * cov / (x.var(0) + y.var(0) + (xm - ym) ** 2))


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('unbiased', [False, True])
def test_ccc_matches_independent_numpy(unbiased):
  rng = np.random.default_rng(0)
  y = rng.uniform(-1, 1, 50)
  x = 0.6 * y + 0.2 + rng.normal(0, 0.3, 50)
  ddof = 1 if unbiased else 0
  cov = np.cov(x, y, ddof=ddof)[0, 1]
  want = 2 * cov / (x.var(ddof=ddof) + y.var(ddof=ddof) + (x.mean() - y.mean()) ** 2)
  got = float(losses.ccc(jnp.asarray(x), jnp.asarray(y), unbiased=unbiased))
  assert got == pytest.approx(want, rel=1e-5)
  # The two conventions differ only through the (mean_x - mean_y)^2 term's relative weight.
  other = float(losses.ccc(jnp.asarray(x), jnp.asarray(y), unbiased=not unbiased))
  assert abs(other - got) > 1e-4
  if unbiased:
    assert got == pytest.approx(-float(official_ccc_loss(t(x), t(y))), rel=1e-5)


def _va_batch(n=32, seed=1):
  rng = np.random.default_rng(seed)
  va = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
  pred = (0.5 * va + rng.normal(0, 0.3, (n, 2)) + 0.1).astype(np.float32)
  label = rng.integers(0, 8, n).astype(np.int32)
  logits = rng.normal(0, 1.5, (n, 8)).astype(np.float32)
  batch = {'label': label, 'va': va, 'va_mask': np.ones(n, np.float32),
           'mask': np.ones(n, np.float32)}
  return batch, pred, logits


def test_va_loss_is_the_official_ccc_plus_3_mse():
  method = methods.build(load(SYNTH, 'smoke,version=va'))
  batch, pred, _ = _va_batch()
  loss, _ = method.loss({'va': jnp.asarray(pred)}, jax.tree.map(jnp.asarray, batch), 0)
  mse = torch.nn.MSELoss()
  p, y = t(pred), t(batch['va'])
  want = (3 * mse(p[:, 0], y[:, 0]) + 3 * mse(p[:, 1], y[:, 1])
          + official_ccc_loss(p[:, 0], y[:, 0]) + official_ccc_loss(p[:, 1], y[:, 1]))
  assert float(loss) == pytest.approx(float(want), rel=1e-5, abs=1e-6)


def test_combined_loss_is_weighted_ce_plus_5_mse():
  cfg = load(SYNTH, 'smoke', **{'cage.class_weights': 'table4'})
  method = methods.build(cfg)
  batch, pred, logits = _va_batch()
  outputs = {'logits': jnp.asarray(logits), 'va': jnp.asarray(pred)}
  loss, m = method.loss(outputs, jax.tree.map(jnp.asarray, batch), 0)
  ce = torch.nn.CrossEntropyLoss(weight=t(cage.TABLE4_AFFECTNET8))
  want = ce(t(logits), torch.from_numpy(batch['label']).long()) + 5 * torch.nn.MSELoss()(
      t(pred), t(batch['va']))
  assert float(loss) == pytest.approx(float(want), rel=1e-5)
  assert float(m['accuracy']) == pytest.approx(100 * np.mean(logits.argmax(-1) == batch['label']))


def test_table4_weights_are_normalised_inverse_frequencies():
  cfg8 = load(os.path.join(REPO, 'configs', 'cage_affectnet8.py'), 'smoke')
  cfg7 = load(os.path.join(REPO, 'configs', 'cage_affectnet7.py'), 'smoke')
  np.testing.assert_array_equal(cage.class_weights(cfg8), np.float32(cage.TABLE4_AFFECTNET8))
  np.testing.assert_array_equal(cage.class_weights(cfg7), np.float32(cage.TABLE4_AFFECTNET7))
  assert sum(cage.TABLE4_AFFECTNET8) == pytest.approx(1.0, abs=2e-6)
  labels = np.repeat(np.arange(8), AFFECTNET_TRAIN)
  w7 = samplers.class_weights(labels[labels < 7], 7, 'inverse', 'classes_sum')
  np.testing.assert_allclose(w7, cage.TABLE4_AFFECTNET7, atol=1e-6)   # exact to 6 decimals
  w8 = samplers.class_weights(labels, 8, 'inverse', 'classes_sum')
  np.testing.assert_allclose(w8, cage.TABLE4_AFFECTNET8, rtol=0.015)  # within 1.5%
  with pytest.raises(ValueError, match="affectnet8 and affectnet7 class spaces, not 'rafdb7'"):
    cage.class_weights(load(SYNTH, 'smoke', **{'cage.class_weights': 'table4',
                                               'data.class_space': 'rafdb7'}))


def test_emotic_loss_is_pos_weighted_bce_plus_5_mse():
  """On synthetic tensors: the pipeline does not pass 'multilabel' / 'vad' on yet."""
  rng = np.random.default_rng(2)
  counts = rng.integers(50, 5000, 26)
  cfg = load(os.path.join(REPO, 'configs', 'cage_emotic.py'), 'smoke',
             **{'cage.pos_counts': tuple(int(c) for c in counts)})
  method = methods.build(cfg)
  n = 16
  target = (rng.random((n, 26)) < 0.15).astype(np.float32)
  logits = rng.normal(0, 2, (n, 26)).astype(np.float32)
  vad = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
  pred = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
  batch = {'multilabel': target, 'vad': vad, 'vad_mask': np.ones(n, np.float32),
           'va_mask': np.ones(n, np.float32), 'label': -np.ones(n, np.int32),
           'mask': np.ones(n, np.float32)}
  loss, _ = method.loss({'logits': jnp.asarray(logits), 'vad': jnp.asarray(pred)},
                        jax.tree.map(jnp.asarray, batch), 0)
  pw = (cage.EMOTIC_TRAIN_SIZE - counts) / counts
  bce = torch.nn.BCEWithLogitsLoss(pos_weight=t(pw))
  want = bce(t(logits), t(target)) + 5 * torch.nn.MSELoss()(t(pred), t(vad))
  assert float(loss) == pytest.approx(float(want), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Heads and export
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('config,arg,head,out', [
    ('cage_affectnet8.py', 'smoke', 'classifier_5', 10),
    ('cage_affectnet7.py', 'smoke', 'classifier_5', 9),
    ('cage_affectnet8.py', 'smoke,version=discrete', 'classifier_5', 8),
    ('cage_affectnet8.py', 'smoke,version=va', 'classifier_6', 2),
    ('cage_emotic.py', 'smoke', 'classifier_5', 29),
    ('cage_affectnet8.py', 'smoke,backbone=efficientnet_v2_s', 'classifier_1', 10),
])
def test_head_shapes(config, arg, head, out):
  cfg = load(os.path.join(REPO, 'configs', config), arg)
  method = methods.build(cfg)
  variables = jax.eval_shape(lambda: method.model.init(jax.random.key(0), dummy_input(cfg)))
  params = variables['params']
  assert params[head]['kernel'].shape[-1] == out
  assert ('bias' in params[head]) == (head == 'classifier_1')   # MaxViT's last Linear: no bias
  x = jax.ShapeDtypeStruct((4,) + dummy_input(cfg).shape[1:], jnp.float32)
  outs = jax.eval_shape(method.model.apply, variables, x)
  c = cfg.model.num_classes
  if 'va' in arg:
    assert 'probs' not in outs and outs['va'].shape == (4, 2)
  elif 'emotic' in config:
    assert outs['multilabel'].shape == (4, 26) and outs['vad'].shape == (4, 3)
  elif 'discrete' in arg:
    assert outs['probs'].shape == (4, c) and 'va' not in outs
  else:
    assert outs['probs'].shape == (4, c) and outs['va'].shape == (4, 2)


def _official_maxvit(cfg, outputs, va_head=False):
  """torchvision MaxVit with the official CAGE classifier (reduced by cfg.cage.maxvit)."""
  from torchvision.models import maxvit as tv_maxvit
  mv = dict(cfg.cage.maxvit)
  s = cfg.data.image_size
  model = tv_maxvit.MaxVit(input_size=(s, s), stem_channels=mv['stem_channels'],
                           partition_size=mv['partition_size'],
                           block_channels=list(mv['block_channels']),
                           block_layers=list(mv['block_layers']), head_dim=mv['head_dim'],
                           expansion_ratio=mv.get('expansion_ratio', 4.0),
                           stochastic_depth_prob=0.0, num_classes=1000)
  d = mv['block_channels'][-1]
  nn = torch.nn
  tail = [nn.Dropout(0.3)] if va_head else []
  model.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(d),
                                   nn.Linear(d, d), nn.Tanh(), *tail,
                                   nn.Linear(d, outputs, bias=False))
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():   # O(1) outputs, BatchNorm statistics away from 0 / 1
    for name, p in model.named_parameters():
      if name.endswith('relative_position_bias_table'):
        p.copy_(torch.randn(p.shape, generator=g))
      elif p.ndim >= 2:
        p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
      else:
        p.copy_((1.0 if name.endswith('weight') else 0.0) + 0.2 * torch.randn(p.shape,
                                                                                generator=g))
    for name, b in model.named_buffers():
      if name.endswith('running_mean'):
        b.copy_(0.2 * torch.randn(b.shape, generator=g))
      elif name.endswith('running_var'):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))
  return model.eval()


def test_export_roundtrip_against_the_official_torch_model():
  from ferjax.interop import cage as cage_interop
  cfg = load(SYNTH, 'cpu,version=combined')       # the reduced MaxViT, 48 px, 3 x 3 partitions
  ref = _official_maxvit(cfg, 10)
  s = cfg.data.image_size
  x = np.random.default_rng(0).normal(size=(2, s, s, 3)).astype(np.float32)
  with torch.no_grad():
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  variables = cage_interop.from_torch(cfg, ref.state_dict())
  model = cage.build_model(cfg)
  apply = jax.jit(lambda v, x: model.apply(v, x)['head']).lower(variables, x).compile(
      {'xla_backend_optimization_level': 0})
  got = np.asarray(apply(variables, x))
  assert np.abs(want).max() > 0.1
  np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)
  back = cage_interop.to_numpy_state_dict(cfg, variables)
  sd = ref.state_dict()
  assert sorted(back) == sorted(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)


def test_va_and_efficientnet_heads_load_strictly_into_the_official_models():
  from torchvision.models import efficientnet_v2_s
  from ferjax.interop import cage as cage_interop
  zeros = lambda cfg: jax.tree.map(  # noqa: E731
      lambda a: np.zeros(a.shape, np.float32),
      jax.eval_shape(lambda: cage.build_model(cfg).init(jax.random.key(0), dummy_input(cfg))))
  cfg = load(SYNTH, 'cpu,version=va')
  ref = _official_maxvit(cfg, 2, va_head=True)
  ref.load_state_dict(cage_interop.to_torch(cfg, zeros(cfg)), strict=True)
  cfg = load(os.path.join(REPO, 'configs', 'cage_affectnet8.py'),
             'smoke,backbone=efficientnet_v2_s')
  eff = efficientnet_v2_s()
  eff.classifier[1] = torch.nn.Linear(1280, 10)
  eff.load_state_dict(cage_interop.to_torch(cfg, zeros(cfg)), strict=True)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_concat_official_ccc_is_the_mixed_ddof_formula():
  rng = np.random.default_rng(3)
  va = rng.uniform(-1, 1, (40, 2))
  pred = 0.7 * va + rng.normal(0, 0.2, (40, 2))
  got = metrics.concat_regression_official(va, pred)
  tt, pp = list(va[:, 0]) + list(va[:, 1]), list(pred[:, 0]) + list(pred[:, 1])
  # models/evaluation.py: 2 np.cov(...)[0, 1] / (np.var + np.var + mean difference^2).
  want = 2 * np.cov(tt, pp)[0, 1] / (np.var(tt) + np.var(pp) + (np.mean(tt) - np.mean(pp)) ** 2)
  assert got['ccc'] == pytest.approx(want, rel=1e-12)
  assert got['rmse'] == pytest.approx(np.sqrt(np.mean((np.array(tt) - pp) ** 2)))
  assert got['mae'] == pytest.approx(np.mean(np.abs(np.array(tt) - pp)))


def test_abs_error_curve_and_multilabel_report_by_hand():
  t_ = np.array([[0.0, 0.0], [0.0, 0.5], [0.0, -1.0], [1.0, 0.2]])
  p_ = np.array([[0.1, 0.0], [0.35, 0.5], [0.0, 0.0], [0.0, 0.2]])
  curve = metrics.abs_error_curve(t_, p_, bounds=[0.0, 0.1, 0.3, 1.0])
  assert curve['valence'] == [0.25, 0.5, 0.5, 1.0]
  assert curve['arousal'] == [0.75, 0.75, 0.75, 1.0]
  targets = np.array([[1, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
  scores = np.array([[.9, .8, .1, .0], [.1, .2, .3, .9], [.9, .1, .8, .7], [.5, .5, .5, .5]])
  rep = metrics.multilabel_report(targets, scores, list('abcd'), k=2)
  assert rep['n'] == 3                            # the row with no label is left out
  assert rep['top2_accuracy'] == pytest.approx(2 / 3)
  assert rep['precision_at_2'] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
  assert rep['per_class_ap']['b'] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------
# Training: each version through ferjax.trainer.train, VA from the combined run
# ---------------------------------------------------------------------------------------------


def _smoke(version, **overrides):
  return load(SYNTH, f'smoke,version={version}', **{
      'train.max_steps': 3, 'data.eval_examples': 24, 'data.eval_sets': 'synthetic:lab:test',
      'mesh.data': 1,
      **overrides})


@pytest.fixture(scope='module')
def combined_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('cage') / 'combined')
  reports = trainer.train(_smoke('combined'), workdir)
  return workdir, reports


def test_train_combined_writes_metrics_and_pictures(combined_run):
  workdir, reports = combined_run
  r = reports['synthetic:lab:test']
  assert r['n'] == 24 and 'weighted_precision' in r and 'va' in r
  assert 0 <= r['va_concat_official']['rmse'] and len(r['va_abs_error']['valence']) == 21
  out = os.path.join(workdir, 'eval', 'step_3')
  for name in ('confusion_lab_test.png', 'va_scatter_lab_test.png', 'va_abs_error_lab_test.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0
  json.loads(open(os.path.join(out, 'results.json')).read())


def test_train_discrete(tmp_path):
  reports = trainer.train(_smoke('discrete'), str(tmp_path))
  r = reports['synthetic:lab:test']
  assert 'va' not in r and r['n'] == 24


def test_va_starts_from_combined_without_its_head(combined_run, tmp_path, capfd):
  workdir, _ = combined_run
  cfg = _smoke('va', **{'train.init_from': workdir})
  assert cfg.train.init_exclude == 'classifier_*'
  mngr = checkpoint.Manager(workdir, read_only=True)
  saved = mngr.restore(trainer.Run(config_lib.reconcile(mngr.config())).abstract)['params']
  run = trainer.Run(cfg)
  with pytest.raises(checkpoint.IncompatibleCheckpoint, match='classifier_6'):
    run.restore_params(mngr)                      # a changed head never loads silently
  with pytest.raises(ValueError, match='match no parameter'):
    run.restore_params(mngr, exclude=['classifier_9'])
  fresh = run.fresh_state().params
  state = run.restore_params(mngr, exclude=['classifier_*'])
  assert 'classifier_5' in capfd.readouterr().err  # printed: in the checkpoint but not used
  jax.tree.map(np.testing.assert_array_equal, saved['backbone'], state.params['backbone'])
  for name in ('classifier_2', 'classifier_3', 'classifier_6'):
    jax.tree.map(np.testing.assert_array_equal, fresh[name], state.params[name])
  reports = trainer.train(cfg, str(tmp_path))
  r = reports['synthetic:lab:test']
  assert 'accuracy' not in r and 'va' in r and r['n'] == 24
  out = tmp_path / 'eval' / 'step_3'
  assert (out / 'va_scatter_lab_test.png').exists()
  assert not (out / 'confusion_lab_test.png').exists()


@pytest.fixture(scope='module')
def emotic_dir(tmp_path_factory):
  """A raw EMOTIC CSV tree (12 body crops per split) prepared as a TFDS dataset."""
  from ferjax.data import prepare
  from ferjax.data.readers import emotic
  from tests.data.readers import emotic_affwild2_trees
  rng = np.random.default_rng(0)
  tmp = tmp_path_factory.mktemp('emotic')

  def rows(n):
    return [('mscoco/images', f'{i}.jpg', (0, 0, 8 - i % 3, 8),
             [str(c) for c in rng.choice(emotic.CATEGORIES, 1 + i % 3, replace=False)],
             tuple(float(v) for v in rng.uniform(1, 10, 3).round(1))) for i in range(n)]

  emotic_affwild2_trees.emotic_tree(tmp / 'raw', {s: rows(12) for s in ('train', 'val', 'test')})
  data_dir = str(tmp / 'tfds')
  prepare.prepare('emotic', str(tmp / 'raw'), data_dir, progress=False)
  return data_dir


def test_emotic_end_to_end_from_raw_files(emotic_dir, tmp_path, capfd):
  """Raw EMOTIC CSV tree -> prepare -> CAGE training: the batch carries 'multilabel' [B, 26]
  and 'vad' [B, 3], the BCE's pos_weight is counted on the training split, and evaluation
  reports top-3 accuracy, mean AP and per-dimension V/A/D errors."""
  from ferjax.data import pipeline
  data_dir = emotic_dir
  cfg = load(os.path.join(REPO, 'configs', 'cage_emotic.py'), 'smoke', **{
      'data.train': f'emotic:train@{data_dir}', 'data.eval_sets': f'emotic:test@{data_dir}',
      'batch_size': 8, 'eval_batch_size': 8, 'train.max_steps': 2, 'mesh.data': 1})
  batch = next(iter(pipeline.train_dataset(cfg, cfg.seed)))
  assert batch['multilabel'].shape == (8, 26) and batch['vad'].shape == (8, 3)
  assert batch['vad_mask'].min() == 1.0 and np.abs(batch['vad']).max() <= 1.0
  reports = trainer.train(cfg, str(tmp_path / 'run'))
  assert 'pos_weight from 12 training examples' in capfd.readouterr().err
  r = reports[f'emotic:test@{data_dir}']
  assert r['multilabel']['n'] == 12 and 0.0 <= r['multilabel']['top3_accuracy'] <= 100.0
  assert set(r['vad']) >= {'valence', 'arousal', 'dominance'}


def test_cross_dataset_va_of_an_affectnet_style_model_on_emotic(combined_run, emotic_dir,
                                                                tmp_path):
  """A combined (classes + V/A) model scored on another dataset's valence/arousal: EMOTIC's
  1..10 ratings arrive mapped to [-1, 1] by its reader, and the report has V/A errors for all
  12 crops although none has an expression class."""
  from ferjax import evaluate, inference
  workdir, _ = combined_run
  spec = f'emotic:test@{emotic_dir}'
  reports = evaluate.evaluate(inference.load(workdir), [spec], str(tmp_path))
  r = reports[spec]
  assert r['va']['n'] == 12 and np.isfinite(r['va']['arousal']['ccc'])
  assert r['n'] == 12 and 'accuracy' not in r      # no expression label: no 0-of-0 accuracy


def test_float16_va_targets_switch_matches_the_official_half_precision_targets():
  """cage.va_target_dtype='float16': the loss is the official one on targets stored as
  torch.float16; the default float32 loss differs from it."""
  batch, pred, _ = _va_batch(seed=3)
  half = methods.build(load(SYNTH, 'smoke,version=va', **{'cage.va_target_dtype': 'float16'}))
  full = methods.build(load(SYNTH, 'smoke,version=va'))
  args = ({'va': jnp.asarray(pred)}, jax.tree.map(jnp.asarray, batch), 0)
  mse = torch.nn.MSELoss()
  p, y = t(pred), t(batch['va']).half().float()
  want = (3 * mse(p[:, 0], y[:, 0]) + 3 * mse(p[:, 1], y[:, 1])
          + official_ccc_loss(p[:, 0], y[:, 0]) + official_ccc_loss(p[:, 1], y[:, 1]))
  got_half, got_full = float(half.loss(*args)[0]), float(full.loss(*args)[0])
  assert got_half == pytest.approx(float(want), rel=1e-6, abs=1e-7)
  assert 1e-7 < abs(got_half - got_full) < 1e-2
