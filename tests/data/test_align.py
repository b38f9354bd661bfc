"""Eye alignment from landmarks: the transform, the pixels it moves, and the pipeline option."""
import numpy as np
import pytest

from ferjax import config as config_lib
from ferjax.data import align, pipeline

SIZE = 64


def _dots(left, right):
  """An image with a bright 3x3 dot on each eye (pixel positions) and 5-point landmarks."""
  img = np.zeros((SIZE, SIZE, 3), np.uint8)
  for x, y in (left, right):
    img[y - 1:y + 2, x - 1:x + 2] = 255
  lm = np.array([left, right, (32, 40), (26, 48), (38, 48)], np.float32) / (SIZE - 1)
  return img, lm


def _blob_centres(img):
  """Centroids of the left and right halves' bright pixels (pixels)."""
  w = img.mean(-1).astype(np.float64)
  ys, xs = np.mgrid[:SIZE, :SIZE]
  out = []
  for half in (xs < SIZE / 2, xs >= SIZE / 2):
    m = w * half
    out.append(np.array([(m * xs).sum(), (m * ys).sum()]) / m.sum())
  return out


def test_similarity_maps_the_eyes_and_keeps_angles():
  a = align.similarity((10, 30), (40, 20), (20, 22), (43, 22))
  np.testing.assert_allclose(a @ [10, 30, 1], [20, 22], atol=1e-9)
  np.testing.assert_allclose(a @ [40, 20, 1], [43, 22], atol=1e-9)
  r = a[:, :2]
  np.testing.assert_allclose(r @ r.T, np.eye(2) * np.linalg.det(r), atol=1e-9)  # no shear
  with pytest.raises(ValueError, match='coincide'):
    align.similarity((5, 5), (5, 5), (1, 1), (2, 2))


@pytest.mark.parametrize('left,right', [((18, 30), (42, 22)), ((14, 20), (34, 24))])
def test_the_eye_pixels_land_on_the_targets(left, right):
  img, lm = _dots(left, right)
  out, lm2 = align.align(img, lm, eyes=(0.3, 0.4))
  want = np.array([[0.3, 0.4], [0.7, 0.4]]) * (SIZE - 1)
  got = _blob_centres(out)
  np.testing.assert_allclose(got, want, atol=0.6)          # measured on the warped pixels
  np.testing.assert_allclose(lm2[:2] * (SIZE - 1), want, atol=1e-4)
  # The other landmarks move with the same transform as the pixels would.
  a = align.similarity(np.array(left, float), np.array(right, float), want[0], want[1])
  np.testing.assert_allclose(lm2[2:] * (SIZE - 1),
                             lm[2:] * (SIZE - 1) @ a[:, :2].T + a[:, 2], atol=1e-4)


def test_examples_without_landmarks_pass_through_and_are_counted():
  img, lm = _dots((18, 30), (42, 22))
  src = [{'image': img, 'landmarks': lm, 'landmarks_mask': np.float32(0.0)}, {'image': img}]
  wrapped = align.Aligned(src)
  for i in range(2):
    np.testing.assert_array_equal(wrapped[i]['image'], img)
  assert wrapped.unaligned == 2
  with pytest.raises(ValueError, match='align_eyes'):
    align.Aligned(src, eyes=(0.6, 0.3))
  with pytest.raises(ValueError, match='68 or 5'):
    align.eye_centres(np.zeros((10, 2)))


def test_pipeline_option_aligns_every_split_by_its_own_landmarks():
  cfg = config_lib.base_config()
  with cfg.unlocked():
    cfg.data.update(image_size=SIZE, align='eyes', align_eyes=(0.3, 0.38))
  src = pipeline.in_space(cfg, 'synthetic:wild:test', 6, seed=0)
  plain = pipeline.in_space(_off(cfg), 'synthetic:wild:test', 6, seed=0)
  for i in range(6):
    ex = src[i]
    left, right = align.eye_centres(ex['landmarks'])
    np.testing.assert_allclose([left, right], [[0.3, 0.38], [0.7, 0.38]], atol=1e-4)
    assert ex['label'] == plain[i]['label']
    assert not np.array_equal(ex['image'], plain[i]['image'])
  cfg.data.align = 'face'
  with pytest.raises(ValueError, match='config.data.align'):
    pipeline.in_space(cfg, 'synthetic:wild:test', 2, seed=0)


def _off(cfg):
  out = config_lib.base_config()
  with out.unlocked():
    out.data.update(image_size=cfg.data.image_size)
  return out
