"""Paper 002's appended augmentation: sizes, variants, landmarks moving with the pixels."""
import numpy as np

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
