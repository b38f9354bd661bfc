"""The ten losses of paper 002 (ferjax.losses.distribution_loss) against the Keras definitions
written out here in numpy (keras/src/losses/losses.py, applied to softmax outputs), and where
torch has the same loss, against torch as well."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ferjax import losses

EPS = 1e-7   # Keras' backend epsilon


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _keras(name, y, p):
  """Per-example Keras losses, y_true = y, y_pred = p (float64)."""
  if name == 'mse':
    return np.mean((y - p) ** 2, -1)
  if name == 'mae':
    return np.mean(np.abs(y - p), -1)
  if name in ('cce', 'pld'):
    q = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    return -np.sum(y * np.log(q), -1)
  if name == 'kld':
    yc, pc = np.clip(y, EPS, 1), np.clip(p, EPS, 1)
    return np.sum(yc * np.log(yc / pc), -1)
  if name == 'cosine':
    yn = y / np.sqrt(np.maximum((y * y).sum(-1, keepdims=True), 1e-12))
    pn = p / np.sqrt(np.maximum((p * p).sum(-1, keepdims=True), 1e-12))
    return -np.sum(yn * pn, -1)
  if name == 'log_cosh':
    return np.mean(np.log(np.cosh(p - y)), -1)
  if name == 'hinge':
    pos = np.sum(y * p, -1)
    neg = np.max((1 - y) * p, -1)
    return np.maximum(0.0, neg - pos + 1)
  if name == 'poisson':
    return np.mean(p - y * np.log(p + EPS), -1)
  if name == 'huber':
    e = np.abs(p - y)
    return np.mean(np.where(e <= 1.0, 0.5 * e ** 2, e - 0.5), -1)
  if name == 'multi_target':
    return -np.log(np.max(y * p, -1))
  raise KeyError(name)


@pytest.fixture(scope='module')
def batch():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (6, 8))
  votes = rng.integers(0, 6, (6, 8)) * (rng.random((6, 8)) < 0.5)
  votes[:, 0] += 1                                       # every row has a vote
  votes[1] = [0, 10, 0, 0, 0, 0, 0, 0]                   # a one-hot row
  return logits, votes / votes.sum(-1, keepdims=True)


def test_ten_losses_named():
  assert len(losses.DISTRIBUTION_LOSSES) == 10
  assert set(losses.DISTRIBUTION_LOSSES) <= set(losses.LOSS_NAMES)


@pytest.mark.parametrize('name', losses.LOSS_NAMES)
def test_matches_keras_definition(batch, name):
  logits, y = batch
  if name == 'multi_target':
    y = 0.999 * (y > 0) + 0.001
  want = _keras(name, y, _softmax(logits)).mean()
  got = losses.distribution_loss(name, jnp.asarray(logits), jnp.asarray(y))
  np.testing.assert_allclose(float(got), want, rtol=2e-5, atol=1e-7)


def test_mask_and_empty_targets(batch):
  logits, y = batch
  y = y.copy()
  y[2] = 0.0                                             # no label: left out like padding
  mask = np.array([1, 1, 1, 0, 1, 1], np.float32)
  keep = np.array([1, 1, 0, 0, 1, 1], bool)
  want = _keras('mse', y[keep], _softmax(logits[keep])).mean()
  got = losses.distribution_loss('mse', jnp.asarray(logits), jnp.asarray(y), mask=mask)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_against_torch(batch):
  logits, y = batch
  p = torch.softmax(torch.tensor(logits), -1)
  t = torch.tensor(y)
  f = torch.nn.functional
  # torch reduces element-wise losses over all B * K elements: the same mean as Keras' here.
  ref = {
      'mse': f.mse_loss(p, t).item(),
      'mae': f.l1_loss(p, t).item(),
      'huber': f.huber_loss(p, t, delta=1.0).item(),
      'cce': f.cross_entropy(torch.tensor(logits), t).item(),
      'poisson': f.poisson_nll_loss(p, t, log_input=False, full=False, eps=EPS).item(),
      'cosine': -f.cosine_similarity(p, t, dim=-1).mean().item(),
      'kld': f.kl_div(torch.log(p.clamp(EPS, 1)), t.clamp(EPS, 1),
                      reduction='sum').item() / len(y),
  }
  for name, want in ref.items():
    got = losses.distribution_loss(name, jnp.asarray(logits), jnp.asarray(y))
    np.testing.assert_allclose(float(got), want, rtol=2e-5, atol=1e-7, err_msg=name)


def test_pld_is_cross_entropy_of_the_drawn_class(batch):
  logits, _ = batch
  drawn = np.array([3, 1, 0, 7, 2, 5])
  onehot = np.eye(8)[drawn]
  logp = np.log(_softmax(logits))
  want = -logp[np.arange(6), drawn].mean()
  got = losses.distribution_loss('pld', jnp.asarray(logits), jnp.asarray(onehot))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_unknown_name():
  with pytest.raises(ValueError, match='unknown distribution loss'):
    losses.distribution_loss('focal', jnp.zeros((1, 8)), jnp.ones((1, 8)))
