"""Two local processes started by launch/local.sh (gloo collectives over 127.0.0.1) train the
same steps as one process with as many CPU devices: same global batches, parameters, eval.

With one device per process the parameters match bit for bit: every cross-device sum then has
two operands, and a + b is the same whichever side adds it. With more devices per process the
in-process and cross-process reductions associate the sums differently, so float32 rounding
may differ in the last bits.
"""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_train import CONFIG, _final_params

ARGS = ['--config.train.max_steps=4', '--config.train.ckpt_every=2',
        '--config.data.eval_sets=synthetic:lab:test']


def _args(workdir, evaluate=True):
  # The eval only in one case: it is the same code with more local devices, and compiles long.
  return [f'--config={CONFIG}:smoke', f'--workdir={workdir}', *ARGS,
          *([] if evaluate else ['--config.data.eval_sets='])]


def _devices(n):
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}')


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize('per_process', [1, 2])
def test_two_processes_match_one_process(tmp_path, per_process):
  one, two = tmp_path / 'one', tmp_path / 'two'
  evaluate = per_process == 1
  subprocess.run([sys.executable, '-m', 'ferjax.train', *_args(one, evaluate)], check=True,
                 cwd=REPO, capture_output=True, timeout=300, env=_devices(2 * per_process))
  env = dict(_devices(per_process),
             PYTHON=sys.executable, FERJAX_LOG_DIR=str(tmp_path / 'logs'))
  # Its own session: on a timeout the launcher and both training processes are killed.
  launcher = subprocess.Popen(['bash', 'launch/local.sh', '2', '--', *_args(two, evaluate)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
  try:
    out = launcher.communicate(timeout=500)[0].decode()
  finally:
    if launcher.poll() is None:
      os.killpg(launcher.pid, signal.SIGKILL)
  assert launcher.returncode == 0, out[-3000:] + (
      tmp_path / 'logs' / 'process_1.log').read_text()[-3000:]
  assert '2 process(es)' in out
  step1, p1 = _final_params(one)
  step2, p2 = _final_params(two)
  assert step1 == step2 == 4
  if per_process == 2:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p1, p2)
    return
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
  r1 = json.loads((one / 'eval' / 'step_4' / 'results.json').read_text())
  r2 = json.loads((two / 'eval' / 'step_4' / 'results.json').read_text())
  assert r1['summary'][0]['n'] == r2['summary'][0]['n'] == 40
  assert abs(r1['summary'][0]['accuracy'] - r2['summary'][0]['accuracy']) < 1e-6
