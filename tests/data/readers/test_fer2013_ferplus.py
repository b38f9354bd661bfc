"""FER2013 reader (fer2013.csv) and FERPlus reader (fer2013new.csv, or FER2013<Split>/label.csv
folders).

The expected canonical labels (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
6 anger, 7 contempt) are written out by hand, not derived from the reader's own tables, so a
wrong native order in a reader cannot be mirrored by the test.
"""
from __future__ import annotations

import numpy as np
import pytest

from ferjax.data.readers import ReaderError, fer2013
from tests.data.readers import basic_expression_trees as fx
from tests.data.readers.reading import collect

# Canonical order: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt.
FER2013_EXPECTED = {0: 6, 1: 5, 2: 4, 3: 1, 4: 2, 5: 3, 6: 0}  # angry, disgust, ..., neutral


FER_ROWS = [(code, 'Training') for code in range(7)] + [(3, 'PublicTest'), (6, 'PrivateTest')]


def test_fer2013_labels_images_and_splits(tmp_path):
  faces = fx.fer2013_csv(tmp_path / 'fer2013.csv', FER_ROWS)
  train = collect(fer2013.examples(tmp_path, 'train'))
  assert list(train) == [f'{i:05d}' for i in range(7)]
  for code in range(7):
    example = train[f'{code:05d}']
    assert example['label'] == FER2013_EXPECTED[code]
    assert example['image'].dtype == np.uint8 and example['image'].shape == (48, 48)
    np.testing.assert_array_equal(example['image'], faces[code])
  assert [ex['label'] for ex in collect(fer2013.examples(tmp_path, 'val')).values()] == [1]
  test = collect(fer2013.examples(tmp_path, 'test'))
  assert list(test) == ['00008'] and test['00008']['label'] == 0


@pytest.mark.parametrize('mutate, message', [
    (lambda r: ['7', r[1], r[2]], 'not a FER2013 code'),
    (lambda r: [r[0], r[1] + ' 5', r[2]], 'expected 2304 pixel values'),
    (lambda r: [r[0], r[1].replace('1', 'x', 1), r[2]], 'not integers'),
    (lambda r: r[:2], 'expected 3 fields'),
])
def test_fer2013_malformed_row_names_file_and_line(tmp_path, mutate, message):
  path = tmp_path / 'fer2013.csv'
  fx.fer2013_csv(path, FER_ROWS[:3])
  rows = [line.split(',') for line in path.read_text().splitlines()]
  rows[2] = mutate(rows[2])
  path.write_text('\n'.join(','.join(r) for r in rows) + '\n')
  with pytest.raises(ReaderError, match=message) as err:
    collect(fer2013.examples(tmp_path, 'train'))
  assert f'{path}:3' in str(err.value)


