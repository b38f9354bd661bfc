"""Backbones. `build(arch, **overrides)` returns a Flax module by reference name.

Families are imported on first use, so building a ResNet never imports the CLIP code.
"""
import importlib

# Reference architecture name -> (module, factory function).
_ARCHS = {
    'resnet18': ('resnet', 'resnet18'),
    'resnet34': ('resnet', 'resnet34'),
    'resnet50': ('resnet', 'resnet50'),
    'resnet50_vggface2': ('resnet', 'resnet50_vggface2'),
    'ir50': ('irse', 'ir50'),
    'mobilefacenet': ('mobilefacenet', 'mobilefacenet'),
    'vgg13': ('vgg', 'vgg13'),
    'vgg16': ('vgg', 'vgg16'),
    'vgg19': ('vgg', 'vgg19'),
    'vgg13_bn': ('vgg', 'vgg13_bn'),
    'vgg16_bn': ('vgg', 'vgg16_bn'),
    'vgg19_bn': ('vgg', 'vgg19_bn'),
    'mobilenet_v2': ('mobilenet', 'mobilenet_v2'),
    'efficientnet_b0': ('efficientnet', 'efficientnet_b0'),
    'efficientnet_b2': ('efficientnet', 'efficientnet_b2'),
    'efficientnet_v2_s': ('efficientnet', 'efficientnet_v2_s'),
    'maxvit_t': ('maxvit', 'maxvit_t'),
    'mobilevitv2_100': ('mobilevit', 'mobilevitv2_100'),
    'clip_vit_b32': ('clip', 'clip_vit_b32'),
}


def archs() -> list[str]:
  return sorted(_ARCHS)


def build(arch: str, **overrides):
  if arch not in _ARCHS:
    raise ValueError(f'unknown architecture {arch!r}; known: {", ".join(archs())}')
  module, fn = _ARCHS[arch]
  return getattr(importlib.import_module(f'ferjax.models.{module}'), fn)(**overrides)
