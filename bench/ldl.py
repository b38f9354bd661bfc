"""Paper 002's baseline training step: VGG-16 on 48 px grey faces (replicated to 3 channels),
ferjax's trainer step (baseline method, `augment.grayscale`, soft targets, augmentation off)
vs the same network in PyTorch: torchvision's VGG-16 conv trunk, global average pool (the 1 x 1
map at 48 px) and Linear(512, 8), soft-target cross-entropy, same batch, float32 and Adam."""
from __future__ import annotations

import os

import numpy as np

from bench.common import interleave, summary
from bench.models import _batch, _torch_input, _xla_figures, ferjax_train_step


def _ferjax_run(size: int, batch: int):
  from ferjax import config as fc, trainer
  c = fc.base_config()
  c.model.backbone, c.model.va_head = 'vgg16', False
  c.loss.target = 'soft'
  c.data.image_size, c.batch_size, c.eval_batch_size = size, batch, batch
  c.data.train_examples = batch * 100
  c.augment.update(grayscale=True, flip=False, crop_pad=0.0, rotate_deg=0.0, brightness=0.0,
                   contrast=0.0)
  c.optim.update(name='adam', lr=1e-4, schedule='constant', warmup_epochs=0.0,
                 weight_decay=0.0)
  return trainer.Run(fc.finalize(c))


def _grey_batch(size: int, batch: int) -> dict:
  host = _batch(size, batch)
  host['image'] = np.repeat(host['image'][..., :1], 3, -1)      # a grey source, as FER2013
  dist = np.random.default_rng(1).dirichlet(np.ones(8), size=batch).astype(np.float32)
  host['label_dist'], host['label'] = dist, dist.argmax(1).astype(np.int32)
  return host


def step(size: int, batch: int, repeats: int) -> dict:
  """Training images/s of one VGG-16 step at `size` px, both frameworks, interleaved."""
  import torch
  import torchvision
  torch.set_num_threads(os.cpu_count())
  run = _ferjax_run(size, batch)
  host = _grey_batch(size, batch)
  fj, compiled, compile_s = ferjax_train_step(run, host)
  model = torch.nn.Sequential(torchvision.models.vgg16().features, torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(512, 8)).train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  target = torch.from_numpy(host['label_dist'])

  def pt():
    opt.zero_grad(set_to_none=True)
    logp = torch.log_softmax(model(_torch_input(host['image'])), -1)
    loss = -(target * logp).sum(1).mean()
    loss.backward()
    opt.step()

  times = interleave({'ferjax': fj, 'torch': pt}, repeats)
  return {'ferjax': summary(times['ferjax'], batch), 'torch': summary(times['torch'], batch),
          'compile_s': compile_s, **_xla_figures(compiled)}
