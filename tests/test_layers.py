"""Shared layers: the CPU depthwise convolution, convolution and max pool equal lax's."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax.models import layers


@pytest.mark.parametrize('kernel,stride,padding', [
    (3, 1, ((1, 1), (1, 1))), (3, 2, ((1, 1), (1, 1))), (5, 2, ((2, 2), (2, 2))),
    (3, 1, 'SAME'), (3, 2, 'VALID'), (7, 1, ((3, 3), (3, 3)))])
def test_shifted_depthwise_equals_lax_values_and_gradients(kernel, stride, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 11, 9, 6)).astype(np.float32))
  mods = {impl: layers.DepthwiseConv(6, (kernel, kernel), (stride, stride), padding, impl=impl)
          for impl in ('lax', 'shift')}
  variables = mods['lax'].init(jax.random.key(1), x)
  assert variables['params']['kernel'].shape == (kernel, kernel, 1, 6)

  def loss(impl):
    return lambda v, x: (mods[impl].apply(v, x) ** 2).sum()

  (y_l, g_l), (y_s, g_s) = [jax.value_and_grad(loss(i), (0, 1))(variables, x)
                            for i in ('lax', 'shift')]
  np.testing.assert_allclose(y_s, y_l, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_s), jax.tree.leaves(g_l)):
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
def test_matmul_kernel_gradient_conv_equals_lax(shape, kernel, stride, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=kernel + (shape[-1], 5)).astype(np.float32))

  def loss(fn):
    return lambda x, w: (fn(x, w, (stride, stride), padding,
                            dimension_numbers=('NHWC', 'HWIO', 'NHWC')) ** 2).sum()

  want = jax.value_and_grad(loss(jax.lax.conv_general_dilated), (0, 1))(x, w)
  got = jax.jit(jax.value_and_grad(loss(layers.conv_general_dilated), (0, 1)))(x, w)
  # The CPU form is the one under test, not a fallback to lax.
  assert 'custom_vjp_call' in str(jax.make_jaxpr(loss(layers.conv_general_dilated))(x, w))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
  # Other layouts and grouped convolutions are lax's own.
  xc, wc = jnp.asarray(rng.normal(size=(2, 4, 5, 5))), jnp.asarray(rng.normal(size=(6, 2, 3, 3)))
  np.testing.assert_array_equal(
      layers.conv_general_dilated(xc, wc, (1, 1), 'VALID', feature_group_count=2),
      jax.lax.conv_general_dilated(xc, wc, (1, 1), 'VALID', feature_group_count=2))


@pytest.mark.parametrize('window,stride,padding', [
    ((3, 3), (2, 2), ((1, 1), (1, 1))), ((2, 2), (2, 2), 'VALID'), ((3, 3), (1, 1), 'SAME'),
    ((3, 3), (2, 2), ((0, 1), (0, 1)))])
def test_shifted_max_pool_matches_torch_values_and_first_max_gradients(window, stride, padding):
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(0)
  # Integers in a small range make ties common: torch sends each window's gradient to its
  # first maximum, and so must the pool.
  x = rng.integers(0, 4, size=(2, 9, 8, 3)).astype(np.float32)
  dy_shape = jax.eval_shape(lambda x: layers.max_pool(x, window, stride, padding, 'lax'),
                            jnp.asarray(x)).shape
  dy = rng.normal(size=dy_shape).astype(np.float32)
  y, vjp = jax.vjp(lambda x: layers.max_pool(x, window, stride, padding, 'shift'),
                   jnp.asarray(x))
  np.testing.assert_array_equal(y, layers.max_pool(jnp.asarray(x), window, stride, padding,
                                                   'lax'))
  pads = layers._explicit_padding(padding, x.shape[1:3], window, stride)
  xt = torch.nn.functional.pad(torch.from_numpy(x).permute(0, 3, 1, 2),
                               (pads[1][0], pads[1][1], pads[0][0], pads[0][1]),
                               value=-float('inf')).requires_grad_(True)
  yt = torch.nn.functional.max_pool2d(xt, window, stride)
  yt.backward(torch.from_numpy(dy).permute(0, 3, 1, 2))
  np.testing.assert_array_equal(np.asarray(y), yt.detach().permute(0, 2, 3, 1).numpy())
  want = xt.grad.permute(0, 2, 3, 1).numpy()[:, pads[0][0]:pads[0][0] + 9,
                                             pads[1][0]:pads[1][0] + 8]
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(dy))[0]), want, rtol=1e-6, atol=1e-6)


def test_dense_with_barrier_backward_equals_nn_dense():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 5, 7)).astype(np.float32))
  mine, ref = layers.dense(4), nn.Dense(4)
  v = ref.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, mine.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, v)

  def loss(m):
    return lambda v, x: (jnp.tanh(m.apply(v, x)) ** 2).sum()

  want = jax.value_and_grad(loss(ref), (0, 1))(v, x)
  got = jax.jit(jax.value_and_grad(loss(mine), (0, 1)))(v, x)
  assert 'custom_vjp_call' in str(jax.make_jaxpr(loss(mine))(v, x))   # the CPU form is tested
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Any other contraction is lax's own.
  a, b = jnp.ones((3, 4, 5)), jnp.ones((3, 5, 2))
  np.testing.assert_array_equal(layers.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))),
                                jax.lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,)))))
