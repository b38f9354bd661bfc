"""Optimisers and learning-rate schedules built from the ``optim`` config.

The reference FER papers were trained with PyTorch, so the optax chains here
are assembled to reproduce ``torch.optim`` update rules step for step:

* ``adam``  -- ``torch.optim.Adam(weight_decay=wd)``: L2 penalty, i.e.
  ``wd * param`` is *added to the gradient* before the Adam moments.
* ``adamw`` -- ``torch.optim.AdamW``: decoupled decay,
  ``param -= lr * (adam_update + wd * param)``.
* ``sgd``   -- ``torch.optim.SGD(momentum, nesterov, weight_decay)``: L2 added
  to the gradient, then the momentum buffer ``buf = m * buf + g`` (first step
  ``buf = g``), update ``buf`` or, with Nesterov, ``g + m * buf``.

Gradient clipping (``clip_norm > 0``) is applied first, to the raw loss
gradient, mirroring ``torch.nn.utils.clip_grad_norm_`` called before
``optimizer.step()`` (which is where torch adds the L2 term).

Weight decay is applied to *all* parameters by default, as torch does when a
model's ``parameters()`` are passed straight to the optimiser.  Setting
``decay_mask='no_bias_norm'`` restricts it to parameters with ``ndim > 1``
(kernels / embeddings), which excludes biases and BatchNorm/LayerNorm
scale and bias -- a common improvement that the papers did not use.

The schedule is returned next to the transformation so the trainer can log
the learning rate: ``tx, schedule = build_optimizer(...)`` and
``schedule(step)`` gives the lr used for update number ``step`` (0-based,
the count optax keeps internally).
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import optax

_OPTIMIZERS = ('adam', 'adamw', 'sgd')
_SCHEDULES = ('constant', 'cosine', 'cosine_epoch', 'cosine_periodic', 'exponential', 'step')
_DECAY_PER = ('epoch', 'step')
_DECAY_MASKS = ('all', 'no_bias_norm')

# Fields that every ``optim`` config must carry.  We insist on all of them
# (instead of silently defaulting) so that a typo in a config file is an error
# rather than an unnoticed change of hyper-parameters.
REQUIRED_FIELDS = (
  'name', 'lr', 'weight_decay', 'momentum', 'nesterov', 'b1', 'b2', 'eps',
  'schedule', 'decay_rate', 'decay_per', 'step_epochs', 'warmup_epochs',
  'min_lr', 'clip_norm',
)


def _field(cfg: Any, key: str) -> Any:
  """Reads a required field from a ConfigDict (or plain dict)."""
  if key not in cfg:
    raise ValueError(f'optim config is missing required field {key!r}')
  return cfg[key]


def _check_required(cfg: Any) -> None:
  missing = [k for k in REQUIRED_FIELDS if k not in cfg]
  if missing:
    raise ValueError(f'optim config is missing required fields {missing}')


def _check_choice(key: str, value: Any, choices: Tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f'optim.{key}={value!r} is not one of {choices}')


def _check_nonneg(key: str, value: Any) -> float:
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'optim.{key}={value!r} is not a number') from None
  if not v >= 0:  # also rejects NaN
    raise ValueError(f'optim.{key}={value!r} must be >= 0')
  return v


def build_schedule(cfg: Any, steps_per_epoch: int,
           total_steps: int) -> optax.Schedule:
  """Learning-rate schedule ``step -> lr`` (jit-traceable).

  ``warmup_steps = round(warmup_epochs * steps_per_epoch)``.  During warmup
  the lr rises linearly from 0 (``lr * step / warmup_steps``).  Afterwards
  the main schedule runs on ``t = step - warmup_steps`` (so it starts at the
  peak ``lr`` the moment warmup ends):

  * ``constant``:    ``lr``
  * ``cosine``:      ``min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2``
    with ``T = total_steps - warmup_steps``; held at ``min_lr`` after T.
  * ``cosine_epoch``: the cosine above, but ``t`` and ``T`` counted in whole
    epochs (``floor(t / steps_per_epoch)`` over ``T / steps_per_epoch``): torch
    ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch, a staircase.
  * ``cosine_periodic``: torch ``CosineAnnealingLR(T_max=t_max_steps)`` stepped
    every iteration and *never clamped*: ``min_lr + (lr - min_lr) * (1 +
    cos(pi * t / t_max_steps)) / 2`` for every t, so the lr falls to
    ``min_lr`` at ``t_max_steps``, climbs back to ``lr`` at ``2 t_max_steps``
    and repeats (torch's recursive form follows the same closed form).  CAGE's
    official scripts use it with ``T_max = 128 * 20 = 2560`` iterations, about
    1.1 AffectNet epochs, so their lr oscillates through the run.
  * ``exponential``: ``lr * decay_rate ** (t / steps_per_epoch)``, with the
    exponent floored when ``decay_per == 'epoch'`` (torch ``ExponentialLR``
    stepped once per epoch) and continuous when ``decay_per == 'step'``.
  * ``step``:        ``lr * decay_rate ** (number of boundaries passed)``
    (torch ``MultiStepLR``).  Boundaries are *absolute* epochs counted from
    the start of training, not from the end of warmup, so milestones copied
    from a paper mean the same thing with or without warmup.
  """
  _check_required(cfg)
  if int(steps_per_epoch) < 1:
    raise ValueError(f'steps_per_epoch={steps_per_epoch!r} must be >= 1')
  if int(total_steps) < 1:
    raise ValueError(f'total_steps={total_steps!r} must be >= 1')
  spe = int(steps_per_epoch)
  total = int(total_steps)

  kind = _field(cfg, 'schedule')
  _check_choice('schedule', kind, _SCHEDULES)
  lr = _check_nonneg('lr', _field(cfg, 'lr'))
  warmup_steps = int(round(
    _check_nonneg('warmup_epochs', _field(cfg, 'warmup_epochs')) * spe))

  if kind == 'constant':
    def main(t, step):
      del step
      return jnp.full_like(t, lr)
  elif kind == 'cosine':
    min_lr = _check_nonneg('min_lr', _field(cfg, 'min_lr'))
    if min_lr > lr:
      raise ValueError(f'optim.min_lr={min_lr!r} exceeds optim.lr={lr!r}')
    decay_steps = max(total - warmup_steps, 1)

    def main(t, step):
      del step
      frac = jnp.clip(t / decay_steps, 0.0, 1.0)
      return min_lr + (lr - min_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  elif kind == 'cosine_epoch':
    min_lr = _check_nonneg('min_lr', _field(cfg, 'min_lr'))
    if min_lr > lr:
      raise ValueError(f'optim.min_lr={min_lr!r} exceeds optim.lr={lr!r}')
    decay_epochs = max((total - warmup_steps) / spe, 1.0)

    def main(t, step):
      del step
      frac = jnp.clip(jnp.floor(t / spe) / decay_epochs, 0.0, 1.0)
      return min_lr + (lr - min_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  elif kind == 'cosine_periodic':
    min_lr = _check_nonneg('min_lr', _field(cfg, 'min_lr'))
    if min_lr > lr:
      raise ValueError(f'optim.min_lr={min_lr!r} exceeds optim.lr={lr!r}')
    t_max = cfg.get('t_max_steps', 0) if hasattr(cfg, 'get') else 0
    if not int(t_max) >= 1:
      raise ValueError(f"optim.t_max_steps={t_max!r} must be >= 1 for schedule='cosine_periodic'")
    t_max = float(t_max)

    def main(t, step):
      del step
      return min_lr + (lr - min_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * t / t_max))
  elif kind == 'exponential':
    rate = _check_nonneg('decay_rate', _field(cfg, 'decay_rate'))
    per = _field(cfg, 'decay_per')
    _check_choice('decay_per', per, _DECAY_PER)

    def main(t, step):
      del step
      epochs = t / spe
      if per == 'epoch':
        epochs = jnp.floor(epochs)
      return lr * jnp.power(rate, epochs)
  else:  # 'step'
    rate = _check_nonneg('decay_rate', _field(cfg, 'decay_rate'))
    raw = _field(cfg, 'step_epochs')
    try:
      epochs = [int(e) for e in raw]
    except (TypeError, ValueError):
      raise ValueError(
        f'optim.step_epochs={raw!r} must be a sequence of ints') from None
    if any(e < 0 for e in epochs) or epochs != sorted(epochs):
      raise ValueError(
        f'optim.step_epochs={raw!r} must be non-negative and sorted')
    boundaries = jnp.asarray([e * spe for e in epochs] or [0], jnp.float32)
    n_real = len(epochs)

    def main(t, step):
      del t
      if n_real == 0:
        return jnp.full_like(step, lr)
      passed = jnp.sum(step[..., None] >= boundaries, axis=-1)
      return lr * jnp.power(rate, passed.astype(jnp.float32))

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    t = step - warmup_steps
    value = main(t, step)
    if warmup_steps > 0:
      value = jnp.where(step < warmup_steps,
                lr * step / warmup_steps, value)
    return value

  return schedule


def _decay_mask(cfg: Any) -> Callable[[Any], Any] | None:
  """Pytree mask for weight decay (None = every parameter)."""
  choice = cfg.get('decay_mask', 'all') if hasattr(cfg, 'get') else 'all'
  _check_choice('decay_mask', choice, _DECAY_MASKS)
  if choice == 'all':
    return None
  # Biases and norm scales/offsets are the only rank-1 (or scalar) params
  # in conv/transformer backbones, so rank is a layout-independent test.
  return lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def build_optimizer(cfg: Any, steps_per_epoch: int, total_steps: int
          ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds ``(tx, schedule)`` from the ``optim`` config.

  Returns:
    ``tx``: an ``optax.GradientTransformation`` (chain of optional
    clipping, the torch-equivalent optimiser and the scheduled lr).
    ``schedule``: the lr schedule used inside ``tx``, for logging.
  """
  _check_required(cfg)
  name = _field(cfg, 'name')
  _check_choice('name', name, _OPTIMIZERS)
  schedule = build_schedule(cfg, steps_per_epoch, total_steps)
  wd = _check_nonneg('weight_decay', _field(cfg, 'weight_decay'))
  clip = _check_nonneg('clip_norm', _field(cfg, 'clip_norm'))
  mask = _decay_mask(cfg)

  parts = []
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))

  def l2():
    # Adds wd * param to the gradient (coupled / torch-style L2).
    return [optax.add_decayed_weights(wd, mask)] if wd > 0 else []

  if name in ('adam', 'adamw'):
    b1 = _check_nonneg('b1', _field(cfg, 'b1'))
    b2 = _check_nonneg('b2', _field(cfg, 'b2'))
    eps = _check_nonneg('eps', _field(cfg, 'eps'))
    if not (b1 < 1 and b2 < 1):
      raise ValueError(f'optim.b1={b1!r} / optim.b2={b2!r} must be < 1')
    if name == 'adam':
      parts += l2()
      parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    else:
      parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
      # Decoupled: added after Adam's normalisation, then scaled by
      # the (scheduled) lr together with the Adam step, as AdamW does.
      parts += l2()
  else:  # sgd
    momentum = _check_nonneg('momentum', _field(cfg, 'momentum'))
    nesterov = _field(cfg, 'nesterov')
    if not isinstance(nesterov, bool):
      # bool('false') is True, so refuse anything that is not a bool.
      raise ValueError(f'optim.nesterov={nesterov!r} must be a bool')
    if nesterov and momentum == 0:
      # torch.optim.SGD rejects this combination as well.
      raise ValueError('optim.nesterov=True requires optim.momentum > 0')
    parts += l2()
    if momentum > 0:
      parts.append(optax.trace(decay=momentum, nesterov=nesterov))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule
