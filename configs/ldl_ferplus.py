"""Paper 002 on FERPlus at full size: one cell (model, loss, N) of the label-distribution study.

Prepare FERPlus first (fer2013.csv + fer2013new.csv, or the FER2013{Train,Valid,Test} folders):
  python -m ferjax.data.prepare --dataset ferplus --manual_dir /data/ferplus --data_dir /data/tfds
The study (the paper's figures; every cell is one run of 40 epochs, DAN 60):
  python -m ferjax.studies.label_distribution --config configs/ldl_ferplus.py:data_dir=/data/tfds \
      --models vgg16,ran,dan,mten --losses all --nhot 1-8 --workdir runs/ldl_ferplus
One cell:
  python -m ferjax.train --config configs/ldl_ferplus.py:data_dir=/data/tfds,model=dan,nhot=3 \
      --workdir runs/ldl_dan_n3
Arguments (`FILE:k=v,...`): model, loss, nhot, data_dir ('' = $FERJAX_DATA_DIR or the TFDS
default), split=paper (default: the three official splits pooled, cleaned and split into the
ordinary and complex test sets) or split=official (train on FER2013Train with the paper's
targets; report FER2013Valid and FER2013Test, with the reference's majority accuracy beside the
any-max one), smoke.
Grey 48 px faces are read as 3 equal channels (ferjax.data.sources); no ImageNet weights, as
in the paper's main runs.
"""
from ferjax import config as fc

ldl = fc.sibling(__file__, '_ldl')


def get_config(arg=None):
  a = fc.parse_arg(arg, dict(ldl.ARGS, data_dir='', split='paper', smoke=False))
  if a['split'] not in ('paper', 'official'):
    raise ValueError(f"split={a['split']!r}; expected paper or official")
  at = f"@{a['data_dir']}" if a['data_dir'] else ''
  c = fc.base_config()
  c.data.class_space = 'affectnet8'
  c.data.train_examples = 0                 # a prepared set is read whole
  c.batch_size = 64
  c.eval_batch_size = 256
  ldl.paper_config(c, a)
  if a['split'] == 'paper':
    c.data.train = f'ferplus:train+val+test{at}'
  else:
    c.data.split = 'official'
    c.data.train = f'ferplus:train{at}'
    c.data.eval_sets = f'ferplus:val{at},ferplus:test{at}'
  # The paper's augmentation is offline (data.append); on the fly only what it names.
  if a['model'] != 'dan':   # DAN brings its own online augmentation
    c.augment.update(dict(rotate_deg=0.0, crop_pad=0.0, brightness=0.0, contrast=0.0))
  if a['smoke']:
    fc.shrink_for_smoke(c)
  return fc.finalize(c)
