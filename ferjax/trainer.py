"""The trainer behind `python -m ferjax.train`: one training loop for every method.

Start order: the newest readable checkpoint in the workdir (its config must match the new one
but for the keys of `config.RESUMABLE`), then `config.train.resume`, then
`config.train.init_from` (parameters only; those named by `config.train.init_exclude`, e.g. a
replaced head, keep their fresh init), then `model.backbone_weights`, then from scratch. A fresh
run writes config.json once; a finished run says so. SIGTERM saves a checkpoint and exits
cleanly; a non-finite loss, gradient or update stops the run with the last good checkpoint
intact. With `config.train.best_metric`, the best evaluation's parameters are kept in
WORKDIR/best.
"""
from __future__ import annotations

import json
import os
import signal
import time

from absl import logging
import jax
import numpy as np

from ferjax import checkpoint, config as config_lib, evaluate as eval_lib, inference, labels
from ferjax import methods, optim, profiling, runtime, sharding, steps as steps_lib
from ferjax import train_checks
from ferjax.data import pipeline
from ferjax.predictor import Predictor


# How long a process waits for the others to compile the train step (multi-process runs).
COMPILE_WAIT_MS = 30 * 60 * 1000


class Run:
  """Everything compiled for one config: mesh, method, training data (opened once), optimizer,
  steps."""

  def __init__(self, cfg):
    self.cfg = cfg
    self.mesh = sharding.make_mesh(cfg.mesh)
    sharding.check_batch(cfg.batch_size, self.mesh)
    sharding.check_batch(cfg.eval_batch_size, self.mesh, 'config.eval_batch_size')
    self.method = methods.build(cfg)
    self.data = pipeline.TrainData(cfg, cfg.seed, self.method)
    self.steps_per_epoch = self.data.steps_per_epoch
    self.total_steps = cfg.train.max_steps or max(1, int(cfg.train.epochs * self.steps_per_epoch))
    self.tx, self.schedule = optim.build_optimizer(cfg.optim, self.steps_per_epoch,
                                                   self.total_steps)
    self.steps = steps_lib.build(self.method, self.tx, self.schedule, cfg, self.mesh)
    self.abstract = checkpoint.abstract_with_sharding(self.steps.abstract_state.tree(),
                                                      self.steps.state_sharding.tree())

  def fresh_state(self):
    return self.steps.init(jax.random.key(self.cfg.seed))

  def predictor(self, state) -> Predictor:
    return Predictor(self.cfg, self.method, self.mesh, steps_lib.variables_of(state),
                     self.steps.predict, step=int(state.step))

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
  """SIGTERM sets a flag; the loop saves at the next step boundary and exits.

  With several processes the signal reaches each at a slightly different step, and a process
  that saves (a collective) while another trains would hang both: they agree at every
  `log_every` step, where the loop syncs with the device anyway, and stop together at the
  first one where any process was signalled.
  """

  def __init__(self, every: int):
    self.requested = False
    self.every = every
    self._old = signal.signal(signal.SIGTERM, self._handler)

  def now(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.requested
    if step % self.every:
      return False
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))

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
    tree, _ = mngr.restore_latest(run.abstract, data_iter)
    return steps_lib.TrainState.from_tree(tree), 'workdir'
  if cfg.train.resume:
    other = checkpoint.Manager(cfg.train.resume, read_only=True)
    tree, step = other.restore_latest(run.abstract, data_iter)
    return steps_lib.TrainState.from_tree(tree), f'resume {other.directory} step {step}'
  if cfg.train.init_from:
    other = checkpoint.Manager(cfg.train.init_from, read_only=True)
    exclude = [p.strip() for p in cfg.train.init_exclude.split(',') if p.strip()]
    return run.restore_params(other, exclude=exclude), 'init_from'
  if cfg.model.get('backbone_weights'):
    return run.with_backbone_weights(run.fresh_state()), 'backbone_weights'
  return run.fresh_state(), 'scratch'


def _compiled_together(train_step, state, batch):
  """The train step, compiled before its first call; with several processes, each waits for
  the others to finish compiling before any runs the step. CPU collectives (gloo) give up on a
  peer that starts its first collective 30 s late, which compiles of different speed on a busy
  machine exceed; the coordination service's barrier waits longer."""
  if jax.process_count() == 1:
    return train_step
  from orbax.checkpoint import multihost
  compiled = train_step.lower(state, batch).compile()
  multihost.get_barrier_sync_fn()(key='ferjax_train_step_compiled', timeout_ms=COMPILE_WAIT_MS)
  return compiled


def _mean_metrics(pending: list[dict]) -> dict:
  """Means over the logged steps; the non-finite flags are counted instead."""
  host = jax.device_get(pending)
  return {k: (int(np.sum([m[k] for m in host])) if k.startswith('nonfinite')
              else float(np.mean([m[k] for m in host]))) for k in host[0]}


def _write_config(cfg, workdir: str) -> None:
  """config.json of a fresh run, written whole or not at all."""
  path = os.path.join(workdir, 'config.json')
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(cfg.to_json_best_effort(indent=1))
  os.replace(tmp, path)


