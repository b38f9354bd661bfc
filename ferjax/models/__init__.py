"""Backbones. `build(arch, **overrides)` returns a Flax module by reference name."""
from ferjax.models import resnet

_ARCHS = {
    'resnet18': resnet.resnet18,
    'resnet34': resnet.resnet34,
    'resnet50': resnet.resnet50,
}


def build(arch: str, **overrides):
  if arch not in _ARCHS:
    raise ValueError(f'unknown architecture {arch!r}; known: {sorted(_ARCHS)}')
  return _ARCHS[arch](**overrides)
