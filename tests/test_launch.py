"""launch/: the scripts lint clean, and the cluster launchers' --print mode gives the exact
commands for a 2-node example (nothing here reaches Slurm, gcloud or Kubernetes)."""
import glob
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from ferjax import config as config_lib, presets
from tests.conftest import REPO

BIN = os.path.dirname(sys.executable)
SCRIPTS = sorted(glob.glob(os.path.join(REPO, 'launch', '*.sh'))
                 + [os.path.join(REPO, 'launch', 'slurm.sbatch')])
TRAIN = ['--config', 'configs/dan_rafdb.py:gpu,chips=16', '--workdir', '/shared/runs/dan x']


def _tool(name):
  path = os.path.join(BIN, name)
  if not os.path.exists(path):
    pytest.skip(f'{name} is not installed: the test extra brings it (launch/setup.sh)')
  return path


def _lines(cmd, env=None):
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, **(env or {})))
  assert out.returncode == 0, out.stderr
  return out.stdout.strip().splitlines()


def test_shellcheck_passes_on_every_script():
  assert len(SCRIPTS) >= 6, SCRIPTS
  out = subprocess.run([_tool('shellcheck'), '--shell=bash', *SCRIPTS], capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_passes_on_the_dockerfile():
  out = subprocess.run([_tool('hadolint'), os.path.join(REPO, 'launch', 'Dockerfile')],
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_installs_as_setup_sh_does():
  text = open(os.path.join(REPO, 'launch', 'Dockerfile')).read()
  assert 'bash launch/setup.sh' in text
  for name in ('pyproject.toml', 'constraints.txt'):
    assert name in text   # what setup.sh's install reads, copied before it runs


def test_slurm_print_two_nodes():
  lines = _lines(['bash', 'launch/slurm.sbatch', '--print', '--nodes', '2', '--', *TRAIN],
                 env={'XLA_FLAGS': '', 'FERJAX_CACHE_DIR': ''})   # unset: the defaults
  words = [shlex.split(line, comments=True) for line in lines]
  assert words[0] == ['sbatch', '--nodes=2', '--ntasks-per-node=1', 'launch/slurm.sbatch',
                      '--', *TRAIN]
  exports = dict(w[1].split('=', 1) for w in words if w[0] == 'export')
  assert exports['FERJAX_DISTRIBUTED'] == '1'   # jax.distributed reads the Slurm environment
  assert exports['XLA_FLAGS'] == '--xla_gpu_enable_latency_hiding_scheduler=true'
  assert exports['FERJAX_CACHE_DIR'].endswith('runs/jax_cache')
  srun = next(w for w in words if w[0] == 'srun')
  assert '--kill-on-bad-exit=1' in srun
  assert srun[-len(TRAIN) - 3:] == ['.venv/bin/python', '-m', 'ferjax.train', *TRAIN]
  assert words[-1][:2] == ['scontrol', 'requeue']
  header = [line for line in open(os.path.join(REPO, 'launch', 'slurm.sbatch'))
            if line.startswith('#SBATCH')]
  for want in ('--ntasks-per-node=1', '--signal=TERM@120', '--requeue', '--open-mode=append'):
    assert any(want in line for line in header), want


def test_slurm_one_task_per_gpu_switch():
  lines = _lines(['bash', 'launch/slurm.sbatch', '--print', '--nodes', '2',
                  '--ntasks-per-node', '8', '--', *TRAIN])
  assert shlex.split(lines[0])[:3] == ['sbatch', '--nodes=2', '--ntasks-per-node=8']


def test_slurm_outside_a_job_is_one_error_line():
  out = subprocess.run(['bash', 'launch/slurm.sbatch', '--', *TRAIN], cwd=REPO, text=True,
                       capture_output=True, env={k: v for k, v in os.environ.items()
                                                 if not k.startswith('SLURM_')})
  assert out.returncode == 2
  assert out.stderr.startswith('error: not inside a Slurm job') and out.stderr.count('\n') == 1


def test_tpu_vm_print_two_workers():
  env = {'TPU_NAME': 'fer', 'ZONE': 'us-west4-a', 'BUCKET': 'bkt',
         'ACCELERATOR_TYPE': 'v5litepod-8', 'FERJAX_CACHE_DIR': ''}   # v5e: 2 hosts x 4 chips
  train = ['--config', 'configs/dan_rafdb.py:tpu,chips=8', '--workdir', "/mnt/gcs/runs/it's"]
  lines = _lines(['bash', 'launch/tpu_vm.sh', '--create', '--print', '--', *train],
                 env=env)
  words = [shlex.split(line) for line in lines]
  tpu = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  assert words[0] == [*tpu, 'create', 'fer', '--zone=us-west4-a',
                      '--accelerator-type=v5litepod-8', '--version=v2-alpha-tpuv5-lite']
  assert words[1][:2] == ['git', 'archive']
  assert words[2] == [*tpu, 'scp', 'ferjax-src.tar.gz', 'fer:', '--worker=all',
                      '--zone=us-west4-a']
  setup, run = words[3], words[4]
  for w in (setup, run):
    assert w[:8] == [*tpu, 'ssh', 'fer', '--worker=all', '--zone=us-west4-a']
  setup_cmd = setup[8].removeprefix('--command=')
  assert 'FERJAX_EXTRAS=tpu bash launch/setup.sh' in setup_cmd   # pip -c constraints.txt
  assert 'gcsfuse --implicit-dirs bkt /mnt/gcs' in setup_cmd
  # What each worker's shell runs: the training arguments come back word for word.
  worker = shlex.split(run[8].removeprefix('--command='))
  assert worker[:3] == ['cd', '~/ferjax', '&&']
  assert worker[3:5] == ['FERJAX_DISTRIBUTED=1', 'FERJAX_CACHE_DIR=/mnt/gcs/jax_cache']
  assert worker[5:] == ['.venv/bin/python', '-m', 'ferjax.train', *train]


def test_tpu_vm_needs_a_name_and_zone():
  env = {k: v for k, v in os.environ.items() if k not in ('TPU_NAME', 'ZONE')}
  out = subprocess.run(['bash', 'launch/tpu_vm.sh', '--print', '--', '--workdir', 'x'],
                       cwd=REPO, text=True, capture_output=True, env=env)
  assert out.returncode == 2 and out.stderr.startswith('error: set TPU_NAME and ZONE')


def test_local_print_and_bad_count():
  lines = _lines(['bash', 'launch/local.sh', '2', '--print', '--', *TRAIN],
                 env={'FERJAX_PORT': '4321', 'PYTHON': 'py'})
  assert [shlex.split(line) for line in lines] == [
      ['py', '-m', 'ferjax.train', *TRAIN, '--coordinator_address=127.0.0.1:4321',
       '--num_processes=2', f'--process_id={i}'] for i in range(2)]
  out = subprocess.run(['bash', 'launch/local.sh', 'two', '--', *TRAIN], cwd=REPO, text=True,
                       capture_output=True)
  assert out.returncode == 2 and out.stderr.startswith('error: N=two')


def test_local_failure_is_the_launchers_status(tmp_path):
  out = subprocess.run(['bash', 'launch/local.sh', '2', '--', '--config=configs/nope.py',
                        f'--workdir={tmp_path}'], cwd=REPO, text=True, capture_output=True,
                       env=dict(os.environ, PYTHON=sys.executable,
                                FERJAX_LOG_DIR=str(tmp_path / 'logs')), timeout=120)
  assert out.returncode == 2   # the command's user-error status
  assert 'error: --config=configs/nope.py' in out.stdout + out.stderr
  assert 'exited with status 2' in out.stderr
  assert (tmp_path / 'logs' / 'process_1.log').read_text().startswith('error: ')


@pytest.mark.parametrize('name', ['jobset-tpu.yaml', 'jobset-gpu.yaml'])
def test_gke_jobset_matches_its_config(name):
  """The pods x chips per pod of the manifest are the chips its config's preset is for, and
  every path the job writes is on the mounted bucket."""
  doc = yaml.safe_load(open(os.path.join(REPO, 'launch', 'gke', name)))
  assert doc['kind'] == 'JobSet'
  job = doc['spec']['replicatedJobs'][0]['template']['spec']
  pod = job['template']['spec']
  container = pod['containers'][0]
  args = ' '.join(container['args'])
  config = next(a for a in args.split() if a.startswith('--config=')).split('=', 1)[1]
  workdir = next(a for a in args.split() if a.startswith('--workdir=')).split('=', 1)[1]
  cfg = config_lib.load(os.path.join(REPO, config))
  limits = container['resources']['limits']
  chips_per_pod = limits.get('google.com/tpu') or limits.get('nvidia.com/gpu')
  accelerator = 'tpu' if 'google.com/tpu' in limits else 'gpu'
  chips = job['parallelism'] * chips_per_pod
  assert cfg.batch_size == presets.PER_CHIP_BATCH[accelerator][cfg.method] * chips
  assert (cfg.mesh.data, cfg.mesh.fsdp) == presets.mesh_for(chips)
  mount = container['volumeMounts'][0]['mountPath']
  env = {e['name']: e['value'] for e in container['env']}
  for path in (workdir, env['FERJAX_CACHE_DIR'], env['TFDS_DATA_DIR']):
    assert path.startswith(mount + '/'), path
  assert pod['terminationGracePeriodSeconds'] >= 120   # time to save on SIGTERM
