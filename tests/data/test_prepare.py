"""Reader -> prepared TFDS/ArrayRecord dataset -> sources and pipeline, with a fake reader.

The fake reader (tests/data/fake_reader.py) is registered in ferjax.data.readers.READERS for
this module only, so these tests do not depend on any real dataset's reader.
"""
import io
import os
import pickle
import re

import numpy as np
import pytest
from PIL import Image

from ferjax import errors, labels
from ferjax.data import inspect as inspect_cli
from ferjax.data import pipeline, prepare, readers, sources, tfds_builder
from tests.data import fake_reader


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """(data_dir, raw dir, {split: [(key, Example)]}) of the fake dataset, prepared once."""
  root = tmp_path_factory.mktemp('fake')
  raw, data_dir = str(root / 'raw'), str(root / 'tfds')
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(readers.READERS, 'fake', 'tests.data.fake_reader')
    expected = fake_reader.write_tree(raw)
    prepare.prepare('fake', raw, data_dir, progress=False)
    yield data_dir, raw, expected


def _records(data_dir, split):
  import tensorflow_datasets as tfds
  ds = tfds.data_source('fake', split=split, data_dir=data_dir,
                        decoders={'image': tfds.decode.SkipDecoding()})
  return [ds[i] for i in range(len(ds))]


def test_records_round_trip(prepared):
  data_dir, raw, expected = prepared
  for split, examples in expected.items():
    records = _records(data_dir, split)
    assert [r['key'].decode() for r in records] == [k for k, _ in examples]   # reader order
    for rec, (key, ex) in zip(records, examples):
      assert int(rec['label']) == ex['label']
      image = ex['image']
      if isinstance(image, str):
        with open(image, 'rb') as f:        # files are stored byte for byte (PNG and JPEG)
          assert rec['image'] == f.read()
      elif isinstance(image, bytes):
        assert rec['image'] == image
      else:                                 # arrays are stored as lossless PNG
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(rec['image']))), image)
      for name in ('votes', 'va', 'vad', 'box', 'multilabel'):
        np.testing.assert_allclose(rec[name], ex[name], rtol=1e-6)
      if 'landmarks' in ex:
        np.testing.assert_allclose(rec['landmarks'], ex['landmarks'], rtol=1e-6)
      else:                                 # a missing optional feature is stored as NaN
        assert np.isnan(rec['landmarks']).all()
  builder = tfds_builder.open_prepared('fake', data_dir)
  assert tuple(builder.info.features['label'].names) == labels.CANONICAL
  assert builder.info.metadata['class_space'] == 'affectnet8'
  assert builder.info.features['multilabel'].shape == (26,)


def test_source_items_follow_the_batch_schema(prepared):
  data_dir, _, expected = prepared
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(readers.READERS, 'fake', 'tests.data.fake_reader')
    src = sources.make(f'fake:train@{data_dir}', 0, 24, 0)
    src = pickle.loads(pickle.dumps(src))   # grain workers receive it pickled
    assert len(src) == len(expected['train'])
    for i, (key, ex) in enumerate(expected['train']):
      item = src[i]
      assert item['key'] == key and item['index'] == i and item['label'] == ex['label']
      assert item['image'].shape == (24, 24, 3) and item['image'].dtype == np.uint8
      assert item['domain'] == list(readers.READERS).index('fake')
      w, h = fake_reader.LINES[i][4]
      if 'landmarks' in ex:               # pixels of the stored image -> [0, 1] of the resized
        np.testing.assert_allclose(item['landmarks'], ex['landmarks'] / [w, h], rtol=1e-6)
        assert item['landmarks_mask'] == 1 and 0 <= item['landmarks'].min() <= 1
      else:
        assert item['landmarks_mask'] == 0 and not item['landmarks'].any()
      assert item['va_mask'] == (0 if i == 3 else 1)            # line 3 has AffectNet's -2
      dist = item['label_dist']
      if ex['label'] >= 0:                # votes 7 / 3 -> 0.7 / 0.3
        assert dist[ex['label']] == pytest.approx(0.7) and dist.sum() == pytest.approx(1)
      else:                               # all votes 'unknown': nothing to learn from
        assert not dist.any()
      std = pipeline.standardize(item, 8)
      assert std['image'].shape == (24, 24, 3) and std['landmarks'].shape == (68, 2)
      assert std['label_dist'].shape == (8,) and std['va'].shape == (2,)
    # Mapped by name into another space: sad is 2 in affectnet7 and 4 in RAF-DB's order.
    from ferjax.data import spaces
    assert spaces.InSpace(src, 'affectnet7', 'unlabel')[1]['label'] == 2
    assert spaces.InSpace(src, 'rafdb7', 'unlabel')[1]['label'] == 4
    # A grey array comes back with three equal channels.
    grey = src[3]['image']
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 0] == grey[..., 2]).all()


