"""A workdir is never silently changed: resuming with another config is refused, config.json is
written once, a finished run says so, evaluations never overwrite each other, config arguments
compose, and a damaged checkpoint falls back to the previous step."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ferjax import checkpoint, config as config_lib, trainer
from ferjax.errors import ConfigError
from tests.conftest import REPO
from tests.test_train import smoke

COMMON = {'train.ckpt_every': 2, 'train.log_every': 2, 'data.eval_sets': ''}


def _params(workdir, step=None):
  mngr = checkpoint.Manager(workdir, read_only=True)
  run = trainer.Run(config_lib.reconcile(mngr.config()))
  tree, got = mngr.restore_latest(run.abstract) if step is None else (
      mngr.restore(run.abstract, step=step), step)
  return got, checkpoint.to_numpy(tree['params'])


@pytest.fixture(scope='module')
def four_steps(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  trainer.train(smoke(**COMMON, **{'train.max_steps': 4}), str(workdir))
  return workdir


def test_resume_with_another_config_is_refused_and_config_json_kept(four_steps, tmp_path):
  before = (four_steps / 'config.json').read_text()
  changed = smoke(**COMMON, **{'train.max_steps': 6, 'model.width': 16, 'optim.lr': 0.5})
  with pytest.raises(ConfigError) as err:
    trainer.train(changed, str(four_steps))
  message = str(err.value)
  assert "model.width: 8 in the checkpoint, 16 now" in message
  assert 'optim.lr: 0.001 in the checkpoint, 0.5 now' in message
  # cosine spans the whole run: a longer run would change the rates of steps already taken
  assert 'train.max_steps (schedule' in message and 'init_from' in message
  assert (four_steps / 'config.json').read_text() == before


def test_resumable_keys_and_schedules():
  saved = smoke(**{'optim.schedule': 'exponential'})
  more = smoke(**{'optim.schedule': 'exponential', 'train.epochs': 5.0,
                  'data.eval_sets': 'synthetic:wild:test', 'train.log_every': 7})
  assert config_lib.resume_differences(saved, more) == []
  cosine = config_lib.resume_differences(smoke(), smoke(**{'train.epochs': 5.0}))
  assert [k for k, _, _ in cosine] == ["train.epochs (schedule 'cosine' spans the whole run)"]


def test_finished_run_says_so_with_the_eval_command(four_steps, capfd):
  assert trainer.train(smoke(**COMMON, **{'train.max_steps': 4}), str(four_steps)) == {}
  err = capfd.readouterr().err
  assert 'this run is finished (step 4 of 4)' in err
  assert f'evaluate it with: python -m ferjax.eval --workdir {four_steps}' in err


def test_damaged_latest_checkpoint_resumes_bit_identically_from_the_previous(tmp_path, capfd):
  """Truncate an array file of the newest step: the run resumes from the step before it and
  ends exactly where an undamaged run ends."""
  full, damaged = tmp_path / 'full', tmp_path / 'damaged'
  cfg = lambda: smoke(**COMMON, **{'train.max_steps': 6})   # noqa: E731
  trainer.train(cfg(), str(full))
  trainer.train(cfg(), str(damaged))
  # Every array data file of the step (which one holds which array is orbax's choice).
  state = damaged / 'checkpoints' / '6' / 'state'
  victims = [p for d in (state / 'd', state / 'ocdbt.process_0' / 'd') if d.is_dir()
             for p in d.iterdir()]
  assert victims
  for victim in victims:
    victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 3])
  capfd.readouterr()
  trainer.train(cfg(), str(damaged))
  err = capfd.readouterr().err
  assert 'damaged' in err and 'step 4' in err
  _, want = _params(full)
  step, got = _params(damaged)
  assert step == 6
  jax.tree.map(np.testing.assert_array_equal, got, want)


def _eval(*args):
  return subprocess.run([sys.executable, '-m', 'ferjax.eval', *args], cwd=REPO,
                        capture_output=True, text=True)


def test_eval_of_other_datasets_never_overwrites_another_evaluation(four_steps):
  first = _eval(f'--workdir={four_steps}', '--datasets=synthetic:lab:test',
                '--eval_examples=16')
  assert first.returncode == 0, first.stderr
  lab = four_steps / 'eval' / 'step_4-lab_test'
  assert json.loads((lab / 'results.json').read_text())['datasets'] == ['synthetic:lab:test']
  other = _eval(f'--workdir={four_steps}', '--datasets=synthetic:wild:test',
                '--eval_examples=16')
  assert other.returncode == 0, other.stderr
  assert (four_steps / 'eval' / 'step_4-wild_test' / 'results.json').exists()
  assert (lab / 'confusion_lab_test.png').exists()            # the first one is untouched
  (lab / 'stale.png').write_bytes(b'x')
  same = _eval(f'--workdir={four_steps}', '--datasets=synthetic:lab:test',
               '--eval_examples=16')                        # the same evaluation is redone
  assert same.returncode == 0, same.stderr
  assert not (lab / 'stale.png').exists() and (lab / 'results.json').exists()
  bigger = _eval(f'--workdir={four_steps}', '--datasets=synthetic:lab:test',
                 '--eval_examples=24')                      # another one is refused
  assert bigger.returncode == 2 and bigger.stderr.strip().splitlines()[-1].startswith('error:')
  assert '--overwrite' in bigger.stderr and 'Traceback' not in bigger.stderr
  forced = _eval(f'--workdir={four_steps}', '--datasets=synthetic:lab:test',
                 '--eval_examples=24', '--overwrite')
  assert forced.returncode == 0, forced.stderr
  assert json.loads((lab / 'results.json').read_text())['eval_examples'] == 24


@pytest.mark.parametrize('name', ['baseline_synthetic', 'cafe_synthetic', 'cage_synthetic',
                                  'cafe_rafdb', 'cage_affectnet7'])
def test_config_arguments_compose(name):
  """`smoke,epochs=2` keeps both: explicit arguments are applied after the smoke shrink."""
  cfg = config_lib.load(os.path.join(REPO, 'configs', f'{name}.py') + ':smoke,epochs=2')
  assert cfg.train.epochs == 2.0 and cfg.batch_size == 16
