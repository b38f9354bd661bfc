"""Shared layers: both kernel forms (the CPU kernels and lax's ops, chosen by layers.kernels)
give lax's values and gradients, and 'auto' picks the form when lowering for a platform."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from ferjax.models import layers

FORMS = ('cpu', 'lax')


@pytest.fixture(params=FORMS)
def form(request):
  """Each test runs once with the CPU kernels and once with lax's (the accelerator form)."""
  with layers.kernels(request.param):
    yield request.param


def _assert_form(form, jaxpr):
  # The CPU kernels of conv, dense and max_pool are custom_vjp functions; lax's ops are not.
  assert ('custom_vjp_call' in str(jaxpr)) == (form == 'cpu'), form


def test_kernels_switch_sets_and_restores():
  assert layers.current_kernels() == 'auto'
  with layers.kernels('lax'):
    assert layers.current_kernels() == 'lax'
    with layers.kernels('cpu'):
      assert layers.current_kernels() == 'cpu'
    assert layers.current_kernels() == 'lax'
  assert layers.current_kernels() == 'auto'
  with pytest.raises(ValueError, match='kernels must be one of'):
    layers.kernels('gpu')
  assert layers.current_kernels() == 'auto'


@pytest.mark.parametrize('kernel,stride,padding', [
    (3, 1, ((1, 1), (1, 1))), (3, 2, ((1, 1), (1, 1))), (5, 2, ((2, 2), (2, 2))),
    (3, 1, 'SAME'), (3, 2, 'VALID'), (7, 1, ((3, 3), (3, 3)))])
