"""EMOTIC reader: mat2py.py's CSVs and Annotations.mat, with boxes, VAD and the emotic26
multi-hot."""
import os

import numpy as np
import pytest

from ferjax.data.readers import ReaderError, emotic
from tests.data.readers import emotic_affwild2_trees as fx
from tests.data.readers.reading import read as _read


def test_emotic_csv_box_vad_multilabel(tmp_path):
  rows = [('mscoco/images', 'a.jpg', (10, 20, 50, 60), ['Doubt/Confusion', 'Peace'], (1, 5.5, 10)),
          ('framesdb/images', 'b.jpg', (0, 0, 64, 48), ['Yearning'], (7, 3, 4)),
          ('mscoco/images', 'a.jpg', (30, 5, 40, 45), list(emotic.CATEGORIES), (2.5, 8.2, 6))]
  fx.emotic_tree(tmp_path, {'val': rows})
  out = _read(emotic, tmp_path, 'val')
  assert list(out) == ['val/0', 'val/1', 'val/2']
  ex = out['val/0']
  assert ex['image'] == str(tmp_path / 'emotic' / 'mscoco/images' / 'a.jpg')
  assert ex['label'] == -1
  np.testing.assert_array_equal(ex['box'], [10, 20, 40, 40])  # x1,y1,x2,y2 -> x,y,w,h
  assert ex['box'].dtype == np.float32 and ex['vad'].dtype == np.float32
  np.testing.assert_allclose(ex['vad'], [-1.0, 0.0, 1.0])  # 1 -> -1, 5.5 -> 0, 10 -> 1
  expected = np.zeros(26, np.float32)
  expected[[9, 18]] = 1  # doubt_confusion, peace in emotic26 order
  np.testing.assert_array_equal(ex['multilabel'], expected)
  np.testing.assert_array_equal(out['val/1']['multilabel'], np.eye(26)[25])  # yearning
  np.testing.assert_allclose(out['val/1']['vad'], [1.5 / 4.5, -2.5 / 4.5, -1.5 / 4.5], rtol=1e-6)
  np.testing.assert_array_equal(out['val/2']['multilabel'], np.ones(26))
  # CAGE's (2v - 11) / 9 is the same mapping.
  np.testing.assert_allclose(out['val/2']['vad'], (np.array([2.5, 8.2, 6]) * 2 - 11) / 9,
                             rtol=1e-6)


def test_emotic_category_spellings():
  hot = emotic.multi_hot(['doubt confusion', 'DOUBT_CONFUSION', ' Disquietment '], 'x')
  assert np.flatnonzero(hot).tolist() == [8, 9]


def _emotic_error(tmp_path, row_text, line=2):
  path = fx.write_text(str(tmp_path / 'emotic_pre' / 'train.csv'),
                       fx.EMOTIC_HEADER + '\n' + row_text + '\n')
  fx.write_image(str(tmp_path / 'emotic' / 'f' / 'a.jpg'))
  with pytest.raises(ReaderError) as err:
    _read(emotic, tmp_path, 'train')
  assert f'{path}:{line}' in str(err.value)
  return str(err.value)


@pytest.mark.parametrize('row,message', [
    ('0,f,a.jpg,"[9, 9]","[1, 2, 5, 6]","[\'Joy\']","[5, 5, 5]",Male,Adult', "'Joy'"),
    ('0,f,a.jpg,"[9, 9]","[1, 2, 5]","[\'Peace\']","[5, 5, 5]",Male,Adult', 'BBox'),
    ('0,f,a.jpg,"[9, 9]","[5, 2, 1, 6]","[\'Peace\']","[5, 5, 5]",Male,Adult', 'empty'),
    ('0,f,a.jpg,"[9, 9]","[1, 2, 5, 6]","[\'Peace\']","[5, 0, 5]",Male,Adult', '1..10'),
    ('0,f,a.jpg,"[9, 9]","[1, 2, 5, 6]","[\'Peace\']","[5, x, 5]",Male,Adult', 'Continuous'),
    ('0,f,a.jpg,"[9, 9]","[1, 2, 5, 6]","[\'Peace\']"', 'fields'),
    ('0,f,missing.jpg,"[9, 9]","[1, 2, 5, 6]","[\'Peace\']","[5, 5, 5]",Male,Adult', 'missing'),
])
def test_emotic_malformed_rows_name_file_and_line(tmp_path, row, message):
  assert message in _emotic_error(tmp_path, row)


def test_emotic_bad_header_and_skip_missing(tmp_path):
  path = fx.write_text(str(tmp_path / 'train.csv'), 'Index,Folder,Filename\n0,f,a.jpg\n')
  with pytest.raises(ReaderError, match=f'{path}:1: header lacks'):
    _read(emotic, tmp_path, 'train')
  rows = [('f', 'a.jpg', (0, 0, 4, 4), ['Pain'], (5, 5, 5)),
          ('f', 'b.jpg', (0, 0, 4, 4), ['Pain'], (5, 5, 5))]
  fx.emotic_tree(tmp_path / 'x', {'test': rows})
  os.remove(tmp_path / 'x' / 'emotic' / 'f' / 'a.jpg')
  stats = {}
  out = _read(emotic, tmp_path / 'x', 'test', skip_missing=True, stats=stats)
  assert list(out) == ['test/1'] and stats == {'missing_image': 1, 'yielded': 1}
  # csv= and image_dir= point elsewhere.
  out = _read(emotic, tmp_path, 'test', csv={'test': 'x/emotic_pre/test.csv'},
              image_dir=str(tmp_path / 'x' / 'emotic'), skip_missing=True)
  assert list(out) == ['test/1']


@pytest.mark.parametrize('split', ['train', 'val'])
def test_emotic_mat_follows_mat2py(tmp_path, split):
  pytest.importorskip('scipy')
  nan = float('nan')
  images = [('mscoco/images', 'a.jpg', (100, 80), [
      ((-5, 10, 50, 90), ['Doubt/Confusion', 'Peace'], (5.5, 1, 10)),  # clamped to 0..100, 0..80
      ((1, 1, 9, 9), ['Pain'], (nan, 5, 5)),                            # NaN: skipped
  ]), ('ade20k/images', 'b.jpg', (40, 40), [
      ((50, 0, 60, 10), ['Pain'], (5, 5, 5)),                           # empty once clamped
      ((2, 3, 12, 23), ['Sympathy'], (10, 10, 1)),
  ])]
  fx.emotic_mat(tmp_path, split, images)
  stats = {}
  out = _read(emotic, tmp_path, split, stats=stats)
  assert list(out) == [f'{split}/0', f'{split}/1']
  first, second = out[f'{split}/0'], out[f'{split}/1']
  np.testing.assert_array_equal(first['box'], [0, 10, 50, 70])
  np.testing.assert_allclose(first['vad'], [0, -1, 1])
  assert np.flatnonzero(first['multilabel']).tolist() == [9, 18]
  assert second['image'].endswith(os.path.join('emotic', 'ade20k/images', 'b.jpg'))
  np.testing.assert_array_equal(second['box'], [2, 3, 10, 20])
  assert np.flatnonzero(second['multilabel']).tolist() == [24]
  assert stats == {'yielded': 2, 'no_annotation': 1, 'empty_box': 1}