def test_specs_env_dir_slices_and_eval_set(prepared, monkeypatch):
  from tests.test_train import smoke
  data_dir, _, expected = prepared
  monkeypatch.setitem(readers.READERS, 'fake', 'tests.data.fake_reader')
  monkeypatch.setenv('FERJAX_DATA_DIR', data_dir)
  assert len(sources.make('fake:test', 1000, 16, 0)) == len(expected['test'])
  assert len(sources.make('fake:train[:2]', 1000, 16, 0)) == 2
  assert len(sources.make('fake:all', 1000, 16, 0)) == sum(map(len, expected.values()))
  assert sources.display_name(f'fake:test@{data_dir}') == 'fake/test'
  assert sources.display_name('synthetic:lab:test') == 'lab/test'
  cfg = smoke(**{'eval_batch_size': 8, 'data.image_size': 16})
  eval_set = pipeline.EvalSet('fake:train', cfg, 0)
  batch, = list(eval_set.local_batches())
  assert batch['image'].shape == (8, 16, 16, 3) and batch['mask'].sum() == len(eval_set)
  assert list(batch['label'][:6]) == [ex['label'] for _, ex in expected['train']]
  # An epoch of a prepared dataset is the dataset, whatever data.train_examples says.
  cfg = smoke(**{'batch_size': 2, 'data.train': 'fake:train', 'data.train_examples': 64})
  assert pipeline.steps_per_epoch(cfg) == len(expected['train']) // 2


def test_crop_box_options_and_reuse(tmp_path, prepared, monkeypatch):
  _, raw, expected = prepared
  monkeypatch.setitem(readers.READERS, 'fake', 'tests.data.fake_reader')
  out = str(tmp_path / 'crops')
  options = prepare.parse_options(['crop_box=True', 'limit=3'])
  assert options == {'crop_box': True, 'limit': 3}
  counts = prepare.prepare('fake', raw, out, options, splits=['train'], progress=False)
  assert counts == {'train': 3}
  assert 'train          3' in prepare.format_counts('fake', out, counts)   # the command's table
  records = _records(out, 'train')
  for rec, (_, ex) in zip(records, expected['train']):
    x, y, w, h = ex['box']
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    crop = Image.open(io.BytesIO(rec['image']))
    assert crop.size == (int(np.ceil(x + w)) - x0, int(np.ceil(y + h)) - y0)
    np.testing.assert_allclose(rec['box'][:2], [x - x0, y - y0])
    if 'landmarks' in ex:
      np.testing.assert_allclose(rec['landmarks'], ex['landmarks'] - [x0, y0], rtol=1e-6)
  # Prepared already: kept as it is unless overwrite.
  options['limit'] = 1
  assert prepare.prepare('fake', raw, out, options, splits=['train'], progress=False) == {
      'train': 3}
  assert len(_records(out, 'train')) == 3
  assert prepare.prepare('fake', raw, out, options, splits=['train'], overwrite=True,
                         progress=False) == {'train': 1}
  assert len(_records(out, 'train')) == 1


def test_inspect_table_and_grid(prepared, monkeypatch, tmp_path):
  data_dir, _, _ = prepared
  monkeypatch.setitem(readers.READERS, 'fake', 'tests.data.fake_reader')
  grid = tmp_path / 'grid.png'
  text = inspect_cli.report('fake', data_dir, grid=str(grid), size=32, per_class=2)
  header = next(line for line in text.splitlines() if line.startswith('split'))
  assert header.split() == ['split', *labels.CANONICAL, 'unknown', 'total']
  train = next(line for line in text.splitlines() if line.startswith('train')).split()
  assert train[1:] == ['1', '2', '1', '0', '0', '0', '1', '0', '1', '6']
  image = Image.open(grid)
  assert image.width == 8 * (32 + 2) and image.height > 2 * 32
  with pytest.raises(errors.DataError, match="no split 'val'; its splits: train, test"):
    inspect_cli.report('fake', data_dir, grid=str(grid), split='val')


