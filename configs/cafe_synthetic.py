"""CAFE (paper 000) on the synthetic face benchmark: train on one domain, test on all five.

The synthetic benchmark has no real CLIP: `clip=random` (default here) is a seeded RANDOM
ViT-B/32 (or, with `cpu`/`smoke`, a reduced random ViT), clearly not CLIP's features; give
clip=PATH for real weights (then keep the full size: 512-d projection).

Launch (full size, for an accelerator):
  python -m ferjax.train --config configs/cafe_synthetic.py --workdir runs/cafe
The whole cross-domain matrix (one run per training domain):
  python -m ferjax.protocols.cross_domain --config configs/cafe_synthetic.py:cpu \\
      --workdir runs/cafe_xdomain
Arguments (`FILE:k=v,...`): cpu, smoke, domain=<lab|wild|cartoon|lowq|occluded>, epochs=N,
clip=<random|PATH>, features=<cached|exact>, code (pool=code, clip_norm=imagenet), and
variant=<full|baseline|mask|mask_sep|no_sigmoid|clip_finetune>: Table 2's ablations (baseline =
CLIP + fc, no mask; mask = sigmoid mask only; mask_sep = + separation; full = + diverse), Table 5
(no_sigmoid) and the 'CLIP + fine-tune' comparison (CLIP trained with the fc, exact mode).
"""
from ferjax import config as fc
from ferjax.methods import cafe

cafe_setup = fc.sibling(__file__, '_cafe')

VARIANTS = ('full', 'baseline', 'mask', 'mask_sep', 'no_sigmoid', 'clip_finetune')


def get_config(arg=None):
  a = fc.parse_arg(arg, dict(cpu=False, smoke=False, domain='', epochs=None, clip='random',
                             features='cached', code=False, variant='full'))
  if a['variant'] not in VARIANTS:
    raise ValueError(f"variant={a['variant']!r}; expected one of {VARIANTS}")
  a['domain'] = a['domain'] or 'wild'
  if a['domain'] not in fc.SYNTHETIC_DOMAINS:
    raise ValueError(f"domain={a['domain']!r}; the synthetic domains are {fc.SYNTHETIC_DOMAINS}")
  c = fc.base_config()
  cafe_setup.paper_config(c, features=a['features'], clip_weights=a['clip'])
  c.data.train = f"synthetic:{a['domain']}:train"
  c.data.eval_sets = ','.join(f'synthetic:{d}:test' for d in fc.SYNTHETIC_DOMAINS)
  c.data.train_examples = 20000
  c.data.eval_examples = 2000
  c.train.epochs = 20.0
  v = a['variant']
  if v == 'baseline':
    c.cafe.use_mask = False
  elif v == 'mask':
    c.cafe.update(dict(lam=0.0, beta=0.0))
  elif v == 'mask_sep':
    c.cafe.beta = 0.0
  elif v == 'no_sigmoid':
    c.cafe.sigmoid = False
  elif v == 'clip_finetune':
    c.cafe.update(dict(use_mask=False, features='exact', clip_trainable=True))
  if a['code']:
    c.cafe.update(dict(pool='code', clip_norm='imagenet'))
  if a['cpu']:
    # A quarter-width ResNet-18 mask net (128 channels = 18 x 6 + 20) and a reduced random
    # CLIP at 64 px; 2 of 18 channels dropped per piece (the paper's 10 of 73, scaled).
    c.model.width = 16
    c.data.image_size = 64
    cafe_setup.small_clip(c, 64, cafe.mask_net_dim(c.model), num_drop=2)
    c.data.train_examples = 4096
    c.data.eval_examples = 500
    c.batch_size = 64
    c.eval_batch_size = 128
    c.train.epochs = 3.0
    c.optim.lr = 2e-3
    c.train.log_every = 16
    c.train.ckpt_every = 1000
    c.train.eval_every = -1
  if a['smoke']:
    cafe_setup.smoke(c)
  if a['epochs'] is not None:   # after smoke, so that `smoke,epochs=N` keeps N
    c.train.epochs = float(a['epochs'])
  return fc.finalize(c)
