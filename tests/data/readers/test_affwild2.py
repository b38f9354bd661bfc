"""Aff-Wild2 reader: per-video EXPR annotation files and cropped_aligned frames.

Every expected canonical label below (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
6 anger) is written out by hand, not derived from the reader's own tables, so a wrong table
fails here.
"""
import os

import pytest

from ferjax.data.readers import ReaderError, affwild2
from tests.data.readers import emotic_affwild2_trees as fx
from tests.data.readers.reading import read as _read


def test_affwild2_codes_skips_and_counts(tmp_path):
  # Frame:  1   2  3  4  5  6  7  8  9 10  11  12
  codes = [0, -1, 1, 2, 3, 4, 5, 6, 7, 1, -1, 4]
  fx.affwild2_tree(tmp_path, {'vid_left': codes, 'other_vid': [6, 6]},
                   frames={'vid_left': [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]})  # no frame 10
  stats = {}
  out = _read(affwild2, tmp_path, 'train', stats=stats)
  # neutral->0, anger->6, disgust->5, fear->4, happiness->1, sadness->2, surprise->3.
  expected = {1: 0, 3: 6, 4: 5, 5: 4, 6: 1, 7: 2, 8: 3, 12: 1}
  assert {k: ex['label'] for k, ex in out.items()} == {
      f'vid_left/{n:05d}': label for n, label in expected.items()}
  assert out['vid_left/00012']['image'] == str(tmp_path / 'cropped_aligned' / 'vid_left'
                                               / '00012.jpg')
  assert stats == {'videos': 2, 'frames': 14, 'yielded': 8, 'ignored': 2, 'other': 1,
                   'missing_image': 3, 'missing_video': 1}
  kept = _read(affwild2, tmp_path, 'train', other='unknown')
  assert kept['vid_left/00009']['label'] == -1 and len(kept) == 9


def test_affwild2_val_split_and_options(tmp_path):
  fx.affwild2_tree(tmp_path / 'ds', {'v': [3, 2]}, split_dir='Validation_Set')
  out = _read(affwild2, tmp_path / 'ds', 'val')
  assert {k: ex['label'] for k, ex in out.items()} == {'v/00001': 4, 'v/00002': 5}
  os.rename(tmp_path / 'ds' / 'annotations' / 'EXPR_Set', tmp_path / 'EXPR_Challenge')
  out = _read(affwild2, tmp_path / 'ds', 'val', annotation_dir=str(tmp_path / 'EXPR_Challenge'))
  assert len(out) == 2
  with pytest.raises(ReaderError, match='missing folder'):
    _read(affwild2, tmp_path / 'ds', 'train', annotation_dir=str(tmp_path / 'EXPR_Challenge'))


@pytest.mark.parametrize('text,line,message', [
    (fx.AFFWILD2_HEADER + '\n0\n1\nhappy\n', 4, 'one integer'),
    (fx.AFFWILD2_HEADER + '\n0\n\n1\n', 3, 'one integer'),
    (fx.AFFWILD2_HEADER + '\n0\n8\n', 3, 'unknown expression code 8'),
    (fx.AFFWILD2_HEADER + '\n-2\n', 2, 'unknown expression code -2'),
    ('Neutral,Happiness,Anger\n0\n', 1, 'expected the header'),
    ('', 1, 'empty file'),
])
def test_affwild2_malformed_files_name_file_and_line(tmp_path, text, line, message):
  path = fx.write_text(str(tmp_path / 'annotations' / 'EXPR_Set' / 'Train_Set' / 'v.txt'), text)
  os.makedirs(tmp_path / 'cropped_aligned')
  with pytest.raises(ReaderError, match=f'{path}:{line}: .*{message}'):
    _read(affwild2, tmp_path, 'train')


def test_affwild2_trailing_blank_lines_are_fine(tmp_path):
  path = fx.write_text(str(tmp_path / 'annotations' / 'EXPR_Set' / 'Train_Set' / 'v.txt'),
                       fx.AFFWILD2_HEADER.lower().replace(',', ', ') + '\r\n0\r\n5\r\n\r\n\n')
  assert affwild2.read_annotation(path) == [0, 5]
