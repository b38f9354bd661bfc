"""DAN on RAF-DB (yaoing/DAN rafdb.py; released checkpoint 89.70% test accuracy, epoch 21).

  python -m ferjax.train --config configs/dan_rafdb.py:resnet=PATH --workdir runs/dan_rafdb

The released checkpoint (`rafdb_epoch21_acc0.897_bacc0.8275.pth`) starts a run with weights=PATH
(ferjax.interop.dan converts it strictly; the affinity centres start fresh). Arguments
(`FILE:k=v,...`): weights=PATH (a whole official DAN checkpoint), resnet=PATH (the MS-Celeb
ResNet-18 `resnet18_msceleb.pth` the features start from; without it they start from scratch),
centres=N (the script builds 8 affinity centres for 7 classes; centres=7 is the fix of the
official issue #31), epochs=N, smoke.

Data: `rafdb:train` / `rafdb:test` (the basic set's aligned 100 x 100 faces, resized to 224).
Classes in RAF-DB's label-file order (`rafdb7`: surprise, fear, disgust, happy, sad, anger,
neutral), the order of the script's labels (file label - 1) and so of the released
checkpoint's head. The script reports the best test accuracy over epochs: the best checkpoint
is kept by test accuracy here too (config.train.best_metric).
"""
from ferjax import config as fc

dan_setup = fc.sibling(__file__, '_dan')


def get_config(arg=None):
  return dan_setup.real_config(arg, 'rafdb', 'rafdb7', 'rafdb:train', 'rafdb:test')
