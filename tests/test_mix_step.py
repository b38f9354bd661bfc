"""Mix-up and Mix-augment inside the train step, against the criterion computed by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import sharding, trainer
from ferjax.data import augment, pipeline
from tests.test_train import smoke


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _criterion(outputs, labels, va, va_weight):
  """The baseline's loss in numpy: mean CE + va_weight * mean squared V/A error."""
  logits = np.asarray(outputs['logits'], np.float64)
  ce = -_log_softmax(logits)[np.arange(len(labels)), labels].mean()
  return ce + va_weight * ((np.asarray(outputs['va'], np.float64) - va) ** 2).mean()


@pytest.mark.parametrize('mode', ['mixup', 'mix_augment'])
def test_mixed_loss_matches_the_reference_criterion(mode):
  cfg = smoke(**{'augment.mix': mode, 'augment.mix_alpha': 0.4})
  run = trainer.Run(cfg)
  state = run.fresh_state()
  variables = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  local = next(iter(pipeline.train_dataset(cfg, cfg.seed)))
  _, metrics = run.steps.train(state, sharding.to_global(local, run.mesh))   # donates state

  batch = augment.augment_batch(jax.tree.map(jnp.asarray, local), cfg.seed, 0, cfg.augment)
  mixed, lam, perm = augment.mix(batch['image'], cfg.seed, 0, 0.4)
  lam, perm = float(lam), np.asarray(perm)
  assert 0.0 < lam < 1.0 and sorted(perm) == list(range(len(perm)))

  def forward(images):
    out, _ = run.method.model.apply(variables, images, train=True, mutable=['batch_stats'])
    return out

  y, va, w = np.asarray(local['label']), np.asarray(local['va']), cfg.loss.va_weight
  out = forward(mixed)
  expected = lam * _criterion(out, y, va, w) + (1 - lam) * _criterion(out, y[perm], va[perm], w)
  if mode == 'mix_augment':
    expected += _criterion(forward(batch['image']), y, va, w)
    expected += _criterion(forward(batch['image'][perm]), y[perm], va[perm], w)
  np.testing.assert_allclose(float(metrics['loss']), expected, rtol=2e-5)


def test_mix_with_cached_model_inputs_is_refused():
  from ferjax.methods import Method
  from ferjax import steps
  cfg = smoke(**{'augment.mix': 'mixup'})
  base = trainer.Run(smoke()).method
  method = Method('cached', base.model, base.loss, base.predict, base.class_names,
                  model_inputs=lambda b: {})
  with pytest.raises(ValueError, match='cannot mix the per-example inputs'):
    steps.build(method, None, None, cfg, None)


def test_flip_permutes_68_landmarks_to_their_mirror_names():
  perm = np.array(augment.FLIP_68)
  np.testing.assert_array_equal(perm[perm], np.arange(68))          # an involution
  assert all(perm[i] == i for i in (27, 28, 29, 30, 33, 51, 57, 62, 66))
  assert perm[36] == 45 and perm[48] == 54 and perm[0] == 16
  # Points symmetric about the vertical centre line: a forced flip keeps each named point
  # where its own mirror partner was, so the set of positions is unchanged and names follow.
  rng = np.random.default_rng(0)
  x = rng.uniform(0.1, 0.4, 68)
  pts = np.stack([x, rng.uniform(0.2, 0.8, 68)], 1).astype(np.float32)
  pts[perm == np.arange(68), 0] = 0.5             # self-mirrored points lie on the centre line
  for a, b in enumerate(perm):
    if a < b:
      pts[b] = [1.0 - pts[a, 0], pts[a, 1]]
  cfg = dict(flip=True, crop_pad=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0,
             mean=(0.0,) * 3, std=(1.0,) * 3)
  import ml_collections
  cfg = ml_collections.ConfigDict(cfg)
  n = 8
  batch = {'image': jnp.zeros((n, 33, 33, 3), jnp.uint8), 'index': jnp.arange(n),
           'landmarks': jnp.asarray(np.repeat(pts[None], n, 0))}
  lm = np.asarray(augment.augment_batch(batch, 0, 0, cfg)['landmarks'])
  # Flipped or not, a symmetric configuration maps back onto itself point by point.
  np.testing.assert_allclose(lm, np.repeat(pts[None], n, 0), atol=1e-4)
  # An asymmetric one tells the two cases apart: flipped examples equal the mirrored points
  # read through the permutation.
  pts2 = rng.uniform(0.2, 0.8, (68, 2)).astype(np.float32)
  batch['landmarks'] = jnp.asarray(np.repeat(pts2[None], n, 0))
  lm = np.asarray(augment.augment_batch(batch, 0, 0, cfg)['landmarks'])
  mirrored = np.stack([1.0 - pts2[:, 0], pts2[:, 1]], 1)[perm]
  kinds = [np.allclose(l, pts2, atol=1e-4) or 2 * np.allclose(l, mirrored, atol=1e-4)
           for l in lm]
  assert set(kinds) == {True, 2}                  # both occurred, nothing else did


