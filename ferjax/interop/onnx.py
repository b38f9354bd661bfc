"""ONNX export of a bundle (through torch.onnx from its PyTorch module) and an ONNX Runtime
model with the bundle's preprocessing.

The graph takes `image`, the normalised float32 (B, 3, S, S) tensor (and `features` for CAFE),
with a dynamic batch axis, and returns the bundle's named outputs (`logits`, `probs`, `va`, ...)
under those names.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from ferjax.interop import bundle as bundle_lib

OPSET = 17


def export(path: str) -> str:
  """Writes BUNDLE/model.onnx from the bundle's weights; returns its path."""
  import torch
  from ferjax.interop import torch_bundle
  model = torch_bundle.load_bundle(path)
  named = model.named_module()
  s = model.size
  inputs = [torch.zeros(2, 3, s, s)]
  names = ['image']
  for k, dim in model.extra_inputs.items():
    inputs.append(torch.zeros(2, int(dim)))
    names.append(k)
  outputs = [o['name'] for o in model.outputs]
  out = os.path.join(path, bundle_lib.ONNX)
  axes = {n: {0: 'batch'} for n in names + outputs}
  # The TorchScript exporter: the dynamo one needs onnxscript, one more dependency for no gain
  # on these graphs (plain convolutions, attention and linear layers).
  with warnings.catch_warnings():   # its deprecation notice, and tracing notes on constants
    warnings.simplefilter('ignore')
    torch.onnx.export(named, tuple(inputs), out, input_names=names, output_names=outputs,
                      dynamic_axes=axes, opset_version=OPSET, dynamo=False)
  return out


class OnnxBundle:
  """A bundle's model.onnx in ONNX Runtime, called like TorchBundle: uint8 crops -> numpy."""

  def __init__(self, path: str, threads: int = 0):
    import onnxruntime as ort
    self.meta = bundle_lib.read_meta(path)
    file = os.path.join(path, bundle_lib.ONNX)
    if not os.path.isfile(file):
      raise bundle_lib.BundleError(f'{path} has no {bundle_lib.ONNX}; export it with '
                                   f'python -m ferjax.convert --from ferjax --to onnx ...')
    opts = ort.SessionOptions()
    if threads:
      opts.intra_op_num_threads = threads
    self.session = ort.InferenceSession(file, opts, providers=['CPUExecutionProvider'])
    self.outputs = [o.name for o in self.session.get_outputs()]
    self.extra_inputs = dict(self.meta['torch'].get('extra_inputs', {}))
    self.class_names = tuple(self.meta['class_names'])
    self.size = int(self.meta['input']['size'])

  def preprocess(self, images: np.ndarray) -> np.ndarray:
    return bundle_lib.preprocess(self.meta, images)

  def __call__(self, images: np.ndarray, **extra) -> dict[str, np.ndarray]:
    feed = {'image': self.preprocess(images)}
    for k in self.extra_inputs:
      if k not in extra:
        raise ValueError(f'this {self.meta["method"]} model also takes {k!r}')
      feed[k] = np.asarray(extra[k], np.float32)
    return dict(zip(self.outputs, self.session.run(self.outputs, feed)))
