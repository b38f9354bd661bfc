"""The PyTorch modules that ferjax export bundles load into, built from a bundle's `torch` spec.

A bundle (`python -m ferjax.convert --from ferjax --in RUN_DIR --out BUNDLE_DIR`) records in
`ferjax.json` which module below holds its weights and with which sizes; `build(spec)` makes
that module with fresh weights, and `model.safetensors` then loads into it with strict=True.
`ferjax.interop.torch.load_bundle` does both and adds the preprocessing.

  classifier  ferjax's baseline: `backbone.*` is the torchvision / timm / face-backbone model
              under its own key names (its classifier removed), then `fc` (class logits) and,
              with a V/A head, `va_fc` (tanh). For a ResNet without V/A head the keys with
              `backbone.` dropped are exactly torchvision's `resnet18(num_classes=C)`.
  cage        torchvision's maxvit_t (or efficientnet_v2_s) with CAGE's official classifier:
              the whole torchvision model, head included, under torchvision's names.
  dan         the official DAN (dan.py here), yaoing/DAN's names.
  cafe        CAFE's official `Model`: the ResNet-18 mask net as `features.N` and `fc`; its
              forward takes the image and the CLIP image features.
  ran         the authors' RAN (ran.py here), its region crops taken from the image in the
              forward pass as ferjax takes them.
  mten        torchvision's efficientnet_b2 with classifier[1] = Linear(1408, C + 2).
  mtl         paper 004's multi-task model (mtl.py here): (logits, landmarks, ...).
  grefel      GReFEL (grefel.py here): POSTER++'s encoder names, ARBEx's head and reliability
              balancing names; returns (log p, p) of the predicted distribution.

Each module returns what its upstream returns; the spec's `outputs` says which output (and
which columns of it) is which named prediction.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _resnet(depth: int, width: int = 64, stage_sizes: Sequence[int] | None = None) -> nn.Module:
  """A torchvision ResNet without fc; other stem widths and fewer stages keep torchvision's
  key names (stages beyond `stage_sizes` are parameter-free identities)."""
  from torchvision.models import resnet as tv
  block = tv.BasicBlock if depth in (18, 34) else tv.Bottleneck
  default = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
  sizes = list(stage_sizes or default)
  net = tv.ResNet(block, default)
  if width != 64 or sizes != default:
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    for i in range(4):
      layer = (net._make_layer(block, width * 2**i, sizes[i], stride=1 if i == 0 else 2)
               if i < len(sizes) else nn.Identity())
      setattr(net, f'layer{i + 1}', layer)
  net.fc = nn.Identity()
  return net


class _Pooled(nn.Module):
  """A torchvision model's `features` (its only parameters), globally averaged."""

  def __init__(self, net: nn.Module):
    super().__init__()
    self.features = net.features

  def forward(self, x):
    return self.features(x).mean((2, 3))


class _IREmbedding(nn.Module):
  """face.evoLVe's IR-50 (4 stages, output layer): the 512-d embedding."""

  def __init__(self):
    super().__init__()
    from third_party.torch_reference import faces
    net = faces.IRBackbone(4)
    self.input_layer, self.body, self.output_layer = net.input_layer, net.body, net.output_layer

  def forward(self, x):
    return self.output_layer(self.body(self.input_layer(x)))


def backbone(arch: str, **dims) -> tuple[nn.Module, int]:
  """(module giving the pooled features ferjax's backbone gives, their width) for an arch."""
  import torchvision.models as tvm
  if arch in ('resnet18', 'resnet34', 'resnet50'):
    depth, width = int(arch[6:]), int(dims.get('width', 64))
    stages = len(dims.get('stage_sizes') or (0,) * 4)
    return (_resnet(depth, width, dims.get('stage_sizes')),
            width * 2**(stages - 1) * (4 if depth == 50 else 1))
  if arch.startswith('vgg'):
    return _Pooled(getattr(tvm, arch)()), 512
  if arch in ('mobilenet_v2', 'efficientnet_b0', 'efficientnet_b2', 'efficientnet_v2_s',
              'maxvit_t'):
    net = getattr(tvm, arch)()
    width = {'mobilenet_v2': 1280, 'efficientnet_b0': 1280, 'efficientnet_b2': 1408,
             'efficientnet_v2_s': 1280, 'maxvit_t': 512}[arch]
    net.classifier = (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()) if arch == 'maxvit_t'
                      else nn.Identity())
    return net, width
  if arch == 'mobilevitv2_100':
    import timm
    return timm.create_model('mobilevitv2_100', pretrained=False, num_classes=0), 512
  if arch == 'ir50':
    return _IREmbedding(), 512
  raise ValueError(f'no PyTorch bundle module for backbone {arch!r} yet')