def test_errors_say_what_to_do(prepared, monkeypatch, tmp_path):
  """Mistakes raise UserErrors (one `error:` line from a command) that are ValueErrors too."""
  data_dir, raw, _ = prepared
  monkeypatch.setitem(readers.READERS, 'fake', 'tests.data.fake_reader')
  with pytest.raises(errors.DataError) as e:
    prepare.prepare('nope', raw)
  assert 'nope' in str(e.value) and 'rafdb' in str(e.value) and 'fake' in str(e.value)
  with pytest.raises(FileNotFoundError, match=re.escape(fake_reader.INFO.layout)):
    prepare.prepare('fake', str(tmp_path / 'missing'), str(tmp_path))
  with pytest.raises(errors.DataError, match="--option 'crop_box': expected key=value"):
    prepare.parse_options(['crop_box'])
  with pytest.raises(errors.DataError, match='known: synthetic, .*rafdb'):
    sources.make('nope:test', 0, 16, 0)
  with pytest.raises(FileNotFoundError, match='python -m ferjax.data.prepare --dataset fake '):
    sources.make(f'fake:train@{tmp_path}', 0, 16, 0)
  with pytest.raises(errors.DataError, match="no split 'val'.*'train'"):
    sources.make(f'fake:val@{data_dir}', 0, 16, 0)
  with pytest.raises(errors.DataError, match='NAME:SPLIT@DATA_DIR'):
    sources.make('fake:train@', 0, 16, 0)
  with pytest.raises(errors.DataError, match='synthetic:DOMAIN:SPLIT'):
    sources.make('synthetic:lab:tset', 0, 16, 0)
  assert issubclass(errors.DataError, ValueError)
  # A reader error stops the run, names the example and leaves no half dataset behind.
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'labels.txt').write_text('train file gone.png 1 8,8\n')
  with pytest.raises(readers.ReaderError, match='gone.png') as e:
    prepare.prepare('fake', str(bad), str(tmp_path / 'out'), progress=False)
  assert isinstance(e.value, errors.UserError) and isinstance(e.value, ValueError)
  assert not tfds_builder.prepared_versions('fake', str(tmp_path / 'out'))


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(readers.__file__),
                                                    'folder.py')),
                    reason='no folder reader')
def test_folder_reader(tmp_path):
  """A tree with train/ and test/ but no val/ prepares as it is, without --splits."""
  rng = np.random.default_rng(0)
  for split, cls, n in [('train', 'happy', 2), ('train', 'Angry', 1), ('test', 'neutral', 1)]:
    os.makedirs(tmp_path / 'raw' / split / cls)
    for i in range(n):
      Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
          tmp_path / 'raw' / split / cls / f'{i}.png')
  out = str(tmp_path / 'tfds')
  assert prepare.prepare('folder', str(tmp_path / 'raw'), out, progress=False) == {
      'train': 3, 'test': 1}
  src = sources.make(f'folder:train@{out}', 0, 16, 0)
  assert src.class_names == labels.class_names('affectnet7')     # no contempt folder
  assert sorted(int(src[i]['label']) for i in range(len(src))) == [1, 1, 6]  # happy, anger
  assert len(sources.make(f'folder:test@{out}', 0, 16, 0)) == 1


