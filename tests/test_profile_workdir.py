"""`--config.train.profile_steps=a:b` writes a trace TensorBoard reads; --workdir takes file://
URLs and refuses bucket URLs in one line (they are used through a mount, docs/cluster.md)."""
import glob
import os
import subprocess
import sys

import pytest

from ferjax import profiling, runtime
from ferjax.errors import ConfigError, UserError
from tests.conftest import REPO
from tests.test_train import CONFIG


def _train(workdir, *extra):
  return subprocess.run([sys.executable, '-m', 'ferjax.train', f'--config={CONFIG}:smoke',
                         f'--workdir={workdir}', '--config.data.eval_sets=', *extra],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.timeout(400)
def test_profile_trace_in_a_file_url_workdir(tmp_path):
  args = (f'file://{tmp_path}/run', '--config.train.max_steps=3',
          '--config.train.profile_steps=2:3')
  out = _train(*args)
  if out.returncode == -11:
    # jax's CPU profiler has crashed (SIGSEGV) once in a few runs while starting its trace; not
    # ferjax's code. One fresh try; a second crash fails.
    import shutil
    shutil.rmtree(tmp_path / 'run', ignore_errors=True)
    out = _train(*args)
  assert out.returncode == 0, out.stderr[-3000:]
  run = tmp_path / 'run'
  assert (run / 'checkpoints' / '3').is_dir()
  # Where TensorBoard's profile plugin looks: LOGDIR/plugins/profile/<run>/<host>.xplane.pb,
  # beside the scalars' event file.
  traces = glob.glob(str(run / 'tb' / 'plugins' / 'profile' / '*' / '*.xplane.pb'))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  assert glob.glob(str(run / 'tb' / 'events.out.tfevents.*'))
  assert not os.path.exists(os.path.join(REPO, 'file:'))


def test_profile_range_mistakes():
  assert profiling.parse('') is None
  assert profiling.parse('4:4') == (4, 4)
  for bad in ('3', '3:2', '0:2', 'a:b', '2:'):
    with pytest.raises(ConfigError, match='expected FIRST:LAST'):
      profiling.parse(bad)


def test_workdir_urls():
  assert runtime.local_path('file:///data/runs/x') == '/data/runs/x'
  assert runtime.local_path('runs/x') == 'runs/x'
  with pytest.raises(UserError, match='gs:// paths are not written directly; mount'):
    runtime.local_path('gs://bucket/runs/x')


def test_bucket_workdir_is_one_error_line(tmp_path):
  out = _train('s3://bucket/runs/x')
  assert out.returncode == 2
  assert out.stderr.startswith('error: --workdir=s3://bucket/runs/x: s3:// paths')
  assert out.stderr.count('\n') == 1
