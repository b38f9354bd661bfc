"""Shared layers: the CPU depthwise convolution equals lax's grouped convolution."""
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
