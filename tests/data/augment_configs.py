"""Augment configs shared by the augmentation tests."""
import ml_collections

from ferjax import config as fc

CFG = ml_collections.ConfigDict(dict(flip=True, crop_pad=0.1, rotate_deg=25.0, brightness=0.0,
                                     contrast=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))


def plain_cfg(**kw):
  """The base augment config with flip, crop, rotation, brightness and contrast off and an
  identity normalisation, updated with kw."""
  c = fc.base_config().augment
  c.update(flip=False, crop_pad=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0,
           mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
  c.update(**kw)
  return c
