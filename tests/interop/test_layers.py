"""The max pool's gradient is PyTorch's: each window's gradient goes to its first maximum."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from ferjax.models import layers  # noqa: E402


@pytest.mark.parametrize('form', ['cpu', 'lax'])
@pytest.mark.parametrize('window,stride,padding', [
    ((3, 3), (2, 2), ((1, 1), (1, 1))), ((2, 2), (2, 2), 'VALID'), ((3, 3), (1, 1), 'SAME'),
    ((3, 3), (2, 2), ((0, 1), (0, 1)))])
def test_max_pool_matches_torch_values_and_first_max_gradients(form, window, stride, padding):
  rng = np.random.default_rng(0)
  # Integers in a small range make ties common: torch sends each window's gradient to its
  # first maximum, and so must the pool.
  x = rng.integers(0, 4, size=(2, 9, 8, 3)).astype(np.float32)
  with layers.kernels(form):
    y, vjp = jax.vjp(lambda x: layers.max_pool(x, window, stride, padding), jnp.asarray(x))
  dy = rng.normal(size=y.shape).astype(np.float32)
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
