"""PyTorch IR-50 and MobileFaceNet face backbones with the upstream module names.

No pip package ships these, so they are written here from the architecture descriptions of
face.evoLVe's `Backbone([112, 112], 50, 'ir')` (POSTER++'s 3-stage variant included) and of
POSTER++'s landmark `MobileFaceNet([112, 112], 136)`. What matters for interop is that the module
tree, and so every state_dict key and shape, is that of the originals; the forwards return tuples
of the maps the ferjax ports return by name (see `ir50_outputs` / `mfn_outputs`).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

IR50_STAGES = (3, 4, 14, 3)


class BottleneckIR(nn.Module):
  """bottleneck_IR: BN, conv3x3, PReLU, conv3x3(stride), BN + a max-pool or conv shortcut."""

  def __init__(self, cin: int, depth: int, stride: int):
    super().__init__()
    if cin == depth:
      self.shortcut_layer = nn.MaxPool2d(1, stride)
    else:
      self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False),
                                          nn.BatchNorm2d(depth))
    self.res_layer = nn.Sequential(
        nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
        nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth))

  def forward(self, x):
    return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
  """IR-50; num_stages=3 is POSTER++'s variant (nearest resize to 112, no output layer).

  forward -> (stage maps..., embedding if the output layer exists), all NCHW.
  """

  def __init__(self, num_stages: int = 4, dropout: float = 0.5):
    super().__init__()
    self.num_stages = num_stages
    self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                     nn.PReLU(64))
    units, cin = [], 64
    for i, n in enumerate(IR50_STAGES[:num_stages]):
      depth = 64 * 2**i
      for j in range(n):
        units.append(BottleneckIR(cin if j == 0 else depth, depth, 2 if j == 0 else 1))
      cin = depth
    self.body = nn.Sequential(*units)
    if num_stages == 4:
      self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(dropout), nn.Flatten(),
                                        nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

  def forward(self, x):
    if self.num_stages == 3:
      x = F.interpolate(x, size=112)
    x = self.input_layer(x)
    outs, unit = [], 0
    for n in IR50_STAGES[:self.num_stages]:
      x = self.body[unit:unit + n](x)
      unit += n
      outs.append(x)
    if self.num_stages == 4:
      outs.append(self.output_layer(x))
    return tuple(outs)


def ir50_outputs(outs) -> dict:
  names = [f'stage{i + 1}' for i in range(min(len(outs), 4))]
  if len(outs) == 5:
    names.append('embedding')
  return dict(zip(names, outs))


class ConvBlock(nn.Module):
  """Conv_block (prelu=True) / Linear_block (prelu=False): bias-free conv, BN[, PReLU]."""

  def __init__(self, cin, cout, k=1, stride=1, pad=0, groups=1, prelu=True):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False)
    self.bn = nn.BatchNorm2d(cout)
    if prelu:
      self.prelu = nn.PReLU(cout)

  def forward(self, x):
    x = self.bn(self.conv(x))
    return self.prelu(x) if hasattr(self, 'prelu') else x


class DepthWise(nn.Module):
  """Depth_Wise: 1x1 to `groups` channels, depthwise 3x3 with stride, 1x1 linear projection."""

  def __init__(self, cin, cout, stride, groups, residual=False):
    super().__init__()
    self.residual = residual
    self.conv = ConvBlock(cin, groups)
    self.conv_dw = ConvBlock(groups, groups, 3, stride, 1, groups=groups)
    self.project = ConvBlock(groups, cout, prelu=False)

  def forward(self, x):
    y = self.project(self.conv_dw(self.conv(x)))
    return x + y if self.residual else y


class Residual(nn.Module):

  def __init__(self, c, num_block, groups):
    super().__init__()
    self.model = nn.Sequential(*[DepthWise(c, c, 1, groups, residual=True)
                                 for _ in range(num_block)])

  def forward(self, x):
    return self.model(x)


class GDC(nn.Module):

  def __init__(self, embedding_size):
    super().__init__()
    self.conv_6_dw = ConvBlock(512, 512, 7, 1, 0, groups=512, prelu=False)
    self.conv_6_flatten = nn.Flatten()
    self.linear = nn.Linear(512, embedding_size, bias=False)
    self.bn = nn.BatchNorm1d(embedding_size)

  def forward(self, x):
    return self.bn(self.linear(self.conv_6_flatten(self.conv_6_dw(x))))


class MobileFaceNet(nn.Module):
  """MobileFaceNet([112, 112], embedding_size) with the GDC head under `output_layer`.

  forward -> (out3, out4, conv_features, landmarks), maps NCHW. `blocks` (residual blocks of
  conv_3/4/5) and `landmark_head=False` (no GDC head; forward then returns the three maps) mirror
  ferjax's options for small test networks; the defaults are the upstream network.
  """

  def __init__(self, embedding_size: int = 136, blocks=(4, 6, 2), landmark_head: bool = True):
    super().__init__()
    self.conv1 = ConvBlock(3, 64, 3, 2, 1)
    self.conv2_dw = ConvBlock(64, 64, 3, 1, 1, groups=64)
    self.conv_23 = DepthWise(64, 64, 2, groups=128)
    self.conv_3 = Residual(64, blocks[0], groups=128)
    self.conv_34 = DepthWise(64, 128, 2, groups=256)
    self.conv_4 = Residual(128, blocks[1], groups=256)
    self.conv_45 = DepthWise(128, 128, 2, groups=512)
    self.conv_5 = Residual(128, blocks[2], groups=256)
    self.conv_6_sep = ConvBlock(128, 512)
    if landmark_head:
      self.output_layer = GDC(embedding_size)

  def forward(self, x):
    out3 = self.conv_3(self.conv_23(self.conv2_dw(self.conv1(x))))
    out4 = self.conv_4(self.conv_34(out3))
    feats = self.conv_6_sep(self.conv_5(self.conv_45(out4)))
    if not hasattr(self, 'output_layer'):
      return out3, out4, feats
    return out3, out4, feats, self.output_layer(feats)


def mfn_outputs(outs) -> dict:
  return dict(zip(('out3', 'out4', 'conv_features', 'landmarks'), outs))


def randomize_prelu(model: nn.Module, seed: int = 0) -> nn.Module:
  """Per-channel PReLU slopes away from the uniform 0.25 (which would hide a channel mix-up)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for mod in model.modules():
      if isinstance(mod, nn.PReLU):
        mod.weight.copy_(0.25 + 0.2 * torch.randn(mod.weight.shape, generator=g))
  return model
