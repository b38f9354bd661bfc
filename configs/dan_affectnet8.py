"""DAN on AffectNet-8 (yaoing/DAN affectnet.py; released checkpoint 62.09% val accuracy,
epoch 5).

  python -m ferjax.train --config configs/dan_affectnet8.py:resnet=PATH --workdir runs/dan_an8

The released checkpoint (`affecnet8_epoch5_acc0.6209.pth`) starts a run with weights=PATH
(ferjax.interop.dan converts it strictly; the affinity centres start fresh). Arguments
(`FILE:k=v,...`): weights=PATH (a whole official DAN checkpoint), resnet=PATH (the MS-Celeb
ResNet-18 `resnet18_msceleb.pth`), centres=N, epochs=N, smoke.

Data: `affectnet:train` / `affectnet:val` (the script's ImageFolder `train/<0..7>`, `val/<0..7>`
in AffectNet's label order, `affectnet8`: neutral, happy, sad, surprise, fear, disgust, anger,
contempt). Adam 1e-4, ExponentialLR(0.6) per epoch, 40 epochs, batch 256, an imbalance-aware
sampler (each example drawn with probability ~ 1 / its class count, with replacement, as the
script's ImbalancedDatasetSampler). The best checkpoint is kept by val accuracy.
"""
from ferjax import config as fc

dan_setup = fc.sibling(__file__, '_dan')


def get_config(arg=None):
  return dan_setup.real_config(arg, 'affectnet', 'affectnet8', 'affectnet:train',
                               'affectnet:val')
