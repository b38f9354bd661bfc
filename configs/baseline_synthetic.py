"""Baseline ResNet-18 classifier (+ valence/arousal head) on the synthetic face benchmark.

Launch (full size, for an accelerator):
  python -m ferjax.train --config configs/baseline_synthetic.py --workdir runs/baseline
The README demo (2 CPU cores, a few minutes): a ResNet-18 at a quarter of its width on 64 px,
trained on the `lab` domain:
  python -m ferjax.train --config configs/baseline_synthetic.py:cpu --workdir runs/demo
Arguments (`FILE:k=v,...`): cpu, smoke, domain=<lab|wild|cartoon|lowq|occluded>, epochs=N,
examples=N (training set size; `cpu,examples=4096,epochs=3` is the budget of cafe_synthetic:cpu).
Every synthetic domain's test split is evaluated, so the table shows the domain gap.
"""
from ferjax import config as fc


def get_config(arg=None):
  a = fc.parse_arg(arg, dict(cpu=False, smoke=False, domain='', epochs=None,
                                           examples=None))
  # The CPU demo trains on the posed `lab` domain (CK+-like), which a quarter-width ResNet-18
  # learns to >= 80% in minutes; the full config trains on `wild` (RAF-DB-like).
  a['domain'] = a['domain'] or ('lab' if a['cpu'] else 'wild')
  if a['domain'] not in fc.SYNTHETIC_DOMAINS:
    raise ValueError(f"domain={a['domain']!r}; the synthetic domains are {fc.SYNTHETIC_DOMAINS}")
  c = fc.base_config()
  c.data.train = f"synthetic:{a['domain']}:train"
  c.data.eval_sets = ','.join(f'synthetic:{d}:test' for d in fc.SYNTHETIC_DOMAINS)
  c.data.train_examples = 50000
  c.data.eval_examples = 2000
  c.train.epochs = 30.0
  if a['cpu']:
    c.model.width = 16
    c.data.image_size = 64
    c.data.train_examples = 16000
    c.data.eval_examples = 1000
    c.batch_size = 64
    c.train.epochs = 4.0
    c.optim.lr = 2e-3
    c.optim.warmup_epochs = 0.25
    c.train.ckpt_every = 250
    c.train.eval_every = -1  # the domain table once, at the end
  if a['smoke']:
    fc.shrink_for_smoke(c)
  # Explicit arguments last, so that `smoke,epochs=N` keeps N.
  if a['epochs'] is not None:
    c.train.epochs = float(a['epochs'])
  if a['examples'] is not None:     # e.g. CAFE's cpu budget: examples=4096,epochs=3
    c.data.train_examples = int(a['examples'])
  return fc.finalize(c)
