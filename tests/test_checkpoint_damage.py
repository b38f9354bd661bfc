"""Damaged checkpoints are named, resume falls back to the newest readable step with its data
position, and the non-finite stop says what overflowed."""
import itertools
import os

import grain
import jax
import ml_collections
import numpy as np
import pytest

from ferjax import checkpoint, train_checks

SHAPE = (64, 64)  # large enough for OCDBT to keep the array in a data file, not inline


def _tree(step):
  rng = np.random.default_rng(step)
  return {'step': np.int32(step),
          'params': {'w': rng.normal(size=SHAPE).astype(np.float32),
                     'b': rng.normal(size=(3,)).astype(np.float32)},
          'batch_stats': {'mean': rng.normal(size=(3,)).astype(np.float32)},
          'opt_state': {'mu': rng.normal(size=SHAPE).astype(np.float32)}}


def _abstract(w_shape=SHAPE):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  struct = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  tree = jax.tree.map(lambda x: struct(x.shape, x.dtype), _tree(0))
  tree['params']['w'] = struct(w_shape, np.float32)
  return tree


def _data():
  return grain.MapDataset.range(1000).shuffle(seed=3).to_iter_dataset()


@pytest.fixture
def workdir(tmp_path):
  """Checkpoints of steps 2 and 4, each with the data iterator after `step` examples."""
  mngr = checkpoint.Manager(tmp_path, keep=5)
  it = iter(_data())
  for step in (2, 4):
    for _ in range(2):
      next(it)
    mngr.save(step, jax.device_put(_tree(step)), it, ml_collections.ConfigDict({'seed': 3}))
  mngr.close()
  return tmp_path


def _step_file(workdir, step, name):
  return os.path.join(workdir, 'checkpoints', str(step), name)


def _truncate_array_file(workdir, step):
  """Truncates every array data file of the step (which file holds which array is orbax's
  choice), returning their paths relative to the step directory."""
  paths = []
  for sub in (os.path.join('state', 'ocdbt.process_0', 'd'), os.path.join('state', 'd')):
    d = _step_file(workdir, step, sub)
    if os.path.isdir(d):
      paths += [os.path.join(d, f) for f in os.listdir(d)]
  assert paths
  for path in paths:
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  return [os.path.relpath(p, _step_file(workdir, step, '')) for p in paths]


def _assert_tree_equal(restored, expected):
  jax.tree.map(np.testing.assert_array_equal, checkpoint.to_numpy(restored), expected)


def _assert_quiet(err):
  # orbax reports an unreadable array through asynchronous callbacks, as tracebacks.
  assert 'Traceback' not in err and 'Event loop is closed' not in err, err


def test_truncated_array_file_falls_back_to_the_previous_step_with_its_data(workdir, capfd):
  bad_files = _truncate_array_file(workdir, 4)
  mngr = checkpoint.Manager(workdir)
  capfd.readouterr()
  it = iter(_data())
  tree, step = mngr.restore_latest(_abstract(), it)
  assert step == 2
  _assert_tree_equal(tree, _tree(2))
  # The data iterator continues from step 2's position too, not from step 4's.
  assert [next(it) for _ in range(3)] == list(itertools.islice(iter(_data()), 2, 5))
  err = capfd.readouterr().err
  _assert_quiet(err)
  assert any(f'checkpoint step 4 in {mngr.directory} is damaged ({bad}): resuming from '
             f'step 2' in err for bad in bad_files), err
  # The damaged step is moved aside, so the resumed run can save step 4 again.
  assert mngr.all_steps() == [2]
  assert os.path.isdir(os.path.join(mngr.directory, '4.damaged'))
  mngr.save(4, jax.device_put(_tree(4)), it, ml_collections.ConfigDict({'seed': 3}))
  mngr.close()
  assert checkpoint.Manager(workdir, read_only=True).all_steps() == [2, 4]


def test_explicit_damaged_step_names_the_file_and_the_readable_steps(workdir, capfd):
  bad_files = _truncate_array_file(workdir, 4)
  mngr = checkpoint.Manager(workdir, read_only=True)
  capfd.readouterr()
  for params_only in (False, True):
    with pytest.raises(checkpoint.DamagedCheckpoint) as info:
      mngr.restore(_abstract(), step=4, params_only=params_only)
    message = str(info.value)
    assert f'checkpoint step 4 in {mngr.directory} is damaged' in message
    assert any(bad in message for bad in bad_files) and 'truncated' in message
    assert 'Readable steps: 2' in message and '--step=2' in message
    assert info.value.step == 4 and info.value.file in bad_files
  _assert_quiet(capfd.readouterr().err)
  assert mngr.readable_steps() == mngr.readable_steps(params_only=True) == [2]
  # A read-only manager (eval, resume from another workdir) moves nothing.
  tree, step = mngr.restore_latest(_abstract())
  assert step == 2 and mngr.all_steps() == [2, 4]


