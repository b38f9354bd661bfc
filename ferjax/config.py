"""Shared config pieces: the base schema, `FILE:k=v,...` arguments and the `smoke` shrink.

Every experiment file in configs/ builds on `base_config()` and ends with `finalize(cfg, arg)`,
so every config has the same keys (a misspelt `--config.a.b=v` override is rejected by
ml_collections because the dict is locked) and every config accepts `smoke` for CPU tests.
"""
from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any

import ml_collections

from ferjax import presets
from ferjax.errors import ConfigError

# Dataset specs for the synthetic benchmark: 'synthetic:DOMAIN:SPLIT'.
SYNTHETIC_DOMAINS = ('lab', 'wild', 'cartoon', 'lowq', 'occluded')


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = 'baseline'

  c.model = ml_collections.ConfigDict(dict(
      backbone='resnet18',
      width=64,                  # stem width; torchvision ResNet-18 is 64
      stage_sizes=(2, 2, 2, 2),  # blocks per stage; ResNet-18 is (2, 2, 2, 2)
      num_classes=0,             # 0 = the size of data.class_space (any other value must match)
      va_head=True,              # a 2-unit tanh head for valence/arousal
      dropout=0.0,
      dtype='float32',           # compute dtype; params always stay float32
      bn_momentum=0.9,           # flax convention (= 1 - torch momentum 0.1)
      backbone_weights='',       # a fresh run's backbone from a PyTorch checkpoint (ImageNet)
      backbone_ignore=('fc.', 'classifier.', 'head.'),  # its keys left out (the classifier)
  ))

  c.data = ml_collections.ConfigDict(dict(
      # The run's classes, by name (ferjax.labels): every dataset's labels are mapped into it by
      # class name. outside_space: what an example of a class the space lacks does: 'error',
      # 'drop' (left out, counted) or 'unlabel' (kept with label -1, counted).
      class_space='affectnet8',
      outside_space='error',
      train='synthetic:wild:train',
      train_examples=20000,
      eval_sets='synthetic:wild:test',  # comma-separated specs
      eval_examples=1000,
      image_size=112,
      # Eye alignment from the data's own landmarks, every split (ferjax.data.align): 'eyes'
      # puts the left eye at align_eyes (x, y fractions) and the right one mirrored.
      align='none',
      align_eyes=(0.32, 0.35),
      num_threads=4,             # grain read threads (rendering / decoding)
      num_workers=0,             # grain worker processes (0 = in-process)
      prefetch=2,
      # What the run draws and in which order (ferjax.data.order; each off at these values).
      sampler='shuffle',         # 'shuffle' | 'class_balanced' (GReFEL) | 'imbalance'
      sampler_power=1.0,         # 'imbalance': P(example) ~ n_class ** -power
      append=False,              # paper 002: + flipped + rotated +-20 degree copies
      append_rotation='20',      # the rotated copies' degrees, or '10-30' (random magnitudes)
      class_subsample=False,     # every class cut to the smallest one's count (CAGE VA)
      bagging_fraction=0.0,      # > 0: one ensemble member's subset (paper 004: 0.2)
      bagging_member=0,
      bagging_replace=False,     # bootstrap sample instead of a subset
      bagging_disjoint=False,    # members take disjoint slices
      bagging_stratified=False,  # member of round(1 / fraction) disjoint stratified folds
      label_noise=0.0,           # fraction of training labels flipped (noise studies)
      label_noise_mode='symmetric',  # or 'asymmetric' (class c -> c + 1)
      # Targets from annotator votes (ferjax.data.label_modes; FERPlus, the synthetic set).
      label_mode='plurality',    # | majority | probability | crossentropy | multi_target |
                                 # distribution (paper 002)
      nhot=0,                    # 1..8: keep the N largest target entries (training set only)
      clean='paper',             # label_mode=distribution: 'paper' (Un + NF > 3) or 'msft'
      vote_floor=0,              # votes <= this zeroed first (the reference: 1)
      split='official',          # 'paper': pool data.train; eval sets 'ordinary', 'complex'
      test_fraction=0.1,         # split='paper': the ordinary test set's share
  ))

  c.augment = ml_collections.ConfigDict(dict(
      flip=True,
      crop_pad=0.0625,           # pad by this fraction of the size, then random crop back
      rotate_deg=10.0,
      brightness=0.2,
      contrast=0.2,
      # The rest are off at these values (ferjax.data.augment says which paper uses which).
      scale=(1.0, 1.0),          # random affine zoom range
      shear_deg=0.0,
      rrc_scale=(1.0, 1.0),      # random resized crop: area fraction range ((0.08, 1) = torch)
      rrc_ratio=(3 / 4, 4 / 3),
      perspective=0.0,           # corner distortion scale (torchvision's 0.5 when on)
      perspective_p=0.5,
      saturation=0.0,
      hue=0.0,                   # max hue shift, fraction of a turn (<= 0.5)
      grayscale_p=0.0,
      # Every image (train, eval, predict) to ITU-R 601 luma repeated to 3 channels before
      # anything else: paper 002's grey 48 px input for RGB-pretrained nets.
      grayscale=False,
      noise_std=0.0,             # Gaussian noise std on the uint8 scale (CAFE: sqrt(30))
      noise_p=0.5,
      erasing_p=0.0,             # random erasing probability (CAFE: 0.5, torchvision default)
      erasing_scale=(0.02, 0.33),
      erasing_ratio=(0.3, 3.3),
      mix='none',                # 'mixup' | 'mix_augment' (paper 004): batch-level, in the step
      mix_alpha=0.1,             # lambda ~ Beta(alpha, alpha)
      # Normalisation applied on device after augmentation (ImageNet statistics).
      mean=(0.485, 0.456, 0.406),
      std=(0.229, 0.224, 0.225),
  ))

  c.loss = ml_collections.ConfigDict(dict(
      target='hard',             # 'hard' (label) or 'soft' (label_dist)
      name='cce',                # soft targets: losses.LOSS_NAMES (paper 002's ten and more)
      label_smoothing=0.0,
      va_weight=1.0,             # weight of the valence/arousal MSE when va_head
  ))

  c.batch_size = 128             # global, across all devices and processes
  c.eval_batch_size = 256

  c.optim = ml_collections.ConfigDict(dict(
      name='adamw', lr=1e-3, weight_decay=1e-4, momentum=0.9, nesterov=False,
      b1=0.9, b2=0.999, eps=1e-8,
      schedule='cosine', decay_rate=0.9, decay_per='epoch', step_epochs=(),
      warmup_epochs=1.0, min_lr=0.0, clip_norm=0.0, decay_mask='all',
      t_max_steps=0,             # schedule='cosine_periodic': torch CosineAnnealingLR's T_max
  ))

  c.train = ml_collections.ConfigDict(dict(
      epochs=10.0,
      log_every=50,              # steps
      eval_every=0,              # steps; 0 = once per epoch, -1 = only at the end
      ckpt_every=500,            # steps
      keep=3,                    # checkpoints kept
      resume='',                 # a workdir or checkpoint dir to continue from
      init_from='',              # a checkpoint whose params start a new run
      init_exclude='',           # init_from: comma-separated params left at their fresh init
                                 # (a module path such as 'classifier_5', or a glob 'classifier_*')
      max_steps=0,               # stop after this many steps (0 = epochs decide)
      # Keep the checkpoint of the best evaluation by this metric, 'SET/METRIC' (e.g.
      # 'synthetic:lab:test/macro_f1'; SET may be a display name such as 'lab/test', or 'mean'
      # over the eval sets); '' keeps none. Lower is better for names ending in rmse/mse/mae/loss.
      best_metric='',
      profile_steps='',          # 'a:b': a jax.profiler trace of steps a..b (ferjax.profiling)
  ))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # -1 = all remaining devices
  return c


