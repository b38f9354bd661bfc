"""A ferjax RAN (ferjax.models.ran) <-> the authors' RAN state_dict
(kaiwang960112/Challenge-condition-FER-dataset, `attention_rank_loss.py`), both ways through
ferjax.interop.torch (`from_torch('ran', sd, ...)`, `to_torch('ran', variables, ...)`).

The authors' model is a torchvision ResNet subclass, so the shared trunk's keys sit at the top
level (`conv1.weight`, `layer1.0.bn1.running_mean`, ...; their avgpool has no parameters and
their unused `fc` of the base class is replaced by the RAN's own). ferjax keeps the trunk as
the submodule `backbone`, named as ferjax.models.resnet names it, so the map drops the
`backbone` level and applies the ResNet renaming; `alpha_0`, `beta_0` and `fc` become
`alpha.0`, `beta.0` and `fc`.

  from_torch('ran', sd, num_classes=8)                # the authors' ResNet-18 RAN
  from_torch('ran', sd, num_classes=8, width=16)      # a narrower trunk (tests)
  to_numpy_state_dict('ran', variables, **config_dims(cfg))   # a run's model
"""
from __future__ import annotations

from ferjax.interop import resnet as resnet_map
from ferjax.interop import torch as it
from ferjax.models import ran, resnet


def build(num_classes: int = 8, width: int = 64, stage_sizes=(2, 2, 2, 2),
          crops=ran.DEFAULT_CROPS, **kw) -> ran.RAN:
  """The RAN with a torchvision-layout ResNet trunk (18 layers at the default stage sizes)."""
  trunk = resnet.resnet18(width=width, stage_sizes=tuple(stage_sizes))
  return ran.RAN(trunk, num_classes, crops=tuple(tuple(b) for b in crops), **kw)


def config_dims(cfg) -> dict:
  """build() arguments that give a RAN run's variable tree (e.g. for `to_numpy_state_dict`)."""
  from ferjax import labels
  m = cfg.model
  if m.backbone != 'resnet18':
    raise it.ConversionError(f'the authors\' RAN has a ResNet-18, not {m.backbone!r}')
  return dict(num_classes=len(labels.resolve(cfg)), width=m.width,
              stage_sizes=tuple(m.stage_sizes))


def name(collection: str, path: tuple, shape: tuple) -> tuple[str, it.Transform]:
  if path[0] == 'backbone':
    return resnet_map._name(collection, path[1:], shape)
  if path[0] not in ('alpha_0', 'beta_0', 'fc') or len(path) != 2:
    raise it.ConversionError(f'{collection}/{"/".join(path)} has no name in the authors\' RAN')
  leaf, tf = it.default_leaf(path[-1], len(shape))
  return f'{path[0].replace("_", ".")}.{leaf}', tf


KEYS = it.KeyMap(name, it.bn_tracked)
