"""A model ready to predict: what evaluation, export and prediction need, and nothing of training.

`Predictor` is built by the trainer from its live state, or by `ferjax.inference.load` from a
workdir without the optimiser or the training set.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass
class Predictor:
  cfg: Any                      # the run's config (locked ConfigDict)
  method: Any                   # ferjax.methods.Method
  mesh: Any
  variables: dict               # {'params', 'batch_stats'}, on the mesh
  predict_fn: Callable          # (variables, global batch) -> predictions
  step: int | None = None       # the checkpoint step, when loaded from one
  origin: str = ''              # the workdir (or bundle) it came from

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(self.method.class_names)

  def __call__(self, global_batch: dict) -> dict:
    return self.predict_fn(self.variables, global_batch)

  def host_variables(self) -> dict:
    import jax
    v = jax.device_get(self.variables)
    return v if v.get('batch_stats') else {'params': v['params']}
