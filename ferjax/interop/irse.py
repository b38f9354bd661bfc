"""IR-50 <-> face.evoLVe `Backbone([112, 112], 50, 'ir')` state_dicts (and POSTER++'s layout).

Flax module names follow the reference with `_N` for a Sequential index (`body_12/res_layer_3`
-> `body.12.res_layer.3`); PReLU slopes (`slope`, shape (C,)) are torch's PReLU `weight`.

POSTER++'s 3-stage variant is `from_torch('ir50', sd, num_stages=3)`. The keys it reads are
those of the full model's first 21 units (body.0..body.20) and its input layer, so a full
face.evoLVe checkpoint loads once the unused keys are dropped on purpose:

  from_torch('ir50', evolve_sd, ignore=STAGE4_KEYS, num_stages=3)

POSTER++'s own module splits the body into `body1` (3 units), `body2` (4) and `body3` (14) and
still holds an (unused) `output_layer`; `from_poster_keys` / `to_poster_keys` rename between that
layout and face.evoLVe's (pass ignore=('output_layer.',) for a POSTER++ state_dict).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence, TypeVar

from ferjax.interop import torch as it

_INDEX = re.compile(r'^(.*)_(\d+)$')
_STAGE_SIZES = (3, 4, 14, 3)
# Keys of the full model that the 3-stage variant does not have: stage 4 and the output layer.
STAGE4_KEYS = tuple(f'body.{i}.' for i in range(21, 24)) + ('output_layer.',)


def _name(collection, path, shape):
  mods, leaf = path[:-1], path[-1]
  out = [_INDEX.sub(r'\1.\2', m) for m in mods]
  tname, tf = it.default_leaf(leaf, len(shape))
  return '.'.join(out + [tname]), tf


V = TypeVar('V')


def _starts(stage_sizes: Sequence[int]) -> list[int]:
  starts = [0]
  for n in stage_sizes[:-1]:
    starts.append(starts[-1] + n)
  return starts


def from_poster_keys(sd: Mapping[str, V], stage_sizes=_STAGE_SIZES) -> dict[str, V]:
  """POSTER++ ir50 keys (`body2.1.res_layer...`) -> face.evoLVe keys (`body.4.res_layer...`)."""
  starts, out = _starts(stage_sizes), {}
  for k, v in sd.items():
    m = re.match(r'^body(\d)\.(\d+)\.(.*)$', k)
    if m:
      stage, unit, rest = int(m.group(1)), int(m.group(2)), m.group(3)
      k = f'body.{starts[stage - 1] + unit}.{rest}'
    out[k] = v
  return out


def to_poster_keys(sd: Mapping[str, V], stage_sizes=_STAGE_SIZES) -> dict[str, V]:
  """face.evoLVe keys (`body.4.res_layer...`) -> POSTER++ ir50 keys (`body2.1.res_layer...`)."""
  starts, out = _starts(stage_sizes), {}
  for k, v in sd.items():
    m = re.match(r'^body\.(\d+)\.(.*)$', k)
    if m:
      unit, rest = int(m.group(1)), m.group(2)
      stage = max(i for i, s in enumerate(starts) if s <= unit)
      k = f'body{stage + 1}.{unit - starts[stage]}.{rest}'
    out[k] = v
  return out


KEYS = it.KeyMap(_name, it.bn_tracked)
