"""Tests of FERPlus label processing (ferjax.data.ferplus) against hand-worked and independent
computations: the reference modes of microsoft/FERPlus (majority, probability, crossentropy,
multi_target) and the protocol of paper 002."""
from __future__ import annotations

import numpy as np
import pytest

from ferjax.data import ferplus as fp
from ferjax.data import synthetic as syn
from ferjax.labels import index_map

NE, HA, SA, SU, FE, DI, AN, CO, UN, NF = range(10)   # canonical vote columns
FERPLUS_COLUMNS = ('neutral', 'happy', 'surprise', 'sad', 'anger', 'disgust', 'fear', 'contempt')


def _draw_one(dist, seed, epoch, index):
  """One sample's drawn class through the vectorised draw."""
  return int(fp.draw_labels(np.asarray(dist)[None], seed, epoch, np.asarray([index]))[0])


def row(**counts) -> list[int]:
  names = ('ne', 'ha', 'sa', 'su', 'fe', 'di', 'an', 'co', 'un', 'nf')
  return [counts.get(n, 0) for n in names]


def from_ferplus_order(rows) -> np.ndarray:
  """FERPlus-ordered rows (8 emotions, unknown, NF) -> canonical order, via ferjax.labels."""
  rows = np.asarray(rows)
  out = np.zeros_like(rows)
  out[:, index_map(FERPLUS_COLUMNS)] = rows[:, :8]
  out[:, 8:] = rows[:, 8:]
  return out


def reference_process(raw, mode):
  """Independent float re-statement of the reference rules, one row at a time, for
  cross-checks: returns the normalised 8-vector or None (dropped)."""
  e = [0.0 if x <= 1 else float(x) for x in raw]
  s = sum(e)
  out = [0.0] * 10
  if mode == 'majority':
    m = max(e)
    if m > 0.5 * s:
      out[e.index(m)] = m
    else:
      return None
  elif mode == 'multi_target':
    out = [x if x >= 0.3 * s else 0.0 for x in e]
    if sum(out) <= 0.5 * s:
      return None
  else:
    part, count, going = 0.0, 0, True
    while part < 0.75 * s and count < 3 and going:
      m = max(e)
      for i in range(10):
        if e[i] != m:
          continue
        out[i], e[i] = m, 0.0
        part += m
        count += 1
        if i >= 8:
          going = False
          if sum(out) > m:            # emotions were taken before unknown/NF
            out[i] = 0.0
            count -= 1
          break
    if sum(out) <= 0.5 * s or count > 3:
      return None
  if sum(out) == 0 or int(np.argmax(out)) >= 8:
    return None
  return np.array(out[:8]) / sum(out[:8])


