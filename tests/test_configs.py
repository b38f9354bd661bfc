"""Every config in configs/ builds (full size traced, not trained) and accepts `smoke`."""
import glob
import os

import jax
import numpy as np
import pytest

from ferjax import config as config_lib, methods
from ferjax.steps import dummy_input
from tests.conftest import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))
CONFIGS = [c for c in CONFIGS if not os.path.basename(c).startswith('_')]


def _param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize('arg', ['', 'smoke'])  # every config accepts these two
def test_config_builds_and_traces(path, arg):
  cfg = config_lib.load(f'{path}:{arg}' if arg else path)
  method = methods.build(cfg)
  shapes = jax.eval_shape(lambda: method.model.init(jax.random.key(0), dummy_input(cfg)))
  assert _param_count(shapes['params']) > 0
  assert len(method.class_names) == cfg.model.num_classes


def test_full_resnet18_matches_torchvision_parameter_count():
  cfg = config_lib.load(os.path.join(REPO, 'configs', 'baseline_synthetic.py'))
  method = methods.build(cfg)
  shapes = jax.eval_shape(lambda: method.model.init(jax.random.key(0), dummy_input(cfg)))
  backbone = {k: v for k, v in shapes['params'].items() if k not in ('fc', 'va_fc')}
  # torchvision resnet18: 11,689,512 parameters, of which its 1000-way fc holds 513,000.
  assert _param_count(backbone) == 11_689_512 - 513_000
  stats = shapes['batch_stats']
  assert _param_count(stats) == 2 * 4800  # running mean + var of every BatchNorm (9,600)


def test_unknown_config_file_is_a_clear_error():
  with pytest.raises(FileNotFoundError, match='does not exist'):
    config_lib.load('configs/nope.py')


@pytest.mark.parametrize('backbone,dim', [('mobilenet_v2', 1280), ('ir50', 512),
                                          ('maxvit_t', 512)])
def test_baseline_takes_any_registered_backbone(backbone, dim):
  cfg = config_lib.load(os.path.join(REPO, 'configs', 'baseline_synthetic.py'))
  with cfg.unlocked():
    cfg.model.backbone = backbone
    cfg.data.image_size = 112 if backbone == 'ir50' else 224
  method = methods.build(cfg)
  shapes = jax.eval_shape(lambda: method.model.init(jax.random.key(0), dummy_input(cfg)))
  assert shapes['params']['fc']['kernel'].shape == (dim, cfg.model.num_classes)
