"""Readers for RAF-DB, FER2013/FERPlus, AffectNet, SFEW, MMA and generic class folders.

Each test builds a tiny fixture tree in the dataset's native layout (fixtures_a) and checks the
canonical labels against tables written out by hand from notes/datasets.md, so a wrong native
order in a reader cannot be mirrored by the test.
"""
from __future__ import annotations

import numpy as np
import pytest

from ferjax import labels
from ferjax.data import readers
from ferjax.data.readers import ReaderError
from ferjax.data.readers import affectnet, fer2013, folder, mma, rafdb, sfew
from tests.data.readers import fixtures_a as fx

# Canonical order: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt.
RAFDB_EXPECTED = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}  # surprise, fear, ..., neutral
FER2013_EXPECTED = {0: 6, 1: 5, 2: 4, 3: 1, 4: 2, 5: 3, 6: 0}  # angry, disgust, ..., neutral
SFEW_EXPECTED = {'Angry': 6, 'Disgust': 5, 'Fear': 4, 'Happy': 1, 'Neutral': 0, 'Sad': 2,
                 'Surprise': 3}


def collect(it):
  return dict(it)


def by_folder(examples):
  """{class folder name: label} from keys '<split>/<class>/<file>'."""
  return {key.split('/')[-2]: ex['label'] for key, ex in examples.items()}


@pytest.mark.parametrize('name', ['rafdb', 'fer2013', 'ferplus', 'affectnet', 'sfew', 'mma',
                                  'folder'])
def test_registry_and_infos_are_consistent(name):
  module = readers.get(name)
  info = fer2013.info(name) if module is fer2013 else module.INFO
  assert info.name == name
  # Every native order is made of canonical names that exist in the declared space.
  assert -1 not in labels.index_map(info.native_classes, info.class_space)
  assert callable(module.examples)


# RAF-DB ---------------------------------------------------------------------------------------

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


# FER2013 / FERPlus ----------------------------------------------------------------------------

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


# AffectNet ------------------------------------------------------------------------------------

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


# SFEW, MMA and generic folders ----------------------------------------------------------------

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
