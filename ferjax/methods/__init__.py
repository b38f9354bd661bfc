"""Methods: the one extension point. A method is a `Method`, built from the whole config by its
module's `build(cfg)`; the trainer, the input pipeline, the evaluator, checkpoints and export only
ever see this object, and nothing below `ferjax/methods/` imports this package.

Required fields:
- `model`: a Flax module, `model.apply(variables, image, train=..., rngs=..., **inputs)` returning
  a dict of outputs (`logits`, `probs`, `embedding`, `va`, ...);
- `loss(outputs, batch, step) -> (scalar loss, dict of scalar metrics)`;
- `predict(outputs) -> dict` of what evaluation, the report and export read (`probs`, `logits`,
  `va`, `multilabel`, `landmarks`, or method-specific arrays such as CAFE's `mask`);
- `class_names`: the run's class space, in the order of the model's outputs.

Optional fields (off by default):
- `metrics`: the metric groups evaluation reports, from METRIC_GROUPS;
- `targets`: batch keys kept next to the predictions beyond those the metric groups need;
- `model_inputs(batch) -> dict`: extra keyword arguments for `model.apply` taken from the batch;
- `frozen(path) -> bool`: parameters the optimiser never updates;
- `init_variables(variables) -> variables`: pretrained parts put into a fresh initialisation;
- `pipeline_transform(spec, source, seed) -> f(example, position) -> example` or None:
  per-example additions, e.g. cached features;
- `report(result) -> list of written paths`: the method's own pictures of one evaluation set,
  fed the predictions of the one evaluation pass (`evaluate.SetResult`).
- `mix_loss(outputs, batch, step) -> (loss, metrics)`: under Mix-augment, the loss of the mixed
  prediction against one label set, the clean passes keeping `loss` (paper 004: auxiliary
  terms only on the clean passes with their correct labels); default `loss`.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import flax.linen as nn

from ferjax import labels

# Metric group -> the batch keys it scores against.
METRIC_GROUPS = {
    'classification': ('label', 'label_dist', 'votes'),
    'regression': ('va', 'va_mask', 'vad', 'vad_mask'),
    'multilabel': ('multilabel',),
    'landmarks': ('landmarks', 'landmarks_mask'),
}


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  model: nn.Module
  loss: Callable[[dict, dict, Any], tuple[Any, dict]]
  predict: Callable[[dict], dict]
  class_names: tuple[str, ...]
  metrics: tuple[str, ...] = ('classification',)
  targets: tuple[str, ...] = ()
  model_inputs: Callable[[dict], dict] | None = None
  frozen: Callable[[tuple], bool] | None = None
  init_variables: Callable[[dict], dict] | None = None
  pipeline_transform: Callable[[str, Any, int], Callable | None] | None = None
  report: Callable[[Any], list] | None = None
  mix_loss: Callable[[dict, dict, Any], tuple[Any, dict]] | None = None

  def __post_init__(self):
    unknown = [g for g in self.metrics if g not in METRIC_GROUPS]
    if unknown:
      raise ValueError(f'method {self.name!r}: unknown metric groups {unknown}; known: '
                       f'{sorted(METRIC_GROUPS)}')

  def target_keys(self) -> tuple[str, ...]:
    """The batch keys evaluation keeps next to the predictions."""
    keys = ['mask', 'index']
    for group in self.metrics:
      keys += METRIC_GROUPS[group]
    keys += self.targets
    return tuple(dict.fromkeys(keys))


# Method name -> module with `build(cfg) -> Method`; imported lazily (each pulls its own
# models). A method's own options live in the config section named after it (cfg.cage, ...).
REGISTRY = {
    'baseline': 'ferjax.methods.baseline',
    'cafe': 'ferjax.methods.cafe',
    'cage': 'ferjax.methods.cage',
    'grefel': 'ferjax.methods.grefel',
    'dan': 'ferjax.methods.dan',
    'ran': 'ferjax.methods.ran',
    'mten': 'ferjax.methods.mten',
    'mtl': 'ferjax.methods.mtl',
}


def build(cfg) -> Method:
  """Builds the method named by `cfg.method` from the whole config (its class space checked)."""
  if cfg.method not in REGISTRY:
    raise ValueError(f'unknown method {cfg.method!r}; known: {sorted(REGISTRY)}')
  labels.resolve(cfg)
  method = importlib.import_module(REGISTRY[cfg.method]).build(cfg)
  if tuple(method.class_names) != labels.class_names(cfg.data.class_space):
    raise AssertionError(f'method {cfg.method!r} names classes {method.class_names}, the config '
                         f'{cfg.data.class_space!r}')
  return method
