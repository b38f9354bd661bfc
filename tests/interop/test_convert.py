"""`python -m ferjax.convert`: torch file -> ferjax msgpack -> torch file is the identity, and a
trained ferjax run exports its backbone."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

from ferjax import trainer  # noqa: E402
from ferjax.interop import torch as it  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.test_train import smoke  # noqa: E402


def _convert(*args):
  return subprocess.run([sys.executable, '-m', 'ferjax.convert', *args], cwd=REPO,
                        capture_output=True, text=True)


def test_torch_to_ferjax_to_torch_is_identity(tmp_path):
  ref = torchvision.models.resnet18(num_classes=5)
  torch.save(ref.state_dict(), tmp_path / 'r18.pth')
  r = _convert('--arch=resnet18', '--from=torch', f'--in={tmp_path}/r18.pth',
               f'--out={tmp_path}/r18.msgpack', '--override=num_classes=5')
  assert r.returncode == 0, r.stderr
  r = _convert('--arch=resnet18', '--from=ferjax', f'--in={tmp_path}/r18.msgpack',
               f'--out={tmp_path}/back.safetensors', '--override=num_classes=5')
  assert r.returncode == 0, r.stderr
  back = it.load_state_dict(str(tmp_path / 'back.safetensors'))
  fresh = torchvision.models.resnet18(num_classes=5)
  fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
  for k, v in ref.state_dict().items():
    if not k.endswith('num_batches_tracked'):
      np.testing.assert_array_equal(it.to_numpy(fresh.state_dict()[k]), it.to_numpy(v))


def test_wrong_head_size_is_named_by_the_cli(tmp_path):
  torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / 'r18.pth')
  r = _convert('--arch=resnet18', '--from=torch', f'--in={tmp_path}/r18.pth',
               f'--out={tmp_path}/x.msgpack', '--override=num_classes=7')
  assert r.returncode != 0
  assert 'fc.weight: torch (5, 512)' in r.stderr and 'expects (512, 7)' in r.stderr


def test_trained_run_exports_its_backbone(tmp_path):
  cfg = smoke(**{'train.max_steps': 2, 'data.eval_sets': ''})
  trainer.train(cfg, str(tmp_path / 'run'))
  r = _convert('--arch=resnet18', '--from=ferjax', f'--in={tmp_path}/run', '--prefix=backbone',
               f'--out={tmp_path}/bb.safetensors', f'--override=width={cfg.model.width}',
               f'--override=stage_sizes={tuple(cfg.model.stage_sizes)}')
  assert r.returncode == 0, r.stderr
  sd = it.load_state_dict(str(tmp_path / 'bb.safetensors'))
  assert 'layer1.0.conv1.weight' in sd and 'bn1.running_var' in sd
  w = cfg.model.width
  assert sd['conv1.weight'].shape == (w, 3, 7, 7)
  r = _convert('--arch=resnet18', '--from=ferjax', f'--in={tmp_path}/run', '--prefix=backbon',
               f'--out={tmp_path}/bb2.safetensors')
  assert r.returncode != 0 and "no 'backbon'" in r.stderr
  assert not (tmp_path / 'bb2.safetensors').exists()
  r = _convert('--arch=resnet18', '--from=ferjax', f'--in={tmp_path}/run', '--prefix=backbone',
               f'--out={tmp_path}/bb.safetensors', f'--override=width={cfg.model.width}')
  assert r.returncode == 2 and '--overwrite' in r.stderr
