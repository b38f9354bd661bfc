"""DAN on the synthetic face benchmark: train on one domain, test on all five.

Launch (full size: ResNet-18 at 224 px on `wild`, the RAF-DB recipe, for an accelerator):
  python -m ferjax.train --config configs/dan_synthetic.py --workdir runs/dan
The CPU budget (a half-width ResNet-18 at 64 px on `lab`, Adam 2e-3 and mild augmentation
instead of the recipes, which do not learn from scratch in so few steps; minutes on 2 cores):
  python -m ferjax.train --config configs/dan_synthetic.py:cpu --workdir runs/dan_cpu
Arguments (`FILE:k=v,...`): cpu, smoke, recipe=<rafdb|affectnet> (the optimiser, schedule,
sampler and augmentation of that script), domain=<lab|wild|cartoon|lowq|occluded>, epochs=N,
resnet=PATH (MS-Celeb ResNet-18 weights for the features).

The synthetic set has AffectNet's eight classes; the centres follow the class count here (the
RAF-DB script's extra centre is a RAF-DB quirk, `dan.centres=8` there).
"""
from ferjax import config as fc

dan_setup = fc.sibling(__file__, '_dan')


def get_config(arg=None):
  a = fc.parse_arg(arg, dict(cpu=False, smoke=False, recipe='rafdb', domain='', epochs=None,
                             resnet=''))
  a['domain'] = a['domain'] or ('lab' if a['cpu'] or a['smoke'] else 'wild')
  if a['domain'] not in fc.SYNTHETIC_DOMAINS:
    raise ValueError(f"domain={a['domain']!r}; the synthetic domains are {fc.SYNTHETIC_DOMAINS}")
  c = fc.base_config()
  dan_setup.paper_config(c, a['recipe'], code_centres=False)
  c.dan.resnet_weights = a['resnet']
  c.data.train = f"synthetic:{a['domain']}:train"
  c.data.eval_sets = ','.join(f'synthetic:{d}:test' for d in fc.SYNTHETIC_DOMAINS)
  c.data.train_examples = 20000
  c.data.eval_examples = 2000
  c.train.epochs = 20.0
  if a['recipe'] == 'rafdb':
    c.optim.step_epochs = (5, 10, 15)   # StepLR(10) of 40 epochs, scaled to 20
  if a['cpu']:
    # Half width (256 channels at the heads, C/2 = 128 in the spatial attention) at 64 px:
    # a 2 x 2 map at layer4, which keeps the 3 x 3 / 1 x 3 / 3 x 1 kernels meaningful.
    c.model.width = 32
    c.data.image_size = 64
    c.data.train_examples = 4096
    c.data.eval_examples = 500
    c.data.eval_sets = 'synthetic:lab:test'
    c.batch_size = 64
    c.eval_batch_size = 128
    c.train.epochs = 3.0
    # From scratch the recipes stay at chance here: the RAF-DB one (SGD 0.1, its augmentation)
    # for 3 epochs, the AffectNet augmentation with Adam 1e-3 for 2 (both are tuned for an
    # MS-Celeb-pretrained ResNet-18). Adam 2e-3 at a constant rate with flip, +-10 degree
    # rotation, a small shift and brightness / contrast (no erasing, no zoom) reaches ~47% on
    # lab/test in 128 steps.
    c.optim.update(dict(name='adam', lr=2e-3, weight_decay=0.0, schedule='constant',
                        warmup_epochs=0.0))
    c.augment.update(dict(rotate_deg=10.0, crop_pad=0.0625, scale=(1.0, 1.0), brightness=0.2,
                          contrast=0.2, erasing_p=0.0))
    c.data.sampler = 'shuffle'
    c.train.log_every = 16
    c.train.ckpt_every = 1000
    c.train.eval_every = -1
  if a['smoke']:
    fc.shrink_for_smoke(c)
    c.data.eval_sets = 'synthetic:lab:test'
    c.dan.num_heads = 2   # still more than one head: the log_softmax and partition terms run
  if a['epochs'] is not None:   # after smoke, so that `smoke,epochs=N` keeps N
    c.train.epochs = float(a['epochs'])
  return fc.finalize(c)
