"""Export bundles: a trained model as a folder that PyTorch and ONNX Runtime load as it is.

  BUNDLE_DIR/model.safetensors   the whole model, head included, under PyTorch key names
  BUNDLE_DIR/ferjax.json         what the weights are: the PyTorch module they load into
                                 (third_party/torch_reference/bundle.py) and its sizes, the class
                                 names in order, the input (size, colour order, scaling, mean,
                                 std), the method, and each named output and where it comes from
  BUNDLE_DIR/config.json         the run's config, so ferjax rebuilds the model from the bundle
  BUNDLE_DIR/model.onnx          with --to onnx: the same module through torch.onnx

Both directions are strict: `state_dict(cfg, variables)` names every ferjax variable in the
PyTorch module, `variables(cfg, state_dict)` uses every key once. What each method's module is:
see the torch side's docstring.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import jax
import numpy as np

from ferjax import labels
from ferjax.interop import torch as it

FORMAT = 'ferjax-bundle'
VERSION = 1
WEIGHTS, META, CONFIG, ONNX = 'model.safetensors', 'ferjax.json', 'config.json', 'model.onnx'
BASELINE_DIMS = ('width', 'stage_sizes')   # the ResNet knobs the baseline passes its backbone


class BundleError(it.ConversionError):
  pass


def _host(tree):
  return jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float32), dict(tree))


def _baseline_dims(cfg) -> dict:
  m = cfg.model
  if m.backbone.startswith('resnet') and m.backbone != 'resnet50_vggface2':
    return {'width': int(m.width), 'stage_sizes': [int(s) for s in m.stage_sizes]}
  return {}


def _shape(cfg) -> tuple[int, int, int, int]:
  s = int(cfg.data.image_size)
  return (1, s, s, 3)


def _linear_to_torch(prefix: str, leaves: Mapping) -> dict[str, np.ndarray]:
  out = {f'{prefix}.weight': np.ascontiguousarray(np.asarray(leaves['kernel']).T)}
  if 'bias' in leaves:
    out[f'{prefix}.bias'] = np.asarray(leaves['bias'])
  return out


def _output(name, index=None, columns=None, activation='none') -> dict:
  return {'name': name, 'index': index, 'columns': columns, 'activation': activation}


def torch_spec(cfg) -> dict:
  """The bundle's `torch` entry: module, sizes, and the named outputs it gives."""
  method, names = cfg.method, labels.resolve(cfg)
  c = len(names)
  if method == 'baseline':
    va = bool(cfg.model.va_head)
    kwargs = dict(arch=cfg.model.backbone, num_classes=c, va_head=va, **_baseline_dims(cfg))
    outs = [_output('logits', 0 if va else None), _output('probs', 0 if va else None,
                                                           activation='softmax')]
    if va:
      outs.append(_output('va', 1))
    return {'module': 'classifier', 'kwargs': kwargs, 'outputs': outs}
  if method == 'cage':
    from ferjax.methods import cage
    num_cls, num_reg, multilabel = cage.head_layout(cfg)
    kwargs = dict(arch=cfg.model.backbone, outputs=num_cls + num_reg,
                  image_size=int(cfg.data.image_size),
                  va_dropout=bool(cfg.cage.version == 'va' and cfg.cage.head_dropout),
                  maxvit={k: list(v) if isinstance(v, (list, tuple)) else v
                          for k, v in dict(cfg.cage.maxvit).items()})
    outs = []
    if num_cls:
      outs.append(_output('logits', columns=[0, num_cls]))
      outs.append(_output('multilabel' if multilabel else 'probs', columns=[0, num_cls],
                          activation='sigmoid' if multilabel else 'softmax'))
    if num_reg:
      outs.append(_output('va' if num_reg == 2 else 'vad', columns=[num_cls, num_cls + num_reg]))
    return {'module': 'cage', 'kwargs': kwargs, 'outputs': outs}
  if method == 'dan':
    from ferjax.interop import dan
    d = dan.config_dims(cfg)
    if tuple(d['stage_sizes']) != (2, 2, 2, 2):
      raise BundleError(f'the official DAN has a full ResNet-18, not stage_sizes '
                        f'{d["stage_sizes"]}')
    kwargs = dict(num_class=d['num_classes'], num_head=d['num_heads'], width=d['width'],
                  hidden=d['hidden'])
    return {'module': 'dan', 'kwargs': kwargs,
            'outputs': [_output('logits', 0), _output('probs', 0, activation='softmax')]}
  if method == 'cafe':
    cc, m = cfg.cafe, cfg.model
    if cc.features != 'cached' or not cc.use_mask or tuple(m.stage_sizes) != (2, 2, 2, 2):
      raise BundleError('a CAFE bundle holds the official Model (a full ResNet-18 mask net '
                        'and fc over cached CLIP features); this run is not that model '
                        f'(features={cc.features}, use_mask={cc.use_mask})')
    kwargs = dict(num_classes=c, width=int(m.width), sigmoid=bool(cc.sigmoid))
    return {'module': 'cafe', 'kwargs': kwargs,
            'outputs': [_output('logits'), _output('probs', activation='softmax')],
            'extra_inputs': {'features': dict(cc.clip_overrides).get('projection_dim', 512)}}
  if method == 'ran':
    from ferjax.interop import ran
    from ferjax.methods import ran as ran_method
    d = ran.config_dims(cfg)
    if len(d['stage_sizes']) != 4:
      raise BundleError(f'the authors\' RAN has a four-stage ResNet, not stage_sizes '
                        f'{tuple(d["stage_sizes"])}')
    crops = ran_method.options(cfg, 'ran', ran_method.DEFAULTS)['crops']
    kwargs = dict(num_classes=d['num_classes'], width=int(d['width']),
                  layers=[int(n) for n in d['stage_sizes']],
                  crops=[[float(f) for f in b] for b in crops])
    return {'module': 'ran', 'kwargs': kwargs,
            'outputs': [_output('logits', 0), _output('probs', 0, activation='softmax')]}
  if method == 'mten':
    from ferjax.methods import mten
    kwargs = dict(arch=cfg.model.backbone, num_classes=c)
    outs = [_output('logits', columns=[0, c]), _output('probs', columns=[0, c],
                                                        activation='softmax')]
    if mten.options(cfg, 'mten', mten.DEFAULTS)['va_weight']:
      outs.append(_output('va', columns=[c, c + 2]))
    return {'module': 'mten', 'kwargs': kwargs, 'outputs': outs}
  if method == 'grefel':
    from ferjax.interop import grefel
    # The module returns (log p, p), p the distribution ferjax predicts with (L, or l when
    # grefel.eval_correction is off), as the method's predict step.
    return {'module': 'grefel', 'kwargs': grefel.torch_kwargs(cfg),
            'outputs': [_output('logits', 0), _output('probs', 1)]}
  if method == 'mtl':
    from ferjax.interop import mtl
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in mtl.config_dims(cfg).items()}
    return {'module': 'mtl', 'kwargs': kwargs,
            'outputs': [_output('logits', 0), _output('probs', 0, activation='softmax'),
                        _output('landmarks', 1)]}
  raise BundleError(f'no PyTorch bundle for method {method!r} yet (baseline, cage, dan, cafe, '
                    'ran, mten, grefel and mtl export)')


