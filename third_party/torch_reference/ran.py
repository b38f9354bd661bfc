"""A PyTorch RAN with the authors' module names (kaiwang960112/Challenge-condition-FER-dataset,
`FERplus_dir/attention_rank_loss.py`), written for ferjax's parity tests; see README.md here.

It is written from the architecture, not copied: the module names, the layer shapes and the
forward pass's order follow the authors' model, so that its state_dict names are theirs:

  conv1, bn1, layer1..layer4.*     torchvision's ResNet-18 trunk, shared by every region
  alpha.0.*                        Linear(512, 1) (+ Sigmoid): self-attention, one per region
  beta.0.*                         Linear(1024, 1) (+ Sigmoid): relation attention
  fc.*                             Linear(1024, num_classes)

Input: (B, 3, H, W, R), the R regions stacked on the last axis, the whole face last (the
authors' loaders put the crops first and the face last). Output: (logits, the largest softmaxed
self-attention weight among the crops (B, 1), the whole face's weight (B, 1)), as upstream.

`width` shrinks the ResNet (a torchvision BasicBlock ResNet of another stem width) for cheap
tests; width 64 is the authors' resnet18. `region_biased_loss` restates their `MyLoss`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RAN(nn.Module):

  def __init__(self, num_classes: int = 8, width: int = 64, layers=(2, 2, 2, 2)):
    super().__init__()
    from torchvision.models.resnet import BasicBlock, ResNet
    trunk = ResNet(BasicBlock, list(layers))
    if width != 64:
      trunk.inplanes = width
      trunk.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
      trunk.bn1 = nn.BatchNorm2d(width)
      for i in range(4):
        setattr(trunk, f'layer{i + 1}', trunk._make_layer(BasicBlock, width * 2 ** i, layers[i],
                                                          stride=1 if i == 0 else 2))
    # Top-level names, as the authors' ResNet subclass has them (no `features.` prefix).
    self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, \
        trunk.maxpool
    self.layer1, self.layer2, self.layer3, self.layer4 = (trunk.layer1, trunk.layer2,
                                                          trunk.layer3, trunk.layer4)
    c = width * 8
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.alpha = nn.Sequential(nn.Linear(c, 1), nn.Sigmoid())
    self.beta = nn.Sequential(nn.Linear(2 * c, 1), nn.Sigmoid())
    self.fc = nn.Linear(2 * c, num_classes)

  def features(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.avgpool(x).flatten(1)                                      # (B, C)

  def forward(self, x):
    regions = x.shape[-1]
    # One backbone call per region, as upstream: in train mode each region's batch has its
    # own BatchNorm statistics and the running averages update once per region.
    vs = [self.features(x[..., i]) for i in range(regions)]
    alphas = torch.stack([self.alpha(v) for v in vs], dim=2)                # (B, 1, R)
    alphas = F.softmax(alphas, dim=2)
    part_max = alphas[:, :, :regions - 1].max(dim=2)[0]                     # (B, 1)
    org = alphas[:, :, regions - 1]                                         # (B, 1)
    stack = torch.stack(vs, dim=2)                                          # (B, C, R)
    vm = stack.mul(alphas).sum(2).div(alphas.sum(2))                        # (B, C)
    cat = [torch.cat([v, vm], dim=1) for v in vs]
    betas = F.softmax(torch.stack([self.beta(v) for v in cat], dim=2), dim=2)   # (B, 1, R)
    w = betas * alphas
    out = torch.stack(cat, dim=2).mul(w).sum(2).div(w.sum(2))               # (B, 2C)
    return self.fc(out), part_max, org


def region_biased_loss(part_max, org, margin: float = 0.02):
  """The authors' `MyLoss`: mean over the batch of max(0, margin - (part_max - org))."""
  return torch.clamp(margin - (part_max - org), min=0).sum() / org.shape[0]
