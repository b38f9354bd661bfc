"""ABAW4 LSD reader: class folders per split (lsd6: 0 happy, 1 sad, 2 surprise, 3 fear,
4 disgust, 5 anger) and the optional landmark files.

Every expected label below is written out by hand, not derived from the reader's own
tables, so a wrong table fails here.
"""
import os

import numpy as np
import pytest

from ferjax.data.readers import ReaderError, lsd
from tests.data.readers import emotic_affwild2_trees as fx
from tests.data.readers.reading import read as _read


def _landmark_lines(seed=0):
  pts = np.random.default_rng(seed).uniform(0, 100, (68, 2)).round(2)
  return pts, '\n'.join(f'{x} {y}' for x, y in pts) + '\n'


def test_lsd_labels_aliases_and_test_split(tmp_path):
  # folder -> expected lsd6 index (happy, sad, surprise, fear, disgust, anger).
  train = {'ANGER': 5, 'ANGRER': 5, 'DISGUST': 4, 'FEAR': 3, 'HAPPINESS': 0, 'SADNESS': 1,
           'SURPRISE': 2}
  for folder in train:
    fx.write_image(str(tmp_path / 'training_set_synthetic_images' / folder / f'{folder}_1.jpg'))
  for folder in ('anger', 'happiness', 'Sadness'):
    fx.write_image(str(tmp_path / 'validation_set_real_images' / folder / 'deep' / 'v.png'))
  fx.write_text(str(tmp_path / 'training_set_synthetic_images' / 'README.txt'), 'not an image')
  for name in ('b.jpg', 'a.jpg'):
    fx.write_image(str(tmp_path / 'lsd_test_data' / name))
  out = _read(lsd, tmp_path, 'train')
  assert {k.split('/')[1]: ex['label'] for k, ex in out.items()} == train
  assert all('landmarks' not in ex for ex in out.values())
  val = _read(lsd, tmp_path, 'val')
  assert [ex['label'] for ex in val.values()] == [5, 0, 1]
  assert list(val)[0] == 'validation_set_real_images/anger/deep/v.png'
  test = _read(lsd, tmp_path, 'test')
  assert list(test) == ['lsd_test_data/a.jpg', 'lsd_test_data/b.jpg']
  assert {ex['label'] for ex in test.values()} == {-1}


def test_lsd_landmarks_in_both_formats(tmp_path):
  folder = tmp_path / 'validation_set_real_images' / 'fear'
  fx.write_image(str(folder / 'x.jpg'))
  fx.write_image(str(folder / 'y.jpg'))
  pts, text = _landmark_lines(0)
  fx.write_text(str(folder / 'x.txt'), text)
  pts2 = np.random.default_rng(1).uniform(0, 100, (68, 2)).round(2)
  flat = pts2.reshape(-1)  # 136 numbers x0 y0 x1 y1 ..., 8 per line, comma separated
  fx.write_text(str(folder / 'y.txt'),
                '\n'.join(','.join(map(str, flat[i:i + 8])) for i in range(0, 136, 8)))
  out = _read(lsd, tmp_path, 'val')
  np.testing.assert_allclose(out['validation_set_real_images/fear/x.jpg']['landmarks'], pts)
  np.testing.assert_allclose(out['validation_set_real_images/fear/y.jpg']['landmarks'], pts2)
  assert out['validation_set_real_images/fear/x.jpg']['landmarks'].dtype == np.float32
  assert all('landmarks' not in ex for ex in _read(lsd, tmp_path, 'val', landmarks=False).values())
  os.remove(folder / 'y.txt')  # now one image of the split lacks its landmarks
  with pytest.raises(ReaderError, match='y.jpg: no landmark file y.txt'):
    _read(lsd, tmp_path, 'val')


def test_lsd_errors(tmp_path):
  folder = tmp_path / 'validation_set_real_images' / 'fear'
  fx.write_image(str(folder / 'x.jpg'))
  lines = _landmark_lines()[1].splitlines()
  lines[6] = '1.0 2.0 3.0'
  path = fx.write_text(str(folder / 'x.txt'), '\n'.join(lines))
  with pytest.raises(ReaderError, match=f'{path}:7: expected 68 lines'):
    _read(lsd, tmp_path, 'val')
  lines[6] = '1.0 abc'
  fx.write_text(path, '\n'.join(lines))
  with pytest.raises(ReaderError, match=f'{path}:7: non-numeric'):
    _read(lsd, tmp_path, 'val')
  bad = fx.write_image(str(tmp_path / 'training_set_synthetic_images' / 'CONTEMPT' / 'a.jpg'))
  with pytest.raises(ReaderError, match="unknown LSD class folder 'CONTEMPT'") as err:
    _read(lsd, tmp_path, 'train')
  assert os.path.dirname(bad) in str(err.value)
  with pytest.raises(ReaderError, match='missing split folder'):
    _read(lsd, tmp_path, 'test')