# Hand-worked rows: (canonical votes, {mode: expected 8-vector or None}).
P = 'probability'
HAND = [
    # outliers (single votes) go: [4,3,.,.] of 7 kept votes; 4/7 > 1/2; peaks 4 then 3 cover 100%.
    (row(ne=4, ha=3, sa=1, su=1, un=1),
     {'majority': [1, 0], P: [4 / 7, 3 / 7], 'multi_target': [4 / 7, 3 / 7]}),
    # a 5-5 tie is no majority; both peaks taken together (count 2, 100%).
    (row(ne=5, ha=5), {'majority': None, P: [.5, .5], 'multi_target': [.5, .5]}),
    # 5 of 10 is not > 50%; peaks 5 + 3 = 80% >= 75% stop before the 2.
    (row(ne=5, ha=3, sa=2), {'majority': None, P: [.625, .375], 'multi_target': [.625, .375]}),
    # unknown/NF tie at the second peak after neutral: the loop stops, neutral (60%) stays.
    (row(ne=6, un=2, nf=2), {'majority': [1], P: [1], 'multi_target': [1]}),
    # NF is the first peak: dropped; majority also fails (4 of 10).
    (row(ne=3, un=3, nf=4), {'majority': None, P: None, 'multi_target': None}),
    # neutral ties unknown at the top: only 40% covered -> dropped; multi_target keeps both
    # (>= 30%) and numpy's first-max argmax is neutral, so the sample survives as neutral.
    (row(ne=4, un=4, nf=2), {'majority': None, P: None, 'multi_target': [1]}),
    # second round takes a 2-2 tie: 4 emotions > 3 -> dropped; multi_target keeps the 3s.
    (row(ne=3, ha=3, sa=2, su=2), {'majority': None, P: None, 'multi_target': [.5, .5]}),
    # five-way tie of 2s: count 5 > 3.
    (row(ne=2, ha=2, sa=2, su=2, fe=2), {'majority': None, P: None, 'multi_target': None}),
    # 20 votes: three rounds (5, 4, 3 = 60%) hit the 3-emotion cap before 75%; 60% > 50% keeps.
    (row(ne=5, ha=4, sa=3, su=2, fe=2, di=2, an=2),
     {'majority': None, P: [5 / 12, 4 / 12, 3 / 12], 'multi_target': None}),
    # all single votes: nothing left after outlier removal.
    (row(ne=1, ha=1, sa=1, su=1, fe=1, di=1, an=1, co=1, un=1, nf=1),
     {'majority': None, P: None, 'multi_target': None}),
    # majority of unknown: dropped by the reader's argmax < 8 rule.
    (row(ne=2, un=8), {'majority': None, P: None, 'multi_target': None}),
    # the 1 of fear is an outlier, so 9 votes: contempt 6 > 4.5; 6 < 6.75 takes disgust too.
    (row(co=6, di=3, fe=1), {'majority': [0, 0, 0, 0, 0, 0, 0, 1],
                             P: [0, 0, 0, 0, 0, 1 / 3, 0, 2 / 3],
                             'multi_target': [0, 0, 0, 0, 0, 1 / 3, 0, 2 / 3]}),
    # 7 of 9 already covers 75%: disgust is not taken.
    (row(co=7, di=2, fe=1), {'majority': [0, 0, 0, 0, 0, 0, 0, 1], P: [0, 0, 0, 0, 0, 0, 0, 1],
                             'multi_target': [0, 0, 0, 0, 0, 0, 0, 1]}),
]


def _pad(t):
  return None if t is None else np.pad(np.asarray(t, float), (0, 8 - len(t)))


@pytest.mark.parametrize('mode', ['majority', P, 'crossentropy', 'multi_target'])
def test_hand_worked_rows(mode):
  votes = np.array([r for r, _ in HAND])
  targets, keep = fp.process_votes(votes, mode)
  for i, (_, expect) in enumerate(HAND):
    want = _pad(expect[P if mode == 'crossentropy' else mode])
    assert keep[i] == (want is not None), (i, mode)
    np.testing.assert_allclose(targets[i], 0 if want is None else want, atol=1e-6,
                               err_msg=f'row {i} {mode}')


def test_remove_outliers():
  out = fp.remove_outliers([row(ne=4, ha=3, sa=1, su=1, un=1), row(un=1, nf=9)])
  np.testing.assert_array_equal(out, [row(ne=4, ha=3), row(nf=9)])


def _random_votes(rng, n, total=10):
  """Vote rows with many ties and unknown/NF peaks: multinomial over a sparse Dirichlet."""
  p = rng.dirichlet(np.full(10, 0.4), size=n)
  return np.stack([rng.multinomial(total, q) for q in p])


@pytest.mark.parametrize('mode', fp.MODES)
def test_matches_independent_restatement(mode):
  rng = np.random.default_rng(0)
  votes = np.concatenate([_random_votes(rng, 1500), _random_votes(rng, 300, total=13),
                          np.array([r for r, _ in HAND])])
  # realistic rows from the synthetic benchmark's simulated annotators, all domains
  src = [syn.simulate_votes(syn.sample_params(rng, d), d, rng)
         for d in syn.DOMAINS for _ in range(60)]
  votes = np.concatenate([votes, np.array(src)])
  targets, keep = fp.process_votes(votes, mode)
  for i, v in enumerate(votes):
    ref = reference_process(list(v), 'probability' if mode == 'crossentropy' else mode)
    assert keep[i] == (ref is not None), (v, mode)
    if ref is not None:
      np.testing.assert_allclose(targets[i], ref, atol=1e-6)
  assert keep.mean() > 0.3     # the random rows are not all dropped
  np.testing.assert_allclose(targets[keep].sum(1), 1, atol=1e-6)
  assert not targets[~keep].any()


