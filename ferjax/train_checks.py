"""Messages for the checks the trainer makes while it runs."""
from __future__ import annotations

# The train step's flags (see steps.build), in the order a failure propagates.
_FLAGS = (('nonfinite_loss', 'loss'), ('nonfinite_grad', 'gradient'),
          ('nonfinite_update', 'update'))


def nonfinite_message(first_step: int, last_step: int, values: dict, latest_step: int | None,
                      directory: str) -> str:
  """Why the run stopped on a non-finite value, for the FloatingPointError the trainer raises.

  `values` are the metrics over steps `first_step`..`last_step`; a flag above zero (a count or
  a mean, either works) names what overflowed. `latest_step` is the newest checkpoint in
  `directory`, None when none has been saved yet.
  """
  what = [name for flag, name in _FLAGS if values.get(flag, 0) > 0]
  what = ' and '.join(what) if what else 'loss, gradient or update'
  where = (f'at step {first_step}' if first_step == last_step else
           f'between steps {first_step} and {last_step}')
  loss = values.get('loss')
  loss = f' (loss={loss:.6g})' if isinstance(loss, (int, float)) else ''
  if values.get('nonfinite_loss', 0) > 0 or values.get('nonfinite_grad', 0) > 0:
    hint = 'Lower optim.lr, or clip the gradient with optim.clip_norm.'
  else:  # a finite gradient gave an infinite update: the step size alone is too large
    hint = 'Lower optim.lr.'
  if latest_step is None:
    saved = f'No checkpoint has been saved yet in {directory}.'
  else:
    saved = f'The last good checkpoint is step {latest_step} in {directory}.'
  return (f'non-finite {what} {where}{loss}; the parameters were not updated by those steps. '
          f'{hint} {saved}')