class _Best:
  """The checkpoint of the best evaluation so far by config.train.best_metric, in WORKDIR/best
  (its value and step in best.json, so a resumed run keeps comparing against it)."""

  def __init__(self, cfg, workdir: str):
    self.metric = cfg.train.best_metric
    self.dir = inference.best_dir(workdir)
    self.record = os.path.join(self.dir, 'best.json')
    self.value = None
    if self.metric and os.path.exists(self.record):
      with open(self.record) as f:
        self.value = json.load(f)['value']

  def update(self, step: int, reports: dict, state, cfg) -> None:
    if not self.metric or not reports:
      return
    value = eval_lib.metric_value(reports, self.metric)
    lower = eval_lib.lower_is_better(self.metric)
    if self.value is not None and (value >= self.value if lower else value <= self.value):
      return
    mngr = checkpoint.Manager(self.dir, keep=1)
    mngr.save(step, {'params': state.params, 'batch_stats': state.batch_stats}, None, cfg)
    mngr.close()
    self.value = value
    if runtime.is_primary():
      tmp = self.record + '.tmp'
      with open(tmp, 'w') as f:
        json.dump({'metric': self.metric, 'value': value, 'step': step}, f)
      os.replace(tmp, self.record)
    runtime.say(f'best {self.metric} = {value:.4g} at step {step}: saved to {self.dir}')


def train(cfg, workdir: str) -> dict:
  """Trains to the end (or to SIGTERM); returns the final eval reports."""
  os.makedirs(workdir, exist_ok=True)
  labels.resolve(cfg)   # num_classes as the saved configs hold it
  profiling.parse(cfg.train.profile_steps)   # a bad range fails before anything is built
  mngr = checkpoint.Manager(workdir, keep=cfg.train.keep)
  resuming = mngr.latest_step() is not None
  if resuming:   # before anything is built: a changed config never reuses a workdir quietly
    config_lib.check_resume(config_lib.reconcile(mngr.config()), cfg, workdir)
  run = Run(cfg)
  readable = mngr.readable_steps(data=True) if resuming else []
  if readable and readable[-1] >= run.total_steps:
    done = os.path.join(workdir, 'eval', f'step_{readable[-1]}')
    how = (f'its evaluation is in {done}; evaluate other sets with: python -m ferjax.eval '
           f'--workdir {workdir} --datasets SPEC' if os.path.isdir(done) else
           f'evaluate it with: python -m ferjax.eval --workdir {workdir}')
    runtime.say(f'{workdir}: this run is finished (step {readable[-1]} of {run.total_steps}); '
                f'{how}')
    mngr.close()
    return {}
  if not resuming and runtime.is_primary():
    _write_config(cfg, workdir)
  data_iter = iter(run.data.dataset())
  state, origin = _initial_state(run, mngr, data_iter)
  start = int(state.step)
  log, stop, best = _Log(workdir), _Stop(cfg.train.log_every), _Best(cfg, workdir)
  profile = profiling.Profile(cfg.train.profile_steps, workdir)
  notes = run.data.spaced.summary()
  if notes:
    log.write(start, 'data', {'train': notes, 'dropped': run.data.spaced.dropped,
                              'unlabelled': run.data.spaced.unlabelled})
  eval_every = {0: run.steps_per_epoch, -1: run.total_steps}.get(cfg.train.eval_every,
                                                                 cfg.train.eval_every)
  specs = [s for s in cfg.data.eval_sets.split(',') if s]
  if cfg.train.best_metric and not specs:
    raise ValueError(f'config.train.best_metric={cfg.train.best_metric!r} needs eval sets '
                     '(config.data.eval_sets is empty)')
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
      if step == start + 1:
        train_step = _compiled_together(run.steps.train, state, batch)
      t0 = time.time()
      with profile.step(step):
        state, metrics = train_step(state, batch)
      profile.after(step, state)
      if step == start + 1:
        jax.block_until_ready(state)
        log.write(step, 'timing', {'first_step_s': time.time() - t0})
      pending.append(metrics)
      bar.update(1)
      boundary = step % cfg.train.log_every == 0 or step % cfg.train.ckpt_every == 0
      stopping = stop.now(step)
      if boundary or step == run.total_steps or stopping:
        values = _mean_metrics(pending)
        if values.pop('nonfinite') > 0:
          raise FloatingPointError(train_checks.nonfinite_message(
              step - len(pending) + 1, step, values, mngr.latest_step(), mngr.directory))
        for k in [k for k in values if k.startswith('nonfinite')]:
          values.pop(k)
        now = time.time()
        values['examples_per_s'] = len(pending) * cfg.batch_size / max(now - t_last, 1e-9)
        values['epoch'] = step / run.steps_per_epoch
        pending, t_last = [], now
        log.write(step, 'train', values)
        bar.set_postfix(loss=f'{values["loss"]:.3f}', acc=f'{values.get("accuracy", 0):.1f}')
      if step % cfg.train.ckpt_every == 0 or stopping:
        save(step)
      if stopping:
        runtime.say(f'stopped at step {step} on request; checkpoint saved in {mngr.directory}')
        return {}
      if specs and (step % eval_every == 0 or step == run.total_steps):
        out = os.path.join(workdir, 'eval', f'step_{step}') if step == run.total_steps else None
        reports = eval_lib.evaluate(run.predictor(state), specs, out_dir=out, progress=False,
                                    meta={'workdirs': [os.path.abspath(workdir)],
                                          'steps': [step],
                                          'eval_examples': cfg.data.eval_examples})
        for spec, r in reports.items():
          log.write(step, 'eval/' + spec, eval_lib.summary_row(spec, r) | {'dataset': spec})
        best.update(step, reports, state, cfg)
        t_last = time.time()
    if run.total_steps not in mngr.all_steps() and int(state.step) > start:
      save(int(state.step))
    return reports
  finally:
    profile.stop()
    bar.close()
    mngr.close()
    log.close()
    stop.restore()
