"""CAFE's frozen CLIP image features: the CLIP module, its weights, its input, the disk cache.

CAFE (paper 000, Sec. 3) multiplies fixed CLIP features F (B, 512) by a learned sigmoid mask.
F never changes during training, so by default ('cached' mode) it is computed once per dataset
and stored on disk; the pipeline then hands `batch['features']` to the model by example index.

What the cache holds: the features of the UN-augmented image (the dataset's uint8 image as the
pipeline decodes it, resized to CLIP's input size). The official code feeds CLIP the augmented
tensor (flip, RandomErasing, Gaussian noise), so with augmentation on, the
cached mode differs from it: the mask net sees the augmented image, CLIP the clean one. The
'exact' mode (cafe.features='exact') runs CLIP inside the step on the augmented input instead.

Cache key (a stale cache is never used; any mismatch recomputes): a hash of the CLIP weights,
the CLIP architecture overrides, the normalisation ('clip' or 'imagenet'), the data image size
and CLIP's input size, BGR order, the dataset spec, its number of examples (and the requested
number, for the synthetic sets), and the seed. Files: `<cache_dir>/<key>/features.npy`
(float32 [N, D], row i = example at position i of the source) and `manifest.json` (the key).
cache_dir: config `cafe.cache_dir`, else $FERJAX_FEATURE_CACHE, else ~/.cache/ferjax/features.

Weights: `cafe.clip_weights` is a path to a transformers `flax_model.msgpack` (or its folder) or
a PyTorch state_dict of the HF CLIP vision tower (ferjax.interop.clip names), or 'random': a
seeded random init (`cafe.clip_seed`) that is NOT the real CLIP, for tests and the synthetic
benchmark only.
"""
from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.models import clip as clip_lib

CACHE_VERSION = 1
_PARAMS_MEMO: dict = {}


def clip_module(cfg):
  return clip_lib.clip_vit_b32(**dict(cfg.cafe.clip_overrides))


def load_clip_params(cfg) -> dict:
  """CLIP image-tower params (numpy) from `cafe.clip_weights`; memoised per process."""
  c = cfg.cafe
  memo_key = (c.clip_weights, int(c.clip_seed), json.dumps(dict(c.clip_overrides), sort_keys=True))
  if memo_key in _PARAMS_MEMO:
    return _PARAMS_MEMO[memo_key]
  module = clip_module(cfg)
  overrides = dict(c.clip_overrides)
  if c.clip_weights == 'random':
    x = jnp.zeros((1, module.image_size, module.image_size, 3), jnp.float32)
    params = jax.tree.map(np.asarray,
                          module.init(jax.random.key(int(c.clip_seed)), x)['params'])
  elif not c.clip_weights:
    raise ValueError("config cafe.clip_weights is empty: give a CLIP checkpoint path (HF "
                     "flax_model.msgpack or a torch state_dict), or 'random' (NOT the real CLIP)")
  elif c.clip_weights.endswith('.msgpack') or os.path.isdir(c.clip_weights):
    from ferjax.interop.clip import load_hf_flax
    params = load_hf_flax(c.clip_weights, **overrides)['params']
  else:
    from ferjax.interop import torch as it
    params = it.from_torch('clip_vit_b32', it.load_state_dict(c.clip_weights),
                           **overrides)['params']
  _PARAMS_MEMO[memo_key] = params
  return params


