"""Paper 002's appended augmentation: sizes, variants, landmarks moving with the pixels."""
import numpy as np
import pytest

from ferjax.data.offline_augment import Appended


class _Dots:
  """Examples with one bright dot and a landmark on it."""

  def __init__(self, n=3, size=41):
    rng = np.random.default_rng(0)
    self.items = []
    for i in range(n):
      img = np.zeros((size, size, 3), np.uint8)
      x, y = rng.integers(12, 28, 2)
      img[y - 1:y + 2, x - 1:x + 2] = 255
      lm = np.tile(np.array([[x, y]], np.float32) / (size - 1), (68, 1))
      self.items.append({'image': img, 'landmarks': lm, 'label': i, 'index': i})

  def __len__(self):
    return len(self.items)

  def __getitem__(self, i):
    return self.items[i]


def _centroid(img):
  w = img.mean(-1).astype(np.float64)
  w /= w.sum()
  ys, xs = np.mgrid[:img.shape[0], :img.shape[1]]
  return np.array([(w * xs).sum(), (w * ys).sum()]) / (img.shape[0] - 1)


def test_appended_set_has_base_flip_and_rotations():
  base = _Dots()
  app = Appended(base)
  assert len(app) == 4 * len(base)
  np.testing.assert_array_equal(app[1]['image'], base[1]['image'])
  np.testing.assert_array_equal(app[3 + 1]['image'], base[1]['image'][:, ::-1])
  assert [app[i]['label'] for i in range(12)] == [0, 1, 2] * 4
  assert [int(app[i]['index']) for i in range(12)] == list(range(12))
  for i in range(len(app)):      # landmarks sit on the dot in every variant
    np.testing.assert_allclose(_centroid(app[i]['image']), app[i]['landmarks'][0],
                               atol=1.2 / 40)
  assert np.abs(app[2 * 3]['landmarks'][0] - base[0]['landmarks'][0]).max() > 0.02


def test_rotation_variants_of_table_2():
  from ferjax.data.offline_augment import parse_rotation
  assert parse_rotation('40') == ((40.0, -40.0), None)
  assert parse_rotation('10-30') == ((1.0, -1.0), (10.0, 30.0))
  for bad in ('abc', '30-10', ''):
    with pytest.raises(ValueError, match='append_rotation'):
      parse_rotation(bad)
  base = _Dots(n=6)
  fixed = Appended(base, rotations=(40.0, -40.0))
  rand = Appended(base, rotations=(1.0, -1.0), random_range=(10.0, 30.0), seed=3)
  again = Appended(base, rotations=(1.0, -1.0), random_range=(10.0, 30.0), seed=3)
  assert 10 <= rand.magnitudes.min() and rand.magnitudes.max() <= 30
  assert len(set(np.round(rand.magnitudes, 6))) == 6           # one magnitude per example
  c = np.array([20.0, 20.0]) / 40                               # the image centre
  for i in range(6):
    # The dot turns about the centre by the copy's angle: +a, then -a.
    for k, sign in ((2, 1.0), (3, -1.0)):
      ex = rand[k * 6 + i]
      np.testing.assert_array_equal(ex['image'], again[k * 6 + i]['image'])
      p0, p1 = base[i]['landmarks'][0] - c, ex['landmarks'][0] - c
      turn = np.degrees(np.arctan2(p0[0] * p1[1] - p0[1] * p1[0], p0 @ p1))
      np.testing.assert_allclose(-turn, sign * rand.magnitudes[i], atol=1e-3)
      np.testing.assert_allclose(_centroid(ex['image']), ex['landmarks'][0], atol=1.5 / 40)
    p1 = fixed[2 * 6 + i]['landmarks'][0] - c
    p0 = base[i]['landmarks'][0] - c
    np.testing.assert_allclose(-np.degrees(np.arctan2(p0[0] * p1[1] - p0[1] * p1[0], p0 @ p1)),
                               40.0, atol=1e-3)
