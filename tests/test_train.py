"""The trainer: data-parallel equivalence, exact resume after SIGKILL, clear errors."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ferjax import checkpoint, config as config_lib, sharding, trainer
from ferjax.data import pipeline
from tests.conftest import REPO

CONFIG = os.path.join(REPO, 'configs', 'baseline_synthetic.py')


def smoke(**overrides):
  cfg = config_lib.load(CONFIG + ':smoke')
  with cfg.unlocked():
    cfg.update_from_flattened_dict(overrides)
  return cfg


def _one_step(cfg):
  run = trainer.Run(cfg)
  state = run.fresh_state()
  local = next(iter(pipeline.train_dataset(cfg, cfg.seed)))
  state, metrics = run.steps.train(state, sharding.to_global(local, run.mesh))
  return checkpoint.to_numpy(state.params), jax.device_get(metrics)


def test_one_step_on_1_device_equals_8_devices():
  assert jax.device_count() == 8
  p1, m1 = _one_step(smoke(**{'mesh.data': 1}))
  p8, m8 = _one_step(smoke(**{'mesh.data': 8}))
  np.testing.assert_allclose(m1['loss'], m8['loss'], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p1, p8)
  # The step must have changed the parameters (otherwise the comparison proves nothing).
  p0 = checkpoint.to_numpy(trainer.Run(smoke(**{'mesh.data': 1})).fresh_state().params)
  assert not np.allclose(p0['fc']['kernel'], p1['fc']['kernel'])


def test_fsdp_mesh_matches_data_parallel():
  p_dp, _ = _one_step(smoke(**{'mesh.data': 8}))
  p_fsdp, _ = _one_step(smoke(**{'mesh.data': 2, 'mesh.fsdp': 4}))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p_dp, p_fsdp)


def _train_cmd(workdir, steps):
  return [sys.executable, '-m', 'ferjax.train', f'--config={CONFIG}:smoke', f'--workdir={workdir}',
          f'--config.train.max_steps={steps}', '--config.train.ckpt_every=3',
          '--config.data.eval_sets=']


def _final_params(workdir):
  mngr = checkpoint.Manager(workdir, read_only=True)
  run = trainer.Run(config_lib.reconcile(mngr.config()))
  return mngr.latest_step(), checkpoint.to_numpy(mngr.restore(run.abstract)['params'])


@pytest.mark.timeout(600)
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
  steps = 12
  full, broken = tmp_path / 'full', tmp_path / 'broken'
  subprocess.run(_train_cmd(full, steps), check=True, cwd=REPO, capture_output=True)
  proc = subprocess.Popen(_train_cmd(broken, steps), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpts = broken / 'checkpoints'
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    done = [d for d in os.listdir(ckpts) if d.isdigit()] if ckpts.exists() else []
    if done:  # killed right after the first checkpoint lands, mid-run
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  first = checkpoint.Manager(broken, read_only=True).latest_step()
  assert first is not None and first < steps, 'the run was not interrupted part-way'
  subprocess.run(_train_cmd(broken, steps), check=True, cwd=REPO, capture_output=True)
  step_a, pa = _final_params(full)
  step_b, pb = _final_params(broken)
  assert step_a == step_b == steps
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), pa, pb)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  proc = subprocess.Popen(_train_cmd(tmp_path, 10_000), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  ckpts = tmp_path / 'checkpoints'
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if ckpts.exists() and any(d.isdigit() for d in os.listdir(ckpts)):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err.decode()[-2000:]
  assert b'stopped at step' in err
  step = checkpoint.Manager(tmp_path, read_only=True).latest_step()
  assert step is not None and 0 < step < 10_000


def test_nonfinite_update_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
  common = {'train.ckpt_every': 2, 'train.log_every': 2, 'data.eval_sets': ''}
  good_dir, bad_dir = tmp_path / 'good', tmp_path / 'bad'
  trainer.train(smoke(**common, **{'train.max_steps': 4}), str(good_dir))
  good_step, good = _final_params(good_dir)
  # The same run branched with an absurd learning rate: the first update overflows to inf.
  bad = smoke(**common, **{'train.max_steps': 8, 'optim.lr': 1e38,
                           'train.resume': str(good_dir)})
  with pytest.raises(FloatingPointError) as err:
    trainer.train(bad, str(bad_dir))
  message = str(err.value)
  assert 'non-finite update between steps 5 and 6' in message and 'step None' not in message
  assert 'No checkpoint has been saved yet' in message
  step, params = _final_params(good_dir)
  assert step == good_step == 4
  jax.tree.map(np.testing.assert_array_equal, params, good)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_batch_not_divisible_by_devices_is_a_clear_error():
  with pytest.raises(ValueError, match='not divisible by the 8 devices'):
    trainer.Run(smoke(batch_size=12))


def test_misspelt_config_keys_are_rejected():
  with pytest.raises(ValueError, match="unknown config argument 'smok'"):
    config_lib.load(CONFIG + ':smok')
  with pytest.raises(ValueError, match="domain='lbo'"):
    config_lib.load(CONFIG + ':domain=lbo')
  cfg = config_lib.load(CONFIG + ':smoke')
  with pytest.raises(AttributeError):
    cfg.optim.lrr = 1.0  # locked: a typo cannot add a key
  result = subprocess.run(
      [sys.executable, '-m', 'ferjax.train', f'--config={CONFIG}:smoke', '--workdir=/tmp/x',
       '--config.optim.lrr=0.1'], cwd=REPO, capture_output=True, text=True)
  assert result.returncode != 0 and 'lrr' in result.stderr