def state_dict(cfg, variables: Mapping) -> dict[str, np.ndarray]:
  """ferjax variables -> the bundle module's state_dict (numpy)."""
  params = _host(variables['params'])
  stats = _host(variables.get('batch_stats') or {})
  if cfg.method == 'baseline':
    sub = {'params': params['backbone']}
    if stats.get('backbone'):
      sub['batch_stats'] = stats['backbone']
    sd = {f'backbone.{k}': v for k, v in it.to_numpy_state_dict(
        cfg.model.backbone, sub, input_shape=_shape(cfg), **_baseline_dims(cfg)).items()}
    sd.update(_linear_to_torch('fc', params['fc']))
    if 'va_fc' in params:
      sd.update(_linear_to_torch('va_fc', params['va_fc']))
    return sd
  if cfg.method == 'cage':
    from ferjax.interop import cage
    return cage.to_numpy_state_dict(cfg, {'params': params, 'batch_stats': stats})
  if cfg.method == 'dan':
    from ferjax.interop import dan
    return dan.to_numpy_state_dict({'params': params, 'batch_stats': stats}, **dan.config_dims(cfg))
  if cfg.method == 'cafe':
    return it.to_numpy_state_dict('cafe', {'params': params, 'batch_stats': stats},
                                  num_classes=len(labels.resolve(cfg)), width=int(cfg.model.width))
  if cfg.method in ('ran', 'mten'):    # registered whole-model architectures
    return it.to_numpy_state_dict(cfg.method, {'params': params, 'batch_stats': stats},
                                  input_shape=_shape(cfg), **_arch_dims(cfg))
  if cfg.method == 'grefel':
    from ferjax.interop import grefel
    return grefel.to_numpy_state_dict({'params': params, 'batch_stats': stats}, cfg)
  if cfg.method == 'mtl':
    from ferjax.interop import mtl
    return mtl.to_numpy_state_dict({'params': params, 'batch_stats': stats},
                                   **mtl.config_dims(cfg))
  raise BundleError(f'no PyTorch bundle for method {cfg.method!r}')


