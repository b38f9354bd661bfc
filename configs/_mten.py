"""MTEN's set-up (ferjax.methods.mten: a multi-task EfficientNet-B2 after Savchenko's HSEmotion
models), used by the label-distribution study's configs (`_ldl.set_model` calls
`paper_config` for model=mten)."""
import ml_collections

from ferjax.methods import mten


def paper_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The MTEN method on EfficientNet-B2 with its one expression + valence/arousal head
  (before finalize). Paper 002 trains it on FERPlus, which has no V/A labels, so the study's
  four models all learn from the expression targets alone: the V/A loss is off here even where
  the data has V/A (the synthetic set); `mten.va_weight=1` turns upstream's CCC loss on."""
  c.method = 'mten'
  c.model.backbone = 'efficientnet_b2'
  c.model.va_head = False
  c.mten = ml_collections.ConfigDict(dict(mten.DEFAULTS, va_weight=0.0))
  return c