@pytest.mark.parametrize('mode', fp.MODES)
def test_independent_of_emotion_order(mode):
  """FERPlus's column order differs from canonical; the rules must not care."""
  rng = np.random.default_rng(1)
  votes = _random_votes(rng, 800)
  perm = rng.permutation(8)
  t, k = fp.process_votes(votes, mode)
  tp, kp = fp.process_votes(np.concatenate([votes[:, perm], votes[:, 8:]], 1), mode)
  np.testing.assert_array_equal(k, kp)
  np.testing.assert_allclose(tp, t[:, perm])


def test_bad_input():
  with pytest.raises(ValueError):
    fp.process_votes(np.zeros((2, 8), int), 'majority')
  with pytest.raises(ValueError):
    fp.process_votes(np.zeros((2, 10), int), 'soft')
  with pytest.raises(ValueError):
    fp.process_votes(np.full((1, 10), 0.5), 'majority')
  with pytest.raises(ValueError):
    fp.process_votes(-np.ones((1, 10), int), 'majority')


def test_multi_target_encoding_and_training_targets():
  t = np.array([[4 / 7, 3 / 7, 0, 0, 0, 0, 0, 0]], np.float32)
  enc = fp.multi_target_encoding(t)
  np.testing.assert_allclose(enc, [[1, 1] + [0.001] * 6], atol=1e-7)
  np.testing.assert_array_equal(fp.training_targets(t, 'multi_target'), enc)
  np.testing.assert_array_equal(fp.training_targets(t, 'crossentropy'), t)
  np.testing.assert_array_equal(fp.training_targets(t, 'majority'), t)
  one = fp.training_targets(np.repeat(t, 50, 0), P, seed=3, epoch=2)
  assert set(one.sum(1)) == {1.0} and not one[:, 2:].any()
  np.testing.assert_array_equal(one.argmax(1), fp.draw_labels(np.repeat(t, 50, 0), 3, 2,
                                                              np.arange(50)))


def test_hash_uniform():
  u = fp.hash_uniform(5, np.arange(200_000))
  assert 0 <= u.min() and u.max() < 1
  assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.002
  hist = np.histogram(u, bins=20, range=(0, 1))[0]
  assert np.all(np.abs(hist - 10_000) < 500)       # ~5 sigma
  assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
  assert fp.hash_uniform(1, 0)[()] != fp.hash_uniform(0, 1)[()]
  np.testing.assert_array_equal(fp.hash_uniform(7, [3, 4]), fp.hash_uniform(7, [3, 4]))
  with pytest.raises(ValueError):
    fp.hash_uniform(-1)


def test_draw_label_pure_and_consistent():
  dist = np.array([0.5, 0.0, 0.3, 0.2, 0, 0, 0, 0])
  a = [_draw_one(dist, 11, e, 7) for e in range(30)]
  assert a == [_draw_one(dist, 11, e, 7) for e in range(30)]   # pure
  assert len(set(a)) > 1                                            # fresh draw per epoch
  dists = np.tile(dist, (40, 1))
  idx = np.arange(100, 140)
  vec = fp.draw_labels(dists, 11, 3, idx)
  assert list(vec) == [_draw_one(dist, 11, 3, i) for i in idx]
  # a sample's label does not depend on the batch it is served in
  np.testing.assert_array_equal(fp.draw_labels(dists[::-1], 11, 3, idx[::-1]), vec[::-1])
  assert (fp.draw_labels(dists, 12, 3, idx) != vec).any()


def test_draw_label_frequencies():
  """Over many (epoch, index) draws the one-hot labels follow the distribution (5-sigma)."""
  dist = np.array([4, 3, 0, 2, 0, 0, 1, 0], float)      # unnormalised is fine
  n = 40_000
  labels = fp.draw_labels(np.tile(dist, (n, 1)), 0, 5, np.arange(n))
  freq = np.bincount(labels, minlength=8) / n
  p = dist / dist.sum()
  assert not freq[p == 0].any()
  assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-12)
  per_epoch = np.array([_draw_one(dist, 0, e, 3) for e in range(3000)])
  assert np.all(np.abs(np.bincount(per_epoch, minlength=8) / 3000 - p) < 0.045)


