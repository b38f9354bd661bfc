"""Paper 002's set-up ("Facial Expression Recognition without One-hot Labels"), shared by
`ldl_synthetic.py` and `ldl_ferplus.py`, and the models its study compares, by name.

A study cell is one (model, loss, N) triple; `python -m ferjax.studies.label_distribution`
loads the config file with `model=NAME,loss=NAME,nhot=N` for each cell.
"""
import os

import ml_collections

from ferjax import config as fc

ARGS = dict(model='vgg16', loss='mse', nhot=8)
# The paper's four models. vgg16 is the baseline classifier on a VGG-16 backbone; the others
# are methods of their own (ferjax.methods), taken when they are registered.
PAPER_MODELS = ('vgg16', 'ran', 'dan', 'mten')


def available_models() -> tuple[str, ...]:
  from ferjax import methods
  return ('vgg16',) + tuple(m for m in PAPER_MODELS[1:] if m in methods.REGISTRY)


def paper_config(c: ml_collections.ConfigDict, a: dict) -> ml_collections.ConfigDict:
  """Puts the paper's labels, split, optimiser and the cell's model, loss and N on `c`.

  Cleaned distributions (Un + NF > 3 dropped), the pooled split into ordinary and complex test
  sets, soft targets with `loss`, N-hot training targets (N = 8 is the distribution itself),
  Adam 1e-4 for 40 epochs (DAN 60), 48 px.
  """
  c.data.label_mode = 'distribution'
  c.data.split = 'paper'
  c.data.eval_sets = 'ordinary,complex'
  c.data.nhot = int(a['nhot'])
  c.loss.target = 'soft'
  c.loss.name = a['loss']
  c.data.image_size = 48
  c.optim.update(dict(name='adam', lr=1e-4, weight_decay=0.0, schedule='constant',
                      warmup_epochs=0.0))
  c.train.epochs = 40.0
  c.train.eval_every = -1
  set_model(c, a['model'])
  return c


def set_model(c: ml_collections.ConfigDict, name: str) -> None:
  known = available_models()
  if name not in known:
    raise ValueError(f'model {name!r} is not available; this ferjax has {", ".join(known)} '
                     f'(the paper compares {", ".join(PAPER_MODELS)})')
  if name == 'vgg16':
    c.method = 'baseline'
    c.model.backbone = 'vgg16'
    c.model.va_head = False
    c.model.width = 64              # VGG-16's own widths; smaller values narrow every layer
  elif name == 'dan':
    # DAN's own network, losses and online augmentation (the AffectNet recipe's), with the
    # paper's optimiser and the plain shuffled order.
    fc.sibling(__file__, '_dan').paper_config(c, 'affectnet', code_centres=False)
    c.optim.update(dict(name='adam', lr=1e-4, weight_decay=0.0, schedule='constant',
                        warmup_epochs=0.0))
    c.data.sampler = 'shuffle'
    c.data.image_size = 48
    c.train.epochs = 60.0
  else:                             # a method of its own, with its set-up file when it has one
    c.method = name
    setup = os.path.join(os.path.dirname(os.path.abspath(__file__)), f'_{name}.py')
    if os.path.exists(setup):
      fc.sibling(__file__, f'_{name}').paper_config(c)
    c.data.image_size = 48