def _ferplus_rows():
  # Votes in FERPlus column order: neutral, happiness, surprise, sadness, anger, disgust, fear,
  # contempt, unknown, NF.
  return [
      ('Training', 'fer0000000.png', [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
      ('Training', '', [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),  # dropped by FERPlus
      ('Training', 'fer0000001.png', [0, 0, 0, 0, 3, 0, 3, 0, 4, 0]),  # anger/fear tie
      ('Training', 'fer0000002.png', [0, 0, 0, 0, 0, 0, 0, 0, 2, 8]),  # no emotion votes
      ('PublicTest', 'fer0000003.png', [0, 0, 0, 0, 0, 0, 0, 9, 1, 0]),
  ]


def _ferplus_csv_tree(tmp_path, new_rows=None):
  rows = _ferplus_rows() if new_rows is None else new_rows
  fer_rows = [(0, usage) for usage, _, _ in _ferplus_rows()]
  faces = fx.fer2013_csv(tmp_path / 'fer2013.csv', fer_rows)
  fx.fer2013new_csv(tmp_path / 'fer2013new.csv', rows)
  return faces


def test_ferplus_votes_are_reordered_to_canonical(tmp_path):
  faces = _ferplus_csv_tree(tmp_path)
  train = collect(fer2013.examples(tmp_path, 'train', dataset='ferplus'))
  assert list(train) == ['fer0000000', 'fer0000001', 'fer0000002']  # empty name skipped
  first = train['fer0000000']
  # canonical: neutral, happy, sad, surprise, fear, disgust, anger, contempt, unknown, NF
  np.testing.assert_array_equal(first['votes'], [1, 2, 4, 3, 7, 6, 5, 8, 9, 10])
  assert first['votes'].dtype == np.int32
  assert first['label'] == 7  # contempt has the most emotion votes (8)
  np.testing.assert_array_equal(first['image'], faces[0])
  np.testing.assert_array_equal(train['fer0000001']['image'], faces[2])
  assert train['fer0000001']['label'] == 4  # fear (4) beats anger (6) in a tie
  assert train['fer0000002']['label'] == -1  # only unknown / NF votes
  val = collect(fer2013.examples(tmp_path, 'val', dataset='ferplus'))
  assert list(val) == ['fer0000003'] and val['fer0000003']['label'] == 7


def test_ferplus_row_count_and_usage_mismatch(tmp_path):
  _ferplus_csv_tree(tmp_path, _ferplus_rows()[:-1])
  with pytest.raises(ReaderError, match='has 5 data rows but .* has 4'):
    collect(fer2013.examples(tmp_path, 'train', dataset='ferplus'))
  rows = _ferplus_rows()
  rows[2] = ('PrivateTest',) + rows[2][1:]
  _ferplus_csv_tree(tmp_path, rows)
  with pytest.raises(ReaderError, match=r'fer2013new.csv:4: Usage .*row-aligned'):
    collect(fer2013.examples(tmp_path, 'train', dataset='ferplus'))


@pytest.mark.parametrize('box', [True, False])
def test_ferplus_folders(tmp_path, box):
  rows = [(name, votes) for _, name, votes in _ferplus_rows() if name]
  fx.ferplus_folder(tmp_path / 'data' / 'FER2013Train', rows[:3], box=box)
  fx.ferplus_folder(tmp_path / 'data' / 'FER2013Valid', rows[3:], box=box)
  train = collect(fer2013.examples(tmp_path, 'train', dataset='ferplus'))
  assert list(train) == ['fer0000000', 'fer0000001', 'fer0000002']
  np.testing.assert_array_equal(train['fer0000000']['votes'], [1, 2, 4, 3, 7, 6, 5, 8, 9, 10])
  assert train['fer0000000']['image'].endswith('FER2013Train/fer0000000.png')
  assert [ex['label'] for ex in train.values()] == [7, 4, -1]
  assert len(collect(fer2013.examples(tmp_path, 'val', dataset='ferplus'))) == 1
  with pytest.raises(ReaderError, match='FER2013Test/label.csv'):
    collect(fer2013.examples(tmp_path, 'test', dataset='ferplus'))


def test_ferplus_folder_errors(tmp_path):
  folder_path = fx.ferplus_folder(tmp_path / 'FER2013Train', [('fer0000000.png', [1] * 10)],
                                  skip_images=('fer0000000.png',))
  with pytest.raises(ReaderError, match=r'label.csv:1: listed image .*fer0000000.png'):
    collect(fer2013.examples(tmp_path, 'train', dataset='ferplus'))
  assert not collect(fer2013.examples(tmp_path, 'train', dataset='ferplus', missing='skip'))
  with open(folder_path / 'label.csv', 'a') as f:
    f.write('fer0000001.png,1,2,3\n')
  with pytest.raises(ReaderError, match=r'label.csv:2: expected'):
    collect(fer2013.examples(tmp_path, 'train', dataset='ferplus', missing='skip'))
  with pytest.raises(ReaderError, match='no fer2013.csv'):
    collect(fer2013.examples(tmp_path, 'train'))  # folders hold no FER2013 labels
