"""A PyTorch DAN with the official module names (yaoing/DAN, networks/dan.py), written for
ferjax's parity tests and for loading the released checkpoints; see README.md here.

It is written from the architecture, not copied: only the module names, the layer shapes, the
initialisation and the forward pass's order follow the official model, so that a released
`model_state_dict` (`rafdb_epoch21_acc0.897_bacc0.8275.pth`, `affecnet8_epoch5_acc0.6209.pth`)
loads strictly:

  features.{0,1,4,5,6,7}.*             torchvision ResNet-18 children[:-2]
  cat_head{i}.sa.conv1x1.{0,1}.*       1x1 conv C -> C/2 (bias) + BN2d
  cat_head{i}.sa.conv_{3x3,1x3,3x1}.{0,1}.*   conv C/2 -> C (bias) + BN2d
  cat_head{i}.ca.attention.{0,1,3}.*   Linear(C, 32), BN1d(32), (ReLU), Linear(32, C)
  fc.*, bn.*                           Linear(C, K), BN1d(K)

`width` shrinks the ResNet (a torchvision BasicBlock ResNet of another stem width) for cheap
tests; width 64 is torchvision's resnet18. The affinity and partition losses are restated
here in torch as the official training scripts compute them.
"""
from __future__ import annotations

import sys

import torch
from torch import nn
from torch.nn import functional as F


def resnet18_trunk(width: int = 64) -> nn.Sequential:
  """torchvision's ResNet-18 without avgpool and fc (the official `children()[:-2]`)."""
  from torchvision.models.resnet import BasicBlock, ResNet
  net = ResNet(BasicBlock, [2, 2, 2, 2])
  if width != 64:
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(BasicBlock, width, 2)
    net.layer2 = net._make_layer(BasicBlock, width * 2, 2, stride=2)
    net.layer3 = net._make_layer(BasicBlock, width * 4, 2, stride=2)
    net.layer4 = net._make_layer(BasicBlock, width * 8, 2, stride=2)
  return nn.Sequential(*list(net.children())[:-2])


def _conv_bn(cin, cout, kernel, padding):
  return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout))


class SpatialAttention(nn.Module):

  def __init__(self, channels: int = 512):
    super().__init__()
    mid = channels // 2
    self.conv1x1 = _conv_bn(channels, mid, 1, 0)
    self.conv_3x3 = _conv_bn(mid, channels, 3, 1)
    self.conv_1x3 = _conv_bn(mid, channels, (1, 3), (0, 1))
    self.conv_3x1 = _conv_bn(mid, channels, (3, 1), (1, 0))

  def forward(self, x):
    y = self.conv1x1(x)
    y = F.relu(self.conv_3x3(y) + self.conv_1x3(y) + self.conv_3x1(y))
    return x * y.sum(dim=1, keepdim=True)   # no sigmoid, as in the reference


class ChannelAttention(nn.Module):

  def __init__(self, channels: int = 512, hidden: int = 32):
    super().__init__()
    self.attention = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden),
                                   nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                   nn.Sigmoid())

  def forward(self, x):
    gap = x.mean(dim=(2, 3))
    return gap * self.attention(gap)


class CrossAttentionHead(nn.Module):

  def __init__(self, channels: int = 512, hidden: int = 32):
    super().__init__()
    self.sa = SpatialAttention(channels)
    self.ca = ChannelAttention(channels, hidden)
    for m in self.modules():   # the reference initialises the heads only
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode='fan_out')
        nn.init.zeros_(m.bias)
      elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
      elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.001)
        nn.init.zeros_(m.bias)

  def forward(self, x):
    return self.ca(self.sa(x))


class DAN(nn.Module):
  """forward(x) -> (logits, feature map, heads), as the reference returns them."""

  def __init__(self, num_class: int = 7, num_head: int = 4, width: int = 64,
               hidden: int = 32):
    super().__init__()
    self.features = resnet18_trunk(width)
    self.num_head = num_head
    channels = width * 8
    for i in range(num_head):
      setattr(self, f'cat_head{i}', CrossAttentionHead(channels, hidden))
    self.fc = nn.Linear(channels, num_class)
    self.bn = nn.BatchNorm1d(num_class)

  def forward(self, x):
    x = self.features(x)
    heads = torch.stack([getattr(self, f'cat_head{i}')(x) for i in range(self.num_head)], 1)
    if heads.size(1) > 1:
      heads = F.log_softmax(heads, dim=1)
    out = self.bn(self.fc(heads.sum(dim=1)))
    return out, x, heads


def affinity_loss(feat_map, centers, labels):
  """The training scripts' AffinityLoss: distance to the true centre over the centres' summed
  unbiased variance, the masked (B, K) matrix clamped to [1e-12, 1e12], summed, over B."""
  x = F.adaptive_avg_pool2d(feat_map, 1).flatten(1)
  b, k = x.size(0), centers.size(0)
  dist = (x.pow(2).sum(1, keepdim=True).expand(b, k)
          + centers.pow(2).sum(1, keepdim=True).expand(k, b).t()
          - 2 * x @ centers.t())
  mask = labels.unsqueeze(1).expand(b, k).eq(torch.arange(k).expand(b, k)).float()
  dist = dist * mask / centers.var(dim=0).sum()
  return dist.clamp(min=1e-12, max=1e12).sum() / b


def partition_loss(heads):
  num_head = heads.size(1)
  if num_head <= 1:
    return heads.new_zeros(())
  return torch.log(1 + num_head / (heads.var(dim=1).mean() + sys.float_info.epsilon))
