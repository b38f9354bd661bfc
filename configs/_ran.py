"""RAN's set-up (ferjax.methods.ran; the authors' kaiwang960112/Challenge-condition-FER-dataset),
used by the label-distribution study's configs (`_ldl.set_model` calls `paper_config` for
model=ran)."""
import ml_collections

from ferjax.methods import ran


def paper_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The RAN method with the authors' ResNet-18 trunk, seven crops plus the whole face, and
  the region-biased loss at margin 0.02, weight 1 (before finalize)."""
  c.method = 'ran'
  c.model.backbone = 'resnet18'
  c.model.va_head = False
  c.ran = ml_collections.ConfigDict(dict(ran.DEFAULTS))
  return c
