"""RAF-DB reader: the official label list and the class-folder copies (Kaggle, POSTER).

Each test builds a tiny fixture tree in the native layout (basic_expression_trees).
The expected canonical labels (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
6 anger, 7 contempt) are written out by hand, not derived from the reader's own tables, so a
wrong native order in a reader cannot be mirrored by the test.
"""
from __future__ import annotations

import pytest

from ferjax.data.readers import ReaderError, rafdb
from tests.data.readers import basic_expression_trees as fx
from tests.data.readers.reading import by_folder, collect

# Canonical order: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt.
RAFDB_EXPECTED = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}  # surprise, fear, ..., neutral


def _rafdb_entries():
  train = [(f'train_{i:05d}.jpg', code) for i, code in enumerate(range(1, 8), start=1)]
  return train + [('test_0001.jpg', 4), ('test_0002.jpg', 7)]


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('at_basic', [False, True])
def test_rafdb_official_labels_and_splits(tmp_path, aligned, at_basic):
  basic = fx.rafdb_official(tmp_path, _rafdb_entries())
  manual_dir = basic if at_basic else tmp_path
  train = collect(rafdb.examples(manual_dir, 'train', aligned=aligned))
  test = collect(rafdb.examples(manual_dir, 'test', aligned=aligned))
  assert len(train) == 7 and len(test) == 2
  for i, code in enumerate(range(1, 8), start=1):
    example = train[f'train_{i:05d}']
    assert example['label'] == RAFDB_EXPECTED[code]
    assert example['image'].endswith(f'train_{i:05d}_aligned.jpg' if aligned
                                     else f'original/train_{i:05d}.jpg')
  assert train['train_00004']['label'] == 1  # code 4 = happiness -> canonical happy
  assert [test['test_0001']['label'], test['test_0002']['label']] == [1, 0]


@pytest.mark.parametrize('line, message', [
    ('train_00003.jpg', 'expected'),
    ('train_00003.jpg x', 'expected'),
    ('train_00003.jpg 8', 'not a RAF-DB code'),
    ('val_00003.jpg 1', 'split is unknown'),
    ('train_00001.jpg 2', 'listed twice'),
])
def test_rafdb_malformed_line_names_file_and_line(tmp_path, line, message):
  basic = fx.rafdb_official(tmp_path, _rafdb_entries()[:2])
  label_file = basic / 'EmoLabel' / 'list_patition_label.txt'
  label_file.write_text(label_file.read_text() + line + '\n')
  with pytest.raises(ReaderError, match=message) as err:
    collect(rafdb.examples(tmp_path, 'train'))
  assert f'{label_file}:3' in str(err.value)


def test_rafdb_missing_image_is_an_error_unless_skipped(tmp_path):
  fx.rafdb_official(tmp_path, _rafdb_entries(), skip_images=('train_00002.jpg',))
  with pytest.raises(ReaderError, match=r'list_patition_label.txt:2: .*train_00002_aligned'):
    collect(rafdb.examples(tmp_path, 'train'))
  train = collect(rafdb.examples(tmp_path, 'train', missing='skip'))
  assert len(train) == 6 and 'train_00002' not in train


def test_rafdb_numeric_class_folders(tmp_path):
  fx.class_folders(tmp_path / 'DATASET', {
      'train': {str(code): 1 for code in range(1, 8)}, 'test': {'4': 2, '7': 1}})
  train = collect(rafdb.examples(tmp_path, 'train'))
  assert {int(k): v for k, v in by_folder(train).items()} == RAFDB_EXPECTED
  assert next(iter(train)).startswith('train/')  # Keys are relative to the DATASET root.
  test = collect(rafdb.examples(tmp_path, 'test'))
  assert sorted(ex['label'] for ex in test.values()) == [0, 1, 1]


def test_rafdb_poster_class_name_folders_use_valid_for_test(tmp_path):
  names = ['surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral']
  fx.class_folders(tmp_path, {'train': {n: 1 for n in names}, 'valid': {'happiness': 2}})
  train = by_folder(collect(rafdb.examples(tmp_path, 'train')))
  assert train == {n: RAFDB_EXPECTED[code] for code, n in enumerate(names, start=1)}
  assert [ex['label'] for _, ex in rafdb.examples(tmp_path, 'test')] == [1, 1]


def test_rafdb_folder_errors(tmp_path):
  fx.class_folders(tmp_path, {'train': {'0': 1, '1': 1}})
  with pytest.raises(ReaderError, match=r"\['0'\]"):
    collect(rafdb.examples(tmp_path, 'train'))
  with pytest.raises(ReaderError, match='contempt'):
    fx.class_folders(tmp_path / 'b', {'train': {'contempt': 1}})
    collect(rafdb.examples(tmp_path / 'b', 'train'))


def test_rafdb_no_layout_lists_what_was_looked_for(tmp_path):
  (tmp_path / 'junk').mkdir()
  with pytest.raises(ReaderError) as err:
    collect(rafdb.examples(tmp_path, 'train'))
  message = str(err.value)
  assert 'basic/EmoLabel/list_patition_label.txt' in message
  assert '{train,test,valid,val}/<class>/' in message and 'DATASET' in message
