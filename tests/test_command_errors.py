"""The real commands on user mistakes: an unknown dataset, a bad spec, a damaged or incompatible
checkpoint, a conversion mismatch and a malicious weights file each print one `error:` line
(exit 2, no traceback); `--debug` shows the traceback."""
import pickle
import subprocess
import sys

import numpy as np
import pytest

from ferjax import trainer
from tests.conftest import REPO
from tests.test_train import smoke


def _run(module, *args):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                        text=True)


def _one_error_line(result, *fragments):
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in result.stderr, result.stderr[-3000:]


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  trainer.train(smoke(**{'train.max_steps': 2, 'train.ckpt_every': 1, 'data.eval_sets': ''}),
                str(workdir))
  return workdir


def test_unknown_dataset_and_bad_spec(run_dir):
  _one_error_line(_run('ferjax.eval', f'--workdir={run_dir}', '--datasets=rafbd:test'),
                  "unknown dataset 'rafbd'")
  _one_error_line(_run('ferjax.eval', f'--workdir={run_dir}', '--datasets=synthetic:lab'),
                  'bad dataset spec')
  debug = _run('ferjax.eval', f'--workdir={run_dir}', '--datasets=rafbd:test', '--debug')
  assert debug.returncode != 0 and 'Traceback' in debug.stderr


def test_damaged_checkpoint_names_the_readable_steps(run_dir, tmp_path):
  import shutil
  copy = tmp_path / 'run'
  shutil.copytree(run_dir, copy)
  (copy / 'checkpoints' / '2' / 'state' / 'manifest.ocdbt').unlink()
  _one_error_line(_run('ferjax.eval', f'--workdir={copy}', '--step=2',
                       '--datasets=synthetic:lab:test', '--eval_examples=16'),
                  'step 2', 'damaged', '--step=1')


def test_incompatible_checkpoint_and_conversion_mismatch(run_dir, tmp_path):
  r = _run('ferjax.convert', '--arch=resnet18', '--from=ferjax', f'--in={run_dir}',
           '--prefix=backbone', f'--out={tmp_path}/bb.safetensors')   # full width vs width 8
  _one_error_line(r, 'do not fit resnet18', 'mis-shaped')


def test_malicious_weights_file(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ('pwned',))
  path = tmp_path / 'evil.pkl'
  path.write_bytes(pickle.dumps({'fc.weight': np.zeros(2), 'x': Evil()}))
  r = _run('ferjax.convert', '--arch=resnet18', '--from=torch', f'--in={path}',
           f'--out={tmp_path}/x.msgpack')
  _one_error_line(r)
  assert 'pwned' not in r.stdout + r.stderr


def test_config_typo_in_train():
  r = _run('ferjax.train', f'--config={REPO}/configs/baseline_synthetic.py:smoke',
           '--workdir=/tmp/ferjax_never_made', '--config.optim.lrr=0.1')
  _one_error_line(r, 'lrr')


def test_help_exits_0():
  for module in ('ferjax.train', 'ferjax.eval', 'ferjax.convert',
                 'ferjax.protocols.cross_domain'):
    r = _run(module, '--help')
    assert r.returncode == 0 and '--[no]debug' in r.stdout, (module, r.stderr[-2000:])
