"""One loader from a trained run to a `Predictor`: config, method, class names, preprocessing
and variables, without the optimiser or the training set, so a run evaluates, converts and
predicts on a machine that has only its workdir.

  predictor = inference.load('runs/demo')               # the latest readable checkpoint
  predictor = inference.load('runs/demo', step='best')  # the kept best (config.train.best_metric)
"""
from __future__ import annotations

import os

from ferjax import checkpoint, config as config_lib, methods, sharding, steps
from ferjax.predictor import Predictor

BEST_SUBDIR = 'best'


def best_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), BEST_SUBDIR)


def inference_mesh(cfg):
  """The run's mesh when this machine has it, else every local device on the data axis (a run
  trained on 64 chips still evaluates on one)."""
  try:
    return sharding.make_mesh(cfg.mesh)
  except ValueError:
    with cfg.unlocked():
      cfg.mesh.data, cfg.mesh.fsdp = -1, 1
    return sharding.make_mesh(cfg.mesh)


def open_run(workdir: str, step=None) -> tuple[checkpoint.Manager, int]:
  """(manager, step) of a workdir's checkpoint: `step` None = the latest, 'best' = the best kept
  by config.train.best_metric, or a step number."""
  if step == 'best':
    path = best_dir(workdir)
    if not os.path.isdir(os.path.join(path, checkpoint.CKPT_SUBDIR)):
      raise FileNotFoundError(f'{workdir} keeps no best checkpoint (set '
                              '--config.train.best_metric when training)')
    mngr = checkpoint.Manager(path, read_only=True)
    return mngr, mngr.latest_step()
  mngr = checkpoint.Manager(workdir, read_only=True)
  if step is None:
    if mngr.latest_step() is None:
      raise FileNotFoundError(f'no finished checkpoint in {mngr.directory}')
    readable = mngr.readable_steps(params_only=True)
    if not readable:   # restore names what is damaged
      return mngr, mngr.latest_step()
    if readable[-1] != mngr.latest_step():
      from ferjax import runtime
      runtime.say(f'{workdir}: checkpoint step {mngr.latest_step()} is damaged; using step '
                  f'{readable[-1]}, the newest readable one')
    step = readable[-1]
  return mngr, int(step)


def load_config(workdir: str, step=None):
  mngr, step = open_run(workdir, step)
  return config_lib.reconcile(mngr.config(step)), mngr, step


def load(workdir: str, step=None, eval_examples: int | None = None) -> Predictor:
  """The Predictor of a run's checkpoint (see open_run for `step`)."""
  cfg, mngr, step = load_config(workdir, step)
  if eval_examples:
    cfg.data.eval_examples = int(eval_examples)
  method = methods.build(cfg)
  mesh = inference_mesh(cfg)
  sharding.check_batch(cfg.eval_batch_size, mesh, 'config.eval_batch_size')
  abstract = steps.abstract_variables(method, cfg)
  shardings = sharding.param_sharding(mesh, abstract)
  target = checkpoint.abstract_with_sharding(abstract, shardings)
  variables = mngr.restore(target, step=step, params_only=True)
  mngr.close()
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  return Predictor(cfg, method, mesh, variables, steps.build_predict(method, cfg, mesh, shardings),
                   step=step, origin=workdir)


def from_bundle(path: str) -> Predictor:
  """The Predictor of an export bundle (ferjax.interop.bundle): the run's config saved in it,
  the weights converted back from their PyTorch names, strictly."""
  import jax
  from ferjax.interop import bundle
  meta = bundle.read_meta(path)
  cfg = bundle.read_config(path)
  method = methods.build(cfg)
  if tuple(method.class_names) != tuple(meta['class_names']):
    raise bundle.BundleError(f'{path}: ferjax.json names the classes {meta["class_names"]}, '
                             f'its config {list(method.class_names)}')
  mesh = inference_mesh(cfg)
  abstract = steps.abstract_variables(method, cfg)
  shardings = sharding.param_sharding(mesh, abstract)
  host = bundle.variables(cfg, bundle.read_state_dict(path))
  host = {'params': host['params'], 'batch_stats': host.get('batch_stats', {})}
  variables = jax.device_put(host, {'params': shardings['params'],
                                    'batch_stats': shardings.get('batch_stats', {})})
  return Predictor(cfg, method, mesh, variables, steps.build_predict(method, cfg, mesh, shardings),
                   step=meta['source'].get('step'), origin=path)