def test_flip_68_equals_the_mirror_of_the_synthetic_face_template():
  # An independent construction of the iBUG layout: the renderer's frontal faces are symmetric,
  # so each landmark's mirror image lands on its partner. Expressions keep the lips apart (a
  # closed neutral mouth puts inner-lip points on top of each other).
  import dataclasses
  from ferjax.data import synthetic, synthetic_geometry as geometry
  for label in range(7):
    p = synthetic.sample_params(np.random.default_rng(1), 'lab', label=label)
    p = dataclasses.replace(p, pose=np.array([0, 0, 0, p.pose[3], 0, 0], np.float32))
    coef, _ = geometry._coefs(p, False)
    xy = (coef @ geometry.TEMPLATE.b).reshape(2, -1).T[geometry.LANDMARK_ROWS]
    mirrored = xy * [-1.0, 1.0]
    nearest = np.argmin(((mirrored[:, None] - xy[None]) ** 2).sum(-1), 1)
    np.testing.assert_array_equal(nearest, np.array(augment.FLIP_68))


def test_mix_augment_scores_the_mixed_pass_with_the_method_mix_loss():
  """Method.mix_loss (paper 004: auxiliary terms only on the clean passes): the mixed pass gets
  it against both label sets, the two clean passes the full loss."""
  from ferjax import losses, steps
  from ferjax.methods import Method
  cfg = smoke(**{'augment.mix': 'mix_augment', 'augment.mix_alpha': 0.4})
  run = trainer.Run(cfg)
  base = run.method

  def ce_only(outputs, batch, step):
    ce = losses.cross_entropy(outputs['logits'], batch['label'], mask=batch['mask'])
    return ce, {'loss_ce': ce}

  def full(outputs, batch, step):
    total, metrics = base.loss(outputs, batch, step)
    return total, {'loss_ce': total}

  method = Method('mixed_ce', base.model, full, base.predict, base.class_names,
                  mix_loss=ce_only)
  built = steps.build(method, run.tx, run.schedule, cfg, run.mesh)
  state = built.init(jax.random.key(cfg.seed))
  variables = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  local = next(iter(pipeline.train_dataset(cfg, cfg.seed)))
  _, metrics = built.train(state, sharding.to_global(local, run.mesh))

  batch = augment.augment_batch(jax.tree.map(jnp.asarray, local), cfg.seed, 0, cfg.augment)
  mixed, lam, perm = augment.mix(batch['image'], cfg.seed, 0, 0.4)
  lam, perm = float(lam), np.asarray(perm)

  def forward(images):
    out, _ = base.model.apply(variables, images, train=True, mutable=['batch_stats'])
    return out

  y, va, w = np.asarray(local['label']), np.asarray(local['va']), cfg.loss.va_weight
  assert w > 0   # otherwise the full and the CE-only loss would not differ
  out = forward(mixed)
  expected = lam * _criterion(out, y, va, 0.0) + (1 - lam) * _criterion(out, y[perm], va, 0.0)
  expected += _criterion(forward(batch['image']), y, va, w)
  expected += _criterion(forward(batch['image'][perm]), y[perm], va[perm], w)
  np.testing.assert_allclose(float(metrics['loss']), expected, rtol=2e-5)
