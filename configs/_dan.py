"""DAN's training set-up (yaoing/DAN: rafdb.py, affectnet.py), shared by `dan_rafdb.py`,
`dan_affectnet8.py` and `dan_synthetic.py`."""
import ml_collections

from ferjax import config as fc

RECIPES = ('rafdb', 'affectnet')


def paper_config(c: ml_collections.ConfigDict, recipe: str = 'rafdb',
                 code_centres: bool = True) -> ml_collections.ConfigDict:
  """Puts DAN's method section and one official recipe on a base config (before finalize).

  Both: ResNet-18 features, 4 heads, CE + affinity + partition (weights 1), batch 256,
  40 epochs, 224 px, ImageNet normalisation, flip and random erasing.
  rafdb      SGD lr 0.1, momentum 0.9, weight decay 1e-4 (on the centres too, which the
             script optimises with the model), StepLR(10, 0.1); RandomApply([rotation 20,
             RandomCrop(224, pad 32)], p 0.2); erasing scale (0.02, 0.25). `code_centres`:
             the script's 8 centres for 7 classes.
  affectnet  Adam lr 1e-4, no weight decay, ExponentialLR(0.6) per epoch, the imbalanced
             sampler (P ~ 1 / n_class, with replacement); RandomApply([RandomAffine(20, scale
             (0.8, 1), translate 0.2)], p 0.7); erasing with torchvision's defaults.
  One difference: ferjax's geometric augmentations have no RandomApply probability, so the
  rotation / crop (RAF-DB) and affine (AffectNet) draws apply to every image.
  """
  if recipe not in RECIPES:
    raise ValueError(f'recipe={recipe!r}; expected one of {RECIPES}')
  c.method = 'dan'
  c.dan = ml_collections.ConfigDict(dict(
      num_heads=4,
      centres=8 if recipe == 'rafdb' and code_centres else 0,  # 0 = the class count
      afn_logsoftmax=True,        # the AFN's log_softmax over heads (off: raw heads summed)
      affinity_weight=1.0,
      partition_weight=1.0,
      channel_hidden=32,          # the channel attention's Linear(C, 32) bottleneck
      resnet_weights='',          # MS-Celeb ResNet-18 state_dict (resnet18_msceleb.pth)
      official_weights='',        # a whole official DAN checkpoint (the released models)
  ))
  c.model.backbone = 'resnet18'
  c.model.va_head = False
  c.data.image_size = 224
  c.batch_size = 256
  c.train.epochs = 40.0
  common = dict(flip=True, brightness=0.0, contrast=0.0, erasing_p=0.5,
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
  if recipe == 'rafdb':
    c.optim.update(dict(name='sgd', lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
                        schedule='step', step_epochs=(10, 20, 30), decay_rate=0.1,
                        warmup_epochs=0.0))
    c.augment.update(dict(rotate_deg=20.0, crop_pad=32 / 224, erasing_scale=(0.02, 0.25),
                          **common))
  else:
    c.optim.update(dict(name='adam', lr=1e-4, weight_decay=0.0, schedule='exponential',
                        decay_rate=0.6, decay_per='epoch', warmup_epochs=0.0))
    c.data.sampler = 'imbalance'
    c.data.sampler_power = 1.0
    c.augment.update(dict(rotate_deg=20.0, scale=(0.8, 1.0), crop_pad=0.2,
                          erasing_scale=(0.02, 0.33), **common))
  return c


def real_config(arg, recipe: str, class_space: str, train: str, eval_sets: str):
  """The body of configs/dan_rafdb.py and dan_affectnet8.py (see their docstrings)."""
  a = fc.parse_arg(arg, dict(smoke=False, epochs=None, resnet='', weights='', centres=None))
  c = fc.base_config()
  paper_config(c, recipe)
  c.data.class_space = class_space
  c.data.train, c.data.eval_sets = train, eval_sets
  c.dan.resnet_weights = a['resnet']
  c.dan.official_weights = a['weights']
  if a['centres'] is not None:
    c.dan.centres = int(a['centres'])
  c.train.best_metric = f'{eval_sets.split(",")[0]}/accuracy'   # the scripts keep the best
  if a['smoke']:
    fc.shrink_for_smoke(c)
  if a['epochs'] is not None:   # after smoke, so that `smoke,epochs=N` keeps N
    c.train.epochs = float(a['epochs'])
  return fc.finalize(c)
