"""Layers shared by the backbone families."""
from __future__ import annotations

import flax.linen as nn


class Norm:
  """BatchNorm factory with the reference's epsilon; `train` decides whether statistics update.

  Flax's momentum is the weight of the old running value: torch momentum 0.1 is Flax 0.9.
  `zero_scale` starts the scale at 0 (torchvision's zero_init_residual option).
  """

  def __init__(self, train: bool, momentum: float, epsilon: float, dtype):
    self.train, self.momentum, self.epsilon, self.dtype = train, momentum, epsilon, dtype

  def __call__(self, name, zero_scale=False):
    return nn.BatchNorm(use_running_average=not self.train, momentum=self.momentum,
                        epsilon=self.epsilon, dtype=self.dtype, name=name,
                        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones)
