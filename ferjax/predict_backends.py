"""The models `ferjax.predict` runs: a run or bundle in JAX, or a bundle in ONNX Runtime or
PyTorch. Each takes uint8 RGB face crops and gives numpy predictions named as the methods name
them (`probs`, `logits`, `va`, ...), so the prediction loop does not care which one runs.

  submit(images) -> handle     starts a batch (JAX: asynchronously, on every device)
  fetch(handle) -> {name: np}  waits for it
  outputs() -> {name: shape}   the prediction names and shapes (for the output's columns)
  size, batch_multiple, class_names, description
"""
from __future__ import annotations

import os

import numpy as np

from ferjax.errors import UserError

BACKENDS = ('auto', 'jax', 'onnxruntime', 'torch')


class JaxModel:
  """A Predictor (from a run's checkpoint, or rebuilt from a bundle's config and weights)."""

  def __init__(self, predictor):
    import jax
    from ferjax import sharding
    self.p, self._jax, self._sharding = predictor, jax, sharding
    self.size = int(predictor.cfg.data.image_size)
    self.batch_multiple = predictor.mesh.size
    self.class_names = predictor.class_names
    self.description = f'jax on {predictor.mesh.size} {jax.devices()[0].platform} device(s)'

  def outputs(self) -> dict:
    shapes = self._jax.eval_shape(self.p.predict_fn, self.p.variables, {
        'image': self._jax.ShapeDtypeStruct((self.batch_multiple, self.size, self.size, 3),
                                            np.uint8)})
    return {k: v.shape for k, v in shapes.items()}

  def submit(self, images: np.ndarray):
    return self.p(self._sharding.to_global({'image': images}, self.p.mesh))

  def fetch(self, handle) -> dict:
    return self._jax.device_get(handle)


class ExportedModel:
  """A bundle run by ONNX Runtime or PyTorch (ferjax.interop.onnx / torch_bundle)."""

  def __init__(self, model, name: str):
    self.m = model
    self.size = model.size
    self.batch_multiple = 1
    self.class_names = model.class_names
    self.description = name

  def outputs(self) -> dict:
    got = self.m(np.zeros((1, self.size, self.size, 3), np.uint8))
    return {k: v.shape for k, v in got.items()}

  def submit(self, images: np.ndarray):
    return self.m(images)

  def fetch(self, handle) -> dict:
    return handle


def _onnx_available() -> bool:
  try:
    import onnxruntime  # noqa: F401
  except ImportError:
    return False
  return True


def choose(model_path: str, backend: str) -> str:
  """The backend `auto` means: ONNX Runtime for a bundle with model.onnx when JAX would run on
  the CPU (it is the faster one there, see the README's predict benchmark), else JAX."""
  from ferjax.interop import bundle
  is_bundle = bundle.is_bundle(model_path)
  if backend == 'auto':
    import jax
    onnx_file = is_bundle and os.path.isfile(os.path.join(model_path, bundle.ONNX))
    cpu = jax.default_backend() == 'cpu'
    return 'onnxruntime' if onnx_file and cpu and _onnx_available() else 'jax'
  if backend in ('onnxruntime', 'torch') and not is_bundle:
    raise UserError(f'--backend {backend} runs an exported bundle; {model_path} is a run '
                    'directory: export it with python -m ferjax.convert --from ferjax '
                    f'--in {model_path} --out BUNDLE_DIR' +
                    (' --to onnx' if backend == 'onnxruntime' else ''))
  return backend


def load(model_path: str, backend: str, step=None, threads: int = 0):
  """The model to predict with, and the backend chosen."""
  from ferjax import inference
  from ferjax.interop import bundle
  backend = choose(model_path, backend)
  if bundle.is_bundle(model_path):
    if step is not None:
      raise UserError('--step picks a checkpoint of a run directory; a bundle holds one model')
    if backend == 'onnxruntime':
      from ferjax.interop import onnx
      return ExportedModel(onnx.OnnxBundle(model_path, threads), 'onnxruntime'), backend
    if backend == 'torch':
      from ferjax.interop import torch_bundle
      return ExportedModel(torch_bundle.load_bundle(model_path), 'torch'), backend
    return JaxModel(inference.from_bundle(model_path)), backend
  return JaxModel(inference.load(model_path, step)), backend