def test_depthwise_equals_grouped_conv_values_and_gradients(form, kernel, stride, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 11, 9, 6)).astype(np.float32))
  mod = layers.DepthwiseConv(6, (kernel, kernel), (stride, stride), padding)
  variables = mod.init(jax.random.key(1), x)
  assert variables['params']['kernel'].shape == (kernel, kernel, 1, 6)

  def ref(v, x):
    y = jax.lax.conv_general_dilated(x, v['params']['kernel'], (stride, stride), padding,
                                     feature_group_count=6,
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return ((y + v['params']['bias']) ** 2).sum()

  def loss(v, x):
    return (mod.apply(v, x) ** 2).sum()

  grouped = 'feature_group_count=6' in str(jax.make_jaxpr(loss)(variables, x))
  assert grouped == (form == 'lax')
  want = jax.value_and_grad(ref, (0, 1))(variables, x)
  got = jax.jit(jax.value_and_grad(loss, (0, 1)))(variables, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_factory_picks_depthwise_only_for_one_group_per_channel():
  assert isinstance(layers.conv(8, (3, 3), groups=8), layers.DepthwiseConv)
  assert not isinstance(layers.conv(8, (3, 3), groups=2), layers.DepthwiseConv)
  assert not isinstance(layers.conv(8, (3, 3)), layers.DepthwiseConv)
  with pytest.raises(ValueError, match='needs 8 input channels'):
    layers.DepthwiseConv(8, (3, 3)).init(jax.random.key(0), jnp.zeros((1, 5, 5, 4)))


@pytest.mark.parametrize('shape,kernel,stride,padding', [
    ((2, 9, 9, 20), (3, 3), 1, ((1, 1), (1, 1))),      # tap-wise matmuls
    ((2, 10, 10, 20), (3, 3), 2, ((1, 1), (1, 1))),
    ((1, 11, 11, 3), (7, 7), 2, ((3, 3), (3, 3))),      # a stem: one im2col matmul
    ((2, 8, 8, 17), (1, 1), 2, ((0, 0), (0, 0))),       # a strided 1x1 shortcut
    ((2, 9, 7, 16), (3, 3), 2, 'SAME'),
    ((2, 9, 9, 16), (2, 3), 1, 'VALID')])
def test_conv_equals_lax_values_and_gradients(form, shape, kernel, stride, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=kernel + (shape[-1], 5)).astype(np.float32))

  def loss(fn):
    return lambda x, w: (fn(x, w, (stride, stride), padding,
                            dimension_numbers=('NHWC', 'HWIO', 'NHWC')) ** 2).sum()

  want = jax.value_and_grad(loss(jax.lax.conv_general_dilated), (0, 1))(x, w)
  got = jax.jit(jax.value_and_grad(loss(layers.conv_general_dilated), (0, 1)))(x, w)
  _assert_form(form, jax.make_jaxpr(loss(layers.conv_general_dilated))(x, w))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_conv_other_layouts_and_groups_are_lax_in_every_form(form):
  rng = np.random.default_rng(0)
  xc, wc = jnp.asarray(rng.normal(size=(2, 4, 5, 5))), jnp.asarray(rng.normal(size=(6, 2, 3, 3)))
  np.testing.assert_array_equal(
      layers.conv_general_dilated(xc, wc, (1, 1), 'VALID', feature_group_count=2),
      jax.lax.conv_general_dilated(xc, wc, (1, 1), 'VALID', feature_group_count=2))


@pytest.mark.parametrize('kernel,stride,size', [(3, 2, 9), (3, 2, 10), (7, 2, 11), (1, 2, 8),
                                                (3, 1, 7)])
def test_padded_conv_pads_like_pytorch(kernel, stride, size):
  """PyTorch's Conv2d(k, stride, padding=(k - 1) // 2) pads both sides alike, where 'SAME'
  would put a stride-2 convolution's extra row at the bottom only."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(1, size, size, 3)).astype(np.float32))
  mod = layers.padded_conv(4, kernel, stride, name='c')
  v = mod.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, v) == {'params': {'kernel': (kernel, kernel, 3, 4)}}
  p = (kernel - 1) // 2
  want = jax.lax.conv_general_dilated(x, v['params']['kernel'], (stride, stride),
                                      ((p, p), (p, p)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert want.shape[1] == (size + 2 * p - kernel) // stride + 1
  np.testing.assert_allclose(mod.apply(v, x), want, rtol=1e-5, atol=1e-5)
  depthwise = layers.padded_conv(3, kernel, stride, groups=3, use_bias=True, padding=0)
  assert isinstance(depthwise, layers.DepthwiseConv) and depthwise.padding == ((0, 0), (0, 0))


def _first_max_pool_grad(x, dy, window, stride, pads):
  """NumPy reference: each window's gradient goes to its first maximum (row-major), as in
  PyTorch."""
  (pt, pb), (pl, pr) = pads
  xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
  dx = np.zeros_like(xp)
  for b, i, j, c in np.ndindex(dy.shape):
    win = xp[b, i * stride[0]:i * stride[0] + window[0], j * stride[1]:j * stride[1] + window[1], c]
    r, s = np.unravel_index(np.argmax(win), win.shape)   # argmax takes the first maximum
    dx[b, i * stride[0] + r, j * stride[1] + s, c] += dy[b, i, j, c]
  return dx[:, pt:pt + x.shape[1], pl:pl + x.shape[2]]


@pytest.mark.parametrize('window,stride,padding', [
    ((3, 3), (2, 2), ((1, 1), (1, 1))), ((2, 2), (2, 2), 'VALID'), ((3, 3), (1, 1), 'SAME'),
    ((3, 3), (2, 2), ((0, 1), (0, 1)))])
@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_values_and_first_max_gradients(form, window, stride, padding, ties):
  rng = np.random.default_rng(0)
  # Small integers make ties common; a permutation has none.
  x = (rng.integers(0, 4, size=(2, 9, 8, 3)) if ties
       else rng.permutation(2 * 9 * 8 * 3).reshape(2, 9, 8, 3)).astype(np.float32)
  pads = layers._explicit_padding(padding, x.shape[1:3], window, stride)
  y, vjp = jax.vjp(lambda x: layers.max_pool(x, window, stride, padding), jnp.asarray(x))
  _assert_form(form, jax.make_jaxpr(lambda x: layers.max_pool(x, window, stride, padding))(x))
  np.testing.assert_array_equal(y, nn.max_pool(jnp.asarray(x), window, stride, padding))
  dy = rng.normal(size=y.shape).astype(np.float32)
  np.testing.assert_allclose(vjp(jnp.asarray(dy))[0],
                             _first_max_pool_grad(x, dy, window, stride, pads),
                             rtol=1e-6, atol=1e-6)


def test_dense_equals_nn_dense_values_and_gradients(form):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 5, 7)).astype(np.float32))
  mine, ref = layers.dense(4), nn.Dense(4)
  v = ref.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, mine.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, v)

  def loss(m):
    return lambda v, x: (jnp.tanh(m.apply(v, x)) ** 2).sum()

  want = jax.value_and_grad(loss(ref), (0, 1))(v, x)
  got = jax.jit(jax.value_and_grad(loss(mine), (0, 1)))(v, x)
  _assert_form(form, jax.make_jaxpr(loss(mine))(v, x))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Any other contraction is lax's own.
  a, b = jnp.ones((3, 4, 5)), jnp.ones((3, 5, 2))
  np.testing.assert_array_equal(layers.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))),
                                jax.lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))))


class _Tiny(nn.Module):
  """Each switched layer once: conv, depthwise conv, max pool, dense."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(layers.padded_conv(8, 3, 2)(x))
    x = layers.padded_conv(8, 3, 1, groups=8)(x)
    x = layers.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    return layers.dense(3)(x.reshape(x.shape[0], -1))


def test_auto_picks_the_form_when_lowering_for_a_platform():
  """'auto' stages both forms; lowering for CPU keeps the CPU kernels (the dense and conv kernel
  gradients read their inputs through an optimization barrier), lowering for an accelerator keeps
  lax's ops, and the result on CPU equals the forced CPU form's."""
  m = _Tiny()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32))
  params = m.init(jax.random.key(0), x)

  def loss(params, x):
    return (m.apply(params, x) ** 2).mean()

  grad = jax.jit(jax.grad(loss))
  assert 'platform_index' in str(jax.make_jaxpr(jax.grad(loss))(params, x))
  for platform, barrier in (('cpu', True), ('cuda', False), ('tpu', False)):
    text = export.export(grad, platforms=[platform])(params, x).mlir_module()
    assert ('optimization_barrier' in text) == barrier, platform
  got = grad(params, x)
  with layers.kernels('cpu'):
    want = jax.jit(jax.grad(loss))(params, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)


def test_model_gradients_agree_between_forms():
  """A whole ResNet (convolutions, max pool, dense head) trains alike with either form."""
  from ferjax.models import resnet
  m = resnet.resnet18(width=8, num_classes=3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32))
  v = m.init(jax.random.key(0), x)

  # Running statistics: batch statistics of 2 examples on 1 x 1 maps would amplify the forms'
  # rounding differences past any tolerance.
  def loss(params, x):
    return (m.apply({**v, 'params': params}, x) ** 2).mean()

  out = {}
  for form in FORMS:
    with layers.kernels(form):
      out[form] = jax.jit(jax.value_and_grad(loss))(v['params'], x)
  for a, b in zip(jax.tree.leaves(out['cpu']), jax.tree.leaves(out['lax'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
