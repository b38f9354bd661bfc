"""CLIP ViT-B/32 image tower: parity with transformers (PyTorch both ways, and Flax msgpack).

All parity tests use a tiny configuration with random weights (no downloads). The weights are
re-drawn with a larger scale than the reference init so that attention is far from uniform
and a transposed or misnamed matrix cannot hide. transformers has no Flax
`CLIPVisionModelWithProjection`: its FlaxCLIPModel (vision_model + visual_projection, plus the
text tower that load_hf_flax drops) is the Flax reference.
"""
import functools

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from ferjax.interop import torch as it  # noqa: E402
from ferjax.interop.clip import CLIP_MODEL_IGNORE, load_hf_flax  # noqa: E402
from ferjax.models import clip  # noqa: E402

TINY = dict(hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128, patch_size=8, image_size=32,
            projection_dim=16)
# The same configuration in transformers' names.
HF_VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 patch_size=8, image_size=32)
HF_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               vocab_size=99, max_position_embeddings=16)


@pytest.fixture(scope='module')
def x():
  return np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)  # NHWC


# One compiled forward shared by every parity test: on a loaded CPU a single jit compile costs
# less than the op-by-op compiles of eager apply (which is why parity.check_roundtrip, eager, is
# not used; test_torch_parity_both_ways does its steps, and compares every tensor too).
_apply = jax.jit(functools.partial(clip.clip_vit_b32(**TINY).apply, return_all=True))


def _nchw(x):
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


class _TorchEmbeds(transformers.CLIPVisionModelWithProjection):
  """The reference returning `image_embeds` as a tensor; subclassing (not wrapping) keeps the
  state_dict keys unchanged."""

  def forward(self, pixel_values):
    return super().forward(pixel_values=pixel_values).image_embeds


def _torch_ref(seed=0):
  model = _TorchEmbeds(transformers.CLIPVisionConfig(projection_dim=16, **HF_VISION)).eval()
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      # LayerNorm scales around 1; matrices with std 1.5 / sqrt(fan_in), vectors with 0.5.
      if 'norm' in name and name.endswith('.weight'):
        p.copy_(1 + 0.2 * noise)
      else:
        p.copy_(noise * (0.5 if p.ndim == 1 else 1.5 / np.sqrt(np.prod(p.shape[1:]))))
  return model


def test_torch_parity_both_ways(x):
  ref = _torch_ref()
  with torch.no_grad():
    want = ref(_nchw(x)).numpy()
    full = ref.vision_model(pixel_values=_nchw(x))  # pooled output and last hidden state
  sd = ref.state_dict()
  assert not any('position_ids' in k for k in sd)  # non-persistent buffer in transformers 4.57
  variables = it.from_torch('clip_vit_b32', sd, **TINY)
  got = _apply(variables, x)
  assert np.abs(want).max() > 0.5  # a meaningful scale for the tolerance
  np.testing.assert_allclose(np.asarray(got['image_embeds']), want, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(got['pooler_output']), full.pooler_output.numpy(),
                             atol=1e-5, rtol=0)
  # The un-normalised hidden state reaches ~10: allow float32 rounding relative to it.
  np.testing.assert_allclose(np.asarray(got['last_hidden_state']),
                             full.last_hidden_state.numpy(), atol=1e-5, rtol=1e-5)
  # ferjax -> torch: strict load into a fresh model, same outputs and tensors.
  back = _TorchEmbeds(transformers.CLIPVisionConfig(projection_dim=16, **HF_VISION)).eval()
  back.load_state_dict(it.to_torch('clip_vit_b32', variables, **TINY), strict=True)
  with torch.no_grad():
    np.testing.assert_allclose(back(_nchw(x)).numpy(), want, atol=1e-6, rtol=0)
  for k, v in back.state_dict().items():
    np.testing.assert_array_equal(v.numpy(), sd[k].numpy(), err_msg=k)


