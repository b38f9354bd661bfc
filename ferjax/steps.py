"""Pure train/eval step builders, jitted over the mesh with explicit shardings.

The train state is a plain pytree (step, params, batch_stats, opt_state) so that orbax saves
and restores it without knowing about any method. A non-finite loss or gradient does not touch
the state: the step returns the previous state and raises the `nonfinite` flag, which the
trainer reads and stops on, so the last good parameters (and checkpoint) survive.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from ferjax import sharding
from ferjax.data import augment

MIX_MODES = ('none', 'mixup', 'mix_augment')


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  def tree(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_tree(cls, tree: dict) -> 'TrainState':
    return cls(**tree)


def _variables(params, batch_stats):
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def dummy_input(cfg):
  return jnp.zeros((1, cfg.data.image_size, cfg.data.image_size, 3), jnp.float32)


def variables_of(state: TrainState) -> dict:
  """The model's variables ({'params', 'batch_stats'}) of a train state."""
  return {'params': state.params, 'batch_stats': state.batch_stats}


@dataclasses.dataclass
class Steps:
  """The compiled functions of one run, and the shardings they were compiled for."""
  init: Callable[[jax.Array], TrainState]
  train: Callable[[TrainState, dict], tuple[TrainState, dict]]
  predict: Callable[[dict, dict], dict]      # (variables, global batch) -> predictions
  state_sharding: Any
  abstract_state: TrainState


def model_variables(method, cfg, rng) -> dict:
  """Freshly initialised {'params', 'batch_stats'} (no pretrained parts)."""
  variables = method.model.init({'params': rng, 'dropout': rng}, dummy_input(cfg), train=False)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def abstract_variables(method, cfg) -> dict:
  """Shapes and dtypes of the model's variables, computed without running anything."""
  return jax.eval_shape(lambda rng: model_variables(method, cfg, rng), jax.random.key(0))


def build_predict(method, cfg, mesh, variables_sharding):
  """(variables, global batch) -> method.predict(outputs), jitted over the mesh. Needs no
  optimiser: evaluation, export and prediction build only this."""
  model = method.model
  model_inputs = getattr(method, 'model_inputs', None) or (lambda batch: {})

  def predict_step(variables, batch: dict):
    batch = augment.eval_preprocess(batch, cfg.augment)
    outputs = model.apply(_variables(variables['params'], variables['batch_stats']),
                          batch['image'], train=False, **model_inputs(batch))
    return method.predict(outputs)

  batch_sh = sharding.batch_sharding(mesh)
  return jax.jit(predict_step, in_shardings=(variables_sharding, batch_sh),
                 out_shardings=batch_sh)


def freeze(tx: optax.GradientTransformation, frozen) -> optax.GradientTransformation:
  """`tx` on every parameter but those where `frozen(path)` holds; theirs get zero updates
  (no gradient step, no weight decay, no optimiser state)."""
  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, _: 'frozen' if frozen(tuple(getattr(k, 'key', k) for k in p)) else 'train',
        params)
  return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)