def test_draw_label_edges():
  assert _draw_one([0, 0, 1.0, 0], 0, 0, 0) == 2
  assert _draw_one([0, 0, 0, 1e-300], 9, 9, 9) == 3
  with pytest.raises(ValueError):
    _draw_one([0, 0, 0], 0, 0, 0)
  with pytest.raises(ValueError):
    _draw_one([1.0, 0], -1, 0, 0)


def test_clean_votes_paper_figure_16():
  """Fig. 16 (FERPlus column order): A has 2 unknown + 2 NF = 4 > 3 votes and goes; B and C
  are normalised over the 8 emotions."""
  a = [0, 0, 0, 6, 0, 0, 0, 0, 2, 2]
  b = [6, 0, 0, 2, 0, 0, 0, 0, 2, 0]
  c = [4, 0, 0, 4, 2, 0, 0, 0, 0, 0]
  dist, keep = fp.clean_votes(from_ferplus_order([a, b, c]))
  np.testing.assert_array_equal(keep, [False, True, True])
  np.testing.assert_allclose(dist[1], _pad([.75, 0, .25]))           # Ne .75, Sa .25
  want_c = np.zeros(8)
  want_c[[NE, SA, AN]] = [.4, .4, .2]
  np.testing.assert_allclose(dist[2], want_c, atol=1e-7)
  assert not dist[0].any()
  # 3 unknown/NF votes are allowed; a row without any emotion vote cannot be normalised
  d, k = fp.clean_votes([row(ne=7, un=2, nf=1), row(un=3), row(ha=1, sa=1, un=4)])
  np.testing.assert_array_equal(k, [True, False, False])
  np.testing.assert_allclose(d[0], _pad([1]))


def test_complexity_level():
  votes = [row(ha=10), row(ne=1, ha=1, sa=2, su=2, fe=1, di=1, an=2),   # Fig. 13: X = 1 and 7
           row(ne=6, sa=2, un=2), row(ne=1, ha=1, sa=1, su=1, fe=1, di=1, an=1, co=1, un=2)]
  np.testing.assert_array_equal(fp.complexity_level(votes), [1, 7, 2, 8])
  dist, _ = fp.clean_votes(votes)
  np.testing.assert_array_equal(fp.complexity_level(dist), [1, 7, 2, 8])


def test_n_hot_hand_examples():
  d = np.array([[.4, .3, .2, .1, 0, 0, 0, 0],         # X = 4
                [.6, .4, 0, 0, 0, 0, 0, 0],            # X = 2: untouched for N >= 2
                [0, 0, 0, 0, 0, 0, 0, 0]], np.float32)  # a dropped (zero) row stays zero
  np.testing.assert_allclose(fp.n_hot(d, 1)[:2], [_pad([1]), _pad([1])])
  np.testing.assert_allclose(fp.n_hot(d, 2)[:2], [_pad([4 / 7, 3 / 7]), _pad([.6, .4])],
                             rtol=1e-6)
  np.testing.assert_allclose(fp.n_hot(d, 3)[0], _pad([4 / 9, 3 / 9, 2 / 9]), rtol=1e-6)
  for n in (4, 8):
    np.testing.assert_array_equal(fp.n_hot(d, n), d)
  assert not fp.n_hot(d, 1)[2].any()
  with pytest.raises(ValueError):
    fp.n_hot(d, 0)


def test_n_hot_random_ties():
  """Ties at the cut are broken at random, per (seed, id), about evenly."""
  d = np.tile(np.array([.4, .2, .2, .2, 0, 0, 0, 0], np.float32), (3000, 1))
  out = fp.n_hot(d, 2, seed=4)
  np.testing.assert_allclose(out[:, 0], 2 / 3, rtol=1e-6)      # the peak always stays
  second = out[:, 1:4].argmax(1)
  assert np.all((out[:, 1:4] > 0).sum(1) == 1)
  assert np.all(np.abs(np.bincount(second, minlength=3) / 3000 - 1 / 3) < 0.04)
  np.testing.assert_array_equal(out, fp.n_hot(d, 2, seed=4))
  assert (fp.n_hot(d, 2, seed=5) != out).any()
  ids = np.arange(3000) + 17      # a row's result depends on its id, not its position
  np.testing.assert_array_equal(fp.n_hot(d[:5], 2, seed=4, ids=ids[:5]),
                                fp.n_hot(d, 2, seed=4, ids=ids)[:5])


