"""Paper 004's multi-task model on the synthetic benchmark, LSD-like: the six LSD classes (lsd6:
the synthetic set's neutral and contempt faces are dropped), 68 landmarks per face in [0, 1] of
the crop, training on one synthetic domain and validating on another (the paper trains on
synthetic faces and validates on real Aff-Wild2 frames).

Launch (full size: two VGGFace2-structured ResNet-50s at 224 px, for an accelerator):
  python -m ferjax.train --config configs/mtl_synthetic.py --workdir runs/mtl
The CPU budget (8-wide ResNet-50s with one bottleneck per stage at 64 px, narrow heads):
  python -m ferjax.train --config configs/mtl_synthetic.py:cpu --workdir runs/mtl_cpu
Arguments (`FILE:k=v,...`): cpu, smoke, mix=<none|mixup|mix_augment>,
appearance=<resnet50_vggface2|resnet50|mobilevitv2_200>, train=<domain>, val=<domain>,
member=N (a weak model: fold N of `folds` (5) disjoint stratified folds; -1 = strong),
class_weights=<none|code>, epochs=N, seed=N.
"""
from ferjax import config as fc

mtl_setup = fc.sibling(__file__, '_mtl')


def get_config(arg=None):
  a = fc.parse_arg(arg, dict(cpu=False, smoke=False, mix='mix_augment',
                             appearance='resnet50_vggface2', train='wild', val='lab', member=-1, folds=5,
                             class_weights='none', epochs=None, seed=0))
  for k in ('train', 'val'):
    if a[k] not in fc.SYNTHETIC_DOMAINS:
      raise ValueError(f'{k}={a[k]!r}; the synthetic domains are {fc.SYNTHETIC_DOMAINS}')
  c = fc.base_config()
  mtl_setup.paper_config(c, a['appearance'], a['mix'])
  c.seed = int(a['seed'])
  c.mtl.class_weights = a['class_weights']
  c.data.outside_space = 'drop'
  c.data.train = f"synthetic:{a['train']}:train"
  c.data.eval_sets = f"synthetic:{a['val']}:val,synthetic:{a['val']}:test"
  c.data.train_examples = 20000
  c.data.eval_examples = 2000
  if int(a['member']) >= 0:
    mtl_setup.weak(c, int(a['member']), int(a['folds']))
  if a['cpu'] or a['smoke']:
    # Every stage of a ResNet-50 but one bottleneck each, 8 wide (256 channels at layer4),
    # a 2 x 2 map at 64 px; reduced head widths; MobileViTv2 at a quarter of its widths.
    c.model.width = 8
    c.model.stage_sizes = (1, 1, 1, 1)
    c.mtl.reduce = (64, 32)
    c.mtl.shared = (32, 16)
    c.mtl.channel_hidden = 8
    c.mtl.mobilevit_channels = (32, 64, 128, 192, 256)
    c.data.image_size = 64
    c.data.train_examples = 4096
    c.data.eval_examples = 500
    c.batch_size = 64
    c.eval_batch_size = 128
    c.train.epochs = 3.0
    # From scratch at this size Adam 1e-4 barely moves in 192 steps: 1e-3, decayed 0.6 per
    # epoch as the recipe; mild geometry, as the DAN CPU config found.
    c.optim.lr = 1e-3
    c.augment.update(dict(rotate_deg=10.0, crop_pad=0.0625, scale=(1.0, 1.0), brightness=0.2,
                          contrast=0.2, erasing_p=0.0))
    c.train.log_every = 16
    c.train.ckpt_every = 1000
    c.train.eval_every = 0
  if a['smoke']:
    fc.shrink_for_smoke(c)
    c.model.stage_sizes = (1, 1, 1, 1)   # the emotion branch needs a 4th stage's map
    c.mtl.num_heads = 2
    c.data.eval_sets = f"synthetic:{a['val']}:val"
  mtl_setup.best_by_f1(c, c.data.eval_sets)
  if a['epochs'] is not None:   # after smoke, so that `smoke,epochs=N` keeps N
    c.train.epochs = float(a['epochs'])
  return fc.finalize(c)