def test_full_clip_model_state_dict_and_legacy_position_ids(x):
  cfg = transformers.CLIPConfig(text_config=HF_TEXT, vision_config=HF_VISION, projection_dim=16)
  full = transformers.CLIPModel(cfg).eval()
  sd = dict(full.state_dict())
  # Checkpoints written before transformers 4.31 still carry the buffer.
  sd['vision_model.embeddings.position_ids'] = torch.arange(17)[None]
  with pytest.raises(it.ConversionError, match=r'unexpected keys .*text_model\.'):
    it.from_torch('clip_vit_b32', sd, **TINY)
  variables = it.from_torch('clip_vit_b32', sd, ignore=CLIP_MODEL_IGNORE, **TINY)
  with torch.no_grad():
    want = full.get_image_features(pixel_values=_nchw(x)).numpy()
  got = _apply(variables, x)['image_embeds']
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
  assert 'vision_model.embeddings.position_ids' not in it.to_torch('clip_vit_b32', variables,
                                                                    **TINY)


def _random_params(hf_model, seed):
  """Random float32 params of the HF Flax model's tree, without its (slow, eager) init."""
  shapes = jax.eval_shape(functools.partial(hf_model.init_weights,
                                            input_shape=hf_model.input_shape),
                          jax.random.PRNGKey(0))
  rng = np.random.default_rng(seed)

  def draw(path, s):
    if path[-1].key == 'scale':  # LayerNorm scales around 1
      return (1 + 0.2 * rng.normal(size=s.shape)).astype(np.float32)
    fan_in = max(1, int(np.prod(s.shape[:-1])))
    return (rng.normal(size=s.shape) * (0.5 if s.ndim == 1 else 1.5 / np.sqrt(fan_in))).astype(
        np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _hf_vision(module, x_nhwc):
  # The reference's image tower and projection in one call (FlaxCLIPModule internals).
  hidden, pooled = module.vision_model(x_nhwc, return_dict=False)[:2]
  return module.visual_projection(pooled), pooled, hidden


@pytest.fixture(scope='module')
def hf_flax_clip(tmp_path_factory, x):
  """A tiny transformers FlaxCLIPModel (text tower included) saved as flax_model.msgpack, and
  its image outputs on `x` (embeds, pooled, last hidden state)."""
  cfg = transformers.CLIPConfig(text_config=HF_TEXT, vision_config=HF_VISION, projection_dim=16)
  model = transformers.FlaxCLIPModel(cfg, _do_init=False)
  params = _random_params(model, 1)
  path = tmp_path_factory.mktemp('hf_clip')
  model.save_pretrained(str(path), params=params)
  ref = jax.jit(lambda p, x: model.module.apply({'params': p}, x, method=_hf_vision))
  return params, path, [np.asarray(a) for a in ref(params, x)]


def test_hf_flax_msgpack_loads_and_matches(hf_flax_clip, x):
  params, path, (want, pooled, hidden) = hf_flax_clip
  variables = load_hf_flax(str(path / 'flax_model.msgpack'), **TINY)
  # The tree is the reference's, leaf for leaf, without the text tower.
  ref_vision = {k: params[k] for k in ('vision_model', 'visual_projection')}
  assert jax.tree.map(np.shape, variables['params']) == jax.tree.map(np.shape, ref_vision)
  got = _apply(variables, x)
  assert np.abs(want).max() > 0.5
  np.testing.assert_allclose(np.asarray(got['image_embeds']), want, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(got['pooler_output']), pooled, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(got['last_hidden_state']), hidden, atol=1e-5, rtol=0)
  # A directory works too.
  again = load_hf_flax(str(path), **TINY)
  np.testing.assert_array_equal(again['params']['visual_projection']['kernel'],
                                variables['params']['visual_projection']['kernel'])


def test_hf_flax_msgpack_wrong_config_names_keys(hf_flax_clip, tmp_path):
  _, path, _ = hf_flax_clip
  with pytest.raises(it.ConversionError) as e:
    load_hf_flax(str(path / 'flax_model.msgpack'), **{**TINY, 'num_layers': 3,
                                                       'projection_dim': 8})
  msg = str(e.value)
  assert 'missing keys (16): vision_model/encoder/layers/2/' in msg
  assert 'visual_projection/kernel: checkpoint (64, 16), expected (64, 8)' in msg
  # An image tower without projection (FlaxCLIPVisionModel) is not silently completed.
  tower = transformers.FlaxCLIPVisionModel(transformers.CLIPVisionConfig(**HF_VISION),
                                           _do_init=False)
  tower.save_pretrained(str(tmp_path), params=_random_params(tower, 2))
  with pytest.raises(it.ConversionError, match=r'missing keys \(1\): visual_projection/kernel'):
    load_hf_flax(str(tmp_path), **TINY)
  with pytest.raises(FileNotFoundError):
    load_hf_flax(str(tmp_path / 'nope.msgpack'), **TINY)


def test_resnet_state_dict_is_refused():
  torchvision = pytest.importorskip('torchvision')
  sd = torchvision.models.resnet18(num_classes=3).state_dict()
  with pytest.raises(it.ConversionError) as e:
    it.from_torch('clip_vit_b32', sd, **TINY)
  msg = str(e.value)
  assert 'does not fit clip_vit_b32' in msg
  assert 'vision_model.embeddings.class_embedding' in msg  # missing
  assert 'conv1.weight' in msg                             # unexpected


def test_normalize_both_modes():
  img = np.array([[[0, 128, 255]]], np.uint8)  # (1, 1, 3)
  got = np.asarray(clip.normalize(img, 'clip'))[0, 0]
  want = [(0 - 0.48145466) / 0.26862954, (128 / 255 - 0.4578275) / 0.26130258,
          (1 - 0.40821073) / 0.27577711]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  got = np.asarray(clip.normalize(np.array([[0.5, 0.25, 1.0]], np.float32), mode='imagenet'))
  np.testing.assert_allclose(got[0], [(0.5 - 0.485) / 0.229, (0.25 - 0.456) / 0.224,
                                      (1 - 0.406) / 0.225], rtol=1e-6)
  # uint8 and the same image as float in [0, 1] agree.
  np.testing.assert_allclose(clip.normalize(img), clip.normalize(img / 255.0), atol=1e-6)
  with pytest.raises(ValueError, match='mode'):
    clip.normalize(img, 'openai')


def test_dtype_and_input_size(x):
  # Abstract evaluation only: it traces the whole model (dtype and shape errors surface) without
  # compiling a second precision or the resize.
  variables = it.from_torch('clip_vit_b32', _torch_ref().state_dict(), **TINY)
  half = clip.clip_vit_b32(**TINY, dtype=jnp.bfloat16)
  out = jax.eval_shape(half.apply, variables, x)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, 16)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(
      jax.eval_shape(half.init, jax.random.PRNGKey(0), jnp.asarray(x))))
  big = jax.ShapeDtypeStruct((1, 48, 48, 3), jnp.float32)
  with pytest.raises(ValueError, match='interpolate_pos=True'):
    jax.eval_shape(clip.clip_vit_b32(**TINY).apply, variables, big)
  wide = clip.clip_vit_b32(**TINY, interpolate_pos=True)
  out = jax.eval_shape(functools.partial(wide.apply, return_all=True), variables, big)
  assert out['last_hidden_state'].shape == (1, 1 + 6 * 6, 64)
  with pytest.raises(ValueError, match='NHWC'):
    jax.eval_shape(clip.clip_vit_b32(**TINY).apply, variables, jnp.zeros((1, 3, 32, 32)))


def test_full_size_param_count():
  # Count the reference on the meta device (no memory, no init cost) rather than trusting a
  # number, and the ferjax tree abstractly (no full-size compile).
  with torch.device('meta'):
    ref = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig())
  want = sum(p.numel() for p in ref.parameters())
  module = clip.clip_vit_b32()
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))
  got = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
  assert got == want == 87_849_216
  assert shapes['params']['visual_projection']['kernel'].shape == (768, 512)
  assert it.abstract_variables('clip_vit_b32')['params'].keys() == {'vision_model',
                                                                    'visual_projection'}