def test_n_hot_properties():
  rng = np.random.default_rng(2)
  dist, keep = fp.clean_votes(_random_votes(rng, 1000))
  dist = dist[keep]
  for n in range(1, 9):
    out = fp.n_hot(dist, n, seed=n)
    assert np.all((out > 0).sum(1) <= n)
    np.testing.assert_allclose(out.sum(1), 1, atol=1e-6)
    assert np.all((out > 0) <= (dist > 0))
    lowest_kept = np.where(out > 0, dist, np.inf).min(1)
    highest_dropped = np.where((out == 0) & (dist > 0), dist, -np.inf).max(1)
    assert np.all(lowest_kept >= highest_dropped)           # the N largest are kept
    simple = fp.complexity_level(dist) <= n
    np.testing.assert_array_equal(out[simple], dist[simple])
    kept_ratio = np.where(out > 0, out / np.where(dist > 0, dist, 1), np.nan)
    spread = np.nanmax(kept_ratio, 1) - np.nanmin(kept_ratio, 1)
    assert np.all(spread < 1e-5)                            # kept entries rescaled together


def test_split_test_set():
  rng = np.random.default_rng(3)
  dist, keep = fp.clean_votes(_random_votes(rng, 2000))
  x = fp.complexity_level(dist[keep])
  n = x.size
  for kind in ('ordinary', 'complex'):
    train, test = fp.split_test_set(x, kind, 0.1, seed=1)
    assert np.intersect1d(train, test).size == 0 and train.size + test.size == n
    assert np.all(np.diff(test) > 0)
    assert test.size == min(round(0.1 * n), int((x >= 4).sum()) if kind == 'complex' else n)
    again = fp.split_test_set(x, kind, 0.1, seed=1)
    np.testing.assert_array_equal(test, again[1])
    assert (fp.split_test_set(x, kind, 0.1, seed=2)[1] != test).any()
  _, test = fp.split_test_set(x, 'complex', 0.1, seed=1)
  assert np.all(x[test] >= 4)
  # ordinary: drawn at random, so its complexity mix follows the whole set
  _, test = fp.split_test_set(x, 'ordinary', 0.5, seed=1)
  assert abs((x[test] >= 4).mean() - (x >= 4).mean()) < 0.05
  # fewer complex samples than 10%: all of them
  x_few = np.array([1] * 95 + [4, 5, 6, 7, 8])
  _, test = fp.split_test_set(x_few, 'complex', 0.1, seed=0)
  np.testing.assert_array_equal(test, [95, 96, 97, 98, 99])
  # the split is a function of (seed, ids), not of the row order
  ids = np.arange(n) * 3 + 1
  perm = rng.permutation(n)
  for kind in ('ordinary', 'complex'):
    _, t = fp.split_test_set(x, kind, 0.1, seed=1, ids=ids)
    _, tp = fp.split_test_set(x[perm], kind, 0.1, seed=1, ids=ids[perm])
    np.testing.assert_array_equal(np.sort(ids[perm][tp]), ids[t])


def test_any_max_accuracy():
  target = np.array([[.4, .4, .2, 0], [.5, .25, .25, 0], [0, 0, .5, .5], [.25, .25, .25, .25]])
  pred = np.array([1, 1, 3, 0])
  np.testing.assert_array_equal(fp.any_max_correct(pred, target), [True, False, True, True])
  assert fp.any_max_accuracy(pred, target) == 0.75
  probs = np.eye(4)[pred] * 0.7 + 0.075
  assert fp.any_max_accuracy(probs, target) == 0.75
  # float32 renormalisation does not split a tie
  t32 = (np.array([[3, 3, 1, 0]]) / 7).astype(np.float32)
  assert fp.any_max_accuracy(np.array([1]), t32) == 1.0
  # against an independent count on random data with many ties
  rng = np.random.default_rng(5)
  dist, keep = fp.clean_votes(_random_votes(rng, 500))
  dist = dist[keep]
  scores = rng.random(dist.shape)
  p = scores.argmax(1)
  want = np.mean([dist[i, p[i]] == dist[i].max() for i in range(len(p))])
  assert fp.any_max_accuracy(scores, dist) == pytest.approx(want)
  with pytest.raises(ValueError):
    fp.any_max_accuracy(np.array([4]), target[:1])
