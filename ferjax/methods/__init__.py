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


def build(cfg) -> Method:
  """Builds the method named by `cfg.method` from the whole config."""
  from ferjax.methods import baseline  # imported lazily: each method pulls its own models
  registry = {'baseline': baseline.build}
  if cfg.method not in registry:
    raise ValueError(f'unknown method {cfg.method!r}; known: {sorted(registry)}')
  return registry[cfg.method](cfg)
