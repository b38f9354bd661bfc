"""End-to-end prediction through ferjax.predict's own loop (decode, face detection, crop, model,
rows), with the model run by JAX, by ONNX Runtime and by PyTorch: the same exported bundle (a
full-width ResNet-18 baseline at 112 px, random weights) in the same pipeline, so the backends
differ only in the model call.

  throughput(faces='detect')  640 x 480 photos with one face each: Haar detection included
  throughput(faces='none')    112 px face crops (--faces none): decode + model only
  both also give the latency of one image at batch 1 (median ms per backend)
  video_memory                resident memory over a long video, sampled every 1,000 rows
"""
from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 112


def _face(index: int, size: int) -> np.ndarray:
  from PIL import Image
  from ferjax.data import synthetic
  image = synthetic.make_example(0, 'lab', 'test', index, 112)['image']
  return np.asarray(Image.fromarray(image).convert('RGB').resize((size, size)))


def _photos(folder: str, n: int, crops: bool = False) -> list[str]:
  from PIL import Image
  rng = np.random.default_rng(0)
  paths = []
  for i in range(n):
    if crops:
      paths.append(os.path.join(folder, f'{i:04d}.jpg'))
      Image.fromarray(_face(i % 64, SIZE)).save(paths[-1], quality=90)
      continue
    image = rng.integers(90, 170, (480, 640, 3)).astype(np.uint8)
    size = int(rng.integers(120, 200))
    x, y = int(rng.integers(0, 640 - size)), int(rng.integers(0, 480 - size))
    image[y:y + size, x:x + size] = _face(i % 64, size)
    paths.append(os.path.join(folder, f'{i:04d}.jpg'))
    Image.fromarray(image).save(paths[-1], quality=90)
  return paths


def _bundle(folder: str) -> str:
  import jax
  from ferjax import config as fc, methods, steps
  from ferjax.interop import bundle
  cfg = fc.load(os.path.join(REPO, 'configs', 'baseline_synthetic.py'))
  cfg.model.update(backbone='resnet18', width=64, stage_sizes=(2, 2, 2, 2))
  cfg.data.image_size = SIZE
  method = methods.build(cfg)
  variables = jax.device_get(steps.model_variables(method, cfg, jax.random.key(0)))
  out = os.path.join(folder, 'bundle')
  bundle.write(cfg, variables, out, onnx=True)
  return out


def _models(path: str) -> dict:
  from ferjax import predict_backends
  return {name: predict_backends.load(path, name)[0]
          for name in ('jax', 'onnxruntime', 'torch')}


def _run(model, sources, batch: int, faces: str, threads: int = 2):
  from ferjax import predict_run
  rows = []
  opts = predict_run.Options(faces=faces, batch_size=batch, threads=threads)
  runner = predict_run.Runner(model, opts, rows.extend)
  runner.run(sources)
  return rows


def throughput(num_images: int = 256, batch: int = 64, repeats: int = 3,
               faces: str = 'detect') -> dict:
  """Images/s of the whole predict loop, per backend; the best ferjax backend vs PyTorch."""
  import torch
  from bench.common import interleave, summary
  from ferjax import predict_io
  torch.set_num_threads(os.cpu_count())
  with tempfile.TemporaryDirectory() as tmp:
    paths = _photos(tmp, num_images, crops=faces == 'none')
    models = _models(_bundle(tmp))
    sources = predict_io.expand([os.path.join(tmp, '*.jpg')], [])
    found = {}

    def one(name):
      def fn():
        rows = _run(models[name], sources, batch, faces)
        found[name] = sum(r['status'] == 'ok' for r in rows)
      return fn
    times = interleave({k: one(k) for k in models}, repeats)
    latency = _latency(models, paths[0], faces)
  per = {k: summary(v, num_images) for k, v in times.items()}
  best = max(('jax', 'onnxruntime'), key=lambda k: per[k]['per_s'])
  notes = (f'faces found {found["jax"]}/{num_images}; img/s jax {per["jax"]["per_s"]:.1f}, '
           f'onnxruntime {per["onnxruntime"]["per_s"]:.1f}, torch {per["torch"]["per_s"]:.1f}; '
           'batch-1 latency ms ' + ', '.join(f'{k} {v:.1f}' for k, v in latency.items()) +
           f'; ferjax = {best}')
  return {'ferjax': per[best], 'torch': per['torch'], 'jax': per['jax'],
          'onnxruntime': per['onnxruntime'], 'latency_ms': latency, 'best': best, 'notes': notes}


def _latency(models: dict, path: str, faces: str, repeats: int = 20) -> dict:
  from ferjax import predict_io
  source = predict_io.expand([path], [])
  out = {}
  for name, model in models.items():
    _run(model, source, 1, faces, threads=1)
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      _run(model, source, 1, faces, threads=1)
      times.append(time.perf_counter() - t)
    out[name] = 1e3 * statistics.median(times)
  return out


def _rss_mb() -> float:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def video_memory(minutes: float = 10.0, fps: int = 10, backend: str = 'onnxruntime') -> dict:
  """Resident memory while predicting a long 320 x 240 video (one face, moving), sampled every
  1,000 rows (a tenth of a short video): the growth after the first batch is what matters."""
  import av
  from ferjax import predict_io, predict_run
  with tempfile.TemporaryDirectory() as tmp:
    model = _models(_bundle(tmp))[backend]
    path = os.path.join(tmp, 'long.mp4')
    frames = int(minutes * 60 * fps)
    face = _face(0, 80)
    with av.open(path, 'w') as container:
      stream = container.add_stream('libx264', rate=fps)
      stream.width, stream.height, stream.pix_fmt = 320, 240, 'yuv420p'
      background = np.random.default_rng(0).integers(90, 170, (240, 320, 3)).astype(np.uint8)
      for i in range(frames):
        image = background.copy()
        x = 20 + (i * 3) % 200
        image[60:140, x:x + 80] = face
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
          container.mux(packet)
      for packet in stream.encode():
        container.mux(packet)
    samples, count = [], [0]
    every = max(1, min(1000, frames // 10))

    def write(rows):
      count[0] += len(rows)
      if count[0] // every > len(samples) - 1:
        samples.append(_rss_mb())
    t = time.perf_counter()
    runner = predict_run.Runner(model, predict_run.Options(batch_size=64), write)
    samples.append(_rss_mb())
    runner.run(predict_io.expand([path], []))
    seconds = time.perf_counter() - t
    samples.append(_rss_mb())
  growth = max(samples[1:]) - samples[1] if len(samples) > 1 else 0.0
  return {'ferjax': {'per_s': frames / seconds, 'per_s_min': frames / seconds,
                     'per_s_max': frames / seconds, 'step_ms': 1e3 * seconds / frames,
                     'repeats': 1},
          'rss_mb': samples, 'notes': f'{frames} frames ({minutes:g} min at {fps} fps), '
          f'RSS {samples[1]:.0f} -> {samples[-1]:.0f} MB over the video '
          f'(growth {growth:.0f} MB), {backend}'}
