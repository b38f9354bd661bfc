"""MobileFaceNet <-> POSTER++ / pytorch_face_landmark `MobileFaceNet([112, 112], 136)`.

Flax module names equal the reference's, except a Sequential index inside Residual (`model_3` ->
`model.3`); PReLU slopes (`slope`, shape (C,)) are torch's PReLU `weight`; depthwise kernels
(C, 1, k, k) <-> (k, k, 1, C) follow the ordinary convolution rule. The GDC head lives under
`output_layer.` (output_layer.conv_6_dw.*, output_layer.linear.weight, output_layer.bn.*), as in
the checkpoint POSTER++ loads with a strict load_state_dict.
"""
from __future__ import annotations

import re

from ferjax.interop import torch as it

_INDEX = re.compile(r'^model_(\d+)$')


def _name(collection, path, shape):
  mods, leaf = path[:-1], path[-1]
  out = [_INDEX.sub(r'model.\1', m) for m in mods]
  tname, tf = it.default_leaf(leaf, len(shape))
  return '.'.join(out + [tname]), tf


KEYS = it.KeyMap(_name, it.bn_tracked)
