"""The DAN training step: ferjax's method (trainer step, augmentation off) vs the PyTorch DAN of
third_party/torch_reference with the official training scripts' loss (cross-entropy + affinity +
partition), same batch, input size, float32 and Adam."""
from __future__ import annotations

import os

from bench.common import interleave, summary
from bench.models import _batch, _torch_input, _xla_figures, ferjax_train_step


def _ferjax_run(size: int, batch: int):
  from ferjax import config as fc, trainer
  c = fc.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs',
                           'dan_synthetic.py'))
  c.data.image_size, c.batch_size, c.eval_batch_size = size, batch, batch
  c.data.train_examples = batch * 100
  c.data.class_space, c.data.outside_space = 'affectnet8', 'error'
  c.augment.update(flip=False, crop_pad=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0,
                   scale=(1.0, 1.0), shear_deg=0.0, rrc_scale=(1.0, 1.0), erasing_p=0.0)
  c.optim.update(name='adam', schedule='constant', warmup_epochs=0.0, weight_decay=0.0)
  return trainer.Run(c)


def step(size: int, batch: int, repeats: int) -> dict:
  """Training images/s of one DAN step, both frameworks, interleaved."""
  import torch
  from third_party.torch_reference import dan as ref
  torch.set_num_threads(os.cpu_count())
  run = _ferjax_run(size, batch)
  host = _batch(size, batch)
  fj, compiled, compile_s = ferjax_train_step(run, host)

  cfg = run.cfg
  model = ref.DAN(num_class=8, num_head=cfg.dan.num_heads, width=cfg.model.width).train()
  centres = torch.nn.Parameter(torch.randn(8, cfg.model.width * 8))
  opt = torch.optim.Adam([*model.parameters(), centres], lr=1e-3)
  label = torch.from_numpy(host['label']).long()
  ce = torch.nn.CrossEntropyLoss()

  def pt():
    opt.zero_grad(set_to_none=True)
    out, feat, heads = model(_torch_input(host['image']))
    loss = ce(out, label) + ref.affinity_loss(feat, centres, label) + ref.partition_loss(heads)
    loss.backward()
    opt.step()

  times = interleave({'ferjax': fj, 'torch': pt}, repeats)
  return {'ferjax': summary(times['ferjax'], batch), 'torch': summary(times['torch'], batch),
          'compile_s': compile_s, **_xla_figures(compiled)}
