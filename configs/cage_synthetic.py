"""CAGE (paper 003) on the synthetic face benchmark: discrete, combined, or VA from combined.

Launch (full size: MaxViT-T at 224 px on `wild`, for an accelerator):
  python -m ferjax.train --config configs/cage_synthetic.py:version=combined --workdir runs/cage_c
  python -m ferjax.train --config configs/cage_synthetic.py:version=va,init=runs/cage_c \\
      --workdir runs/cage_va
The CPU budget (a reduced MaxViT at 48 px on `lab`, 128 steps, a few minutes on 2 cores):
  python -m ferjax.train --config configs/cage_synthetic.py:cpu,version=discrete \\
      --workdir runs/cage_discrete
Arguments (`FILE:k=v,...`): version=<discrete|combined|va>, init=DIR (va: the combined run to
start from; its whole head is dropped, as the official VA script builds a fresh one), cpu, smoke,
domain=<lab|wild|cartoon|lowq|occluded>, epochs=N, code_lr (4e-5), code_schedule (the official
per-iteration cosine with T_max = batch size * epochs).

The synthetic classes are balanced, so the class weights are uniform here (Table 4's AffectNet
weights correct AffectNet's imbalance: normalised inverse frequencies, uniform for a balanced set).
"""
from ferjax import config as fc
from ferjax.methods import cage

cage_setup = fc.sibling(__file__, '_cage')

# The CPU-budget MaxViT: torchvision's structure (stem, then stages of MBConv + window + grid
# attention) at a width and depth that trains in minutes. 48 px (the `lab` domain's native
# size) gives stage maps of 12, 6 and 3, so 3 x 3 partitions tile every stage (MaxViT needs that
# divisibility). MBConv expansion 2 instead of 4: XLA's CPU depthwise convolution dominates the
# step (1.7 s -> 0.9 s per batch of 64). BatchNorm momentum 0.9 instead of torchvision's 0.99
# (torch 0.01): after a hundred steps the slow running averages would still sit near their
# init at evaluation, and the eval-mode network would predict one class.
CPU_MAXVIT = dict(stem_channels=16, block_channels=(32, 64, 128), block_layers=(1, 1, 1),
                  head_dim=16, partition_size=3, expansion_ratio=2.0, stochastic_depth_prob=0.0,
                  bn_momentum=0.9)
# Smoke tests: two stages.
SMOKE_MAXVIT = dict(stem_channels=8, block_channels=(8, 16), block_layers=(1, 1), head_dim=8,
                    partition_size=2, stochastic_depth_prob=0.0)


def get_config(arg=None):
  a = fc.parse_arg(arg, dict(cpu=False, smoke=False, version='combined', init='', domain='',
                             epochs=None, code_lr=False, code_schedule=False))
  if a['version'] not in cage.VERSIONS:
    raise ValueError(f"version={a['version']!r}; expected one of {cage.VERSIONS}")
  a['domain'] = a['domain'] or ('lab' if a['cpu'] or a['smoke'] else 'wild')
  if a['domain'] not in fc.SYNTHETIC_DOMAINS:
    raise ValueError(f"domain={a['domain']!r}; the synthetic domains are {fc.SYNTHETIC_DOMAINS}")
  c = fc.base_config()
  cage_setup.paper_config(c, version=a['version'], epochs=20.0, code_lr=a['code_lr'],
                    code_schedule=a['code_schedule'])
  c.cage.class_weights = 'uniform'
  c.data.train = f"synthetic:{a['domain']}:train"
  c.data.eval_sets = ','.join(f'synthetic:{d}:test' for d in fc.SYNTHETIC_DOMAINS)
  c.data.train_examples = 50000
  c.data.eval_examples = 2000
  if a['version'] == 'va':
    c.train.init_from = a['init']
    c.train.init_exclude = 'classifier_*'   # the official VA model gets a whole new head
  if a['cpu']:
    c.cage.maxvit.update(CPU_MAXVIT)
    c.data.image_size = 48
    c.data.train_examples = 6144
    c.data.eval_examples = 1000
    c.data.eval_sets = 'synthetic:lab:test'
    # The fixed CPU budget: 2 epochs of 192 steps. Batch 32 rather than the paper's 128: at a
    # fixed number of examples, more (smaller) updates learn faster in so short a run.
    c.batch_size = 32
    c.train.epochs = 2.0
    # The paper's 5e-5 is tuned for an ImageNet-pretrained MaxViT-T; a small net trained from
    # scratch needs a larger step to learn anything in a few hundred updates.
    c.optim.lr = 1e-3
    c.train.ckpt_every = 192
    c.train.log_every = 32
    c.train.eval_every = -1
    # Flip, rotation, brightness and contrast only: in a few hundred steps from scratch the
    # paper's regularising augmentations (perspective, erasing, ...) would only slow learning.
    c.augment.update(dict(saturation=0.0, hue=0.0, grayscale_p=0.0, perspective=0.0,
                          erasing_p=0.0))
  if a['smoke']:
    fc.shrink_for_smoke(c)
    c.cage.maxvit.update(SMOKE_MAXVIT)   # at shrink_for_smoke's 48 px: maps 12 and 6
  if a['epochs'] is not None:   # after smoke, so that `smoke,epochs=N` keeps N
    c.train.epochs = float(a['epochs'])
  cage_setup.set_schedule(c, a['code_schedule'])   # T_max follows the final batch size and epochs
  return fc.finalize(c)
