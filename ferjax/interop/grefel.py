"""A ferjax GReFEL (ferjax.models.grefel) <-> the PyTorch GReFEL's state_dict
(third_party/torch_reference/grefel.py: POSTER++ names for the encoder, ARBEx names for the head
and the reliability balancing), both ways.

  ferjax                          PyTorch
  image_net/body_N/...            ir_back.body{s}.{j}...   (POSTER++'s per-stage IR-50 split)
  landmark_net/...                face_landback....        (MobileFaceNet's own names)
  xattn{i}/norm                   window{i}.norm
  xattn{i}/attn/{qkv, q, proj}    attn{i}.{qkv, q, proj}, .relative_position_bias_table
  xattn{i}/{gamma1, gamma2}       ffn{i}.{gamma1, gamma2}
  xattn{i}/{norm2, mlp_fc1/2}     ffn{i}.{norm, mlp.fc1, mlp.fc2}
  embed1_0, embed1_1, embed2      embed_q.0, embed_q.1, embed_k.0
  embed3                          embed_v.proj
  cls_token, pos_embed, vit_*     VIT.cls_token, VIT.pos_embed, VIT.blocks.j.*, VIT.norm
  se/fc1, se/fc2                  VIT.se_block.linear1, .linear2
  head/fc{i}, bn{i}, out          classifier.net.N (Linear, ReLU, Dropout/BN in the head's order)
  rb/anchors                      anchors.anchors
  rb/{query,key,value}_proj       self_attn.{Q, K, V}
  rb/in_q, in_k, in_v             self_attn.attn_fn.in_proj_weight / in_proj_bias (stacked q, k, v)
  rb/out_proj                     self_attn.attn_fn.out_proj

The PyTorch side also holds buffers ferjax computes: BatchNorm `num_batches_tracked` (exported
as 0) and each `attn{i}.relative_position_index` (exported; on import checked, not read).
Strict both ways: a missing, unexpected or mis-shaped key is a ConversionError naming it.
Upstream checkpoints hold parameters their forward never uses: drop them with
`ignore=UPSTREAM_UNUSED`.

  kw = torch_kwargs(cfg)                       # third_party...grefel.GReFEL(**kw)
  sd = to_numpy_state_dict(variables, cfg)     # {torch key: np.ndarray}
  variables = from_torch(state_dict, cfg)
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ferjax import labels
from ferjax.interop import irse, mobilefacenet
from ferjax.interop import torch as it
from ferjax.models.window_attention import relative_position_index

# Parameters the POSTER++ / ARBEx modules hold but GReFEL does not use: the ViT's unused
# `patch_embed`, `CON1`, `IRLinear1/2` and per-block Conv1d `conv` (12 blocks cover every depth
# in use), IR-50's `output_layer`, and POSTER++'s class head (`VIT.head`: that name is assumed,
# its vit_model.py was not read).
UPSTREAM_UNUSED = ('VIT.patch_embed.', 'VIT.CON1.', 'VIT.IRLinear1.', 'VIT.IRLinear2.',
                   'VIT.head.', 'ir_back.output_layer.') + tuple(
                       f'VIT.blocks.{j}.conv.' for j in range(12))
_IN_PROJ = {'in_q': 0, 'in_k': 1, 'in_v': 2}
_VIT_BLOCK = {'norm1': 'norm1', 'qkv': 'attn.qkv', 'proj': 'attn.proj', 'norm2': 'norm2',
              'fc1': 'mlp.fc1', 'fc2': 'mlp.fc2'}
_FFN = {'gamma1': 'gamma1', 'gamma2': 'gamma2', 'norm2': 'norm', 'mlp_fc1': 'mlp.fc1',
        'mlp_fc2': 'mlp.fc2'}
_EMBED = {'embed1_0': 'embed_q.0', 'embed1_1': 'embed_q.1', 'embed2': 'embed_k.0',
          'embed3': 'embed_v.proj'}


def torch_kwargs(cfg) -> dict:
  """third_party.torch_reference.grefel.GReFEL's arguments for a GReFEL run (JSON-able)."""
  from ferjax.methods import grefel
  g = cfg.grefel
  hidden, order = grefel.HEADS[g.head]
  return dict(
      num_classes=len(labels.resolve(cfg)), resize=int(g.resize),
      ir_stages=[int(s) for s in g.ir_stages], landmark_blocks=[int(b) for b in g.landmark_blocks],
      landmark_head=bool(g.landmark_head), heads=[int(h) for h in g.heads],
      drop_paths=[float(d) for d in g.drop_paths], xattn_shortcut=str(g.xattn_shortcut),
      xattn_query_proj=bool(g.xattn_query_proj), embed_dim=int(g.embed_dim),
      vit_depth=int(g.vit_depth), vit_heads=int(g.vit_heads), head_hidden=list(hidden),
      head_order=order, head_dropout=float(g.head_dropout), temperature=float(g.temperature),
      rb=str(g.rb), num_anchors=int(g.num_anchors), attn_heads=int(g.attn_heads),
      attn_mode=str(g.attn_mode), delta=float(g.delta), final_mix=str(g.final_mix),
      correction=bool(g.eval_correction))


