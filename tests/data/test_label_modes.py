"""Label modes, N-hot, the paper split, PLD draws and the FERPlus accuracies of an eval set
(ferjax.data.label_modes), against rules restated here in numpy."""
import ml_collections
import numpy as np
import pytest

from ferjax import config as config_lib
from ferjax.data import ferplus, label_modes, synthetic
from ferjax.data.spaces import InSpace
from ferjax.errors import ConfigError
from ferjax.labels import CANONICAL


def _cfg(**data):
  c = config_lib.base_config()
  c.data.update(data)
  return c


@pytest.fixture(scope='module')
def votes():
  rng = np.random.default_rng(0)
  v = rng.multinomial(10, [.3, .2, .1, .1, .05, .05, .05, .05, .05, .05], size=400)
  v[:5] = [[0, 0, 0, 0, 0, 0, 0, 0, 2, 8], [6, 0, 0, 2, 0, 0, 0, 0, 2, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 4, 6], [5, 1, 1, 1, 0, 0, 0, 0, 1, 1],
           [1, 1, 1, 1, 1, 1, 1, 1, 2, 0]]
  return v


@pytest.mark.parametrize('mode', ferplus.MODES)
def test_reference_modes_on_training_sets_only(votes, mode):
  cfg = _cfg(label_mode=mode)
  t, keep, _ = label_modes.vote_targets(votes, cfg, train=True)
  want_t, want_keep = ferplus.process_votes(votes, mode)
  np.testing.assert_array_equal(keep, want_keep)
  np.testing.assert_array_equal(t, want_t)
  t, keep, why = label_modes.vote_targets(votes, cfg, train=False)
  assert keep.all() and not why                     # eval sets keep their rows
  emo = votes[:, :8].astype(float)
  want = np.divide(emo, emo.sum(1, keepdims=True), out=np.zeros_like(emo),
                   where=emo.sum(1, keepdims=True) > 0)
  np.testing.assert_allclose(t, want, rtol=1e-6)


def test_distribution_cleaning(votes):
  t, keep, _ = label_modes.vote_targets(votes, _cfg(label_mode='distribution'), train=True)
  want_keep = (votes[:, 8] + votes[:, 9] <= 3) & (votes[:, :8].sum(1) > 0)
  np.testing.assert_array_equal(keep, want_keep)
  assert not keep[0] and keep[1] and not keep[2]
  np.testing.assert_allclose(t[1], [.75, 0, 0, .25, 0, 0, 0, 0])     # the paper's Fig. 16 row B
  floored, _, _ = label_modes.vote_targets(votes, _cfg(label_mode='distribution', vote_floor=1),
                                           train=True)
  np.testing.assert_allclose(floored[3], [1, 0, 0, 0, 0, 0, 0, 0])   # single votes zeroed
  _, msft, _ = label_modes.vote_targets(votes, _cfg(label_mode='distribution', clean='msft'),
                                        train=True)
  np.testing.assert_array_equal(msft, ferplus.process_votes(votes, 'crossentropy')[1])


def test_paper_split(votes):
  t, keep, _ = label_modes.vote_targets(votes, _cfg(label_mode='distribution'), train=True)
  parts = label_modes.paper_split(t, keep, seed=3, fraction=0.1)
  tr, od, cx = parts['train'], parts['ordinary'], parts['complex']
  assert not (set(tr) & set(od)) and not (set(tr) & set(cx)) and not (set(od) & set(cx))
  np.testing.assert_array_equal(np.sort(np.concatenate([tr, od, cx])), np.flatnonzero(keep))
  assert od.size == round(0.1 * keep.sum())
  assert ((t[cx] > 0).sum(1) > 3).all() and cx.size > 0
  again = label_modes.paper_split(t, keep, seed=3, fraction=0.1)
  np.testing.assert_array_equal(again['complex'], cx)
  assert not np.array_equal(label_modes.paper_split(t, keep, 4, 0.1)['ordinary'], od)


@pytest.fixture(scope='module')
def wild():
  return InSpace(synthetic.SyntheticFaces('wild', 'train', 300, 48, seed=0), 'affectnet8')


def test_view_nhot_on_training_targets_only(wild):
  cfg = _cfg(label_mode='distribution', split='paper', nhot=1, train='synthetic:wild:train')
  v = label_modes.source_votes(wild)
  dropped = int((v[:, 8] + v[:, 9] > 3).sum())
  train = label_modes.view(cfg, wild, cfg.data.train, train=True)
  ordinary = label_modes.view(cfg, wild, 'ordinary', train=False)
  complex_ = label_modes.view(cfg, wild, 'complex', train=False)
  assert len(train) + len(ordinary) + len(complex_) + dropped == 300
  assert train.notes == {'the paper cleaning (unknown + not-a-face > 3) in the pooled set': dropped}
  assert f'dropped {dropped} examples' in train.summary() or dropped == 0
  assert ((train.served > 0).sum(1) == 1).all()                      # 1-hot
  assert ((complex_.served > 0).sum(1) >= 4).all()                   # untouched, complex
  for view in (train, complex_):
    ex = view[0]
    i = int(view.positions[0])
    np.testing.assert_array_equal(ex['votes'], v[i])
    np.testing.assert_allclose(ex['label_dist'], view.served[0])
    assert ex['label'] == np.argmax(view.served[0]) == view.labels()[0]
  raw = v[int(complex_.positions[0]), :8]
  np.testing.assert_allclose(complex_.served[0], raw / raw.sum(), rtol=1e-6)


