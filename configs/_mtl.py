"""The set-up of paper 004's multi-task model (Jeong et al., ABAW4-LSD), shared by
`mtl_lsd.py` and `mtl_synthetic.py`."""
import ml_collections

APPEARANCES = ('resnet50_vggface2', 'resnet50', 'mobilevitv2_200')
MIXES = ('none', 'mixup', 'mix_augment')


def paper_config(c: ml_collections.ConfigDict, appearance: str = 'resnet50_vggface2',
                 mix: str = 'mix_augment') -> ml_collections.ConfigDict:
  """Puts the method section and Table 1's recipe on a base config (before finalize).

  Adam 1e-4 without weight decay (the code; the paper's table says 1e-4), ExponentialLR(0.6)
  per epoch, 12 epochs, batch 128, 224 px with ImageNet normalisation, lsd6 classes; flip,
  affine (20 degrees, scale 0.8-1, shift 0.2), colour jitter and erasing, drawn per example
  (the code draws once per batch); Mix-up or Mix-augment with lambda ~ Beta(0.1, 0.1). The
  best epoch is the one with the highest macro F1 on the first evaluation set.
  """
  if appearance not in APPEARANCES:
    raise ValueError(f'appearance={appearance!r}; expected one of {APPEARANCES}')
  if mix not in MIXES:
    raise ValueError(f'mix={mix!r}; expected one of {MIXES}')
  c.method = 'mtl'
  c.mtl = ml_collections.ConfigDict(dict(
      emotion_backbone='resnet50_vggface2',
      appearance=appearance,
      appearance_head='',         # '' = linear for resnet50 (the DINO fc), conv otherwise
      mobilevit_channels=(),      # () = mobilevitv2_200's widths (smaller for CPU configs)
      num_heads=4,
      channel_hidden=32,
      reduce=(1024, 512),         # the emotion branch's 1x1 convs after layer4
      shared=(256, 128),          # the hard-shared FC widths
      afn_logsoftmax=False,       # the code sums the raw heads; True: DAN's AFN
      class_weights='none',       # 'code': CE weights 1 - n_c / sum n (LSD counts)
      landmark_scale='unit',      # 'pixel': the loss in pixels of the crop
      aux_loss='clean',           # Mix-augment: affinity, partition, landmarks on clean passes
      affinity_weight=1.0,
      partition_weight=1.0,
      landmark_weight=1.0,
      emotion_weights='',         # VGGFace2 ResNet-50 state_dict (torchvision key names)
      appearance_weights='',      # the appearance backbone's state_dict
  ))
  c.model.backbone = 'resnet50_vggface2'   # informational: the emotion branch
  c.model.va_head = False
  c.data.class_space = 'lsd6'
  c.data.image_size = 224
  c.batch_size = 128
  c.train.epochs = 12.0
  c.optim.update(dict(name='adam', lr=1e-4, weight_decay=0.0, schedule='exponential',
                      decay_rate=0.6, decay_per='epoch', warmup_epochs=0.0))
  c.augment.update(dict(flip=True, rotate_deg=20.0, scale=(0.8, 1.0), crop_pad=0.2,
                        brightness=0.5, contrast=0.5, erasing_p=0.5, erasing_scale=(0.02, 0.33),
                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), mix=mix,
                        mix_alpha=0.1))
  return c


def weak(c: ml_collections.ConfigDict, member: int, folds: int = 5) -> None:
  """A weak model: member `member` of `folds` disjoint stratified folds of the training set."""
  c.data.bagging_fraction = 1.0 / folds
  c.data.bagging_member = int(member)
  c.data.bagging_disjoint = True
  c.data.bagging_stratified = True


def best_by_f1(c, eval_sets: str) -> None:
  c.train.best_metric = f'{eval_sets.split(",")[0]}/macro_f1'