def name(path: tuple, shape: tuple, kw: Mapping) -> tuple[str, it.Transform, int | None]:
  """A Flax leaf (collection dropped) -> (torch key, transform, slot): slot is the q/k/v row
  block of nn.MultiheadAttention's packed in_proj, else None."""
  top, rest, leaf = path[0], path[1:-1], path[-1]
  tname, tf = (it.default_leaf(leaf, len(shape)) if leaf not in
               ('anchors', 'relative_position_bias_table', 'gamma1', 'gamma2', 'cls_token',
                'pos_embed') else (leaf, it.SAME))
  if top == 'image_net':
    key, tf = irse._name(None, path[1:], shape)
    key = next(iter(irse.to_poster_keys({key: 0}, tuple(kw['ir_stages']) + (3,))))
    return f'ir_back.{key}', tf, None
  if top == 'landmark_net':
    key, tf = mobilefacenet._name(None, path[1:], shape)
    return f'face_landback.{key}', tf, None
  if top in ('last_face_conv', 'conv1', 'conv2', 'conv3') and not rest:
    return f'{top}.{tname}', tf, None
  if top in _EMBED and not rest:
    return f'{_EMBED[top]}.{tname}', tf, None
  if top in ('cls_token', 'pos_embed'):
    return f'VIT.{top}', it.SAME, None
  if top == 'vit_norm':
    return f'VIT.norm.{tname}', tf, None
  if top == 'se' and rest in (('fc1',), ('fc2',)):
    return f'VIT.se_block.linear{rest[0][-1]}.{tname}', tf, None
  m = re.fullmatch(r'vit_block(\d+)', top)
  if m and len(rest) == 1 and rest[0] in _VIT_BLOCK:
    return f'VIT.blocks.{m.group(1)}.{_VIT_BLOCK[rest[0]]}.{tname}', tf, None
  m = re.fullmatch(r'xattn(\d)', top)
  if m:
    i = m.group(1)
    if rest == ('norm',):
      return f'window{i}.norm.{tname}', tf, None
    if not rest and leaf in _FFN:
      return f'ffn{i}.{leaf}', it.SAME, None
    if len(rest) == 1 and rest[0] in _FFN:
      return f'ffn{i}.{_FFN[rest[0]]}.{tname}', tf, None
    if rest == ('attn',) and leaf == 'relative_position_bias_table':
      return f'attn{i}.{leaf}', it.SAME, None
    if len(rest) == 2 and rest[0] == 'attn' and rest[1] in ('qkv', 'q', 'proj'):
      return f'attn{i}.{rest[1]}.{tname}', tf, None
  if top == 'head' and len(rest) == 1:
    n = len(kw['head_hidden'])
    m = re.fullmatch(r'(fc|bn)(\d+)', rest[0])
    if rest[0] == 'out':
      return f'classifier.net.{4 * n}.{tname}', tf, None
    if m:
      j = int(m.group(2))
      bn_at = 3 if kw['head_order'] == 'paper' else 2
      return f'classifier.net.{4 * j + (0 if m.group(1) == "fc" else bn_at)}.{tname}', tf, None
  if top == 'rb':
    if not rest and leaf == 'anchors':
      return 'anchors.anchors', it.SAME, None
    if len(rest) == 1 and rest[0] in ('query_proj', 'key_proj', 'value_proj'):
      return f'self_attn.{rest[0][0].upper()}.{tname}', tf, None
    if len(rest) == 1 and rest[0] in _IN_PROJ:
      return f'self_attn.attn_fn.in_proj_{tname}', tf, _IN_PROJ[rest[0]]
    if rest == ('out_proj',):
      return f'self_attn.attn_fn.out_proj.{tname}', tf, None
  raise it.ConversionError(f'no PyTorch GReFEL name for {"/".join(path)}')


_ABSTRACT: dict = {}


def abstract_variables(cfg) -> dict:
  """The GReFEL variable tree (shapes only) of a run's config."""
  from ferjax.methods import grefel
  s = int(cfg.data.image_size)
  kw = torch_kwargs(cfg)
  key = (repr(sorted(kw.items())), s)
  if key not in _ABSTRACT:
    model = grefel.build_model(cfg, kw['num_classes'])
    _ABSTRACT[key] = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((2, s, s, 3), jnp.float32)))
  return {k: v for k, v in _ABSTRACT[key].items() if k in ('params', 'batch_stats')}