def test_view_errors(wild):
  with pytest.raises(ConfigError, match='label_mode'):
    label_modes.view(_cfg(label_mode='soft'), wild, 'x', True)
  with pytest.raises(ConfigError, match="split='paper'"):
    label_modes.pool_spec(_cfg(), 'complex')
  assert label_modes.view(_cfg(), wild, 'x', True) is wild           # nothing on: unchanged

  class NoVotes:
    class_names = CANONICAL

    def __len__(self):
      return 1

    def __getitem__(self, i):
      return {'label': 0, 'image': None}

  with pytest.raises(ConfigError, match='no annotator votes'):
    label_modes.view(_cfg(nhot=2), InSpace(NoVotes(), 'affectnet8'), 'x', True)


def test_pld_draws_per_epoch():
  cfg = _cfg()
  cfg.loss.name = 'pld'
  draw = label_modes.draw_batch(cfg, seed=5, steps_per_epoch=10)
  dist = np.tile(np.float32([.5, .3, .2, 0, 0, 0, 0, 0]), (4, 1))
  batch = {'label_dist': dist, 'label': np.zeros(4, np.int32)}
  ids = np.array([7, 8, 9, 10])
  a = draw(batch, ids, 3)
  assert (a['label_dist'].sum(1) == 1).all() and (a['label_dist'].max(1) == 1).all()
  np.testing.assert_array_equal(a['label'], a['label_dist'].argmax(1))
  # The draw of (seed, epoch, example) does not depend on the batch around it.
  b = draw({'label_dist': dist[1:2], 'label': np.zeros(1, np.int32)}, ids[1:2], 9)
  np.testing.assert_array_equal(b['label_dist'][0], a['label_dist'][1])
  counts = np.zeros(8)
  for epoch in range(600):
    counts += draw(batch, ids, 10 * epoch)['label_dist'].sum(0)
  np.testing.assert_allclose(counts / counts.sum(), dist[0], atol=0.03)
  assert label_modes.draw_batch(_cfg(), 5, 10) is None


def test_vote_report_against_numpy(votes):
  names = tuple(reversed(CANONICAL))                # a run whose outputs are in another order
  rng = np.random.default_rng(1)
  probs = rng.random((len(votes), 8))
  pred = np.array([CANONICAL.index(names[k]) for k in probs.argmax(1)])
  r = label_modes.vote_report(votes.astype(np.float32), probs, names)
  # The reference's majority rule, restated: votes <= 1 zeroed; the top count (first max,
  # unknown and not-a-face included) must exceed half of what is left and be an emotion.
  fl = np.where(votes <= 1, 0, votes)
  top = fl.argmax(1)
  ok = (2 * fl.max(1) > fl.sum(1)) & (top < 8)
  assert r['majority_dropped'] == int((~ok).sum())
  assert r['majority_accuracy'] == pytest.approx(100 * np.mean(pred[ok] == top[ok]))
  # The paper: Un + NF <= 3 kept; correct when the prediction has the most votes.
  keep = (votes[:, 8] + votes[:, 9] <= 3) & (votes[:, :8].sum(1) > 0)
  emo = votes[keep, :8]
  hit = emo[np.arange(len(emo)), pred[keep]] == emo.max(1)
  assert r['anymax_dropped'] == int((~keep).sum())
  assert r['anymax_accuracy'] == pytest.approx(100 * hit.mean())
  x = (emo > 0).sum(1)
  for level, row in r['by_complexity'].items():
    assert row['n'] == (x == level).sum()
    assert row['anymax_accuracy'] == pytest.approx(100 * hit[x == level].mean())
  assert label_modes.vote_report(votes, probs[:, :7], CANONICAL[:7]) is None


def test_synthetic_votes_have_ferplus_complexity():
  """About 90% of cleaned FERPlus images have votes on <= 3 emotions (paper 002, Fig. 17)."""
  v = synthetic.SyntheticFaces('wild', 'train', 1500, 48, seed=0).votes()
  dist, keep = ferplus.clean_votes(v)
  share = np.mean(ferplus.complexity_level(dist[keep]) <= 3)
  assert 0.86 < share < 0.94, share
