"""Method registry. A method is three things (ARCHITECTURE.md):

- `model`: a Flax module, `model.apply(variables, image, train=..., rngs=...) -> outputs dict`
  (`logits`, `probs`, `embedding`, `va`, ... );
- `loss(outputs, batch, step) -> (scalar loss, dict of scalar metrics)`;
- `predict(outputs) -> dict` of what evaluation and export read (`probs`, `va`, `landmarks`).

The trainer, checkpointing and evaluation only ever see this triple.
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