def _arch_dims(cfg) -> dict:
  from ferjax.interop import mten, ran
  return (ran if cfg.method == 'ran' else mten).config_dims(cfg)


def variables(cfg, sd: Mapping[str, Any]) -> dict:
  """The bundle module's state_dict -> ferjax variables (strict)."""
  sd = {k: it.to_numpy(v) for k, v in sd.items()}
  if cfg.method == 'baseline':
    back = it.from_torch(cfg.model.backbone,
                         {k[len('backbone.'):]: v for k, v in sd.items()
                          if k.startswith('backbone.')},
                         input_shape=_shape(cfg), **_baseline_dims(cfg))
    params = {'backbone': back['params']}
    heads = {k for k in sd if not k.startswith('backbone.')}
    want = {'fc.weight', 'fc.bias'} | ({'va_fc.weight', 'va_fc.bias'} if cfg.model.va_head
                                       else set())
    if heads != want:
      raise BundleError(f'head keys {sorted(heads)}; this config expects {sorted(want)}')
    for name in ('fc', 'va_fc'):
      if f'{name}.weight' in sd:
        params[name] = {'kernel': np.ascontiguousarray(sd[f'{name}.weight'].T),
                        'bias': sd[f'{name}.bias']}
    out = {'params': params}
    if back.get('batch_stats'):
      out['batch_stats'] = {'backbone': back['batch_stats']}
    return out
  if cfg.method == 'cage':
    from ferjax.interop import cage
    return cage.from_torch(cfg, sd)
  if cfg.method == 'dan':
    from ferjax.interop import dan
    # The affinity loss's centres are training state, not in the official model: fresh ones.
    return dan.from_torch(sd, seed=cfg.seed, **dan.config_dims(cfg))
  if cfg.method == 'cafe':
    return it.from_torch('cafe', sd, num_classes=len(labels.resolve(cfg)),
                         width=int(cfg.model.width))
  if cfg.method in ('ran', 'mten'):
    return it.from_torch(cfg.method, sd, input_shape=_shape(cfg), **_arch_dims(cfg))
  if cfg.method == 'grefel':
    from ferjax.interop import grefel
    return grefel.from_torch(sd, cfg)
  if cfg.method == 'mtl':
    from ferjax.interop import mtl
    # The affinity loss's centres are training state, not in the reference model: fresh ones.
    return mtl.from_torch(sd, seed=cfg.seed, **mtl.config_dims(cfg))
  raise BundleError(f'no PyTorch bundle for method {cfg.method!r}')


