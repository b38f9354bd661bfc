"""FERG-DB reader: labels from the file names and the seeded per-character splits.

Every expected canonical label below (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
6 anger) is written out by hand, not derived from the reader's own tables, so a wrong table
fails here.
"""
import os

import pytest

from ferjax.data.readers import ReaderError, ferg
from tests.data.readers import emotic_affwild2_trees as fx
from tests.data.readers.reading import read as _read


# expression -> canonical index
FERG_EXPECTED = {'anger': 6, 'disgust': 5, 'fear': 4, 'joy': 1, 'neutral': 0, 'sadness': 2,
                 'surprise': 3}


def _ferg_tree(root, per_group=5, characters=('aia', 'bonnie', 'ray')):
  for char in characters:
    for expr in FERG_EXPECTED:
      for n in range(1, per_group + 1):
        # The released nesting <char>/<char>_<expr>/ for aia; a flatter <char>/ for the rest
        # (the reader parses the file name, so any nesting is valid).
        sub = (char, f'{char}_{expr}') if char == 'aia' else (char,)
        fx.write_image(os.path.join(root, 'FERG_DB_256', *sub, f'{char}_{expr}_{n}.png'), seed=n)
  fx.write_text(os.path.join(root, 'FERG_DB_256', 'README.txt'), 'FERG')


def test_ferg_labels_from_file_names(tmp_path):
  _ferg_tree(tmp_path, per_group=1)
  out = _read(ferg, tmp_path, 'all')
  assert len(out) == 21
  assert 'FERG_DB_256/aia/aia_joy/aia_joy_1.png' in out
  assert 'FERG_DB_256/ray/ray_joy_1.png' in out
  for key, ex in out.items():
    assert ex['label'] == FERG_EXPECTED[os.path.basename(key).split('_')[1]]
  # manual_dir may also be the FERG_DB_256 folder itself.
  assert len(_read(ferg, tmp_path / 'FERG_DB_256', 'all')) == 21


def test_ferg_seeded_per_character_split(tmp_path):
  _ferg_tree(tmp_path, per_group=10)
  parts = {s: _read(ferg, tmp_path, s, seed=3) for s in ('train', 'val', 'test')}
  keys = [set(p) for p in parts.values()]
  assert sum(map(len, keys)) == 210 and len(set.union(*keys)) == 210
  # Every (character, expression) group splits 7 / 1 / 2 (fractions 0.1 val, 0.2 test).
  for split, count in (('train', 7), ('val', 1), ('test', 2)):
    groups = {}
    for key in parts[split]:
      char, expr, _ = os.path.basename(key).split('_')
      groups[char, expr] = groups.get((char, expr), 0) + 1
    assert len(groups) == 21 and set(groups.values()) == {count}
  assert parts['test'] == _read(ferg, tmp_path, 'test', seed=3)
  assert set(_read(ferg, tmp_path, 'test', seed=4)) != set(parts['test'])
  held = _read(ferg, tmp_path, 'test', test_characters=['Ray'])
  assert len(held) == 70 and all(k.startswith('FERG_DB_256/ray/') for k in held)
  val = _read(ferg, tmp_path, 'val', test_characters=['ray'], val_characters=['bonnie'])
  assert len(val) == 70 and len(_read(ferg, tmp_path, 'train', test_characters=['ray'])) == 140
  with pytest.raises(ValueError, match='disjoint'):
    _read(ferg, tmp_path, 'test', test_characters=['mery'])


@pytest.mark.parametrize('name,message', [('aia_happy_1.png', "unknown FERG expression 'happy'"),
                                          ('aia-joy-1.png', 'expected a name like')])
def test_ferg_bad_names(tmp_path, name, message):
  path = fx.write_image(str(tmp_path / 'FERG_DB_256' / 'aia' / name))
  with pytest.raises(ReaderError, match=message) as err:
    _read(ferg, tmp_path, 'all')
  assert path in str(err.value)
