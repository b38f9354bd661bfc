"""Backbones. `build(arch, **overrides)` returns a Flax module by reference name.

The architectures are the entries of `ferjax.models.registry.ARCHS`. Families are imported on
first use, so building a ResNet never imports the CLIP code.
"""
from ferjax.models import registry


def archs() -> list[str]:
  return registry.backbones()


def build(arch: str, **overrides):
  entry = registry.ARCHS.get(arch)
  if entry is None or not entry.backbone:
    raise ValueError(f'unknown architecture {arch!r}; known: {", ".join(archs())}')
  return registry.resolve(entry.build)(**overrides)
