"""config.model.backbone_weights: a fresh run's backbone from a PyTorch checkpoint."""
import jax
import numpy as np
import pytest

from ferjax import checkpoint, trainer
from ferjax.interop import torch as it
from tests.test_train import smoke

torch = pytest.importorskip('torch')


def test_fresh_run_takes_the_backbone_from_a_torch_checkpoint(tmp_path):
  cfg = smoke()
  run = trainer.Run(cfg)
  fresh = jax.device_get(run.fresh_state())
  m = cfg.model
  # A checkpoint as torchvision would write it: random weights of the same (reduced) ResNet,
  # plus the reference's 1000-class fc, which backbone_ignore drops.
  rng = np.random.default_rng(0)
  variables = {'params': jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32),
                                      fresh.params['backbone']),
               'batch_stats': jax.tree.map(lambda a: rng.uniform(0.5, 1.5, a.shape)
                                           .astype(np.float32), fresh.batch_stats['backbone'])}
  sd = it.to_torch('resnet18', variables, width=m.width, stage_sizes=tuple(m.stage_sizes))
  sd['fc.weight'] = torch.zeros(1000, m.width * 2)
  path = str(tmp_path / 'imagenet.pth')
  torch.save(sd, path)
  with cfg.unlocked():
    cfg.model.backbone_weights = path
  state = run.with_backbone_weights(run.fresh_state())
  for col, got in (('params', state.params), ('batch_stats', state.batch_stats)):
    jax.tree.map(np.testing.assert_array_equal, checkpoint.to_numpy(got['backbone']),
                 variables[col])
  np.testing.assert_array_equal(np.asarray(state.params['fc']['kernel']),
                                np.asarray(fresh.params['fc']['kernel']))   # head stays fresh
  with cfg.unlocked():
    cfg.model.backbone_ignore = ()
  with pytest.raises(ValueError, match=r'unexpected keys \(1\): fc.weight'):
    run.with_backbone_weights(run.fresh_state())
