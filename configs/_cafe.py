"""CAFE's training set-up (paper 000, Sec. 4 and the official script), shared by the configs
`cafe_synthetic.py` and `cafe_{rafdb,ferplus,affectnet,sfew,mma}.py` (Table 1 rows)."""
import ml_collections

from ferjax import config as fc
from ferjax.methods import cafe


def paper_config(c, features: str = 'cached', clip_weights: str = '') -> None:
  """CAFE's section and training set-up (Sec. 4 + the code) on a base config, before finalize.

  Batch 32, 60 epochs, seed 3407, Adam(lr 2e-4, weight_decay 1e-4 as L2), ExponentialLR(0.9)
  stepped per epoch, 224 px, ImageNet normalisation, ResNet-18 mask net, 7 classes. The
  code's augmentation: Gaussian noise of variance 30 on the uint8 image with p = 0.5 before
  everything (`add_g`), horizontal flip, RandomErasing(p = 0.5, scale (0.02, 0.25)) on the
  normalised tensor; all three run on device here.
  """
  c.method = 'cafe'
  c.seed = 3407
  c.cafe = ml_collections.ConfigDict(dict(
      features=features,          # 'cached' | 'exact'
      clip_weights=clip_weights,  # HF flax msgpack / torch state_dict path, or 'random'
      clip_seed=0,                # 'random' only
      clip_overrides=ml_collections.ConfigDict(),  # clip_vit_b32 field overrides ({} = B/32)
      clip_norm='clip',           # 'clip' (paper intent) | 'imagenet' (code)
      clip_trainable=False,       # True (exact mode): the 'CLIP + fine-tune' comparison
      clip_dtype='float32',       # 'float16': the official CUDA run's CLIP (cached mode computes
                                  # in half precision; exact mode rounds the features to it)
      cache_dir='',               # '' = $FERJAX_FEATURE_CACHE or ~/.cache/ferjax/features
      use_mask=True, sigmoid=True,
      pool='paper',               # 'paper' | 'code' (73-wide windows, channel 511 unpooled)
      lam=1.5, beta=5.0, num_drop=10,
      div_c=0.0,                  # eq. 8's c; 0 = first piece size (73 for 512 / 7)
      bgr_eval_sets='',           # eval specs fed in BGR (the code's AffectNet/SFEW/MMA bug)
      resnet_weights='',          # the mask net's start: MS-Celeb ResNet-18 torch weights
      report_samples=4,           # saliency images per eval set in the report
  ))
  c.model.backbone = 'resnet18'
  c.data.class_space = 'affectnet7'
  # The seven basic expressions: contempt (FERPlus, AffectNet, the synthetic set) is left out
  # of training and testing, as the official script's 7-class loaders do; the counts are said.
  c.data.outside_space = 'drop'
  c.model.va_head = False
  c.data.image_size = 224
  c.batch_size = 32
  c.eval_batch_size = 64
  c.train.epochs = 60.0
  c.optim.update(dict(name='adam', lr=2e-4, weight_decay=1e-4, schedule='exponential',
                      decay_rate=0.9, decay_per='epoch', warmup_epochs=0.0))
  c.augment.update(dict(flip=True, crop_pad=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0,
                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        noise_std=30 ** 0.5, noise_p=0.5,
                        erasing_p=0.5, erasing_scale=(0.02, 0.25)))


# Table 1: train on one set, test on the five (specs of ferjax.data.sources; 7 classes).
TABLE1_TRAIN = {'rafdb': 'rafdb:train', 'ferplus': 'ferplus:train',
                'affectnet': 'affectnet:train', 'sfew': 'sfew:train', 'mma': 'mma:train'}
TABLE1_EVAL = ('rafdb:test', 'ferplus:test', 'affectnet:val', 'sfew:val', 'mma:test')
CODE_BGR_SETS = ('affectnet:val', 'sfew:val', 'mma:test')  # the code's BGR test loaders


def small_clip(c, image_size: int, dim: int, num_drop: int) -> None:
  """A reduced CLIP (NOT ViT-B/32) whose projection matches a reduced mask net's `dim`."""
  c.cafe.clip_overrides = dict(hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128,
                               patch_size=16, image_size=image_size, projection_dim=dim)
  c.cafe.num_drop = num_drop


def smoke(c) -> None:
  """Shrinks a CAFE config for CPU tests: smoke-size mask net (32 channels), reduced CLIP."""
  fc.shrink_for_smoke(c)
  c.model.width = 16                     # stages (1, 1): 32 channels = 4 x 6 + 8 for 7 classes
  c.cafe.clip_weights = c.cafe.clip_weights or 'random'
  small_clip(c, c.data.image_size, cafe.mask_net_dim(c.model), num_drop=1)


def table1_config(train: str, arg=None):
  """configs/cafe_<train>.py: the paper's set-up on real data; args smoke, code, exact,
  clip=PATH (the CLIP ViT-B/32 weights), epochs=N."""
  a = fc.parse_arg(arg, dict(smoke=False, code=False, exact=False, clip='', epochs=None))
  c = fc.base_config()
  paper_config(c, features='exact' if a['exact'] else 'cached', clip_weights=a['clip'])
  c.data.train = TABLE1_TRAIN[train]
  c.data.eval_sets = ','.join(TABLE1_EVAL)
  if a['code']:   # the official script's choices where it departs from the paper
    c.cafe.update(dict(pool='code', clip_norm='imagenet', bgr_eval_sets=','.join(CODE_BGR_SETS)))
  if a['smoke']:
    smoke(c)
  if a['epochs'] is not None:   # after smoke, so that `smoke,epochs=N` keeps N
    c.train.epochs = float(a['epochs'])
  return fc.finalize(c)
