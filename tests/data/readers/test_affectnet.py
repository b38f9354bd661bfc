"""AffectNet reader: the official manually-annotated CSVs, the npy release and CAGE's CSVs.

AffectNet codes 0-7 are already the canonical order; 8-10 are dropped."""
from __future__ import annotations

import numpy as np
import pytest

from ferjax.data.readers import ReaderError, affectnet
from tests.data.readers import basic_expression_trees as fx
from tests.data.readers.reading import collect


def _affectnet_rows():
  rows = [fx.affectnet_row(f'{100 + code}/img{code}.jpg', code, 0.1 * code - 0.5, 0.25, code)
          for code in range(11)]
  rows[3][7] = rows[3][8] = -2  # surprise without valence/arousal: kept, va_valid False
  return rows


@pytest.mark.parametrize('header', [True, False])
def test_affectnet_official(tmp_path, header):
  fx.affectnet_official(tmp_path, 'training.csv', _affectnet_rows(), header=header)
  train = collect(affectnet.examples(tmp_path, 'train'))
  assert list(train) == [f'{100 + code}/img{code}.jpg' for code in range(8)]  # 8-10 dropped
  for code in range(8):
    example = train[f'{100 + code}/img{code}.jpg']
    assert example['label'] == code  # AffectNet codes are already canonical
    np.testing.assert_allclose(example['box'], [10 + code, 20 + code, 100 + code, 110 + code])
    assert example['landmarks'].shape == (68, 2) and example['landmarks'].dtype == np.float32
    np.testing.assert_allclose(example['landmarks'], fx.landmarks(code), atol=1e-4)
    assert example['image'].endswith(f'Manually_Annotated_Images/{100 + code}/img{code}.jpg')
  np.testing.assert_allclose(train['100/img0.jpg']['va'], [-0.5, 0.25])
  assert train['100/img0.jpg']['va_valid']
  invalid = train['103/img3.jpg']
  assert not invalid['va_valid'] and invalid['va'].tolist() == [0, 0]
  seven = collect(affectnet.examples(tmp_path, 'train', num_classes=7))
  assert sorted(ex['label'] for ex in seven.values()) == list(range(7))
  assert affectnet.info(7).class_space == 'affectnet7'
  assert set(affectnet.INFO.features) == {'va', 'va_valid', 'landmarks', 'box'}


@pytest.mark.parametrize('field, value, message', [
    (5, '1.0;2.0;3.0', 'expected 68 landmarks'),
    (5, 'a;b', 'landmarks are not numbers'),
    (6, '11', 'not an AffectNet code'),
    (6, '2.5', 'not an integer'),
    (7, '1.5', r'outside \[-1, 1\]'),
    (1, 'left', 'face box'),
])
def test_affectnet_malformed_row_names_file_and_line(tmp_path, field, value, message):
  rows = _affectnet_rows()[:3]
  rows[1][field] = value
  path = fx.affectnet_official(tmp_path, 'validation.csv', rows, header=False)
  with pytest.raises(ReaderError, match=message) as err:
    collect(affectnet.examples(tmp_path, 'val'))
  assert f'{path}:2' in str(err.value)


def test_affectnet_short_row_and_missing_image(tmp_path):
  rows = _affectnet_rows()[:3]
  path = fx.affectnet_official(tmp_path, 'training.csv', rows, header=True,
                               skip_images=(rows[2][0],))
  with pytest.raises(ReaderError, match=rf'{path}:4: listed image .*102/img2.jpg'):
    collect(affectnet.examples(tmp_path, 'train'))
  assert len(collect(affectnet.examples(tmp_path, 'train', missing='skip'))) == 2
  with open(path, 'a') as f:
    f.write('103/x.jpg,1,2,3\n')
  with pytest.raises(ReaderError, match=rf'{path}:5: expected 9 fields'):
    collect(affectnet.examples(tmp_path, 'train', missing='skip'))


@pytest.mark.parametrize('as_strings', [True, False])
def test_affectnet_npy_release(tmp_path, as_strings):
  items = {0: (1, 0.5, -0.25), 2: (7, -2, -2), 10: (9, 0.0, 0.0), 11: (3, -0.1, 0.9)}
  fx.affectnet_npy(tmp_path, 'val_set', items, as_strings=as_strings)
  val = collect(affectnet.examples(tmp_path, 'val'))
  assert list(val) == ['val_set/images/0.jpg', 'val_set/images/2.jpg', 'val_set/images/11.jpg']
  assert [ex['label'] for ex in val.values()] == [1, 7, 3]
  np.testing.assert_allclose(val['val_set/images/0.jpg']['va'], [0.5, -0.25])
  assert not val['val_set/images/2.jpg']['va_valid']
  np.testing.assert_allclose(val['val_set/images/11.jpg']['landmarks'], fx.landmarks(11),
                             atol=1e-4)
  assert affectnet.detect_layout(tmp_path, 'val') == 'npy'
  assert 'box' not in affectnet.info(layout='npy').features


def test_affectnet_cage_csv(tmp_path):
  rows = [['number', 'exp', 'val', 'aro'], [0, 0, -0.17, -0.07], [4, 2, -0.64, -0.5],
          [7, 8, 0.1, 0.1], [9, 7, -2, -2]]
  fx.write_csv(tmp_path / 'affectnet_annotations' / 'val_set_annotation_without_lnd.csv', rows)
  for number in (0, 4, 7, 9):
    fx.write_image(tmp_path / 'val_set' / 'images' / f'{number}.jpg')
  val = collect(affectnet.examples(tmp_path, 'val'))
  assert list(val) == ['val_set/images/0.jpg', 'val_set/images/4.jpg', 'val_set/images/9.jpg']
  assert [ex['label'] for ex in val.values()] == [0, 2, 7]
  assert [bool(ex['va_valid']) for ex in val.values()] == [True, True, False]
  assert 'landmarks' not in val['val_set/images/0.jpg']
  # An explicit csv= with a pandas index column, for the train split.
  other = fx.write_csv(tmp_path / 'mine.csv', [['', 'number', 'exp', 'val', 'aro'],
                                               [0, 5, 6, 0.2, 0.3]])
  fx.write_image(tmp_path / 'train_set' / 'images' / '5.jpg')
  train = collect(affectnet.examples(tmp_path, 'train', csv=other))
  assert list(train) == ['train_set/images/5.jpg'] and train['train_set/images/5.jpg']['label'] == 6
  assert len(collect(affectnet.examples(tmp_path, 'val', num_classes=7))) == 2


def test_affectnet_no_layout(tmp_path):
  with pytest.raises(ReaderError, match='training.csv.*train_set/annotations'):
    collect(affectnet.examples(tmp_path, 'train'))
