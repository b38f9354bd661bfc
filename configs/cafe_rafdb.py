"""CAFE (paper 000) Table 1 row: train on rafdb, test on RAF-DB, FERPlus, AffectNet, SFEW, MMA.

Launch (prepared datasets, see ferjax.data.prepare; CLIP ViT-B/32 weights required):
  python -m ferjax.train --config configs/cafe_rafdb.py:clip=/w/clip-vit-base-patch32 \\
      --workdir runs/cafe_rafdb
Arguments: clip=PATH (HF flax_model.msgpack dir or torch state_dict), code (the official
script's pool / ImageNet-normalised CLIP / BGR test sets), exact (CLIP in the step on augmented
input), epochs=N, smoke.
"""
from ferjax import config as fc

cafe_setup = fc.sibling(__file__, '_cafe')


def get_config(arg=None):
  return cafe_setup.table1_config('rafdb', arg)