class Classifier(nn.Module):
  """ferjax's baseline: backbone -> fc (logits) [, tanh(va_fc) (valence, arousal)]."""

  def __init__(self, arch: str, num_classes: int, va_head: bool, **dims):
    super().__init__()
    self.backbone, width = backbone(arch, **dims)
    self.fc = nn.Linear(width, num_classes)
    self.va_fc = nn.Linear(width, 2) if va_head else None

  def forward(self, x):
    h = self.backbone(x)
    if self.va_fc is None:
      return self.fc(h)
    return self.fc(h), torch.tanh(self.va_fc(h))


def cage(arch: str, outputs: int, image_size: int, va_dropout: bool = False,
         maxvit: dict | None = None) -> nn.Module:
  """CAGE's official model: torchvision's net with the official classifier (raw head output)."""
  import torchvision.models as tvm
  if arch == 'efficientnet_v2_s':
    net = tvm.efficientnet_v2_s()
    net.classifier[1] = nn.Linear(1280, outputs)
    return net
  mv = dict(maxvit or {})
  if mv:
    from torchvision.models import maxvit as tv_maxvit
    net = tv_maxvit.MaxVit(
        input_size=(image_size, image_size), stem_channels=mv.get('stem_channels', 64),
        partition_size=mv.get('partition_size', 7),
        block_channels=list(mv.get('block_channels', (64, 128, 256, 512))),
        block_layers=list(mv.get('block_layers', (2, 2, 5, 2))), head_dim=mv.get('head_dim', 32),
        expansion_ratio=mv.get('expansion_ratio', 4.0), stochastic_depth_prob=0.0)
  else:
    net = tvm.maxvit_t()
  d = net.classifier[3].in_features
  tail = [nn.Dropout(0.3)] if va_dropout else []
  net.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(d),
                                 nn.Linear(d, d), nn.Tanh(), *tail,
                                 nn.Linear(d, outputs, bias=False))
  return net


class CAFE(nn.Module):
  """CAFE's official `Model`: logits = fc(features * sigmoid(mask_net(image)))."""

  def __init__(self, num_classes: int, width: int = 64, sigmoid: bool = True):
    super().__init__()
    from third_party.torch_reference.dan import resnet18_trunk
    self.features = resnet18_trunk(width)
    self.fc = nn.Linear(width * 8, num_classes)
    self.sigmoid = sigmoid

  def forward(self, image, features):
    m = self.features(image).mean((2, 3))
    return self.fc(features * (torch.sigmoid(m) if self.sigmoid else m))


def _ran_from_image():
  from third_party.torch_reference.ran import RAN

  class RANFromImage(RAN):
    """The authors' RAN on whole faces: each crop box (fractions, floored to pixels) resized
    back to the input size (bilinear, half-pixel centres), the whole face last."""

    def __init__(self, crops, **kw):
      super().__init__(**kw)
      self.crops = [tuple(float(f) for f in b) for b in crops]

    def forward(self, image):
      import torch.nn.functional as F
      h, w = image.shape[-2:]
      regions = []
      for x0, y0, x1, y1 in self.crops:
        part = image[:, :, int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]
        regions.append(F.interpolate(part, size=(h, w), mode='bilinear', align_corners=False))
      regions.append(image)
      return super().forward(torch.stack(regions, dim=-1))

  return RANFromImage


def build(spec: dict) -> nn.Module:
  """The module a bundle's `torch` spec names, with fresh weights, in eval mode."""
  kind, kw = spec['module'], dict(spec.get('kwargs', {}))
  if kind == 'classifier':
    model = Classifier(**kw)
  elif kind == 'cage':
    model = cage(**kw)
  elif kind == 'dan':
    from third_party.torch_reference.dan import DAN
    model = DAN(**kw)
  elif kind == 'cafe':
    model = CAFE(**kw)
  elif kind == 'ran':
    model = _ran_from_image()(**kw)
  elif kind == 'mten':
    import torchvision.models as tvm
    model = getattr(tvm, kw['arch'])()
    model.classifier[1] = nn.Linear(model.classifier[1].in_features, kw['num_classes'] + 2)
  elif kind == 'mtl':
    from third_party.torch_reference.mtl import from_dims
    model = from_dims(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
  elif kind == 'grefel':
    from third_party.torch_reference.grefel import GReFEL
    model = GReFEL(**kw)
  else:
    raise ValueError(f'unknown bundle module {kind!r}')
  return model.eval()
