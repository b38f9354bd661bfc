"""CLIP ViT-B/32 image tower <-> transformers' `CLIPVisionModelWithProjection` state_dicts.

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

from ferjax.interop import torch as it
from ferjax.models import clip

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


it.register('clip_vit_b32', it.ArchMap(
    build=clip.clip_vit_b32, input_shape=(1, 224, 224, 3), name=_name,
    extra_torch=_position_ids, init_kwargs={'train': False},
    reference='transformers.CLIPVisionModelWithProjection (openai/clip-vit-base-patch32)'))
