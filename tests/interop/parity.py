"""Shared parity checks: a PyTorch reference model vs the ferjax port, both directions.

`check_roundtrip(arch, torch_model, x, overrides, ...)`:
  1. randomises the reference's BatchNorm statistics (fresh models have mean 0 / var 1, which
     would hide a mean/var mix-up) and puts it in eval mode;
  2. torch -> ferjax: `from_torch`, the Flax module on the same input must give the reference's
     output within `atol`;
  3. ferjax -> torch: `to_torch` loads strictly into a fresh reference model whose output and
     state_dict then equal the original's.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax.numpy as jnp  # noqa: E402

from ferjax.interop import torch as it  # noqa: E402


def randomize_bn(model, seed=0):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for mod in model.modules():
      if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
        mod.running_mean.copy_(0.2 * torch.randn(mod.running_mean.shape, generator=g))
        mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
        if mod.weight is not None:
          mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=g))
          mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=g))
  return model


def torch_out(model, x_nhwc: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    y = model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()))
  return it.to_numpy(y)


def flax_out(arch, variables, x_nhwc, overrides, **call_kw):
  m = it.get(arch)
  module = m.build(**overrides)
  return np.asarray(module.apply(variables, jnp.asarray(x_nhwc), **{**m.init_kwargs, **call_kw}))


def check_roundtrip(arch, make_torch, x_nhwc, overrides=None, atol=1e-4, ignore=(),
                    seed=0, rtol=0.0):
  overrides = overrides or {}
  torch.manual_seed(seed)
  ref = randomize_bn(make_torch().eval(), seed)
  want = torch_out(ref, x_nhwc)
  variables = it.from_torch(arch, ref.state_dict(), ignore=ignore, **overrides)
  got = flax_out(arch, variables, x_nhwc, overrides)
  np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)
  back = make_torch().eval()
  back.load_state_dict(it.to_torch(arch, variables, **overrides), strict=True)
  np.testing.assert_allclose(torch_out(back, x_nhwc), want, atol=1e-6, rtol=0)
  sd0 = {k: v for k, v in ref.state_dict().items() if not any(k.startswith(p) for p in ignore)}
  for k, v in back.state_dict().items():
    if not k.endswith('num_batches_tracked'):
      np.testing.assert_array_equal(it.to_numpy(v), it.to_numpy(sd0[k]), err_msg=k)
  return variables, want
