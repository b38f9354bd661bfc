"""Class-folder readers: SFEW, MMA and the generic folder reader (synonyms, classes=, skipped
files).

The expected canonical labels (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
6 anger, 7 contempt) are written out by hand, not derived from the reader's own tables, so a
wrong native order in a reader cannot be mirrored by the test.
"""
from __future__ import annotations

import pytest

from ferjax.data import readers
from ferjax.data.readers import ReaderError, folder, mma, sfew
from tests.data.readers import basic_expression_trees as fx
from tests.data.readers.reading import by_folder, collect

# Canonical order: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt.
SFEW_EXPECTED = {'Angry': 6, 'Disgust': 5, 'Fear': 4, 'Happy': 1, 'Neutral': 0, 'Sad': 2,
                 'Surprise': 3}


def test_sfew(tmp_path):
  fx.class_folders(tmp_path, {'Train': {n: 2 for n in SFEW_EXPECTED}, 'Val': {'Happy': 1}},
                   ext='.png')
  train = collect(sfew.examples(tmp_path, 'train'))
  assert len(train) == 14 and by_folder(train) == SFEW_EXPECTED
  assert next(iter(train)).startswith('Train/Angry/')
  assert [ex['label'] for ex in collect(sfew.examples(tmp_path, 'val')).values()] == [1]
  (tmp_path / 'Val' / 'Contempt').mkdir()
  with pytest.raises(ReaderError, match=r"\['Contempt'\]"):
    collect(sfew.examples(tmp_path, 'val'))
  with pytest.raises(ValueError, match='unknown split'):
    collect(sfew.examples(tmp_path, 'test'))


@pytest.mark.parametrize('into_mmafedb', [False, True])
def test_mma(tmp_path, into_mmafedb):
  names = ['angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise']
  root = tmp_path / 'MMAFEDB'
  fx.class_folders(root, {'train': {n: 1 for n in names}, 'valid': {'sad': 2}, 'test': {}})
  (root / 'test').mkdir()
  manual_dir = root if into_mmafedb else tmp_path
  train = collect(mma.examples(manual_dir, 'train'))
  assert by_folder(train) == {'angry': 6, 'disgust': 5, 'fear': 4, 'happy': 1, 'neutral': 0,
                              'sad': 2, 'surprise': 3}
  assert [ex['label'] for ex in collect(mma.examples(manual_dir, 'val')).values()] == [2, 2]
  with pytest.raises(ReaderError, match='no class folders'):
    collect(mma.examples(manual_dir, 'test'))


def test_folder_synonyms_and_class_space(tmp_path):
  fx.class_folders(tmp_path, {
      'Training': {'Angry': 1, 'Joy': 1, 'sadness': 1, 'Surprised': 1, 'fearful': 1,
                   'Disgusted': 1, 'NEUTRAL': 1},
      'validation': {'contempt': 1, 'happiness': 1}})
  (tmp_path / 'Training' / 'Joy' / 'notes.txt').write_text('not an image')
  fx.write_image(tmp_path / 'Training' / 'Joy' / 'nested' / 'deep.png')
  train = collect(folder.examples(tmp_path, 'train'))
  assert len(train) == 8  # notes.txt skipped, nested image found
  assert by_folder(train) == {'Angry': 6, 'Joy': 1, 'nested': 1, 'sadness': 2, 'Surprised': 3,
                              'fearful': 4, 'Disgusted': 5, 'NEUTRAL': 0}
  assert sorted(ex['label'] for _, ex in folder.examples(tmp_path, 'val')) == [1, 7]
  assert folder.info(tmp_path).class_space == 'affectnet8'
  assert folder.info(tmp_path).splits == ('train', 'val')   # the splits that have a folder
  # A file skipped for its extension is named to whoever collects (prepare), not only counted.
  with readers.collecting_skipped([]) as skipped:
    assert len(collect(folder.examples(tmp_path, 'train'))) == 8
  assert skipped == [('Training/Joy/notes.txt', 'not an image extension: .txt')]
  readers.skip_file('x', 'outside a collecting block: ignored')
  assert len(skipped) == 1
  (tmp_path / 'validation').rename(tmp_path / 'unused')
  assert folder.info(tmp_path).class_space == 'affectnet7'
  assert folder.info(tmp_path).splits == ('train',)
  assert folder.info(tmp_path / 'unused').splits == folder.INFO.splits   # none: all, to name


def test_folder_classes_option_and_unknown_folders(tmp_path):
  fx.class_folders(tmp_path, {'train': {'0': 1, '1': 2, '7': 1, 'x': 1, 'misc': 1}})
  with pytest.raises(ReaderError) as err:
    collect(folder.examples(tmp_path, 'train'))
  assert "['0', '1', '7', 'misc', 'x']" in str(err.value)  # every unknown name, at once
  classes = {'0': 'neutral', '1': 'Happiness', '7': 'contempt', 'x': None, 'misc': None}
  train = collect(folder.examples(tmp_path, 'train', classes=classes))
  assert by_folder(train) == {'0': 0, '1': 1, '7': 7}
  with pytest.raises(ValueError, match='not a canonical class name'):
    collect(folder.examples(tmp_path, 'train', classes={**classes, '0': 'bored'}))
  with pytest.raises(ReaderError, match="no folder for split 'test'"):
    collect(folder.examples(tmp_path, 'test'))
