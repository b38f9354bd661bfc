"""Accelerator presets (`:gpu`, `:tpu`, `chips=N`) on every config file, and `--dry_run`'s
per-chip memory (8 emulated CPU devices)."""
import glob
import os
import re
import subprocess
import sys

import jax
import pytest

from ferjax import config as config_lib, methods, presets, steps as steps_lib
from ferjax.errors import ConfigError
from tests.conftest import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '[a-z]*.py')))


@pytest.mark.parametrize('accelerator,chips,mesh', [('gpu', 1, (1, 1)), ('gpu', 8, (8, 1)),
                                                    ('tpu', 64, (8, 8)), ('gpu', 16, (16, 1))])
def test_every_config_takes_the_presets(accelerator, chips, mesh):
  for path in CONFIGS:
    plain = config_lib.load(path)
    cfg = config_lib.load(f'{path}:{accelerator},chips={chips}')
    per_chip = presets.PER_CHIP_BATCH[accelerator][cfg.method]
    assert cfg.model.dtype == 'bfloat16', path
    assert cfg.batch_size == per_chip * chips, path
    assert (cfg.mesh.data, cfg.mesh.fsdp) == mesh, path
    # Nothing else changes: the model, data and schedule are the config's own.
    assert cfg.data.image_size == plain.data.image_size and cfg.optim == plain.optim, path


def test_presets_know_every_method():
  for accelerator in presets.ACCELERATORS:
    missing = set(methods.REGISTRY) - set(presets.PER_CHIP_BATCH[accelerator])
    assert not missing, (f'{sorted(missing)}: give them a per-chip batch in ferjax/presets.py '
                         '(measured with --dry_run, docs/cluster.md)')


def test_a_later_config_without_preset_gets_none():
  config_lib.load(CONFIGS[0] + ':gpu,chips=8')
  assert config_lib.load(CONFIGS[0] + ':smoke').model.dtype == 'float32'


@pytest.mark.parametrize('arg,message', [
    ('gpu,tpu', 'give one of them'),
    ('chips=8', 'needs gpu or tpu'),
    ('gpu,chips=0', 'expected a number of chips'),
    ('gpu,chip=8', "unknown config argument 'chip'"),
])
def test_preset_mistakes(arg, message):
  with pytest.raises((ConfigError, ValueError), match=message):
    config_lib.load(os.path.join(REPO, 'configs', 'baseline_synthetic.py') + ':' + arg)


def test_preset_mistake_is_one_error_line():
  out = subprocess.run([sys.executable, '-m', 'ferjax.train',
                        '--config=configs/baseline_synthetic.py:gpu,tpu', '--workdir=/tmp/x',
                        '--dry_run'], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr
  assert out.stderr.count('\n') == 1 and 'give one of them' in out.stderr


def _gib(text, name):
  """A row of the report, in GiB from its exact byte count."""
  found = re.search(rf'^  {name}\s+[0-9.]+\s+([0-9,]+) bytes', text, re.M)
  return int(found.group(1).replace(',', '')) / 2**30


def test_dry_run_prints_per_chip_memory(tmp_path):
  """The :gpu preset of the baseline on 8 devices, at a width whose convolutions are big enough
  for fsdp: the compiled step's arguments are the state one chip holds plus its batch slice."""
  width, data, fsdp = 64, 2, 4
  args = [f'--config=configs/baseline_synthetic.py:smoke,gpu,chips=8',
          f'--config.model.width={width}', f'--config.mesh.data={data}',
          f'--config.mesh.fsdp={fsdp}', f'--workdir={tmp_path}', '--dry_run']
  out = subprocess.run([sys.executable, '-m', 'ferjax.train', *args], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  text = out.stdout
  per_chip = presets.PER_CHIP_BATCH['gpu']['baseline']
  assert f'global batch {8 * per_chip} ({per_chip} per chip) at 48 px' in text
  assert "mesh {'data': 2, 'fsdp': 4}" in text and 'compute bfloat16' in text
  assert not os.listdir(tmp_path)   # nothing trained, nothing written

  cfg = config_lib.load(os.path.join(REPO, 'configs', 'baseline_synthetic.py:smoke'))
  with cfg.unlocked():
    cfg.model.width = width
  abstract = steps_lib.abstract_variables(methods.build(cfg), cfg)['params']
  total = sum(x.size * 4 for x in jax.tree.leaves(abstract))
  assert re.search(rf'{total / 4 / 1e6:.2f}M parameters', text)
  params = _gib(text, 'params')
  # fsdp splits the big convolutions 4 ways; the small ones stay whole on every chip.
  assert total / fsdp / 2**30 < params < 0.9 * total / 2**30
  assert _gib(text, 'opt_state') == pytest.approx(2 * params, rel=1e-4)   # Adam: mu and nu
  state = sum(_gib(text, k) for k in ('params', 'batch_stats', 'opt_state'))
  images = per_chip * 48 * 48 * 3 / 2**30    # uint8 images: the largest part of the batch
  assert state + images < _gib(text, 'arguments') < state + 2 * images
  assert _gib(text, 'temporaries') > images   # activations of the backward pass
  peak = (_gib(text, 'arguments') + _gib(text, 'outputs') - _gib(text, 'aliased')
          + _gib(text, 'temporaries'))
  assert _gib(text, 'peak') == pytest.approx(peak, rel=1e-9)
