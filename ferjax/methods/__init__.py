"""Method registry. A method is three things (ARCHITECTURE.md):

- `model`: a Flax module, `model.apply(variables, image, train=..., rngs=...) -> outputs dict`
  (`logits`, `probs`, `embedding`, `va`, ... );
- `loss(outputs, batch, step) -> (scalar loss, dict of scalar metrics)`;
- `predict(outputs) -> dict` of what evaluation and export read (`probs`, `va`, `landmarks`).

The trainer, checkpointing and evaluation only ever see this triple. Optional fields, all
off by default, cover methods with extra inputs or frozen parts (CAFE):

- `model_inputs(batch) -> dict`: extra keyword arguments for `model.apply` taken from the batch
  (e.g. `{'features': batch['features']}`);
- `frozen(path) -> bool`: parameters (path = tuple of keys) that steps.py never updates: their
  updates are zeroed by `optax.multi_transform`, so no gradient step and no weight decay;
- `init_variables(variables) -> variables`: replaces freshly initialised parameters and
  BatchNorm statistics (`{'params', 'batch_stats'}`) with pretrained ones.

A method module may also define `pipeline_transform(cfg, spec, source, seed)` (per-example
additions such as cached features, read by data/pipeline.py) and `report(cfg, state, specs,
out_dir)` (method pictures, called by evaluate.py when it writes files).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  model: nn.Module
  loss: Callable[[dict, dict, Any], tuple[Any, dict]]
  predict: Callable[[dict], dict]
  class_names: tuple[str, ...]
  model_inputs: Callable[[dict], dict] | None = None
  frozen: Callable[[tuple], bool] | None = None
  init_variables: Callable[[dict], dict] | None = None


# Method name -> module with `build(cfg) -> Method`; imported lazily (each pulls its own
# models). A method's own options live in the config section named after it (cfg.cage, ...).
REGISTRY = {
    'baseline': 'ferjax.methods.baseline',
    'cafe': 'ferjax.methods.cafe',
    'cage': 'ferjax.methods.cage',
}


def build(cfg) -> Method:
  """Builds the method named by `cfg.method` from the whole config."""
  import importlib
  if cfg.method not in REGISTRY:
    raise ValueError(f'unknown method {cfg.method!r}; known: {sorted(REGISTRY)}')
  return importlib.import_module(REGISTRY[cfg.method]).build(cfg)
