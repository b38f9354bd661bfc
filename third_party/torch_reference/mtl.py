"""A PyTorch multi-task model of paper 004 (Jeong et al., ABAW4-LSD; the authors' code
Yeonggi-hong/ECCV2022-ABAW-competition, `networks/models_tmp.py: MTL_finetuning`), written for
ferjax's parity tests; see README.md here.

Written from the architecture facts, not copied. Module names:

  em_features.*              VGGFace2 (caffe) ResNet-50, torchvision key names, no fc
  em_reduce.{0,1,3,4}.*      Conv1x1(2048, 1024) + BN2d + ReLU, Conv1x1(1024, 512) + BN2d + ReLU
  cat_head{i}.*              DAN cross-attention heads (third_party/torch_reference/dan.py)
  lm_features.*              appearance backbone: a ResNet (torchvision keys, no fc) or a timm
                             MobileViTv2 (`head.fc` an identity)
  lm_reduce.{0,1}.*          Conv1x1(C_a, 512) + BN2d (+ ReLU) on the pooled features, or
  lm_fc.*                    Linear(C_a, 512) (the DINO variant)
  sharedfc1, sharedbn1, sharedfc2, sharedbn2   Linear(512, 256), BN1d, Linear(256, 128), BN1d
  fc, bn                     Linear(128, K), BN1d(K): the expression logits
  encode1, encode2           Linear(128, 68) each: x and y of the landmarks

`width`, `layers`, `reduce`, `shared`, `hidden` shrink the model for cheap tests. The authors'
code names the shared and output layers `sharedfc1`, `sharedfc2`, `encode1`, `encode2`; the
other names are this port's.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from third_party.torch_reference import dan


def caffe_resnet50(width: int = 64, layers=(3, 4, 6, 3)) -> nn.Module:
  """torchvision's ResNet-50 rewired as the caffe-converted VGGFace2 net (stride in the first
  1x1 of each stage's first block, ceil-mode max-pool without padding), fc removed."""
  from torchvision.models.resnet import Bottleneck, ResNet
  net = ResNet(Bottleneck, list(layers), width_per_group=64)
  if width != 64:
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(Bottleneck, width, layers[0])
    net.layer2 = net._make_layer(Bottleneck, width * 2, layers[1], stride=2)
    net.layer3 = net._make_layer(Bottleneck, width * 4, layers[2], stride=2)
    net.layer4 = net._make_layer(Bottleneck, width * 8, layers[3], stride=2)
  net.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True)
  for layer in (net.layer2, net.layer3, net.layer4):
    layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
  net.fc = nn.Identity()
  return net


def trunk_map(net, x):
  x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
  return net.layer4(net.layer3(net.layer2(net.layer1(x))))


