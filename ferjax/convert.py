"""Checkpoint conversion between PyTorch and ferjax, and export bundles.

  python -m ferjax.convert --from ferjax --in runs/demo --out exports/demo [--to onnx]
  python -m ferjax.convert --arch resnet18 --from torch --in resnet18.pth --out r18.msgpack \
      [--ignore fc.] [--override num_classes=7]
  python -m ferjax.convert --arch resnet18 --from ferjax --in runs/demo --prefix backbone \
      --out r18.safetensors
  python -m ferjax.convert --from ferjax --in runs/cage_c --out cage.safetensors   # whole CAGE

A run directory exported to a folder (no file extension) becomes a bundle: the whole model,
head included, as model.safetensors under the PyTorch module's key names, ferjax.json (class
names in order, input size, mean/std, colour order, method, outputs), the run's config, and with
--to onnx model.onnx; every shape comes from the run's saved config. Load it with
`ferjax.interop.torch.load_bundle(DIR)`, or predict with `python -m ferjax.predict --model DIR`.

--from torch reads .safetensors, or .pt/.pth/.bin with torch.load(weights_only=True), and writes
the ferjax variables as a Flax msgpack. --from ferjax reads such a msgpack or a run directory
(the latest or --step checkpoint, loaded through ferjax.inference: no training data needed;
--prefix picks the sub-module holding the backbone, e.g. `backbone` in the baseline method) and
writes a state_dict for the PyTorch reference model as .safetensors (no torch needed) or
.pt/.pth. A CAGE or DAN run without --arch exports the whole official model, head included.
Keys are matched strictly in both directions; see ferjax.interop.torch.
"""
from __future__ import annotations

import ast
import os
import sys

from absl import flags
import numpy as np

from ferjax import cli as cli_lib, runtime
from ferjax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string('arch', '', 'Architecture (e.g. resnet18, clip_vit_b32); a CAGE or DAN run '
                    'without it exports the whole model.')
flags.DEFINE_enum('from', None, ['torch', 'ferjax'], 'Format of --in.', required=True)
flags.DEFINE_string('in', None, 'Input file (or a ferjax run directory).', required=True)
flags.DEFINE_string('out', None, 'Output file.', required=True)
flags.DEFINE_multi_string('override', [], 'Model overrides k=v (e.g. num_classes=7).')
flags.DEFINE_list('ignore', [], 'torch key prefixes to drop on purpose (e.g. fc.).')
flags.DEFINE_string('prefix', '', 'ferjax run: the sub-module path of the backbone, '
                    '"/"-separated (e.g. backbone).')
flags.DEFINE_string('step', None, "ferjax run: checkpoint step, or 'best'; default the latest.")
flags.DEFINE_enum('to', 'torch', ['torch', 'onnx'], 'Bundle export: onnx adds model.onnx.')
flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')


def parse_overrides(items) -> dict:
  out = {}
  for item in items:
    if '=' not in item:
      raise UserError(f'--override {item!r}: expected key=value')
    k, v = item.split('=', 1)
    try:
      out[k.strip()] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      out[k.strip()] = v
  return out


def _subtree(tree, prefix: str, what: str):
  for part in [p for p in prefix.split('/') if p]:
    if part not in tree:
      raise UserError(f'--prefix {prefix!r}: no {part!r} in the {what}; it has '
                           f'{sorted(tree)}')
    tree = tree[part]
  return tree


def load_run(path: str, step: int | None):
  """(config, host variables) of a run's checkpoint."""
  from ferjax import inference
  predictor = inference.load(path, step)
  return predictor.cfg, predictor.host_variables()


def read_ferjax(path: str, prefix: str, step: int | None) -> dict:
  """Variables {'params', 'batch_stats'} from a msgpack file or a run directory."""
  import flax.serialization
  if os.path.isdir(path):
    _, tree = load_run(path, step)
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


def whole_model_state_dict(path: str, step: int | None) -> dict[str, np.ndarray]:
  """A run's whole model with the official module names (CAGE: torchvision MaxViT-T /
  EfficientNetV2-S with the official head; DAN: yaoing/DAN's module names)."""
  cfg, variables = load_run(path, step)
  if cfg.method == 'cage':
    from ferjax.interop import cage
    return cage.to_numpy_state_dict(cfg, variables)
  if cfg.method == 'dan':
    from ferjax.interop import dan
    return dan.to_numpy_state_dict(variables, **dan.config_dims(cfg))
  raise UserError(f'{path} is a {cfg.method!r} run: export a bundle (--out a folder name), or '
                  'give --arch (and --prefix) to export its backbone; a whole-model state_dict '
                  'file exists for CAGE and DAN runs')


