"""CAGE's training set-up (paper 003, Table 5 and the official scripts), shared by the configs
`cage_synthetic.py`, `cage_affectnet{7,8}.py` and `cage_emotic.py`."""
import ml_collections

from ferjax import config as fc
from ferjax.methods import cage


def paper_config(c: ml_collections.ConfigDict, version: str = 'combined', task: str = 'affectnet',
                 epochs: float = 20.0, batch_size: int = 128, code_lr: bool = False,
                 code_schedule: bool = False) -> ml_collections.ConfigDict:
  """Puts CAGE's method section and training set-up on a base config (before fc.finalize).

  Paper Table 5: batch 128, AdamW, lr 5e-5, cosine annealing, alpha = 5, beta = 3. Named
  switches reproduce the official scripts instead: `code_lr` (lr 4e-5, AffectNet*/train.py) and
  `code_schedule` (CosineAnnealingLR(T_max = batch size * epochs) stepped per iteration, i.e.
  schedule 'cosine_periodic'); otherwise the cosine is stepped once per epoch over the run.
  AdamW's weight decay is torch's default 0.01 (the scripts do not set it). Augmentation is
  Sec. 4.2's list: flip 0.5, grayscale 0.01, rotation 10 deg, colour jitter (0.2, 0.2, 0.2,
  hue 0.1), perspective 0.2 with p 0.5, random erasing p 0.5, scale (0.02, 0.2), ratio (0.3,
  3.3); no crop (the scripts have no Resize/crop: images are pre-cut 224 x 224). One difference:
  ferjax erases with 0 (torchvision's default value), the scripts with value='random' noise.
  """
  c.method = 'cage'
  c.cage = ml_collections.ConfigDict(dict(
      version=version,           # 'discrete' | 'combined' | 'va'
      task=task,                 # 'affectnet' | 'emotic'
      alpha=5.0,                 # Eq. 1 / EMOTIC: weight of the regression MSE (Table 5)
      beta=3.0,                  # Eq. 2: weight of the MSE next to the CCC loss (Table 5)
      class_weights='table4',    # 'table4' (8 or 7 classes) | 'uniform' | K floats
      head_dropout=0.3,          # the VA head's Dropout (models/AffectNet8_Maxvit_VA/train.py)
      labelled_only=task == 'affectnet',  # rows with label -1 (e.g. contempt in AffectNet-7)
                                 # leave every term, as the AffectNet-7 scripts drop them
      pos_counts=(),             # EMOTIC: training positives per category (count_positives)
      pos_total=cage.EMOTIC_TRAIN_SIZE,
      maxvit=ml_collections.ConfigDict(),  # MaxViT field overrides ({} = torchvision maxvit_t)
      va_target_dtype='float32',  # 'float16': V/A targets rounded as the official scripts
                                  # store them
  ))
  c.model.backbone = 'maxvit_t'
  c.model.va_head = False        # baseline-only switch; CAGE's head layout follows cage.version
  c.data.image_size = 224
  c.batch_size = batch_size
  c.train.epochs = float(epochs)
  c.optim.update(dict(name='adamw', lr=4e-5 if code_lr else 5e-5, weight_decay=0.01,
                      warmup_epochs=0.0, min_lr=0.0, b1=0.9, b2=0.999, eps=1e-8))
  set_schedule(c, code_schedule)
  c.augment.update(dict(flip=True, crop_pad=0.0, rotate_deg=10.0, brightness=0.2, contrast=0.2,
                        saturation=0.2, hue=0.1, grayscale_p=0.01, perspective=0.2,
                        perspective_p=0.5, erasing_p=0.5, erasing_scale=(0.02, 0.2),
                        erasing_ratio=(0.3, 3.3)))
  # The official VA model trains on a class-balanced subset (every expression cut to the
  # minority class's count), fine-tuned from the combined model.
  c.data.class_subsample = version == 'va'
  if task == 'emotic':
    c.data.class_space = 'emotic26'
    c.augment.mean = tuple(m1 + m2 * s1 for m1, m2, s1 in
                           zip(cage.IMAGENET_MEAN, cage.EMOTIC_BODY_MEAN, cage.IMAGENET_STD))
    c.augment.std = tuple(s1 * s2 for s1, s2 in zip(cage.IMAGENET_STD, cage.EMOTIC_BODY_STD))
  return c


def set_schedule(c: ml_collections.ConfigDict, code_schedule: bool) -> None:
  """Per-epoch cosine over the run, or the official per-iteration cosine with T_max = B * E
  (call again after changing batch size or epochs)."""
  if code_schedule:
    c.optim.schedule = 'cosine_periodic'
    c.optim.t_max_steps = int(c.batch_size * c.train.epochs)
  else:
    c.optim.schedule = 'cosine_epoch'


def real_config(arg, task: str, class_space: str, epochs: float, batch_size: int = 128):
  """The body of configs/cage_affectnet{8,7}.py and cage_emotic.py (see their docstrings)."""
  a = fc.parse_arg(arg, dict(smoke=False, version='combined', backbone='maxvit_t', init='',
                             epochs=None, code_lr=False, code_schedule=False))
  if a['backbone'] not in ('maxvit_t', 'efficientnet_v2_s'):
    raise ValueError(f"backbone={a['backbone']!r}; CAGE compares maxvit_t and efficientnet_v2_s")
  c = fc.base_config()
  paper_config(c, version=a['version'], task=task, epochs=a['epochs'] or epochs,
               batch_size=batch_size, code_lr=a['code_lr'] and task == 'affectnet')
  c.model.backbone = a['backbone']
  if task == 'emotic':
    c.data.train, c.data.eval_sets = 'emotic:train', 'emotic:test'
  else:
    c.data.class_space = class_space
    if class_space == 'affectnet7':
      # Contempt images stay for their V/A labels; the class terms skip them (labelled_only).
      c.data.outside_space = 'unlabel'
    c.data.train, c.data.eval_sets = 'affectnet:train', 'affectnet:val'
  if a['version'] == 'va' or a['init']:
    c.train.init_from = a['init']
  if a['version'] == 'va':
    # MaxViT: the official VA model builds a whole new classifier; EfficientNet swaps only its
    # last Linear (models/AffectNet8_Efficientnet_VA/train.py), which keeps the name classifier_1.
    c.train.init_exclude = 'classifier_*' if a['backbone'] == 'maxvit_t' else 'classifier_1'
  if a['smoke']:
    fc.shrink_for_smoke(c)
    c.cage.maxvit.update(dict(stem_channels=8, block_channels=(8, 16), block_layers=(1, 1),
                              head_dim=8, partition_size=2, stochastic_depth_prob=0.0))
  if a['epochs'] is not None:   # after smoke, so that `smoke,epochs=N` keeps N
    c.train.epochs = float(a['epochs'])
  set_schedule(c, a['code_schedule'])
  return fc.finalize(c)
