"""Tests of ferjax.data.samplers: exact counts, determinism in the seed, and statistical checks
of the random draws with fixed seeds and tolerances of about 5 standard deviations."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from ferjax.data import samplers as sp
from ferjax.losses import inverse_frequency_weights

# An imbalanced toy dataset: 4 classes of 300, 120, 40 and 3 examples, shuffled, plus unknowns.
_COUNTS = (300, 120, 40, 3)


@pytest.fixture(scope='module')
def labels():
  y = np.concatenate([np.full(n, c) for c, n in enumerate(_COUNTS)] + [np.full(7, -1)])
  return np.random.default_rng(0).permutation(y)


# ------------------------------------------------------------------ class_balanced_batches

def test_class_balanced_batches_composition(labels):
  b = sp.class_balanced_batches(labels, per_class=4, num_batches=50, seed=1)
  assert b.shape == (50, 16) and b.dtype == np.int64
  assert np.all(labels[b] >= 0)
  for c in range(4):
    assert np.all((labels[b] == c).sum(1) == 4)          # B images of every class per batch
  for row, c in ((r, c) for r in b for c in range(3)):   # classes with >= 4 members: distinct
    members = row[labels[row] == c]
    assert np.unique(members).size == 4
  small = np.flatnonzero(labels == 3)                      # 3 members < B = 4: repeats forced
  for row in b:
    got = row[labels[row] == 3]
    assert set(got) == set(small)                          # all of them, one twice


def test_class_balanced_batches_coverage(labels):
  """Within a class, examples are used in shuffled passes: even use, no needless repeats."""
  b = sp.class_balanced_batches(labels, per_class=4, num_batches=50, seed=2)
  flat = b.ravel()
  big = np.flatnonzero(labels == 0)                        # 300 >= 200 needed: no repeat
  assert np.unique(flat[np.isin(flat, big)]).size == 200
  for c, n in enumerate(_COUNTS[1:], 1):                  # 200 draws over n members
    uses = np.bincount(flat[labels[flat] == c], minlength=labels.size)[labels == c]
    assert uses.min() >= 200 // n and uses.max() <= -(-200 // n)


def test_class_balanced_batches_determinism_and_order(labels):
  a = sp.class_balanced_batches(labels, 3, 20, seed=5)
  np.testing.assert_array_equal(a, sp.class_balanced_batches(labels, 3, 20, seed=5))
  assert (a != sp.class_balanced_batches(labels, 3, 20, seed=6)).any()
  g = sp.class_balanced_batches(labels, 3, 20, seed=5, shuffle=False)
  np.testing.assert_array_equal(labels[g], np.tile(np.repeat(np.arange(4), 3), (20, 1)))
  np.testing.assert_array_equal(np.sort(a, 1), np.sort(g, 1))   # shuffle only permutes rows
  assert (labels[a] != labels[g]).any()
  with pytest.raises(ValueError):
    sp.class_balanced_batches(np.full(5, -1), 2, 3, seed=0)


# ------------------------------------------------------------------ imbalance_aware_order

@pytest.mark.parametrize('power', [1.0, 0.5, 0.0])
def test_imbalance_aware_order_class_frequencies(labels, power):
  n = 60_000
  order = sp.imbalance_aware_order(labels, n, seed=3, power=power)
  assert order.shape == (n,) and np.all(labels[order] >= 0)
  counts = np.array(_COUNTS, float)
  p = counts ** (1 - power) / np.sum(counts ** (1 - power))   # class c ∝ n_c * n_c**-power
  freq = np.bincount(labels[order], minlength=4) / n
  assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n))


def test_imbalance_aware_order_within_class_uniform(labels):
  order = sp.imbalance_aware_order(labels, 40_000, seed=4)
  members = np.flatnonzero(labels == 2)                    # 40 members share ~10,000 draws
  uses = np.bincount(order, minlength=labels.size)[members]
  assert uses.sum() == pytest.approx(10_000, abs=500)
  assert np.all(np.abs(uses - uses.mean()) < 5 * np.sqrt(uses.mean()))


def test_imbalance_aware_order_determinism(labels):
  a = sp.imbalance_aware_order(labels, None, seed=1)
  assert a.shape == labels.shape
  np.testing.assert_array_equal(a, sp.imbalance_aware_order(labels, None, seed=1))
  assert (a != sp.imbalance_aware_order(labels, None, seed=2)).any()


# ------------------------------------------------------------------ bagging_subset

def test_bagging_subset_without_replacement():
  s = sp.bagging_subset(1000, 0.2, member=0, seed=7)
  assert s.size == 200 and np.unique(s).size == 200 and np.all(np.diff(s) > 0)
  assert s.min() >= 0 and s.max() < 1000
  np.testing.assert_array_equal(s, sp.bagging_subset(1000, 0.2, member=0, seed=7))
  other = sp.bagging_subset(1000, 0.2, member=1, seed=7)
  assert (other != s).any()
  # independent uniform subsets overlap by about fraction * size = 40
  assert abs(np.intersect1d(s, other).size - 40) < 5 * np.sqrt(40 * 0.8)
  assert (sp.bagging_subset(1000, 0.2, member=0, seed=8) != s).any()


def test_bagging_subset_bootstrap():
  s = sp.bagging_subset(20_000, 1.0, member=3, seed=0, replace=True)
  assert s.size == 20_000
  # a bootstrap sample holds about 1 - 1/e of the distinct examples
  assert abs(np.unique(s).size / 20_000 - (1 - np.exp(-1))) < 0.01


def test_bagging_subset_disjoint():
  parts = [sp.bagging_subset(1002, 0.2, m, seed=2, disjoint=True) for m in range(5)]
  assert all(p.size == 200 for p in parts)                 # round(200.4)
  allp = np.concatenate(parts)
  assert np.unique(allp).size == allp.size                 # no two members share an example
  np.testing.assert_array_equal(parts[1], sp.bagging_subset(1002, 0.2, 1, seed=2, disjoint=True))
  assert (parts[1] != sp.bagging_subset(1002, 0.2, 1, seed=3, disjoint=True)).any()
  with pytest.raises(ValueError):
    sp.bagging_subset(1002, 0.2, 5, seed=2, disjoint=True)  # 6 * 200 > 1002
  with pytest.raises(ValueError):
    sp.bagging_subset(100, 0.0, 0, seed=0)


# ------------------------------------------------------------------ inject_label_noise

@pytest.mark.parametrize('n,rate', [(1000, 0.1), (463, 0.3), (25, 0.1), (35, 0.1), (10, 0.0),
                                    (10, 1.0), (7, 0.5)])
def test_inject_label_noise_exact_count(n, rate):
  y = np.arange(n) % 7
  new, flipped = sp.inject_label_noise(y, rate, 7, seed=1)
  assert flipped.sum() == round(rate * n)                 # Python round: 2.5 -> 2, 3.5 -> 4
  np.testing.assert_array_equal(flipped, new != y)        # flipped ones never keep their class
  np.testing.assert_array_equal(new[~flipped], y[~flipped])
  assert new.min() >= 0 and new.max() < 7


def test_inject_label_noise_symmetric_statistics():
  """Which examples flip is uniform; a flipped label is uniform over the other classes."""
  y = np.repeat(np.arange(5), 4000)
  new, flipped = sp.inject_label_noise(y, 0.4, 5, seed=2)
  rate_c = np.array([flipped[y == c].mean() for c in range(5)])
  assert np.all(np.abs(rate_c - 0.4) < 5 * np.sqrt(0.4 * 0.6 / 4000))
  for c in range(5):
    to = np.bincount(new[flipped & (y == c)], minlength=5)
    assert to[c] == 0
    m = to.sum()
    assert np.all(np.abs(np.delete(to, c) / m - 0.25) < 5 * np.sqrt(0.25 * 0.75 / m))


def test_inject_label_noise_asymmetric_and_unlabelled():
  y = np.array([0, 1, 2, 3, -1, -1] * 50)
  new, flipped = sp.inject_label_noise(y, 0.5, 4, seed=0, mode='asymmetric')
  assert flipped.sum() == 100 and not flipped[y < 0].any()   # N = 200 labelled examples
  np.testing.assert_array_equal(new[flipped], (y[flipped] + 1) % 4)
  new2, f2 = sp.inject_label_noise(y, 0.5, 4, seed=0, mode='asymmetric', target_map=[3, 2, 1, 0])
  np.testing.assert_array_equal(new2[f2], 3 - y[f2])
  with pytest.raises(ValueError):
    sp.inject_label_noise(y, 0.5, 4, seed=0, mode='asymmetric', target_map=[0, 2, 1, 3])
  with pytest.raises(ValueError):
    sp.inject_label_noise(y, 0.5, 4, seed=0, mode='pairs')


def test_inject_label_noise_determinism():
  y = np.arange(500) % 8
  a = sp.inject_label_noise(y, 0.2, 8, seed=9)
  b = sp.inject_label_noise(y, 0.2, 8, seed=9)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert (sp.inject_label_noise(y, 0.2, 8, seed=10)[1] != a[1]).any()
  np.testing.assert_array_equal(y, np.arange(500) % 8)   # the input is not modified


# ------------------------------------------------------------------ class_weights

def test_class_weights_inverse_matches_sklearn(labels):
  y = labels[labels >= 0]
  want = compute_class_weight('balanced', classes=np.arange(4), y=y)
  got = sp.class_weights(labels, 4)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  np.testing.assert_allclose(got, y.size / (4 * np.array(_COUNTS)), rtol=1e-12)  # ARBEx form
  assert np.mean(got[y]) == pytest.approx(1.0)            # average 1 over the samples


def test_class_weights_normalisations(labels):
  y = labels[labels >= 0]
  inv = 1.0 / np.array(_COUNTS)
  np.testing.assert_allclose(sp.class_weights(labels, 4, normalize='none'), inv)
  np.testing.assert_allclose(sp.class_weights(labels, 4, normalize='classes_sum'),
                             inv / inv.sum())
  np.testing.assert_allclose(sp.class_weights(labels, 4, normalize='classes_mean'),
                             inverse_frequency_weights(np.array(_COUNTS)), rtol=1e-6)
  for mode in ('inverse_sqrt', 'effective', 'complement'):
    assert np.mean(sp.class_weights(labels, 4, mode)[y]) == pytest.approx(1.0)
  sq = sp.class_weights(labels, 4, 'inverse_sqrt', normalize='none')
  np.testing.assert_allclose(sq, 1 / np.sqrt(_COUNTS))
  # absent classes get weight 0 and do not enter the normalisation
  w = sp.class_weights(np.array([0, 0, 2]), 4, normalize='classes_mean')
  np.testing.assert_allclose(w, [2 / 3, 0, 4 / 3, 0])       # (1/2, 1) over their mean 3/4
  w = sp.class_weights(np.array([0, 0, 2]), 4)
  np.testing.assert_allclose(w, [3 / 4, 0, 3 / 2, 0])       # 3 / (2 present * n_c)


def test_class_weights_cage_convention():
  """CAGE Table 4 (AffectNet-8) weights sum to 1: inverse frequency with normalize='classes_sum'
  reproduces them from class counts proportional to 1 / weight."""
  table = np.array([0.015605, 0.008709, 0.046078, 0.083078, 0.185434, 0.305953, 0.046934,
                    0.308210])
  assert table.sum() == pytest.approx(1.0, abs=2e-6)
  counts = np.rint(100.0 / table).astype(int)             # ~ counts of a 1:17 imbalance
  y = np.repeat(np.arange(8), counts)
  np.testing.assert_allclose(sp.class_weights(y, 8, normalize='classes_sum'), table, rtol=3e-3)


def test_class_weights_hand_examples():
  # effective number, beta = 0.9: n = (1, 2) -> (1 - .9) / (1 - .9**n) = (1, 0.1 / 0.19)
  w = sp.class_weights(np.array([0, 1, 1]), 2, 'effective', normalize='none', beta=0.9)
  np.testing.assert_allclose(w, [1.0, 0.1 / 0.19])
  # Jeong et al.'s LSD weights 1 - n_c / sum(n), as in their released training code
  n = np.array([18286, 15150, 10923, 73285, 144631, 14976])
  y = np.repeat(np.arange(6), n)
  w = sp.class_weights(y, 6, 'complement', normalize='none')
  np.testing.assert_allclose(w, [1 - 18286 / 277251, 1 - 15150 / 277251, 1 - 10923 / 277251,
                                 1 - 73285 / 277251, 1 - 144631 / 277251, 1 - 14976 / 277251])
  with pytest.raises(ValueError):
    sp.class_weights(np.array([0, 5]), 4)
  with pytest.raises(ValueError):
    sp.class_weights(np.array([1, 1]), 4, 'complement')     # all-zero weights