# The accelerator arguments (`gpu`, `tpu`, `chips=N`) of the config being loaded: parse_arg
# takes them out of every config file's arguments and finalize applies them, so that each file
# accepts them without naming them.
_pending_preset: dict[str, Any] = {}


def parse_arg(arg: str | None, known: dict[str, Any]) -> dict[str, Any]:
  """Parses 'smoke,domain=lab,epochs=3' against `known` defaults.

  Bare words are booleans set to True. Values are Python literals where they parse as one,
  strings otherwise. An unknown key is an error that lists the known ones. The accelerator
  arguments of ferjax.presets are kept for `finalize`.
  """
  extra = [k for k in presets.ARGS if k not in known]
  parsed = _parse_arg(arg, dict(known, **dict.fromkeys(extra)))
  _pending_preset.clear()
  for k in extra:
    value = parsed.pop(k)
    if value is not None:
      _pending_preset[k] = value
  return parsed


def _parse_arg(arg: str | None, known: dict[str, Any]) -> dict[str, Any]:
  out = dict(known)
  if not arg:
    return out
  for part in arg.split(','):
    part = part.strip()
    if not part:
      continue
    key, sep, value = part.partition('=')
    key = key.strip()
    if key not in known:
      raise ValueError(f'unknown config argument {key!r} in {arg!r}; known: {sorted(known)}')
    if not sep:
      out[key] = True
      continue
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def shrink_for_smoke(c: ml_collections.ConfigDict) -> None:
  """Makes any config cheap enough for a CPU test: tiny model, tiny data, few steps."""
  c.model.width = 8
  c.model.stage_sizes = (1, 1)
  c.data.image_size = 48
  c.data.train_examples = 64
  c.data.eval_examples = 40
  c.data.num_threads = 2
  c.batch_size = 16
  c.eval_batch_size = 16
  c.train.epochs = 1.0
  c.train.log_every = 2
  c.train.ckpt_every = 2
  c.train.eval_every = 0
  c.optim.warmup_epochs = 0.0


def finalize(c: ml_collections.ConfigDict, smoke: bool = False) -> ml_collections.ConfigDict:
  if smoke:
    shrink_for_smoke(c)
  preset = dict(_pending_preset)
  _pending_preset.clear()
  presets.apply(c, **preset)
  c.lock()
  return c