class MTL(nn.Module):
  """forward(x) -> (logits, landmarks (B, 68, 2), heads (B, H, C), reduced map (B, C, h, w))."""

  def __init__(self, num_class: int = 6, num_head: int = 4, width: int = 64,
               layers=(3, 4, 6, 3), reduce=(1024, 512), shared=(256, 128), hidden: int = 32,
               appearance: nn.Module | None = None, appearance_channels: int = 0,
               appearance_head: str = 'conv', afn_logsoftmax: bool = False,
               num_landmarks: int = 68):
    super().__init__()
    self.em_features = caffe_resnet50(width, layers)
    c4 = width * 8 * 4
    self.em_reduce = nn.Sequential(nn.Conv2d(c4, reduce[0], 1), nn.BatchNorm2d(reduce[0]),
                                   nn.ReLU(), nn.Conv2d(reduce[0], reduce[1], 1),
                                   nn.BatchNorm2d(reduce[1]), nn.ReLU())
    self.num_head, self.afn_logsoftmax = num_head, afn_logsoftmax
    for i in range(num_head):
      setattr(self, f'cat_head{i}', dan.CrossAttentionHead(reduce[1], hidden))
    self.lm_features = appearance if appearance is not None else caffe_resnet50(width, layers)
    ca = appearance_channels or c4
    self.appearance_head = appearance_head
    if appearance_head == 'conv':
      self.lm_reduce = nn.Sequential(nn.Conv2d(ca, reduce[1], 1), nn.BatchNorm2d(reduce[1]),
                                     nn.ReLU())
    else:
      self.lm_fc = nn.Linear(ca, reduce[1])
    self.sharedfc1 = nn.Linear(reduce[1], shared[0])
    self.sharedbn1 = nn.BatchNorm1d(shared[0])
    self.sharedfc2 = nn.Linear(shared[0], shared[1])
    self.sharedbn2 = nn.BatchNorm1d(shared[1])
    self.fc = nn.Linear(shared[1], num_class)
    self.bn = nn.BatchNorm1d(num_class)
    self.encode1 = nn.Linear(shared[1], num_landmarks)
    self.encode2 = nn.Linear(shared[1], num_landmarks)

  def shared(self, v):
    return self.sharedbn2(self.sharedfc2(self.sharedbn1(self.sharedfc1(v))))

  def forward(self, x):
    feat = self.em_reduce(trunk_map(self.em_features, x))
    heads = torch.stack([getattr(self, f'cat_head{i}')(feat) for i in range(self.num_head)], 1)
    if self.afn_logsoftmax and heads.size(1) > 1:
      heads = F.log_softmax(heads, dim=1)
    a = self.lm_features(x)                                   # pooled (B, C_a)
    if self.appearance_head == 'conv':
      a = self.lm_reduce(a[:, :, None, None]).flatten(1)
    else:
      a = self.lm_fc(a)
    em, a = self.shared(heads.sum(dim=1)), self.shared(a)   # emotion first, as ferjax
    logits = self.bn(self.fc(em))
    landmarks = torch.stack([self.encode1(a), self.encode2(a)], dim=-1)
    return logits, landmarks, heads, feat


def weighted_ce(logits, labels, weight=None):
  return F.cross_entropy(logits, labels, weight=weight)


def landmark_mse(pred, target):
  return F.mse_loss(pred, target)


def from_dims(**dims) -> MTL:
  """The reference built from ferjax.interop.mtl.config_dims(cfg): the emotion branch, and the
  appearance branch the run chose (VGGFace2 ResNet-50 inside MTL, a torchvision-named ResNet-50
  of the run's width, or timm's MobileViTv2 at the run's channels)."""
  appearance, channels = None, 0
  if dims.get('appearance', '').startswith('mobilevit'):
    from timm.models.byobnet import ByobNet
    from timm.models.mobilevit import _mobilevitv2_cfg
    appearance = ByobNet(_mobilevitv2_cfg(dims['mobilevit_channels'][0] / 64), num_classes=0)
    channels = dims['mobilevit_channels'][-1]
  elif dims.get('appearance') == 'resnet50':
    import torchvision
    from torchvision.models.resnet import Bottleneck
    appearance = torchvision.models.resnet50()
    appearance.inplanes = dims['width']
    appearance.conv1 = nn.Conv2d(3, dims['width'], 7, 2, 3, bias=False)
    appearance.bn1 = nn.BatchNorm2d(dims['width'])
    for i in range(4):
      setattr(appearance, f'layer{i + 1}', appearance._make_layer(
          Bottleneck, dims['width'] * 2**i, dims['stage_sizes'][i], stride=1 if i == 0 else 2))
    appearance.fc = nn.Identity()
  return MTL(num_class=dims['num_classes'], num_head=dims['num_heads'], width=dims['width'],
             layers=dims['stage_sizes'], reduce=dims['reduce'], shared=dims['shared'],
             hidden=dims['hidden'], appearance=appearance, appearance_channels=channels,
             appearance_head=dims.get('appearance_head', 'conv'),
             afn_logsoftmax=dims.get('afn_logsoftmax', False))
