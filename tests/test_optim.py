"""Tests for ferjax.optim: schedules vs hand formulas, updates vs torch rules.

The torch.optim update rules are written out by hand in numpy (torch is not
installed); each test applies optax updates to a tiny parameter tree and
compares with that hand computation.
"""

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ferjax import optim

SPE = 10      # steps per epoch
TOTAL = 100   # total steps


def make_cfg(**overrides):
  cfg = ml_collections.ConfigDict(dict(
    name='adam', lr=0.1, weight_decay=0.0, momentum=0.9, nesterov=False,
    b1=0.9, b2=0.999, eps=1e-8, schedule='constant', decay_rate=0.9,
    decay_per='epoch', step_epochs=(3, 6), warmup_epochs=0.0,
    min_lr=0.0, clip_norm=0.0))
  cfg.update(overrides)
  return cfg


def lr_at(cfg, step, spe=SPE, total=TOTAL):
  return float(optim.build_schedule(cfg, spe, total)(step))


# --------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------


def test_constant():
  cfg = make_cfg()
  assert lr_at(cfg, 0) == pytest.approx(0.1)
  assert lr_at(cfg, 99) == pytest.approx(0.1)


def test_exponential_per_epoch_is_staircase():
  cfg = make_cfg(schedule='exponential', decay_per='epoch')
  assert lr_at(cfg, SPE * 3) == pytest.approx(0.1 * 0.9 ** 3, rel=1e-6)
  # Constant within an epoch (torch ExponentialLR stepped per epoch).
  assert lr_at(cfg, SPE * 3 + SPE - 1) == pytest.approx(0.1 * 0.9 ** 3, rel=1e-6)
  assert lr_at(cfg, SPE - 1) == pytest.approx(0.1, rel=1e-6)


def test_exponential_per_step_is_smooth():
  cfg = make_cfg(schedule='exponential', decay_per='step')
  assert lr_at(cfg, 15) == pytest.approx(0.1 * 0.9 ** 1.5, rel=1e-6)


def test_cosine_start_mid_end():
  cfg = make_cfg(schedule='cosine', min_lr=0.01)
  assert lr_at(cfg, 0) == pytest.approx(0.1, rel=1e-6)
  assert lr_at(cfg, TOTAL // 2) == pytest.approx(0.055, rel=1e-6)
  assert lr_at(cfg, TOTAL) == pytest.approx(0.01, rel=1e-6)
  assert lr_at(cfg, TOTAL + 50) == pytest.approx(0.01, rel=1e-6)
  t = 30
  hand = 0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * t / TOTAL))
  assert lr_at(cfg, t) == pytest.approx(hand, rel=1e-6)


def test_warmup_then_cosine_over_remaining_steps():
  cfg = make_cfg(schedule='cosine', min_lr=0.0, warmup_epochs=2.0)
  w = 2 * SPE
  assert lr_at(cfg, 0) == pytest.approx(0.0, abs=1e-9)
  assert lr_at(cfg, w // 2) == pytest.approx(0.05, rel=1e-6)  # midpoint lr/2
  assert lr_at(cfg, w) == pytest.approx(0.1, rel=1e-6)
  mid = w + (TOTAL - w) // 2
  assert lr_at(cfg, mid) == pytest.approx(0.05, rel=1e-5)
  assert lr_at(cfg, TOTAL) == pytest.approx(0.0, abs=1e-7)


def test_step_boundaries_absolute_epochs():
  cfg = make_cfg(schedule='step', decay_rate=0.1, step_epochs=(3, 6))
  assert lr_at(cfg, 3 * SPE - 1) == pytest.approx(0.1, rel=1e-6)
  assert lr_at(cfg, 3 * SPE) == pytest.approx(0.01, rel=1e-6)
  assert lr_at(cfg, 6 * SPE - 1) == pytest.approx(0.01, rel=1e-6)
  assert lr_at(cfg, 6 * SPE) == pytest.approx(0.001, rel=1e-6)
  # With warmup, the milestones stay at the same absolute epochs.
  cfg_w = make_cfg(schedule='step', decay_rate=0.1, step_epochs=(3, 6),
           warmup_epochs=1.0)
  assert lr_at(cfg_w, SPE // 2) == pytest.approx(0.05, rel=1e-6)
  assert lr_at(cfg_w, SPE) == pytest.approx(0.1, rel=1e-6)
  assert lr_at(cfg_w, 3 * SPE) == pytest.approx(0.01, rel=1e-6)


def test_schedule_vectorised_over_steps():
  cfg = make_cfg(schedule='step', decay_rate=0.5, step_epochs=(1,))
  vals = optim.build_schedule(cfg, SPE, TOTAL)(jnp.array([0, SPE]))
  np.testing.assert_allclose(vals, [0.1, 0.05], rtol=1e-6)


# --------------------------------------------------------------------------
# optimiser updates vs torch rules
# --------------------------------------------------------------------------

P0 = {'w': np.array([[0.5, -1.0], [2.0, 0.25]], np.float32),
    'b': np.array([0.3, -0.7], np.float32)}
G1 = {'w': np.array([[0.1, 0.2], [-0.3, 0.4]], np.float32),
    'b': np.array([-0.5, 0.05], np.float32)}
G2 = {'w': np.array([[-0.2, 0.1], [0.3, 0.0]], np.float32),
    'b': np.array([0.2, 0.1], np.float32)}


def run_steps(cfg, grads_seq, params=P0):
  tx, _ = optim.build_optimizer(cfg, SPE, TOTAL)
  params = {k: jnp.asarray(v) for k, v in params.items()}
  state = tx.init(params)
  out = []
  for g in grads_seq:
    updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()},
                   state, params)
    params = optax.apply_updates(params, updates)
    out.append({k: np.asarray(v) for k, v in params.items()})
  return out


