"""CLIP ViT-B/32 image tower <-> transformers' `CLIPVisionModelWithProjection` state_dicts, and
transformers' Flax CLIP checkpoints -> ferjax variables (`load_hf_flax`).

The Flax names already follow transformers (see ferjax.models.clip), so a torch key is the Flax
path joined by dots with the usual leaf renames (kernel -> weight, transposed; scale -> weight;
embedding -> weight). `class_embedding` is a bare parameter on both sides.

A full `CLIPModel` state_dict loads with ignore=('text_model.', 'text_projection.',
'logit_scale'). transformers >= 4.31 keeps `embeddings.position_ids` as a non-persistent buffer
(absent from state_dicts), but checkpoints written by older versions (the original
openai/clip-vit-base-patch32 pytorch_model.bin among them) carry it: it is accepted and ignored
on import, and never written on export, so the result loads strictly into a current model.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.interop import torch as it
from ferjax.models import clip

# Top-level entries of a full Flax CLIPModel checkpoint that the image tower does not use.
_TEXT_KEYS = ('text_model', 'text_projection', 'logit_scale')
# What ignore= should drop to load the image tower from a full CLIPModel state_dict.
CLIP_MODEL_IGNORE = ('text_model.', 'text_projection.', 'logit_scale')
_POSITION_IDS = 'vision_model.embeddings.position_ids'


def _name(collection, path, shape):
  del collection  # CLIP has parameters only
  mods, leaf = list(path[:-1]), path[-1]
  if leaf == 'class_embedding':
    return '.'.join(mods + [leaf]), it.SAME
  tname, tf = it.default_leaf(leaf, len(shape))
  return '.'.join(mods + [tname]), tf


def _position_ids(keys):
  # Only reported when present: ignored on import, and on export the exported keys never
  # contain it, so nothing is added.
  return {k: None for k in keys if k == _POSITION_IDS}


KEYS = it.KeyMap(_name, _position_ids)


def load_hf_flax(path: str, **overrides) -> dict:
  """A transformers Flax CLIP checkpoint (`flax_model.msgpack`, or its directory) -> variables.

  Takes a full CLIPModel checkpoint (its text tower, text_projection and logit_scale are
  dropped) or an image tower with projection. Everything else is checked strictly against
  `clip_vit_b32(**overrides)`: missing, unexpected and mis-shaped keys are all named in one
  ConversionError. Parameters come back as float32 numpy arrays ({'params': ...}).
  """
  from flax import serialization

  if os.path.isdir(path):
    path = os.path.join(path, 'flax_model.msgpack')
  if not os.path.exists(path):
    raise FileNotFoundError(f'no such Flax checkpoint: {path} (sharded checkpoints are not '
                            'supported)')
  with open(path, 'rb') as f:
    tree = serialization.msgpack_restore(f.read())
  if set(tree) == {'params'}:  # a flax checkpoint of the variables, not of the params
    tree = tree['params']
  got = it._leaves({k: v for k, v in tree.items() if k not in _TEXT_KEYS})
  module = clip.clip_vit_b32(**overrides)
  x = jnp.zeros((1, module.image_size, module.image_size, 3), jnp.float32)
  abstract = it._leaves(jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))['params'])
  name = '/'.join
  missing = [name(p) for p in abstract if p not in got]
  unexpected = [name(p) for p in got if p not in abstract]
  bad = [f'{name(p)}: checkpoint {tuple(np.shape(got[p]))}, expected {tuple(a.shape)}'
         for p, a in abstract.items() if p in got and tuple(np.shape(got[p])) != tuple(a.shape)]
  if missing or unexpected or bad:
    msg = [f'{path} does not fit clip_vit_b32 with overrides {overrides or {}}:']
    for what, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                       ('shape mismatches', bad)):
      if keys:
        msg.append(f'  {what} ({len(keys)}): {it._short(keys)}')
    raise it.ConversionError('\n'.join(msg))
  # bfloat16 checkpoints become float32
  return {'params': it._nest({p: np.asarray(got[p], a.dtype) for p, a in abstract.items()})}
