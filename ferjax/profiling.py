"""`--config.train.profile_steps=a:b`: a jax.profiler trace of training steps a..b (inclusive,
the step numbers of metrics.jsonl), written under WORKDIR/tb where TensorBoard's profile tab
finds it next to the scalars (`tensorboard --logdir WORKDIR/tb`; the tab needs the
tensorboard-plugin-profile package). Every process writes its own host's trace.
"""
from __future__ import annotations

import contextlib
import os

import jax

from ferjax.errors import ConfigError


def parse(spec: str) -> tuple[int, int] | None:
  """'a:b' -> (a, b); '' -> None."""
  if not spec:
    return None
  first, sep, last = spec.partition(':')
  try:
    a, b = int(first), int(last)
  except ValueError:
    a = b = 0
  if not sep or not 1 <= a <= b:
    raise ConfigError(f'config.train.profile_steps={spec!r}: expected FIRST:LAST, two step '
                      'numbers with 1 <= FIRST <= LAST (e.g. 10:15)')
  return a, b


class Profile:
  """Starts the trace before step `a` runs and stops it once step `b` has finished."""

  def __init__(self, spec: str, workdir: str):
    self.range = parse(spec)
    self.logdir = os.path.join(workdir, 'tb')
    self.active = False

  def step(self, step: int):
    """A context around one train step: the trace's step marker while tracing."""
    if self.range and step == self.range[0] and not self.active:
      jax.profiler.start_trace(self.logdir)
      self.active = True
    if self.active:
      return jax.profiler.StepTraceAnnotation('train', step_num=step)
    return contextlib.nullcontext()

  def after(self, step: int, state) -> None:
    if self.active and step >= self.range[1]:
      jax.block_until_ready(state)   # the trace must hold the last step's device work
      self.stop()

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
