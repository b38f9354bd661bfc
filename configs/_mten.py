"""MTEN's set-up (ferjax.methods.mten: a multi-task EfficientNet-B2 after Savchenko's HSEmotion
models), used by the label-distribution study's configs (`_ldl.set_model` calls
`paper_config` for model=mten)."""
import ml_collections

from ferjax.methods import mten


def paper_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The MTEN method on EfficientNet-B2 with its one expression + valence/arousal head; the
  V/A loss (upstream's CCC) counts only rows with V/A labels (before finalize)."""
  c.method = 'mten'
  c.model.backbone = 'efficientnet_b2'
  c.model.va_head = False
  c.mten = ml_collections.ConfigDict(dict(mten.DEFAULTS))
  return c
