"""The GReFEL training step: ferjax's method (trainer step, augmentation off, both streams
trained as the synthetic config does) vs third_party/torch_reference/grefel.py with the paper's
losses restated in PyTorch (NLL of the corrected distribution with label smoothing, eq 21's
anchor loss, eq 22's center loss), same weights' shapes, batch, input size, float32 and Adam.

`variant`: 'cpu' is configs/grefel_synthetic.py:cpu (64 px streams, reduced IR-50 and ViT,
K = 4: the quick suite), '' the full network (112 px, IR-50 3/4/14, ViT of 768, K = 10).
"""
from __future__ import annotations

import os

from bench.common import interleave, summary
from bench.models import _batch, _torch_input, _xla_figures, ferjax_train_step


def _ferjax_run(variant: str, batch: int):
  from ferjax import config as fc, trainer
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs', 'grefel_synthetic.py')
  c = fc.load(path + (f':{variant}' if variant else ''))
  c.batch_size, c.eval_batch_size = batch, batch
  c.data.train_examples = batch * 100
  c.data.sampler = 'shuffle'   # the step is the same; no per-class pools to build
  c.augment.update(flip=False, crop_pad=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0,
                   saturation=0.0)
  c.optim.update(schedule='constant', warmup_epochs=0.0)
  return trainer.Run(c)


def torch_loss(out: dict, label, smoothing: float):
  """The paper's losses (ferjax.methods.grefel, defaults), all lambdas 1."""
  import torch
  import torch.nn.functional as F
  log_final = out['final'].clamp_min(1e-12).log()
  loss = F.cross_entropy(log_final, label, label_smoothing=smoothing)   # log_softmax(log L) = log L
  if 'distances' in out:
    a = out['anchors']
    c, k, e = a.shape
    flat = a.reshape(c * k, e)
    sq = (flat[:, None] - flat[None]).square().sum(-1)
    cls = torch.arange(c).repeat_interleave(k)
    other = (cls[:, None] != cls[None]).float()
    loss = loss - (sq * other).sum() / (other.sum() * e)
    own = out['distances'][torch.arange(label.shape[0]), label]       # (B, K)
    loss = loss + own.min(-1).values.square().mean()
  return loss


def step(variant: str, batch: int, repeats: int) -> dict:
  """Training images/s of one GReFEL step, both frameworks, interleaved."""
  import torch
  from ferjax.interop import grefel as gmap
  from third_party.torch_reference import grefel as ref
  torch.set_num_threads(os.cpu_count())
  run = _ferjax_run(variant, batch)
  cfg = run.cfg
  size = int(cfg.data.image_size)
  host = _batch(size, batch)
  fj, compiled, compile_s = ferjax_train_step(run, host)

  model = ref.GReFEL(**gmap.torch_kwargs(cfg)).train()
  opt = torch.optim.Adam(model.parameters(), lr=float(cfg.optim.lr))
  label = torch.from_numpy(host['label']).long()
  smoothing = float(cfg.loss.label_smoothing)

  def pt():
    opt.zero_grad(set_to_none=True)
    out = model.outputs(_torch_input(host['image']))
    if hasattr(model, 'anchors'):
      out['anchors'] = model.anchors.anchors
    torch_loss(out, label, smoothing).backward()
    opt.step()

  times = interleave({'ferjax': fj, 'torch': pt}, repeats)
  return {'ferjax': summary(times['ferjax'], batch), 'torch': summary(times['torch'], batch),
          'compile_s': compile_s, **_xla_figures(compiled)}