def sibling(config_file: str, name: str):
  """The module `name`.py beside `config_file`: configs share a paper's set-up this way (e.g.
  configs/_cafe.py), whatever the current directory or the command that loads them."""
  import sys
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name + '.py')
  key = 'ferjax_config_' + name.lstrip('_') + '_' + str(abs(hash(path)))
  if key not in sys.modules:
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[key] = module
  return sys.modules[key]


def load(path_and_arg: str) -> ml_collections.ConfigDict:
  """Loads `configs/x.py[:arg]` the way `--config` does (for eval, tests and notebooks)."""
  path, _, arg = path_and_arg.partition(':')
  if not os.path.exists(path):
    raise FileNotFoundError(f'config file {path!r} does not exist')
  name = 'ferjax_config_' + os.path.basename(path)[:-3]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'config file {path} defines no get_config(arg)')
  return module.get_config(arg or None)


def _tuples(tree):
  """JSON turns tuples into lists; configs hold tuples."""
  if isinstance(tree, (dict, ml_collections.ConfigDict)):
    return {k: _tuples(v) for k, v in tree.items()}
  return tuple(_tuples(v) for v in tree) if isinstance(tree, list) else tree


def reconcile(saved) -> ml_collections.ConfigDict:
  """A config restored from JSON, laid over the current schema (lists back to tuples, keys
  added since the checkpoint was written get their defaults) and locked.

  A method's own options live in a top-level section named after it (`cfg.cage.alpha`); that
  section is taken as saved, since the base schema does not know it. Runs saved before class
  spaces were named get the space their class count meant then.
  """
  saved = saved.to_dict() if isinstance(saved, ml_collections.ConfigDict) else dict(saved)
  base = base_config()
  method = saved.get('method', base.method)
  if method in saved and method not in base:
    base[method] = ml_collections.ConfigDict(_tuples(saved[method]))
  data = saved.get('data', {})
  if 'class_space' not in data:
    k = saved.get('model', {}).get('num_classes', 8)
    data['class_space'] = {8: 'affectnet8', 7: 'affectnet7', 6: 'lsd6', 26: 'emotic26'}[k]

  def merge(dst, src, path=''):
    for k, v in src.items():
      if k not in dst:
        raise ValueError(f'saved config has key {path + k!r}, unknown to this ferjax version')
      if isinstance(dst[k], ml_collections.ConfigDict):
        merge(dst[k], v, path + k + '.')
      else:
        dst[k] = tuple(_tuples(v)) if isinstance(dst[k], tuple) else v

  merge(base, saved)
  base.lock()
  return base


# Keys that may differ when a run is resumed: they change neither the model, the data it trains
# on, the optimiser nor the schedule (train.epochs and train.max_steps, which set the run's
# length, only where the schedule does not span the whole run). Everything else must match.
RESUMABLE = (
    'train.epochs', 'train.max_steps', 'train.log_every', 'train.eval_every',
    'train.profile_steps',
    'train.ckpt_every', 'train.keep', 'train.resume', 'train.init_from', 'train.init_exclude',
    'model.backbone_weights', 'data.eval_sets', 'data.eval_examples', 'eval_batch_size',
    'data.num_threads', 'data.num_workers', 'data.prefetch', 'mesh.data', 'mesh.fsdp',
    'cafe.report_samples', 'cafe.cache_dir',
)
# Schedules whose shape depends on the run's length: more epochs would change past steps' rates.
RUN_LENGTH_SCHEDULES = ('cosine', 'cosine_epoch')


def flat(cfg) -> dict:
  d = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg
  out = {}

  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(v, prefix + k + '.')
      else:
        out[prefix + k] = tuple(_tuples(v)) if isinstance(v, (list, tuple)) else v
    if not node and prefix:
      out[prefix[:-1]] = {}
  walk(d, '')
  return out


def resume_differences(saved, new) -> list[tuple[str, object, object]]:
  """(key, checkpoint value, new value) of every difference that resuming may not make."""
  a, b = flat(saved), flat(new)
  out = []
  for key in sorted(set(a) | set(b)):
    old, cur = a.get(key, '<absent>'), b.get(key, '<absent>')
    if old == cur:
      continue
    if (key in ('train.epochs', 'train.max_steps')
        and b.get('optim.schedule') in RUN_LENGTH_SCHEDULES):
      out.append((key + f' (schedule {b.get("optim.schedule")!r} spans the whole run)', old, cur))
    elif key not in RESUMABLE:
      out.append((key, old, cur))
  return out


def check_resume(saved, new, workdir: str) -> None:
  """Refuses to resume `workdir` with a config that changes what the run is."""
  diffs = resume_differences(saved, new)
  if diffs:
    lines = [f'{workdir} holds a run with another config; resuming it would change:']
    lines += [f'  {k}: {old!r} in the checkpoint, {cur!r} now' for k, old, cur in diffs]
    lines.append('Start fresh with another --workdir, or branch from this run with '
                 f'--config.train.init_from={workdir} (parameters only) or '
                 f'--config.train.resume={workdir} (the whole state) in a new --workdir. '
                 'Keys that may change on resume: ' + ', '.join(RESUMABLE))
    raise ConfigError('\n'.join(lines))