def test_bad_images_are_skipped_counted_and_listed(tmp_path, capsys):
  """Truncated/corrupt files are decoded at prepare time, skipped and reported; CMYK, RGBA and
  grey images are kept and read back as RGB."""
  rng = np.random.default_rng(0)
  d = tmp_path / 'raw' / 'train' / 'happy'
  os.makedirs(d)
  Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(d / 'good.jpg')
  Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).convert('CMYK').save(
      d / 'cmyk.jpg')
  Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8), 'RGBA').save(d / 'a.png')
  Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(d / 'grey.png')
  full = (d / 'good.jpg').read_bytes()
  (d / 'truncated.jpg').write_bytes(full[:len(full) // 2])
  (d / 'garbage.png').write_bytes(b'not an image at all')
  # Files skipped for their extension are named too, not only counted.
  (d / 'notes.txt').write_text('not an image')
  os.makedirs(d / 'clips')
  (d / 'clips' / 'take1.mp4').write_bytes(b'\0' * 16)
  out = str(tmp_path / 'tfds')
  raw = str(tmp_path / 'raw')
  assert prepare.prepare('folder', raw, out, splits=['train'], progress=False) == {'train': 4}
  err = capsys.readouterr().err
  assert 'skipped 2 unreadable image(s) (train: 2)' in err
  assert '2 file(s) without an image extension (train: 2)' in err
  listed = (tmp_path / 'tfds' / 'folder' / 'skipped_images.txt').read_text().splitlines()
  rows = {key: (split, reason) for split, key, reason in (r.split('\t') for r in listed)}
  assert sorted(rows) == ['train/happy/clips/take1.mp4', 'train/happy/garbage.png',
                          'train/happy/notes.txt', 'train/happy/truncated.jpg']
  assert rows['train/happy/notes.txt'] == ('train', 'not an image extension: .txt')
  assert 'cannot decode image' in rows['train/happy/garbage.png'][1]
  src = sources.make(f'folder:train@{out}', 0, 16, 0)
  assert len(src) == 4
  assert all(src[i]['image'].shape == (16, 16, 3) for i in range(4))
  # bad_images=error stops at the first one, naming it, and leaves no dataset behind.
  out2 = str(tmp_path / 'tfds2')
  with pytest.raises(tfds_builder.BadImage, match='cannot decode image'):
    prepare.prepare('folder', raw, out2, {'bad_images': 'error'}, splits=['train'],
                    progress=False)
  assert not os.path.exists(os.path.join(out2, 'folder'))


def test_training_and_eval_run_on_a_prepared_dataset(prepared, monkeypatch, tmp_path):
  from ferjax import trainer
  from tests.test_train import smoke
  data_dir, _, expected = prepared
  monkeypatch.setitem(readers.READERS, 'fake', 'tests.data.fake_reader')
  cfg = smoke(**{'data.train': f'fake:train@{data_dir}', 'batch_size': 2, 'eval_batch_size': 8,
                 'mesh.data': 2,
                 'data.eval_sets': f'fake:test@{data_dir}', 'train.max_steps': 2})
  reports = trainer.train(cfg, str(tmp_path / 'run'))
  assert reports['fake:test@' + data_dir]['n'] == len(expected['test'])


def test_failed_overwrite_keeps_the_prepared_dataset(tmp_path):
  """--overwrite builds beside the old dataset and replaces it only when the build succeeds."""
  rng = np.random.default_rng(0)
  d = tmp_path / 'raw' / 'train' / 'happy'
  os.makedirs(d)
  for i in range(3):
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(d / f'{i}.png')
  (d / 'notes.txt').write_text('not an image')
  out = str(tmp_path / 'tfds')
  raw = str(tmp_path / 'raw')
  assert prepare.prepare('folder', raw, out, splits=['train'], progress=False) == {'train': 3}
  listed = tmp_path / 'tfds' / 'folder' / 'skipped_images.txt'
  assert 'notes.txt' in listed.read_text()

  def contents():
    files = {}
    for dirpath, _, names in os.walk(out):
      for name in names:
        with open(os.path.join(dirpath, name), 'rb') as f:
          files[os.path.relpath(os.path.join(dirpath, name), out)] = f.read()
    return files

  before = contents()
  (d / 'broken.png').write_bytes(b'not an image at all')
  with pytest.raises(tfds_builder.BadImage, match='broken.png'):
    prepare.prepare('folder', raw, out, {'bad_images': 'error'}, splits=['train'],
                    overwrite=True, progress=False)
  assert contents() == before                # the old dataset, its list, and nothing else
  src = sources.make(f'folder:train@{out}', 0, 16, 0)
  assert len(src) == 3 and src[2]['image'].shape == (16, 16, 3)

  # A failure of another kind, in the middle of writing, leaves it as well.
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tfds_builder, 'to_record', interrupted)
    with pytest.raises(KeyboardInterrupt):
      prepare.prepare('folder', raw, out, splits=['train'], overwrite=True, progress=False)
  assert contents() == before

  # A rebuild that succeeds replaces the dataset, and the list of what the old build skipped.
  (d / 'broken.png').unlink()
  (d / 'notes.txt').unlink()
  (d / '3.png').write_bytes((d / '0.png').read_bytes())
  assert prepare.prepare('folder', raw, out, splits=['train'], overwrite=True,
                         progress=False) == {'train': 4}
  assert len(sources.make(f'folder:train@{out}', 0, 16, 0)) == 4
  assert not listed.exists()
  assert sorted(os.listdir(out)) == ['folder']
