"""A ferjax bundle as a ready PyTorch model: `ferjax.interop.torch.load_bundle(BUNDLE_DIR)`.

  model = load_bundle('exports/demo')
  out = model(images)          # uint8 (B, H, W, 3) RGB face crops at model.size
  out['probs'], out['logits']  # numpy, columns in model.class_names order; 'va' when present
  model.module                 # the torch.nn.Module itself, upstream key names
  x = model.preprocess(images) # the (B, 3, S, S) float tensor the module takes

The module is built from third_party/torch_reference/bundle.py and loaded with strict=True.
"""
from __future__ import annotations

import numpy as np

from ferjax.interop import bundle as bundle_lib


def _activation(x, name: str):
  import torch
  if name == 'softmax':
    return torch.softmax(x, -1)
  if name == 'sigmoid':
    return torch.sigmoid(x)
  if name != 'none':
    raise bundle_lib.BundleError(f'unknown output activation {name!r}')
  return x


def named_outputs(raw, outputs: list[dict]) -> tuple:
  """The bundle's named outputs from what its module returned (a tensor or a tuple)."""
  got = []
  for o in outputs:
    x = raw if o['index'] is None else raw[o['index']]
    if o['columns'] is not None:
      x = x[:, o['columns'][0]:o['columns'][1]]
    got.append(_activation(x, o['activation']))
  return tuple(got)


def _named_module():
  import torch

  class Named(torch.nn.Module):
    """The module with the bundle's named outputs, for ONNX export (output i = outputs[i])."""

    def __init__(self, module, outputs):
      super().__init__()
      self.module, self.outputs = module, outputs

    def forward(self, *inputs):
      return named_outputs(self.module(*inputs), self.outputs)

  return Named


class TorchBundle:
  """A bundle's PyTorch module with its class names and preprocessing."""

  def __init__(self, path: str, device: str = 'cpu'):
    import torch
    from third_party.torch_reference import bundle as torch_ref
    self.meta = bundle_lib.read_meta(path)
    spec = self.meta['torch']
    self.module = torch_ref.build(spec)
    sd = {k: torch.from_numpy(v) for k, v in bundle_lib.read_state_dict(path).items()}
    self.module.load_state_dict(sd, strict=True)
    self.module.to(device).eval()
    self.device = device
    self.outputs = spec['outputs']
    self.extra_inputs = dict(spec.get('extra_inputs', {}))
    self.class_names = tuple(self.meta['class_names'])
    self.size = int(self.meta['input']['size'])

  def preprocess(self, images: np.ndarray):
    """uint8 (B, S, S, 3) RGB -> the normalised (B, 3, S, S) float tensor."""
    import torch
    return torch.from_numpy(bundle_lib.preprocess(self.meta, images)).to(self.device)

  def __call__(self, images: np.ndarray, **extra) -> dict[str, np.ndarray]:
    import torch
    missing = sorted(set(self.extra_inputs) - set(extra))
    if missing:
      raise ValueError(f'this {self.meta["method"]} model also takes {missing}')
    args = [self.preprocess(images)] + [torch.as_tensor(np.asarray(extra[k], np.float32))
                                        for k in self.extra_inputs]
    with torch.inference_mode():
      got = named_outputs(self.module(*args), self.outputs)
    return {o['name']: g.float().cpu().numpy() for o, g in zip(self.outputs, got)}

  def named_module(self):
    return _named_module()(self.module, self.outputs).eval()


def load_bundle(path: str, device: str = 'cpu') -> TorchBundle:
  return TorchBundle(path, device)