def _check_out(path: str) -> None:
  if os.path.exists(path) and not FLAGS.overwrite:
    raise UserError(f'--out {path} exists; pass --overwrite to replace it')


def _write_atomic(path: str, write) -> None:
  """write(tmp_path), then the finished file replaces `path`: a failure leaves no partial file."""
  tmp = f'{path}.tmp-{os.getpid()}{os.path.splitext(path)[1]}'
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_torch(sd: dict[str, np.ndarray], path: str) -> None:
  if path.endswith('.safetensors'):
    from safetensors.numpy import save_file
    _write_atomic(path, lambda p: save_file(
        {k: np.ascontiguousarray(v) for k, v in sd.items()}, p))
  elif path.endswith(('.pt', '.pth', '.bin')):
    import torch
    _write_atomic(path, lambda p: torch.save(
        {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, p))
  else:
    raise UserError(f'--out {path!r}: use .safetensors, .pt, .pth or .bin (or a folder name '
                    'for a bundle)')


def export_bundle(src: str, dst: str) -> str:
  from ferjax import inference
  from ferjax.interop import bundle
  predictor = inference.load(src, cli_lib.parse_step(FLAGS.step))
  meta = bundle.write(predictor.cfg, predictor.host_variables(), dst, source=src,
                      step=predictor.step, overwrite=FLAGS.overwrite, onnx=FLAGS.to == 'onnx')
  files = [bundle.WEIGHTS, bundle.META, bundle.CONFIG] + (
      [bundle.ONNX] if FLAGS.to == 'onnx' else [])
  return (f'{meta["method"]} run {src} (step {predictor.step}) -> bundle {dst}: '
          f'{", ".join(files)}; {len(meta["class_names"])} classes '
          f'{",".join(meta["class_names"])}')


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  runtime.setup()
  from ferjax.interop import torch as it
  overrides = parse_overrides(FLAGS.override)
  src, dst = FLAGS['in'].value, FLAGS.out
  _check_out(dst)
  bundle_out = not os.path.splitext(dst.rstrip('/'))[1]
  if FLAGS.to == 'onnx' and not bundle_out:
    raise UserError('--to onnx writes a bundle: give --out a folder name')
  if bundle_out and FLAGS['from'].value == 'ferjax' and not FLAGS.arch:
    if not os.path.isdir(src):
      raise UserError(f'--in {src!r}: a bundle is exported from a run directory')
    print(export_bundle(src, dst), file=sys.stderr)
    return 0
  step = cli_lib.parse_step(FLAGS.step)
  if FLAGS['from'].value == 'torch':
    import flax.serialization
    if not FLAGS.arch:
      raise UserError('--from torch needs --arch')
    if not dst.endswith('.msgpack'):
      raise UserError(f'--out {dst!r}: ferjax variables are written as .msgpack')
    variables = it.from_torch(FLAGS.arch, it.load_state_dict(src), ignore=FLAGS.ignore,
                              **overrides)
    payload = flax.serialization.msgpack_serialize(variables)

    def write(path):
      with open(path, 'wb') as f:
        f.write(payload)
    _write_atomic(dst, write)
    n = sum(int(np.size(v)) for c in variables.values() for v in _flat(c))
  elif not FLAGS.arch:
    if not os.path.isdir(src):
      raise UserError(f'--in {src!r}: without --arch, --in must be a run directory')
    sd = whole_model_state_dict(src, step)
    write_torch(sd, dst)
    n = sum(int(np.size(v)) for v in sd.values())
  else:
    sd = it.to_numpy_state_dict(FLAGS.arch, read_ferjax(src, FLAGS.prefix, step),
                                **overrides)
    write_torch(sd, dst)
    n = sum(int(np.size(v)) for v in sd.values())
  print(f'{FLAGS.arch or "whole model"}: {src} -> {dst} ({n:,} values)', file=sys.stderr)


def _flat(tree):
  for v in tree.values():
    if isinstance(v, dict):
      yield from _flat(v)
    else:
      yield v


def cli() -> None:
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
