"""Tests of the procedural FER benchmark (ferjax.data.synthetic)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from ferjax.data import synthetic as syn
from ferjax.data.synthetic import (CLASS_NAMES, DOMAINS, IDENTITY_FIELDS, SyntheticFaces,
                                   make_example, render, render_grid, sample_params)

KEYS = {'image': (np.uint8, None), 'label': (np.int32, ()), 'votes': (np.int32, (10,)),
        'label_dist': (np.float32, (8,)), 'va': (np.float32, (2,)), 'va_mask': (np.float32, ()),
        'landmarks': (np.float32, (68, 2)), 'landmarks_mask': (np.float32, ()),
        'multilabel': (np.float32, (8,)), 'intensity': (np.float32, ()),
        'identity': (np.float32, (len(IDENTITY_FIELDS),)), 'domain': (np.int32, ()),
        'index': (np.int32, ())}
HAPPY, SAD, SURPRISE, FEAR, DISGUST, ANGER, CONTEMPT = range(1, 8)


@pytest.fixture(scope='module')
def lab_examples():
  src = SyntheticFaces('lab', 'train', num_examples=480, image_size=48, seed=3)
  return [src[i] for i in range(len(src))]


def _same(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_class_names_and_domains():
  assert CLASS_NAMES == ('neutral', 'happy', 'sad', 'surprise', 'fear', 'disgust', 'anger',
                         'contempt')
  assert DOMAINS == ('lab', 'wild', 'cartoon', 'lowq', 'occluded')


@pytest.mark.parametrize('domain', DOMAINS)
def test_deterministic_random_access(domain):
  a = SyntheticFaces(domain, 'train', 50, 64, seed=1)
  b = SyntheticFaces(domain, 'train', 50, 64, seed=1)
  assert _same(a[7], b[7])
  assert _same(a[7], a[7])
  assert _same(a[-1], a[49])
  assert not np.array_equal(a[7]['image'], a[8]['image'])
  other_split = SyntheticFaces(domain, 'val', 50, 64, seed=1)[7]
  other_seed = SyntheticFaces(domain, 'train', 50, 64, seed=2)[7]
  assert not np.array_equal(a[7]['image'], other_split['image'])
  assert not np.array_equal(a[7]['image'], other_seed['image'])


def test_make_example_matches_source_and_forces_label():
  src = SyntheticFaces('cartoon', 'val', 10, 64, seed=2)
  assert _same(make_example(2, 'cartoon', 'val', 4, 64), src[4])
  for c in range(8):
    assert make_example(0, 'wild', 'train', c, 48, label=c)['label'] == c


def test_splits_disjoint():
  imgs = {s: {SyntheticFaces('lab', s, 60, 48)[i]['image'].tobytes() for i in range(60)}
          for s in ('train', 'val', 'test')}
  assert not imgs['train'] & imgs['val']
  assert not imgs['train'] & imgs['test']
  assert not imgs['val'] & imgs['test']


@pytest.mark.parametrize('size', [48, 112, 224])
def test_shapes_dtypes_and_ranges(size):
  for d, domain in enumerate(DOMAINS):
    ex = SyntheticFaces(domain, 'test', 10, size)[3]
    assert set(ex) == set(KEYS)
    for k, (dtype, shape) in KEYS.items():
      assert ex[k].dtype == dtype, k
      assert ex[k].shape == (shape if shape is not None else (size, size, 3)), k
    assert ex['domain'] == d and ex['index'] == 3
    assert ex['votes'].sum() == 10 and (ex['votes'] >= 0).all()
    assert ex['label_dist'].sum() == pytest.approx(1.0, abs=1e-5)
    assert (np.abs(ex['va']) <= 1).all()
    assert 0 <= ex['label'] < 8 and 0 <= ex['intensity'] <= 1
    assert ex['va_mask'] == 1 and ex['landmarks_mask'] == 1


def test_value_ranges(lab_examples):
  for ex in lab_examples:
    assert (ex['landmarks'] >= 0).all() and (ex['landmarks'] <= 1).all()   # frontal lab faces
    assert (np.abs(ex['va']) <= 1).all()
    assert ex['votes'].sum() == 10
    assert ex['label_dist'].sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(ex['multilabel'], (ex['votes'][:8] >= 3).astype(np.float32))
    if ex['votes'][:8].sum():
      np.testing.assert_allclose(ex['label_dist'], ex['votes'][:8] / ex['votes'][:8].sum(),
                                 atol=1e-6)
    assert (ex['intensity'] == 0) == (ex['label'] == 0)
  labels = np.array([ex['label'] for ex in lab_examples])
  assert (np.bincount(labels, minlength=8) > 30).all()          # all classes present, balanced


def test_argument_validation():
  with pytest.raises(ValueError, match='lab, wild, cartoon, lowq, occluded'):
    SyntheticFaces('studio')
  with pytest.raises(ValueError, match='split'):
    SyntheticFaces('lab', 'dev')
  for size in (47, 225):
    with pytest.raises(ValueError, match='48..224'):
      SyntheticFaces('lab', image_size=size)
  with pytest.raises(ValueError):
    SyntheticFaces('lab', num_examples=0)
  src = SyntheticFaces('lab', num_examples=5)
  assert len(src) == 5
  for i in (5, 100, -6):
    with pytest.raises(IndexError):
      src[i]
  with pytest.raises(ValueError, match='valid domains'):
    sample_params(np.random.default_rng(0), 'nowhere')


def test_picklable_and_grain_source():
  src = SyntheticFaces('wild', 'val', 20, 64, seed=4)
  clone = pickle.loads(pickle.dumps(src))
  assert len(clone) == 20 and _same(clone[5], src[5])
  grain = pytest.importorskip('grain')
  ds = grain.MapDataset.source(src)
  assert _same(ds[5], src[5])


def _params(domain, label, n, intensity=1.0, seed=0):
  return [sample_params(np.random.default_rng([seed, label, i]), domain, label=label,
                        intensity=intensity, blend=False) for i in range(n)]


def _landmarks(label, n=12, domain='lab'):
  return np.stack([render(p, 112, domain)[1] for p in _params(domain, label, n)])


def test_geometry_follows_expression():
  neutral, happy, sad = _landmarks(0), _landmarks(HAPPY), _landmarks(SAD)
  surprise, contempt = _landmarks(SURPRISE), _landmarks(CONTEMPT)
  opening = lambda lm: (lm[:, 66, 1] - lm[:, 62, 1]).mean()
  assert opening(surprise) > opening(neutral) + 0.05
  brow_height = lambda lm: (lm[:, 36:48, 1].mean(1) - lm[:, 17:27, 1].mean(1)).mean()
  assert brow_height(surprise) > brow_height(neutral) + 0.02
  corner_lift = lambda lm: (lm[:, [51, 57], 1].mean(1) - lm[:, [48, 54], 1].mean(1)).mean()
  assert corner_lift(happy) > corner_lift(sad) + 0.03
  asym = lambda lm: np.abs(lm[:, 48, 1] - lm[:, 54, 1]).mean()
  assert asym(contempt) > asym(neutral) + 0.02
  # iBUG layout: jaw runs image left -> right through the chin, right eye on the image left
  lm = neutral[0]
  assert lm[0, 0] < lm[8, 0] < lm[16, 0] and lm[8, 1] > lm[57, 1] > lm[33, 1] > lm[27, 1]
  assert lm[36:42, 0].mean() < lm[42:48, 0].mean() and lm[17:22, 0].mean() < lm[22:27, 0].mean()
  assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0] and lm[48, 0] < lm[51, 0] < lm[54, 0]


def test_landmarks_follow_head_pose():
  p = _params('wild', 0, 1)[0]
  p.pose[:] = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0)
  front = render(p, 112, 'wild')[1]
  p.pose[2] = 0.3                                                   # roll
  rolled = render(p, 112, 'wild')[1]
  eye_angle = lambda lm: np.arctan2(*(lm[42:48].mean(0) - lm[36:42].mean(0))[::-1])
  assert abs(eye_angle(front)) < 0.05 and eye_angle(rolled) == pytest.approx(0.3, abs=0.05)
  p.pose[2], p.pose[0] = 0.0, 0.5                                   # yaw: nose tip moves most
  turned = render(p, 112, 'wild')[1]
  assert abs(turned[30, 0] - front[30, 0]) > abs(turned[0, 0] - front[0, 0]) + 0.02


def test_drawn_image_agrees_with_landmarks():
  dark = []
  for p in _params('lab', 0, 20, seed=7):
    img, lm = render(p, 112, 'lab')
    g = img[:, :, 0].astype(np.float32)
    def px(xy):                                         # 3x3 patch mean around a landmark
      x, y = int(xy[0] * 112), int(xy[1] * 112)
      return g[y - 1:y + 2, x - 1:x + 2].mean()

    eyes = (px(lm[36:42].mean(0)) + px(lm[42:48].mean(0))) / 2
    cheeks = (px((lm[2] + lm[31]) / 2) + px((lm[14] + lm[35]) / 2)) / 2
    mouth_vs_chin = px((lm[57] + lm[8]) / 2)
    dark.append((cheeks - eyes, abs(mouth_vs_chin - cheeks)))
  dark = np.array(dark)
  assert dark[:, 0].mean() > 25                         # pupils/irises darker than the cheek
  assert dark[:, 1].mean() < 20                         # the chin is skin like the cheek


def test_valence_arousal(lab_examples):
  labels = np.array([ex['label'] for ex in lab_examples])
  va = np.stack([ex['va'] for ex in lab_examples])
  mean = np.stack([va[labels == c].mean(0) for c in range(8)])
  assert mean[HAPPY, 0] > 0.2
  for c in (SAD, ANGER, FEAR, DISGUST):
    assert mean[c, 0] < -0.1, CLASS_NAMES[c]
  for hi in (SURPRISE, FEAR, ANGER):
    for lo in (SAD, 0):
      assert mean[hi, 1] > mean[lo, 1] + 0.2, (CLASS_NAMES[hi], CLASS_NAMES[lo])
  assert np.abs(mean[0]).max() < 0.05


def test_votes_agreement():
  rng = np.random.default_rng(0)

  def agreement(domain, intensity, blend, n=150):
    agree = []
    for i in range(n):
      p = sample_params(np.random.default_rng([9, i]), domain, label=1 + i % 7,
                        intensity=intensity, blend=blend)
      agree.append(syn.simulate_votes(p, domain, rng)[p.label] / 10)
    return np.mean(agree)

  strong = agreement('lab', 0.9, False)
  weak, blended = agreement('lab', 0.3, False), agreement('lab', 0.9, True)
  assert strong > 0.85
  assert weak < strong - 0.1 and blended < strong - 0.05
  assert agreement('occluded', 0.9, False) < strong - 0.1
  assert agreement('lowq', 0.9, False) < strong - 0.05


def test_domains_differ():
  stats = {}
  for domain in DOMAINS:
    src = SyntheticFaces(domain, 'val', 24, 112)
    ims = np.stack([src[i]['image'] for i in range(24)]).astype(np.float32)
    grey = ims.mean(-1)
    stats[domain] = {'sat': (ims.max(-1) - ims.min(-1)).mean(),
                     'edges': (np.abs(np.diff(grey, axis=2)) > 40).mean(),
                     'contrast': grey.std(axis=(1, 2)).mean()}
  assert stats['lab']['sat'] == 0
  assert stats['wild']['sat'] > 30 and stats['cartoon']['sat'] > 30
  assert stats['cartoon']['edges'] > 2 * stats['wild']['edges']          # thick outlines
  assert stats['lowq']['edges'] < 0.5 * stats['wild']['edges']           # blur
  assert stats['lowq']['contrast'] < 0.8 * stats['wild']['contrast']


def _pixels(domain, split, n):
  from PIL import Image
  src = SyntheticFaces(domain, split, n, 48, seed=11)
  x, y = [], []
  for i in range(n):
    ex = src[i]
    g = Image.fromarray(ex['image']).convert('L').resize((24, 24), Image.BILINEAR)
    x.append(np.asarray(g, np.float32).ravel() / 255.0)
    y.append(int(ex['label']))
  return np.array(x), np.array(y)


def test_learnable_with_domain_gap():
  """A linear model on 24x24 grey pixels learns lab faces and fails on wild ones."""
  from sklearn.linear_model import RidgeClassifier
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  x, y = _pixels('lab', 'train', 800)
  clf = make_pipeline(StandardScaler(), RidgeClassifier(alpha=100.0)).fit(x, y)
  in_domain = clf.score(*_pixels('lab', 'test', 240))
  cross = clf.score(*_pixels('wild', 'test', 240))
  assert in_domain > 0.45                    # chance is 0.125
  assert cross < in_domain - 0.2


def test_landmarks_carry_the_expression_in_every_domain():
  """The drawn geometry encodes the class everywhere: a linear model on landmarks learns it."""
  from sklearn.linear_model import RidgeClassifier
  for domain in ('wild', 'occluded'):
    def data(split, n):
      src = SyntheticFaces(domain, split, n, 48, seed=5)
      exs = [src[i] for i in range(n)]
      lm = np.stack([ex['landmarks'] for ex in exs])
      lm = (lm - lm.mean(1, keepdims=True)) / lm.std(axis=(1, 2), keepdims=True)
      return lm.reshape(n, -1), np.array([ex['label'] for ex in exs])
    clf = RidgeClassifier(alpha=1.0).fit(*data('train', 600))
    assert clf.score(*data('test', 200)) > 0.5, domain


def test_render_grid_and_cli(tmp_path):
  grid = render_grid(['lab', 'cartoon'], n_per_class=1, image_size=48, seed=0)
  assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
  assert grid.shape[1] > 8 * 48 and grid.shape[0] > 2 * 48
  out = tmp_path / 'grid.png'
  # The command in its own process: absl parses its flags once per process.
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  p = subprocess.run([sys.executable, '-m', 'ferjax.data.synthetic', '--grid', str(out),
                      '--size', '48', '--domains', 'lab,occluded'], capture_output=True,
                     text=True, cwd=repo, env=dict(os.environ, PYTHONPATH=repo), timeout=300)
  assert p.returncode == 0, p.stderr
  assert f'wrote {out}' in p.stdout
  from PIL import Image
  assert Image.open(out).size[0] > 8 * 48
