"""The architecture table: every architecture ferjax builds or converts, in one place.

Each entry names the function that builds its Flax module and the key map (a
`ferjax.interop.torch.KeyMap`) that names its variables in the reference PyTorch state_dict.
Both are 'module:attribute' strings imported on first use, so building a ResNet never imports
the CLIP code, and ferjax.models never imports the torch-facing code. `ferjax.models.build`
and `ferjax.interop.torch` (from_torch, to_torch, archs) read this table; adding an
architecture is one entry here next to its model and key-map modules.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Arch:
  """One architecture.

  build: 'module:function', (**overrides) -> Flax module.
  keys: 'module:attribute' of its KeyMap (Flax path <-> reference state_dict key).
  reference: the reference model, for messages and docs.
  input_shape: NHWC example input to trace the variable tree at (its size must not change the
    tree).
  init_kwargs: keyword arguments of the module call used for init (e.g. train=False).
  backbone: False for a whole method's model, which `models.build` does not offer (it belongs
    to its method) but which converts like any other.
  """
  build: str
  keys: str
  reference: str
  input_shape: tuple = (1, 32, 32, 3)
  init_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  backbone: bool = True


def _torchvision(build: str, keys: str, name: str, **kw) -> Arch:
  return Arch(build, keys, f'torchvision.models.{name}', **kw)


ARCHS: dict[str, Arch] = {
    'resnet18': _torchvision('ferjax.models.resnet:resnet18', 'ferjax.interop.resnet:KEYS',
                             'resnet18'),
    'resnet34': _torchvision('ferjax.models.resnet:resnet34', 'ferjax.interop.resnet:KEYS',
                             'resnet34'),
    'resnet50': _torchvision('ferjax.models.resnet:resnet50', 'ferjax.interop.resnet:KEYS',
                             'resnet50'),
    'resnet50_vggface2': Arch(
        'ferjax.models.resnet:resnet50_vggface2', 'ferjax.interop.resnet:KEYS',
        'VGGFace2 caffe ResNet-50 (stride in 1x1, ceil-mode max-pool), torchvision key names'),
    'ir50': Arch('ferjax.models.irse:ir50', 'ferjax.interop.irse:KEYS',
                 "face.evoLVe backbone.model_irse.Backbone([112, 112], 50, 'ir')",
                 input_shape=(1, 112, 112, 3)),
    'mobilefacenet': Arch(
        'ferjax.models.mobilefacenet:mobilefacenet', 'ferjax.interop.mobilefacenet:KEYS',
        'POSTER++ models/mobilefacenet.MobileFaceNet([112, 112], 136) (GDC head)',
        input_shape=(1, 112, 112, 3)),
    'vgg13': _torchvision('ferjax.models.vgg:vgg13', 'ferjax.interop.vgg:KEYS', 'vgg13'),
    'vgg16': _torchvision('ferjax.models.vgg:vgg16', 'ferjax.interop.vgg:KEYS', 'vgg16'),
    'vgg19': _torchvision('ferjax.models.vgg:vgg19', 'ferjax.interop.vgg:KEYS', 'vgg19'),
    'vgg13_bn': _torchvision('ferjax.models.vgg:vgg13_bn', 'ferjax.interop.vgg:KEYS',
                             'vgg13_bn'),
    'vgg16_bn': _torchvision('ferjax.models.vgg:vgg16_bn', 'ferjax.interop.vgg:KEYS',
                             'vgg16_bn'),
    'vgg19_bn': _torchvision('ferjax.models.vgg:vgg19_bn', 'ferjax.interop.vgg:KEYS',
                             'vgg19_bn'),
    'mobilenet_v2': _torchvision('ferjax.models.mobilenet:mobilenet_v2',
                                 'ferjax.interop.mobilenet:KEYS', 'mobilenet_v2'),
    'efficientnet_b0': _torchvision('ferjax.models.efficientnet:efficientnet_b0',
                                    'ferjax.interop.efficientnet:KEYS', 'efficientnet_b0'),
    'efficientnet_b2': _torchvision('ferjax.models.efficientnet:efficientnet_b2',
                                    'ferjax.interop.efficientnet:KEYS', 'efficientnet_b2'),
    'efficientnet_v2_s': _torchvision('ferjax.models.efficientnet:efficientnet_v2_s',
                                      'ferjax.interop.efficientnet:KEYS', 'efficientnet_v2_s'),
    # Traced at 224 x 224: the partition size 7 has to tile every stage's map.
    'maxvit_t': _torchvision('ferjax.models.maxvit:maxvit_t', 'ferjax.interop.maxvit:KEYS',
                             'maxvit_t', input_shape=(1, 224, 224, 3)),
    'mobilevitv2_100': Arch('ferjax.models.mobilevit:mobilevitv2_100',
                            'ferjax.interop.mobilevit:KEYS', 'timm mobilevitv2_100',
                            input_shape=(1, 64, 64, 3)),
    'mobilevitv2_200': Arch('ferjax.models.mobilevit:mobilevitv2_200',
                            'ferjax.interop.mobilevit:KEYS', 'timm mobilevitv2_200',
                            input_shape=(1, 64, 64, 3)),
    'clip_vit_b32': Arch(
        'ferjax.models.clip:clip_vit_b32', 'ferjax.interop.clip:KEYS',
        'transformers.CLIPVisionModelWithProjection (openai/clip-vit-base-patch32)',
        input_shape=(1, 224, 224, 3), init_kwargs={'train': False}),
    'ran': Arch('ferjax.interop.ran:build', 'ferjax.interop.ran:KEYS',
                "RAN (kaiwang960112/Challenge-condition-FER-dataset attention_rank_loss.py)",
                backbone=False),
    'mten': Arch('ferjax.interop.mten:build', 'ferjax.interop.mten:KEYS',
                 'torchvision efficientnet_b2(num_classes=C + 2) (HSEmotion-style multi-task '
                 'head)', backbone=False),
    'cafe': Arch('ferjax.interop.cafe:build', 'ferjax.interop.cafe:KEYS',
                 'CAFE official Model (ResNet-18 as features.N + fc)', backbone=False),
}


def resolve(ref: str) -> Any:
  """'package.module:attribute' -> the attribute (importing the module)."""
  module, _, attr = ref.partition(':')
  return getattr(importlib.import_module(module), attr)


def backbones() -> list[str]:
  return sorted(a for a, e in ARCHS.items() if e.backbone)