def build(method, tx: optax.GradientTransformation, schedule, cfg, mesh) -> Steps:
  model, seed = method.model, cfg.seed
  mix_mode = cfg.augment.get('mix', 'none')
  if mix_mode not in MIX_MODES:
    raise ValueError(f'config.augment.mix={mix_mode!r}; known: {MIX_MODES}')
  if mix_mode != 'none' and getattr(method, 'model_inputs', None) is not None:
    raise ValueError(f'config.augment.mix={mix_mode!r} cannot mix the per-example inputs that '
                     f'method {method.name!r} takes beside the image (e.g. cached features); '
                     'turn the cache off or leave mix at none')

  if getattr(method, 'frozen', None) is not None:
    tx = freeze(tx, method.frozen)
  model_inputs = getattr(method, 'model_inputs', None) or (lambda batch: {})
  # Mix-augment's clean passes carry the full loss, so a method may score the mixed one with
  # less (Method.mix_loss); Mix-up has no clean pass and always uses the full loss.
  mixed_loss = ((getattr(method, 'mix_loss', None) if mix_mode == 'mix_augment' else None)
                or method.loss)

  def init(rng):
    variables = model_variables(method, cfg, rng)
    if getattr(method, 'init_variables', None) is not None:
      variables = method.init_variables(variables)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables['batch_stats'], opt_state=tx.init(params))

  abstract = jax.eval_shape(init, jax.random.key(0))
  state_sharding = sharding.param_sharding(mesh, abstract).replace(step=sharding.replicated(mesh))
  batch_sh = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)

  def train_step(state: TrainState, batch: dict):
    batch = augment.augment_batch(batch, seed, state.step, cfg.augment)
    dropout_rng = jax.random.fold_in(jax.random.key(seed + 1), state.step)

    def forward(params, stats, images, batch):
      outputs, mutated = model.apply(_variables(params, stats), images, train=True,
                                     mutable=['batch_stats'], rngs={'dropout': dropout_rng},
                                     **model_inputs(batch))
      return outputs, mutated.get('batch_stats', {})

    def loss_fn(params):
      if mix_mode == 'none':
        outputs, stats = forward(params, state.batch_stats, batch['image'], batch)
        loss, metrics = method.loss(outputs, batch, state.step)
        return loss, (metrics, stats)
      # Mix-up (Zhang et al.) and Mix-augment (paper 004, `mixaug_criterion`): the method's own
      # loss is applied to the mixed prediction against both label sets, so any target (label,
      # soft label, V/A, landmarks) is mixed the way the reference mixes its cross-entropy.
      mixed, lam, perm = augment.mix(batch['image'], seed, state.step, cfg.augment.mix_alpha)
      shuffled = jax.tree.map(lambda v: v[perm], batch)
      outputs, stats = forward(params, state.batch_stats, mixed, batch)
      loss_a, m_a = mixed_loss(outputs, batch, state.step)
      loss_b, m_b = mixed_loss(outputs, shuffled, state.step)
      loss = lam * loss_a + (1.0 - lam) * loss_b
      metrics = jax.tree.map(lambda a, b: lam * a + (1.0 - lam) * b, m_a, m_b)
      if mix_mode == 'mix_augment':
        # + L(f(x_a), y_a) + L(f(x_b), y_b): two more forward passes, as the reference makes
        # them (BatchNorm's running statistics are updated once per pass).
        out_a, stats = forward(params, stats, batch['image'], batch)
        out_b, stats = forward(params, stats, shuffled['image'], shuffled)
        clean_a, metrics = method.loss(out_a, batch, state.step)
        clean_b, _ = method.loss(out_b, shuffled, state.step)
        loss = loss + clean_a + clean_b
      return loss, (metrics, stats)

    (loss, (metrics, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           batch_stats=new_stats, opt_state=new_opt)
    grad_norm = optax.tree.norm(grads)
    update_norm = optax.tree.norm(updates)
    # What overflowed, for the trainer's stop message: the loss, the gradient or the update.
    bad = {'nonfinite_loss': ~jnp.isfinite(loss), 'nonfinite_grad': ~jnp.isfinite(grad_norm),
           'nonfinite_update': ~jnp.isfinite(update_norm)}
    ok = ~(bad['nonfinite_loss'] | bad['nonfinite_grad'] | bad['nonfinite_update'])
    new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, lr=schedule(state.step),
                   nonfinite=(~ok).astype(jnp.int32),
                   **{k: v.astype(jnp.int32) for k, v in bad.items()})
    return new_state, metrics

  return Steps(
      init=jax.jit(init, out_shardings=state_sharding),
      train=jax.jit(train_step, in_shardings=(state_sharding, batch_sh),
                    out_shardings=(state_sharding, repl), donate_argnums=0),
      predict=build_predict(method, cfg, mesh, variables_of(state_sharding)),
      state_sharding=state_sharding,
      abstract_state=abstract,
  )