def adam_hand(p, grads_seq, lr, wd, b1, b2, eps, decoupled):
  """torch.optim.Adam / AdamW, one tensor, written from the torch docs."""
  p = p.astype(np.float64)
  m = np.zeros_like(p)
  v = np.zeros_like(p)
  for t, g in enumerate(grads_seq, start=1):
    g = g.astype(np.float64)
    if decoupled:
      p = p * (1 - lr * wd)
    else:
      g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
  return p


@pytest.mark.parametrize('name', ['adam', 'adamw'])
def test_adam_weight_decay_matches_torch(name):
  cfg = make_cfg(name=name, lr=0.01, weight_decay=0.1, b1=0.8, b2=0.99,
           eps=1e-6)
  got = run_steps(cfg, [G1, G2])
  for k in P0:
    want1 = adam_hand(P0[k], [G1[k]], 0.01, 0.1, 0.8, 0.99, 1e-6,
              decoupled=name == 'adamw')
    want2 = adam_hand(P0[k], [G1[k], G2[k]], 0.01, 0.1, 0.8, 0.99, 1e-6,
              decoupled=name == 'adamw')
    np.testing.assert_allclose(got[0][k], want1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got[1][k], want2, rtol=1e-5, atol=1e-7)


def test_adam_and_adamw_differ_with_decay():
  a = run_steps(make_cfg(name='adam', weight_decay=0.5), [G1])[0]['w']
  b = run_steps(make_cfg(name='adamw', weight_decay=0.5), [G1])[0]['w']
  assert not np.allclose(a, b)


def sgd_hand(p, grads_seq, lr, momentum, nesterov, wd):
  """torch.optim.SGD (dampening=0), written from the torch docs."""
  p = p.astype(np.float64)
  buf = None
  for g in grads_seq:
    d_p = g.astype(np.float64) + wd * p
    buf = d_p.copy() if buf is None else momentum * buf + d_p
    step = d_p + momentum * buf if nesterov else buf
    p = p - lr * step
  return p


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_momentum_first_two_steps(nesterov):
  cfg = make_cfg(name='sgd', lr=0.1, momentum=0.9, nesterov=nesterov,
           weight_decay=0.01)
  got = run_steps(cfg, [G1, G2])
  for k in P0:
    for n, seq in enumerate([[G1[k]], [G1[k], G2[k]]]):
      want = sgd_hand(P0[k], seq, 0.1, 0.9, nesterov, 0.01)
      np.testing.assert_allclose(got[n][k], want, rtol=1e-5, atol=1e-7)


def test_sgd_without_momentum():
  cfg = make_cfg(name='sgd', lr=0.5, momentum=0.0)
  got = run_steps(cfg, [G1])[0]
  np.testing.assert_allclose(got['w'], P0['w'] - 0.5 * G1['w'], rtol=1e-6)


def test_decay_mask_no_bias_norm_skips_rank1_params():
  cfg = make_cfg(name='sgd', lr=0.1, momentum=0.0, weight_decay=0.5,
           decay_mask='no_bias_norm')
  zero = {k: np.zeros_like(v) for k, v in P0.items()}
  got = run_steps(cfg, [zero])[0]
  np.testing.assert_allclose(got['b'], P0['b'])               # untouched
  np.testing.assert_allclose(got['w'], P0['w'] * (1 - 0.05), rtol=1e-6)


def test_clipping_scales_big_gradient_to_clip_norm():
  cfg = make_cfg(name='sgd', lr=1.0, momentum=0.0, clip_norm=1.0)
  big = {'w': np.full((2, 2), 30.0, np.float32),
       'b': np.array([40.0, 0.0], np.float32)}
  got = run_steps(cfg, [big])[0]
  delta = np.concatenate([(P0[k] - got[k]).ravel() for k in P0])
  np.testing.assert_allclose(np.linalg.norm(delta), 1.0, rtol=1e-5)
  # Direction is preserved.
  g = np.concatenate([big[k].ravel() for k in P0])
  np.testing.assert_allclose(delta, g / np.linalg.norm(g), rtol=1e-5)


def test_returned_schedule_is_the_one_used():
  cfg = make_cfg(name='sgd', momentum=0.0, schedule='step', decay_rate=0.1,
           step_epochs=(0,))
  tx, sched = optim.build_optimizer(cfg, SPE, TOTAL)
  assert float(sched(0)) == pytest.approx(0.01)
  got = run_steps(cfg, [G1])[0]
  np.testing.assert_allclose(got['w'], P0['w'] - 0.01 * G1['w'], rtol=1e-6)


# --------------------------------------------------------------------------
# config validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize('field,value', [
  ('name', 'rmsprop'), ('schedule', 'linear'), ('decay_per', 'batch'),
  ('decay_mask', 'some'), ('lr', -1.0), ('step_epochs', (6, 3)),
])
def test_bad_values_raise_value_error_naming_them(field, value):
  cfg = make_cfg(schedule='step' if field == 'step_epochs' else
           ('exponential' if field == 'decay_per' else 'constant'))
  cfg[field] = value
  with pytest.raises(ValueError, match=field):
    optim.build_optimizer(cfg, SPE, TOTAL)


def test_missing_field_raises():
  cfg = make_cfg().to_dict()
  del cfg['clip_norm']
  with pytest.raises(ValueError, match='clip_norm'):
    optim.build_optimizer(ml_collections.ConfigDict(cfg), SPE, TOTAL)


def test_nesterov_without_momentum_raises():
  with pytest.raises(ValueError, match='nesterov'):
    optim.build_optimizer(make_cfg(name='sgd', momentum=0.0, nesterov=True),
                SPE, TOTAL)


# --------------------------------------------------------------------------
# cosine variants (CAGE: per-epoch, and the official per-iteration quirk)
# --------------------------------------------------------------------------


def test_cosine_epoch_is_a_staircase_over_epochs():
  cfg = make_cfg(schedule='cosine_epoch', min_lr=0.0)
  epochs = TOTAL // SPE
  for step in (0, 9, 10, 35, 99):
    e = step // SPE
    hand = 0.05 * (1 + math.cos(math.pi * e / epochs))
    assert lr_at(cfg, step) == pytest.approx(hand, rel=1e-6, abs=1e-9)
  assert lr_at(cfg, 10) == lr_at(cfg, 19)


def test_cosine_periodic_matches_torch_cosine_annealing_stepped_per_iteration():
  torch = pytest.importorskip('torch')
  t_max = 8
  cfg = make_cfg(schedule='cosine_periodic', t_max_steps=t_max, min_lr=0.01)
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.AdamW([param], lr=0.1)
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=0.01)
  want = []
  for _ in range(5 * t_max):   # the scripts: optimizer.step(), then scheduler.step()
    want.append(opt.param_groups[0]['lr'])
    opt.step()
    sched.step()
  got = optim.build_schedule(cfg, SPE, TOTAL)(jnp.arange(5 * t_max))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert min(want) == pytest.approx(0.01) and want[2 * t_max] == pytest.approx(0.1)


def test_cosine_periodic_needs_t_max():
  with pytest.raises(ValueError, match='t_max_steps'):
    lr_at(make_cfg(schedule='cosine_periodic'), 0)
