"""Checkpoint conversion between PyTorch and ferjax.

  python -m ferjax.convert --arch resnet18 --from torch --in resnet18.pth --out r18.msgpack \
      [--ignore fc.] [--override num_classes=7]
  python -m ferjax.convert --arch resnet18 --from ferjax --in runs/demo --prefix backbone \
      --out r18.safetensors

--from torch reads .safetensors, or .pt/.pth/.bin with torch.load(weights_only=True), and writes
the ferjax variables as a Flax msgpack. --from ferjax reads such a msgpack or a run directory
(the latest or --step checkpoint; --prefix picks the sub-module holding the backbone, e.g.
`backbone` in the baseline method) and writes a state_dict for the PyTorch reference model as
.safetensors (no torch needed) or .pt/.pth. Keys are matched strictly in both directions; see
ferjax.interop.torch.
"""
from __future__ import annotations

import ast
import os
import sys

from absl import app, flags
import numpy as np

from ferjax import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string('arch', None, 'Architecture (e.g. resnet18, clip_vit_b32).', required=True)
flags.DEFINE_enum('from', None, ['torch', 'ferjax'], 'Format of --in.', required=True)
flags.DEFINE_string('in', None, 'Input file (or a ferjax run directory).', required=True)
flags.DEFINE_string('out', None, 'Output file.', required=True)
flags.DEFINE_multi_string('override', [], 'Model overrides k=v (e.g. num_classes=7).')
flags.DEFINE_list('ignore', [], 'torch key prefixes to drop on purpose (e.g. fc.).')
flags.DEFINE_string('prefix', '', 'ferjax run: the sub-module path of the backbone, '
                    '"/"-separated (e.g. backbone).')
flags.DEFINE_integer('step', None, 'ferjax run: checkpoint step; default the latest.')


def parse_overrides(items) -> dict:
  out = {}
  for item in items:
    if '=' not in item:
      raise app.UsageError(f'--override {item!r}: expected key=value')
    k, v = item.split('=', 1)
    try:
      out[k.strip()] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      out[k.strip()] = v
  return out


def _subtree(tree, prefix: str, what: str):
  for part in [p for p in prefix.split('/') if p]:
    if part not in tree:
      raise app.UsageError(f'--prefix {prefix!r}: no {part!r} in the {what}; it has '
                           f'{sorted(tree)}')
    tree = tree[part]
  return tree


def read_ferjax(path: str, prefix: str, step: int | None) -> dict:
  """Variables {'params', 'batch_stats'} from a msgpack file or a run directory."""
  import flax.serialization
  if os.path.isdir(path):
    from ferjax import checkpoint, trainer
    mngr = checkpoint.Manager(path, read_only=True)
    cfg = trainer.reconcile_config(mngr.config(step))
    run = trainer.Run(cfg)
    state = run.restore_params(mngr, step if step is not None else mngr.latest_step())
    tree = {'params': state.params, 'batch_stats': state.batch_stats}
  else:
    if not os.path.exists(path):
      raise FileNotFoundError(f'no such file or run directory: {path}')
    with open(path, 'rb') as f:
      tree = flax.serialization.msgpack_restore(f.read())
  out = {}
  for col in ('params', 'batch_stats'):
    if tree.get(col):
      sub = _subtree(tree[col], prefix, col)
      if sub:
        out[col] = sub
  return out


def write_torch(sd: dict[str, np.ndarray], path: str) -> None:
  if path.endswith('.safetensors'):
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, path)
  elif path.endswith(('.pt', '.pth', '.bin')):
    import torch
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, path)
  else:
    raise app.UsageError(f'--out {path!r}: use .safetensors, .pt, .pth or .bin')


def main(argv):
  del argv
  runtime.setup()
  from ferjax.interop import torch as it
  overrides = parse_overrides(FLAGS.override)
  src, dst = FLAGS['in'].value, FLAGS.out
  if FLAGS['from'].value == 'torch':
    import flax.serialization
    if not dst.endswith('.msgpack'):
      raise app.UsageError(f'--out {dst!r}: ferjax variables are written as .msgpack')
    variables = it.from_torch(FLAGS.arch, it.load_state_dict(src), ignore=FLAGS.ignore,
                              **overrides)
    with open(dst, 'wb') as f:
      f.write(flax.serialization.msgpack_serialize(variables))
    n = sum(int(np.size(v)) for c in variables.values() for v in _flat(c))
  else:
    sd = it.to_numpy_state_dict(FLAGS.arch, read_ferjax(src, FLAGS.prefix, FLAGS.step),
                                **overrides)
    write_torch(sd, dst)
    n = sum(int(np.size(v)) for v in sd.values())
  print(f'{FLAGS.arch}: {src} -> {dst} ({n:,} values)', file=sys.stderr)


def _flat(tree):
  for v in tree.values():
    if isinstance(v, dict):
      yield from _flat(v)
    else:
      yield v


if __name__ == '__main__':
  app.run(main)