def _names(abstract, kw) -> dict[tuple, tuple[str, it.Transform, int | None]]:
  return {p: name(p[1:], tuple(a.shape), kw) for p, a in it._leaves(abstract).items()}


def _buffers(abstract) -> dict[str, np.ndarray]:
  """Each attn{i}.relative_position_index, from its bias table's size ((2w-1)^2 rows)."""
  out = {}
  for i in (1, 2, 3):
    rows = abstract['params'][f'xattn{i}']['attn']['relative_position_bias_table'].shape[0]
    w = (int(round(np.sqrt(rows))) + 1) // 2
    out[f'attn{i}.relative_position_index'] = relative_position_index(w).astype(np.int64)
  return out


def _fail(what: str, missing, unexpected, bad) -> None:
  if missing or unexpected or bad:
    msg = [f'{what} does not fit this GReFEL:']
    for label, keys in (('missing', missing), ('unexpected', unexpected), ('mis-shaped', bad)):
      if keys:
        msg.append(f'  {label} ({len(keys)}): {it._short(keys)}')
    raise it.ConversionError('\n'.join(msg))


def to_numpy_state_dict(variables: Mapping, cfg) -> dict[str, np.ndarray]:
  """ferjax GReFEL variables -> the PyTorch GReFEL's state_dict (numpy)."""
  abstract, kw = abstract_variables(cfg), torch_kwargs(cfg)
  names, want = _names(abstract, kw), it._leaves(abstract)
  flat = it._leaves({k: variables[k] for k in ('params', 'batch_stats') if k in variables})
  missing = ['/'.join(p) for p in names if p not in flat]
  unexpected = ['/'.join(p) for p in flat if p not in names]
  bad = [f'{"/".join(p)}: {tuple(np.shape(flat[p]))}, expected {tuple(want[p].shape)}'
         for p in names if p in flat and tuple(np.shape(flat[p])) != tuple(want[p].shape)]
  _fail('variables', missing, unexpected, bad)
  out, packed = {}, {}
  for p, (key, tf, slot) in names.items():
    a = np.ascontiguousarray(tf.to_torch(np.asarray(jax.device_get(flat[p]), np.float32)))
    if slot is None:
      out[key] = a
    else:
      packed.setdefault(key, {})[slot] = a
  for key, parts in packed.items():
    out[key] = np.concatenate([parts[s] for s in sorted(parts)], 0)
  for key, make in it.bn_tracked(out).items():
    out[key] = make()
  out.update(_buffers(abstract))
  return out


def to_torch(variables: Mapping, cfg) -> dict:
  import torch
  return {k: torch.from_numpy(v.copy()) for k, v in to_numpy_state_dict(variables, cfg).items()}


def from_torch(state_dict: Mapping[str, Any], cfg, ignore: Sequence[str] = ()) -> dict:
  """The PyTorch GReFEL's state_dict -> ferjax variables; every key used once, shapes checked.
  `ignore`: key prefixes dropped on purpose (UPSTREAM_UNUSED for POSTER++ / ARBEx files)."""
  abstract, kw = abstract_variables(cfg), torch_kwargs(cfg)
  names, want = _names(abstract, kw), it._leaves(abstract)
  sd = {k: it.to_numpy(v) for k, v in state_dict.items()
        if not any(k.startswith(p) for p in ignore)}
  wanted = {key for key, _, _ in names.values()}
  buffers = _buffers(abstract)
  extra = set(it.bn_tracked(dict.fromkeys(wanted))) | set(buffers)
  missing = sorted(k for k in wanted | set(buffers) if k not in sd)
  unexpected = sorted(k for k in sd if k not in wanted and k not in extra)
  bad = [f'{k}: not the relative-position index of a {int(np.sqrt(v.shape[0]))}x'
         f'{int(np.sqrt(v.shape[0]))} window' for k, v in buffers.items()
         if k in sd and not np.array_equal(sd[k], v)]
  counts: dict[str, int] = {}
  for key, _, slot in names.values():
    counts[key] = counts.get(key, 0) + (slot is not None)
  flat = {}
  for p, (key, tf, slot) in names.items():
    if key not in sd:
      continue
    a = sd[key]
    if slot is not None:
      if a.shape[0] % counts[key]:
        bad.append(f'{key}: {a.shape[0]} rows do not split into q, k, v')
        continue
      n = a.shape[0] // counts[key]
      a = a[slot * n:(slot + 1) * n]
    a = tf.to_flax(a)
    if tuple(a.shape) != tuple(want[p].shape):
      bad.append(f'{key}: torch {tuple(sd[key].shape)}, ferjax {"/".join(p)} expects '
                 f'{tuple(want[p].shape)}')
      continue
    flat[p] = np.ascontiguousarray(a, np.float32)
  _fail('state_dict', missing, unexpected, bad)
  return it._nest(flat)