def weights_hash(params) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes (order-independent of dict order)."""
  h = hashlib.sha256()
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  for path, leaf in sorted(flat, key=lambda pl: jax.tree_util.keystr(pl[0])):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f'{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def clip_input(images01, cfg):
  """Float images in [0, 1] (B, S, S, 3) -> CLIP's normalised input at CLIP's size.

  clip_norm='imagenet' is the official code (CLIP gets the ResNet's ImageNet-normalised
  tensor); 'clip' uses CLIP's own statistics (the paper's intent; default).
  """
  size = clip_module(cfg).image_size
  if images01.shape[1] != size or images01.shape[2] != size:
    images01 = jax.image.resize(images01, (images01.shape[0], size, size, 3), 'bilinear')
  return clip_lib.normalize(images01, cfg.cafe.clip_norm)


def cache_key(cfg, spec: str, num_examples: int, seed: int, bgr: bool, whash: str) -> dict:
  c = cfg.cafe
  return {'version': CACHE_VERSION, 'weights_sha256': whash,
          'clip_overrides': dict(sorted(dict(c.clip_overrides).items())),
          'clip_norm': c.clip_norm, 'image_size': int(cfg.data.image_size),
          'clip_dtype': c.get('clip_dtype', 'float32'),
          'clip_image_size': int(clip_module(cfg).image_size), 'bgr': bool(bgr), 'spec': spec,
          'num_examples': int(num_examples), 'requested_examples': _requested(cfg, spec),
          'seed': int(seed),
          # data.append puts flipped / rotated copies behind the training set's own examples
          'appended': bool(cfg.data.get('append', False)) and spec == cfg.data.train}


def _requested(cfg, spec: str) -> int:
  return int(cfg.data.train_examples if spec == cfg.data.train else cfg.data.eval_examples)


def cache_dir(cfg) -> str:
  d = cfg.cafe.cache_dir or os.environ.get('FERJAX_FEATURE_CACHE') or '~/.cache/ferjax/features'
  return os.path.abspath(os.path.expanduser(d))


def half_precision(cfg) -> bool:
  """cafe.clip_dtype: 'float32' (the paper), or 'float16' as the official script runs CLIP on
  CUDA (weights and activations in half precision, so its features are float16 values)."""
  dtype = cfg.cafe.get('clip_dtype', 'float32')
  if dtype not in ('float32', 'float16'):
    raise ValueError(f"cafe.clip_dtype={dtype!r}; expected 'float32' or 'float16'")
  return dtype == 'float16'


def compute(cfg, source, params, bgr: bool, batch: int = 64) -> np.ndarray:
  """CLIP features of every example of `source`, in source order: float32 (N, D)."""
  module = clip_module(cfg)
  if half_precision(cfg):
    params = jax.tree.map(lambda a: np.asarray(a, np.float16), params)

    def apply(p, x):
      out = module.apply({'params': p}, clip_input(x, cfg).astype(jnp.float16))
      return out.astype(jnp.float16).astype(jnp.float32)
  else:
    def apply(p, x):
      return module.apply({'params': p}, clip_input(x, cfg))
  fn = jax.jit(apply)
  out = []
  for lo in range(0, len(source), batch):
    imgs = np.stack([np.asarray(source[i]['image'], np.uint8)
                     for i in range(lo, min(lo + batch, len(source)))])
    if bgr:
      imgs = imgs[..., ::-1]
    n = len(imgs)
    if n < batch:  # pad to one compiled shape
      imgs = np.concatenate([imgs, np.zeros((batch - n,) + imgs.shape[1:], np.uint8)])
    out.append(np.asarray(fn(params, imgs.astype(np.float32) / 255.0))[:n])
  return np.concatenate(out).astype(np.float32)


def features_for(cfg, spec: str, source, seed: int, bgr: bool = False):
  """(features (N, D), directory, computed: bool). Reuses the cache only on an exact key match."""
  params = load_clip_params(cfg)
  key = cache_key(cfg, spec, len(source), seed, bgr, weights_hash(params))
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
  d = os.path.join(cache_dir(cfg), digest)
  manifest, npy = os.path.join(d, 'manifest.json'), os.path.join(d, 'features.npy')
  if os.path.exists(manifest) and os.path.exists(npy):
    with open(manifest) as f:
      saved = json.load(f)
    feats = np.load(npy, mmap_mode='r')
    if saved.get('key') == key and feats.shape == (len(source), saved.get('dim')):
      return np.asarray(feats, np.float32), d, False
  feats = compute(cfg, source, params, bgr)
  os.makedirs(d, exist_ok=True)
  # Write-then-rename so that a concurrent reader (another process) never sees half a file.
  tmp = f'{npy}.{os.getpid()}.tmp.npy'
  np.save(tmp, feats)
  os.replace(tmp, npy)
  tmp = f'{manifest}.{os.getpid()}.tmp'
  with open(tmp, 'w') as f:
    json.dump({'key': key, 'dim': int(feats.shape[1]), 'shape': list(feats.shape)}, f, indent=1)
  os.replace(tmp, manifest)
  return feats, d, True