@pytest.mark.parametrize('name', ['state/_METADATA', 'state/manifest.ocdbt'])
def test_deleted_metadata_is_reported_as_damage_not_as_another_model(workdir, capfd, name):
  os.remove(_step_file(workdir, 4, name))
  mngr = checkpoint.Manager(workdir, read_only=True)
  capfd.readouterr()
  for params_only in (False, True):
    with pytest.raises(checkpoint.DamagedCheckpoint) as info:
      mngr.restore(_abstract(), params_only=params_only)
    message = str(info.value)
    assert 'step 4' in message and 'is damaged' in message and f'{name} (missing)' in message
    assert 'another model' not in message and 'does not fit' not in message
  _assert_quiet(capfd.readouterr().err)


def test_deleted_config_and_data_position_are_damage(workdir):
  os.remove(_step_file(workdir, 4, 'config/metadata'))
  os.remove(_step_file(workdir, 2, 'data/process_0-of-1.json'))
  mngr = checkpoint.Manager(workdir, read_only=True)
  with pytest.raises(checkpoint.DamagedCheckpoint, match=r'config/metadata \(missing\)'):
    mngr.config(4)
  assert mngr.config(2).seed == 3
  # Step 2 lacks only its data position: readable for params, not for a resume.
  assert mngr.readable_steps(params_only=True) == [2]
  assert mngr.readable_steps(data=True) == []
  with pytest.raises(checkpoint.DamagedCheckpoint) as info:
    mngr.restore_latest(_abstract(), iter(_data()))
  message = str(info.value)
  assert message.startswith(f'no readable checkpoint in {mngr.directory}: ')
  assert 'step 4 is damaged (config/metadata: missing)' in message
  assert 'step 2 is damaged (data/process_0-of-1.json: missing)' in message
  assert sorted(info.value.damaged) == [2, 4]


def test_changed_bytes_in_an_array_file_are_damage(workdir):
  """A file of the right size whose content does not decode: found when orbax fails."""
  d = _step_file(workdir, 4, os.path.join('state', 'ocdbt.process_0', 'd'))
  path = max((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize)
  with open(path, 'r+b') as f:
    f.write(b'\0' * 8)  # the compressed chunk's frame header
  mngr = checkpoint.Manager(workdir, read_only=True)
  assert mngr.damaged_file(4) is None  # the cheap check cannot see it
  with pytest.raises(checkpoint.DamagedCheckpoint, match='is damaged: cannot read state/'):
    mngr.restore(_abstract(), step=4)
  tree, step = mngr.restore_latest(_abstract())
  assert step == 2
  _assert_tree_equal(tree, _tree(2))


def test_shape_mismatch_is_still_incompatible_not_damaged(workdir):
  mngr = checkpoint.Manager(workdir, read_only=True)
  assert mngr.readable_steps() == [2, 4]
  for params_only in (False, True):
    with pytest.raises(checkpoint.IncompatibleCheckpoint, match='shape of params.w') as info:
      mngr.restore(_abstract(w_shape=(32, 64)), params_only=params_only)
    assert not isinstance(info.value, checkpoint.DamagedCheckpoint)
  with pytest.raises(checkpoint.IncompatibleCheckpoint):
    mngr.restore_latest(_abstract(w_shape=(32, 64)))


def test_restore_latest_of_intact_checkpoints_is_the_latest_step(workdir, capfd):
  mngr = checkpoint.Manager(workdir)
  capfd.readouterr()
  it = iter(_data())
  tree, step = mngr.restore_latest(_abstract(), it)
  assert step == 4 and next(it) == next(itertools.islice(iter(_data()), 4, None))
  _assert_tree_equal(tree, _tree(4))
  assert 'damaged' not in capfd.readouterr().err and mngr.all_steps() == [2, 4]
  mngr.close()
  with pytest.raises(FileNotFoundError, match='no finished checkpoint'):
    checkpoint.Manager(workdir / 'empty').restore_latest(_abstract())


@pytest.mark.parametrize('values, names', [
    ({'loss': float('nan'), 'nonfinite_loss': 2, 'nonfinite_grad': 2, 'nonfinite_update': 2},
     'non-finite loss and gradient and update'),
    ({'loss': 0.5, 'nonfinite_loss': 0, 'nonfinite_grad': 0.5, 'nonfinite_update': 0.5},
     'non-finite gradient and update'),
    ({'loss': 0.5, 'nonfinite_loss': 0, 'nonfinite_grad': 0, 'nonfinite_update': 1},
     'non-finite update'),
])
def test_nonfinite_message_names_what_overflowed(values, names):
  message = train_checks.nonfinite_message(3, 4, values, 2, '/w/checkpoints')
  assert message.startswith(names + ' between steps 3 and 4 (loss=')
  assert 'The last good checkpoint is step 2 in /w/checkpoints.' in message
  assert 'optim.lr' in message
  assert ('optim.clip_norm' in message) == (values['nonfinite_grad'] > 0)


def test_nonfinite_message_before_any_checkpoint():
  message = train_checks.nonfinite_message(1, 1, {'loss': float('inf'), 'nonfinite_loss': 1},
                                           None, '/w/checkpoints')
  assert message.startswith('non-finite loss at step 1 (loss=inf)')
  assert 'No checkpoint has been saved yet in /w/checkpoints.' in message
  assert 'None' not in message
