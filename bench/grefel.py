"""The GReFEL training step: ferjax's method (trainer step, augmentation off, both streams
trained as the synthetic config does) vs third_party/torch_reference/grefel.py with the paper's
losses restated in PyTorch (NLL of the corrected distribution with label smoothing, eq 21's
anchor loss, eq 22's center loss), same weights' shapes, batch, input size, float32 and Adam.

`variant`: 'cpu' is configs/grefel_synthetic.py:cpu (64 px streams, reduced IR-50 and ViT,
K = 4: the quick suite), '' the full network (112 px, IR-50 3/4/14, ViT of 768, K = 10).
"""
from __future__ import annotations

import os
import statistics
import time

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


def _median_ms(seconds) -> float:
  return 1e3 * statistics.median(seconds)


def step(variant: str, batch: int, repeats: int) -> dict:
  """Training images/s of one GReFEL step, both frameworks, interleaved; the notes say where
  PyTorch's step goes (forward, backward, Adam) and compare the eval forward alone."""
  import jax
  import jax.numpy as jnp
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
  x = _torch_input(host['image'])
  phases = {'forward': [], 'backward': [], 'adam': []}

  def pt():
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    out = model.outputs(x)
    if hasattr(model, 'anchors'):
      out['anchors'] = model.anchors.anchors
    loss = torch_loss(out, label, smoothing)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    for k, a, b in (('forward', t0, t1), ('backward', t1, t2), ('adam', t2, time.perf_counter())):
      phases[k].append(b - a)

  times = interleave({'ferjax': fj, 'torch': pt}, repeats)
  split = {k: _median_ms(v[1:]) for k, v in phases.items()}   # [1:]: the warm-up call

  # The eval forward alone (the predict path), same weights' shapes and normalised input.
  state = run.fresh_state()
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  apply = jax.jit(lambda v, im: run.method.model.apply(v, im, train=False)['probs'])
  xj = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
  model.eval()

  def pt_eval():
    with torch.inference_mode():
      model(x)
  fwd = interleave({'ferjax': lambda: jax.block_until_ready(apply(variables, xj)),
                    'torch': pt_eval}, repeats)
  notes = (f"torch step: forward {split['forward']:.0f} ms, backward {split['backward']:.0f} "
           f"ms, Adam {split['adam']:.0f} ms; eval forward: ferjax "
           f"{_median_ms(fwd['ferjax']):.0f} ms, torch {_median_ms(fwd['torch']):.0f} ms")
  return {'ferjax': summary(times['ferjax'], batch), 'torch': summary(times['torch'], batch),
          'compile_s': compile_s, 'notes': notes, **_xla_figures(compiled)}
