"""Two local processes (4 CPU devices each, gloo collectives over 127.0.0.1) train the same
steps as one process with 8 devices: same global batches, same parameters, same eval."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_train import CONFIG, _final_params

ARGS = ['--config.train.max_steps=4', '--config.train.ckpt_every=2',
        '--config.data.eval_sets=synthetic:lab:test']


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _cmd(workdir, *extra):
  return [sys.executable, '-m', 'ferjax.train', f'--config={CONFIG}:smoke',
          f'--workdir={workdir}', *ARGS, *extra]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_match_one_process(tmp_path):
  one, two = tmp_path / 'one', tmp_path / 'two'
  subprocess.run(_cmd(one), check=True, cwd=REPO, capture_output=True, timeout=300)
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
  port = _free_port()
  procs = [subprocess.Popen(_cmd(two, f'--coordinator_address=127.0.0.1:{port}',
                                 '--num_processes=2', f'--process_id={i}'),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=400)[0].decode() for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  step1, p1 = _final_params(one)
  step2, p2 = _final_params(two)
  assert step1 == step2 == 4
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p1, p2)
  r1 = json.loads((one / 'eval' / 'step_4' / 'results.json').read_text())
  r2 = json.loads((two / 'eval' / 'step_4' / 'results.json').read_text())
  assert r1['summary'][0]['n'] == r2['summary'][0]['n'] == 40
  assert abs(r1['summary'][0]['accuracy'] - r2['summary'][0]['accuracy']) < 1e-6
