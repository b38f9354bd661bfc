"""The trainer behind `python -m ferjax.train`: one training loop for every method.

One trainer for every method. Resume order: a checkpoint in the workdir, then
`config.train.resume`, then `config.train.init_from` (parameters only; those named by
`config.train.init_exclude`, e.g. a replaced head, keep their fresh init), then from scratch.
SIGTERM saves a checkpoint and exits cleanly; a non-finite loss stops the run with the last
good checkpoint intact.
"""
from __future__ import annotations

import json
import os
import signal
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from ferjax import checkpoint, config as config_lib, evaluate as eval_lib, methods, optim, runtime
from ferjax import sharding, steps as steps_lib
from ferjax.data import pipeline


def _tuples(tree):
  """JSON turns tuples into lists; configs hold tuples."""
  if isinstance(tree, (dict, ml_collections.ConfigDict)):
    return {k: _tuples(v) for k, v in tree.items()}
  return tuple(_tuples(v) for v in tree) if isinstance(tree, list) else tree


def reconcile_config(saved: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A config restored from JSON, laid over the current schema (lists back to tuples, keys
  added since the checkpoint was written get their defaults) and locked.

  A method's own options live in a top-level section named after it (`cfg.cage.alpha`); that
  section is taken as saved, since the base schema does not know it.
  """
  base = config_lib.base_config()
  method = saved.get('method', base.method)
  if method in saved and method not in base:
    base[method] = ml_collections.ConfigDict(_tuples(saved[method]))

  def merge(dst, src, path=''):
    for k, v in src.items():
      if k not in dst:
        raise ValueError(f'saved config has key {path + k!r}, unknown to this ferjax version')
      if isinstance(dst[k], ml_collections.ConfigDict):
        merge(dst[k], v, path + k + '.')
      else:
        dst[k] = tuple(v) if isinstance(dst[k], tuple) else v

  merge(base, saved)
  base.lock()
  return base


class Run:
  """Everything compiled for one config: mesh, method, optimizer, steps."""

  def __init__(self, cfg):
    self.cfg = cfg
    self.mesh = sharding.make_mesh(cfg.mesh)
    sharding.check_batch(cfg.batch_size, self.mesh)
    sharding.check_batch(cfg.eval_batch_size, self.mesh, 'config.eval_batch_size')
    self.method = methods.build(cfg)
    self.steps_per_epoch = pipeline.steps_per_epoch(cfg)
    self.total_steps = cfg.train.max_steps or max(1, int(cfg.train.epochs * self.steps_per_epoch))
    self.tx, self.schedule = optim.build_optimizer(cfg.optim, self.steps_per_epoch,
                                                   self.total_steps)
    self.steps = steps_lib.build(self.method, self.tx, self.schedule, cfg, self.mesh)
    self.abstract = checkpoint.abstract_with_sharding(self.steps.abstract_state.tree(),
                                                      self.steps.state_sharding.tree())

  def fresh_state(self):
    return self.steps.init(jax.random.key(self.cfg.seed))

  def with_backbone_weights(self, state):
    """`state` with its 'backbone' parameters (and BatchNorm statistics) read from the PyTorch
    checkpoint `config.model.backbone_weights` (ImageNet weights from torchvision or timm), keys
    starting with `model.backbone_ignore` (the reference's classifier) dropped. Only a fresh
    run reads it: resumed and evaluated runs take everything from their checkpoint."""
    from ferjax.interop import torch as interop
    m, tree = self.cfg.model, jax.device_get(state.tree())
    if 'backbone' not in tree['params']:
      raise ValueError(f"config.model.backbone_weights: method {self.cfg.method!r} has no "
                       f"'backbone' parameters (top level: {sorted(tree['params'])}); CAFE's "
                       'mask net takes config.cafe.resnet_weights')
    target = {'params': tree['params']['backbone'],
              'batch_stats': tree['batch_stats'].get('backbone', {})}
    loaded = interop.from_torch(m.backbone, interop.load_state_dict(m.backbone_weights),
                                ignore=tuple(m.backbone_ignore), abstract=target)
    tree['params'] = dict(tree['params'], backbone=loaded['params'])
    if loaded.get('batch_stats'):
      tree['batch_stats'] = dict(tree['batch_stats'], backbone=loaded['batch_stats'])
    runtime.say(f'backbone {m.backbone}: weights from {m.backbone_weights}')
    tree = jax.device_put(tree, self.steps.state_sharding.tree())
    return steps_lib.TrainState.from_tree(tree)

  def restore_params(self, mngr: checkpoint.Manager, step=None, exclude=()):
    """A fresh state whose params/batch_stats come from a checkpoint (eval, init_from).

    `exclude` (config.train.init_exclude) keeps those parameters at their fresh init, e.g. a
    replaced head; see checkpoint.Manager.restore.
    """
    state = self.fresh_state().tree()
    restored = mngr.restore(self.abstract, step=step, params_only=True, exclude=exclude)
    for k, v in restored.items():
      state[k] = checkpoint.merge(state[k], v) if exclude else v
    return steps_lib.TrainState.from_tree(state)


class _Stop:
  """SIGTERM sets a flag; the loop saves at the next step boundary and exits."""

  def __init__(self):
    self.requested = False
    self._old = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del frame
    logging.warning('signal %d: saving a checkpoint and stopping', signum)
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._old)


class _Log:
  """JSONL + TensorBoard on process 0."""

  def __init__(self, workdir):
    self.primary = runtime.is_primary()
    if self.primary:
      from tensorboardX import SummaryWriter
      self.jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      self.tb = SummaryWriter(os.path.join(workdir, 'tb'))

  def write(self, step: int, kind: str, values: dict):
    if not self.primary:
      return
    self.jsonl.write(json.dumps({'step': step, 'kind': kind, **values}) + '\n')
    self.jsonl.flush()
    for k, v in values.items():
      if isinstance(v, (int, float)):
        self.tb.add_scalar(f'{kind}/{k}', v, step)
    self.tb.flush()

  def close(self):
    if self.primary:
      self.jsonl.close()
      self.tb.close()


def _initial_state(run: Run, mngr: checkpoint.Manager, data_iter):
  cfg = run.cfg
  if mngr.latest_step() is not None:
    return steps_lib.TrainState.from_tree(mngr.restore(run.abstract, data_iter)), 'workdir'
  if cfg.train.resume:
    other = checkpoint.Manager(cfg.train.resume, read_only=True)
    return steps_lib.TrainState.from_tree(other.restore(run.abstract, data_iter)), 'resume'
  if cfg.train.init_from:
    other = checkpoint.Manager(cfg.train.init_from, read_only=True)
    exclude = [p.strip() for p in cfg.train.init_exclude.split(',') if p.strip()]
    return run.restore_params(other, exclude=exclude), 'init_from'
  if cfg.model.get('backbone_weights'):
    return run.with_backbone_weights(run.fresh_state()), 'backbone_weights'
  return run.fresh_state(), 'scratch'


def _mean_metrics(pending: list[dict]) -> dict:
  host = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def train(cfg, workdir: str) -> dict:
  """Trains to the end (or to SIGTERM); returns the final eval reports."""
  os.makedirs(workdir, exist_ok=True)
  run = Run(cfg)
  if runtime.is_primary():
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(cfg.to_json_best_effort(indent=1))
  data_iter = iter(pipeline.train_dataset(cfg, cfg.seed))
  mngr = checkpoint.Manager(workdir, keep=cfg.train.keep)
  state, origin = _initial_state(run, mngr, data_iter)
  start = int(state.step)
  log, stop = _Log(workdir), _Stop()
  eval_every = {0: run.steps_per_epoch, -1: run.total_steps}.get(cfg.train.eval_every,
                                                                 cfg.train.eval_every)
  specs = [s for s in cfg.data.eval_sets.split(',') if s]
  runtime.say(f'{cfg.method}: {run.total_steps} steps ({run.steps_per_epoch} per epoch), '
              f'starting at step {start} ({origin}), mesh {dict(run.mesh.shape)}, '
              f'{jax.process_count()} process(es)')

  def save(step):
    mngr.save(step, state.tree(), data_iter, cfg)

  pending, t_last, reports = [], time.time(), {}
  bar = runtime.progress(total=run.total_steps, initial=start, desc='train')
  try:
    for step in range(start + 1, run.total_steps + 1):
      batch = sharding.to_global(next(data_iter), run.mesh)
      t0 = time.time()
      state, metrics = run.steps.train(state, batch)
      if step == start + 1:
        jax.block_until_ready(state)
        log.write(step, 'timing', {'first_step_s': time.time() - t0})
      pending.append(metrics)
      bar.update(1)
      boundary = step % cfg.train.log_every == 0 or step % cfg.train.ckpt_every == 0
      if boundary or step == run.total_steps or stop.requested:
        values = _mean_metrics(pending)
        if values.pop('nonfinite') > 0:
          raise FloatingPointError(
              f'non-finite loss or gradient between steps {step - len(pending) + 1} and {step} '
              f'(loss={values["loss"]}); parameters were not updated by those steps. The last '
              f'good checkpoint is step {mngr.latest_step()} in {mngr.directory}.')
        now = time.time()
        values['examples_per_s'] = len(pending) * cfg.batch_size / max(now - t_last, 1e-9)
        values['epoch'] = step / run.steps_per_epoch
        pending, t_last = [], now
        log.write(step, 'train', values)
        bar.set_postfix(loss=f'{values["loss"]:.3f}', acc=f'{values.get("accuracy", 0):.3f}')
      if step % cfg.train.ckpt_every == 0 or stop.requested:
        save(step)
      if stop.requested:
        runtime.say(f'stopped at step {step} on request; checkpoint saved in {mngr.directory}')
        return {}
      if specs and (step % eval_every == 0 or step == run.total_steps):
        out = os.path.join(workdir, 'eval', f'step_{step}') if step == run.total_steps else None
        reports = eval_lib.evaluate(run.steps.predict, state, specs, cfg, run.mesh,
                                    run.method.class_names, out_dir=out, progress=False)
        for spec, r in reports.items():
          log.write(step, 'eval/' + spec, eval_lib.summary_row(spec, r) | {'dataset': spec})
        t_last = time.time()
    if run.total_steps not in mngr.all_steps() and int(state.step) > start:
      save(int(state.step))
    return reports
  finally:
    bar.close()
    mngr.close()
    log.close()
    stop.restore()
