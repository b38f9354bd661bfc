"""JAFFE reader: expression codes from the file names and the subject-independent splits.

Every expected canonical label below (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
6 anger) is written out by hand, not derived from the reader's own tables, so a wrong table
fails here.
"""
import os

import pytest

from ferjax.data.readers import ReaderError, jaffe
from tests.data.readers import emotic_affwild2_trees as fx
from tests.data.readers.reading import read as _read


# code -> canonical index: NE neutral, HA happy, SA sad, SU surprise, AN anger, DI disgust, FE fear
JAFFE_EXPECTED = {'NE': 0, 'HA': 1, 'SA': 2, 'SU': 3, 'AN': 6, 'DI': 5, 'FE': 4}
JAFFE_SUBJECTS = ('KA', 'KL', 'KM', 'KR', 'MK', 'NA', 'NM', 'TM', 'UY', 'YM')


def _jaffe_tree(root):
  n = 0
  for subject in JAFFE_SUBJECTS:
    for code in JAFFE_EXPECTED:
      n += 1
      fx.write_image(os.path.join(root, 'jaffedbase', f'{subject}.{code}1.{n}.tiff'), gray=True,
                     seed=n)
  fx.write_text(os.path.join(root, 'jaffedbase', 'README'), 'JAFFE')


def test_jaffe_codes_and_all_split(tmp_path):
  _jaffe_tree(tmp_path)
  out = _read(jaffe, tmp_path, 'all')
  assert len(out) == 70
  for key, ex in out.items():
    assert key.startswith('jaffedbase/') and ex['image'] == str(tmp_path / key)
    assert ex['label'] == JAFFE_EXPECTED[key.split('.')[1][:2]]


def test_jaffe_subject_independent_splits(tmp_path):
  _jaffe_tree(tmp_path)
  subjects = lambda d: {k.split('/')[1].split('.')[0] for k in d}  # noqa: E731
  train = _read(jaffe, tmp_path, 'train', num_test_subjects=3, seed=4)
  test = _read(jaffe, tmp_path, 'test', num_test_subjects=3, seed=4)
  assert len(subjects(test)) == 3 and not subjects(train) & subjects(test)
  assert len(train) + len(test) == 70
  assert test == _read(jaffe, tmp_path, 'test', num_test_subjects=3, seed=4)
  assert subjects(_read(jaffe, tmp_path, 'test', num_test_subjects=3, seed=5)) != subjects(test)
  fixed = _read(jaffe, tmp_path, 'test', test_subjects=['ka', 'UY'])
  assert subjects(fixed) == {'KA', 'UY'} and len(fixed) == 14
  with pytest.raises(ValueError, match='not in the data'):
    _read(jaffe, tmp_path, 'test', test_subjects=['ZZ'])


@pytest.mark.parametrize('name,message', [('KA.XX1.40.tiff', "unknown JAFFE expression code 'XX'"),
                                          ('KA_AN1_40.tiff', 'expected a name like')])
def test_jaffe_bad_names(tmp_path, name, message):
  path = fx.write_image(str(tmp_path / name), gray=True)
  with pytest.raises(ReaderError, match=message) as err:
    _read(jaffe, tmp_path, 'all')
  assert path in str(err.value)
