"""Model benchmarks: ferjax jit steps vs the PyTorch reference of the same architecture.

Same batch, input size, dtype (float32) and optimiser (Adam) on both sides; the PyTorch side
uses every core (torch.set_num_threads(os.cpu_count())) as XLA does. ferjax steps are the real
trainer steps (ferjax.trainer.Run) with augmentation switched off, so both sides do the same
work: uint8 -> normalise -> forward -> cross-entropy -> backward -> Adam.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from bench.common import interleave, summary


def _ferjax_run(backbone: str, size: int, batch: int):
  from ferjax import config as fc, trainer
  c = fc.base_config()
  c.model.backbone, c.model.va_head, c.model.num_classes = backbone, False, 8
  c.data.image_size, c.batch_size, c.eval_batch_size = size, batch, batch
  c.data.train_examples = batch * 100
  c.augment.update(flip=False, crop_pad=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0)
  c.optim.update(name='adam', schedule='constant', warmup_epochs=0.0, weight_decay=0.0)
  c = fc.finalize(c)
  return trainer.Run(c)


def _batch(size: int, batch: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 8, batch).astype(np.int32)
  return {'image': rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
          'label': label, 'label_dist': np.eye(8, dtype=np.float32)[label],
          'va': np.zeros((batch, 2), np.float32), 'va_mask': np.zeros(batch, np.float32),
          'landmarks': np.zeros((batch, 68, 2), np.float32),
          'landmarks_mask': np.zeros(batch, np.float32),
          'domain': np.zeros(batch, np.int32), 'index': np.arange(batch, dtype=np.int32),
          'mask': np.ones(batch, np.float32)}


def _xla_figures(compiled) -> dict:
  out = {}
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if cost and 'flops' in cost:
    out['flops'] = float(cost['flops'])
  mem = compiled.memory_analysis()
  if mem is not None:
    out['xla_temp_mb'] = mem.temp_size_in_bytes / 2**20
    out['xla_args_mb'] = mem.argument_size_in_bytes / 2**20
  return out


def _torch_model(backbone: str):
  import torchvision
  return {'resnet18': lambda: torchvision.models.resnet18(num_classes=8),
          'maxvit_t': lambda: torchvision.models.maxvit_t(num_classes=8)}[backbone]()


_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def _torch_input(images_u8):
  import torch
  x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div_(255.0)
  return (x - torch.from_numpy(_MEAN)) / torch.from_numpy(_STD)


def ferjax_train_step(run, host: dict):
  """(one timed step, the compiled step, compile seconds) of a trainer Run on a host batch put
  on the mesh once, as the input pipeline would have it ready."""
  from ferjax import sharding
  dev = jax.device_put(host, sharding.batch_sharding(run.mesh))
  state = run.fresh_state()
  t = time.perf_counter()
  compiled = run.steps.train.lower(state, dev).compile()
  compile_s = time.perf_counter() - t
  box = {'state': state}

  def fj():
    box['state'], m = compiled(box['state'], dev)
    jax.block_until_ready(m['loss'])

  return fj, compiled, compile_s


def train_step(backbone: str, size: int, batch: int, repeats: int) -> dict:
  """Training images/s of one optimiser step, both frameworks, interleaved."""
  import torch
  torch.set_num_threads(os.cpu_count())
  run = _ferjax_run(backbone, size, batch)
  host = _batch(size, batch)
  fj, compiled, compile_s = ferjax_train_step(run, host)
  model = _torch_model(backbone).train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  label = torch.from_numpy(host['label']).long()
  loss_fn = torch.nn.CrossEntropyLoss()

  def pt():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(_torch_input(host['image'])), label)
    loss.backward()
    opt.step()

  times = interleave({'ferjax': fj, 'torch': pt}, repeats)
  return {'ferjax': summary(times['ferjax'], batch), 'torch': summary(times['torch'], batch),
          'compile_s': compile_s, **_xla_figures(compiled)}


def inference(backbone: str, size: int, batch: int, repeats: int) -> dict:
  """Eval-mode forward images/s (ferjax predict step vs torch no_grad)."""
  import torch
  torch.set_num_threads(os.cpu_count())
  run = _ferjax_run(backbone, size, batch)
  from ferjax import sharding
  host = _batch(size, batch)
  dev = jax.device_put(host, sharding.batch_sharding(run.mesh))   # once, as in train_step
  from ferjax import steps as steps_lib
  state = steps_lib.variables_of(run.fresh_state())
  t = time.perf_counter()
  compiled = run.steps.predict.lower(state, dev).compile()
  compile_s = time.perf_counter() - t
  model = _torch_model(backbone).eval()

  def fj():
    jax.block_until_ready(compiled(state, dev))

  def pt():
    with torch.no_grad():
      model(_torch_input(host['image']))

  times = interleave({'ferjax': fj, 'torch': pt}, repeats)
  return {'ferjax': summary(times['ferjax'], batch), 'torch': summary(times['torch'], batch),
          'compile_s': compile_s, **_xla_figures(compiled)}


def clip_features(batch: int, repeats: int) -> dict:
  """CLIP ViT-B/32 image embeddings at 224 px: ferjax vs transformers' PyTorch model."""
  import torch
  from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
  from ferjax.models import clip
  torch.set_num_threads(os.cpu_count())
  ref = CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=512)).eval()
  from ferjax.interop import torch as it
  variables = it.from_torch('clip_vit_b32', ref.state_dict())
  module = clip.clip_vit_b32()
  x = np.random.default_rng(0).normal(size=(batch, 224, 224, 3)).astype(np.float32)
  f = jax.jit(lambda v, x: module.apply(v, x))
  t = time.perf_counter()
  compiled = f.lower(variables, x).compile()
  compile_s = time.perf_counter() - t
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

  def fj():
    jax.block_until_ready(compiled(variables, x))

  def pt():
    with torch.no_grad():
      ref(pixel_values=xt)

  times = interleave({'ferjax': fj, 'torch': pt}, repeats)
  return {'ferjax': summary(times['ferjax'], batch), 'torch': summary(times['torch'], batch),
          'compile_s': compile_s, **_xla_figures(compiled)}