def metadata(cfg, source: str = '', step: int | None = None) -> dict:
  from importlib import metadata as importlib_metadata
  a = cfg.augment
  return {
      'format': FORMAT, 'version': VERSION, 'ferjax': importlib_metadata.version('ferjax'),
      'method': cfg.method, 'backbone': cfg.model.backbone,
      'class_names': list(labels.resolve(cfg)),
      'input': {'size': int(cfg.data.image_size), 'channels': 'RGB', 'layout': 'NCHW',
                'scale': 1 / 255, 'mean': [float(v) for v in a.mean],
                'std': [float(v) for v in a.std],
                'face_crop': 'a square around the face box, grown by the box margin the '
                             'training data was cropped with, resized to size x size'},
      'torch': torch_spec(cfg),
      'source': {'run': os.path.abspath(source) if source else '', 'step': step},
  }


def _replace_dir(tmp: str, out: str, overwrite: bool) -> None:
  if os.path.exists(out):
    if not overwrite:
      raise BundleError(f'{out} exists; pass --overwrite to replace it')
    # An empty, unique folder to move the old bundle onto (a rename may replace an empty one).
    old = tempfile.mkdtemp(prefix='.old-bundle-', dir=os.path.dirname(out))
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, out)


def write(cfg, host_variables: Mapping, out: str, *, source: str = '', step=None,
          overwrite: bool = False, onnx: bool = False) -> dict:
  """Writes a bundle; everything is written in a temporary folder first, so a failed export
  leaves nothing at `out`. Returns its metadata."""
  from safetensors.numpy import save_file
  out = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(out) and not overwrite:
    raise BundleError(f'{out} exists; pass --overwrite to replace it')
  meta = metadata(cfg, source, step)
  sd = state_dict(cfg, host_variables)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.bundle-', dir=os.path.dirname(out))
  try:
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, os.path.join(tmp, WEIGHTS))
    with open(os.path.join(tmp, META), 'w') as f:
      json.dump(meta, f, indent=2)
    with open(os.path.join(tmp, CONFIG), 'w') as f:
      f.write(cfg.to_json_best_effort(indent=2))
    if onnx:
      from ferjax.interop import onnx as onnx_lib
      onnx_lib.export(tmp)
    _replace_dir(tmp, out, overwrite)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def is_bundle(path: str) -> bool:
  return os.path.isfile(os.path.join(path, META))


def read_meta(path: str) -> dict:
  if not is_bundle(path):
    raise BundleError(f'{path} is not a ferjax bundle (no {META})')
  with open(os.path.join(path, META)) as f:
    meta = json.load(f)
  if meta.get('format') != FORMAT or meta.get('version') != VERSION:
    raise BundleError(f'{path}/{META}: format {meta.get("format")!r} version '
                      f'{meta.get("version")!r}; this ferjax reads {FORMAT!r} {VERSION}')
  return meta


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  return load_file(os.path.join(path, WEIGHTS))


def read_config(path: str):
  """The run's config saved in the bundle, reconciled with this ferjax's defaults."""
  from ferjax import config as config_lib
  with open(os.path.join(path, CONFIG)) as f:
    return config_lib.reconcile(json.load(f))


def preprocess(meta: dict, images) -> np.ndarray:
  """uint8 (B, S, S, 3) RGB face crops -> the normalised float32 (B, 3, S, S) model input."""
  inp = meta['input']
  s = int(inp['size'])
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1:] != (s, s, 3):
    raise ValueError(f'expected (B, {s}, {s}, 3) RGB crops, got {images.shape}')
  x = images.astype(np.float32) * np.float32(inp['scale'])
  x = (x - np.asarray(inp['mean'], np.float32)) / np.asarray(inp['std'], np.float32)
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
