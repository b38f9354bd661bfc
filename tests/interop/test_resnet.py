"""ResNet-18/50 parity with torchvision in both directions, and strict-load errors."""
import numpy as np
import pytest

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

from ferjax.interop import torch as it  # noqa: E402
from tests.interop.parity import check_roundtrip  # noqa: E402


@pytest.fixture(scope='module')
def x():
  return np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)


def test_resnet18_parity_both_ways(x):
  check_roundtrip('resnet18', lambda: torchvision.models.resnet18(num_classes=10), x,
                  dict(num_classes=10), atol=2e-4)


def test_resnet50_backbone_parity_dropping_head(x):
  # The usual use: an ImageNet checkpoint whose fc is dropped on purpose.
  ref = torchvision.models.resnet50(num_classes=7).eval()
  ref.fc = torch.nn.Identity()
  sd = torchvision.models.resnet50(num_classes=7).state_dict()
  ref.load_state_dict({k: v for k, v in sd.items() if not k.startswith('fc.')})
  variables = it.from_torch('resnet50', sd, ignore=('fc.',))
  module = it.get('resnet50').build()
  got = np.asarray(module.apply(variables, x))
  with torch.no_grad():
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_head_not_silently_dropped():
  sd = torchvision.models.resnet18(num_classes=3).state_dict()
  with pytest.raises(it.ConversionError, match=r'unexpected keys \(2\): fc.bias, fc.weight'):
    it.from_torch('resnet18', sd)


def test_missing_and_misshaped_keys_are_named():
  sd = torchvision.models.resnet18(num_classes=3).state_dict()
  del sd['layer2.0.downsample.1.running_var']
  sd['layer3.1.conv2.weight'] = sd['layer3.1.conv2.weight'][:, :5]
  with pytest.raises(it.ConversionError) as e:
    it.from_torch('resnet18', sd, num_classes=3)
  msg = str(e.value)
  assert 'missing keys (1): layer2.0.downsample.1.running_var' in msg
  assert 'layer3.1.conv2.weight: torch (256, 5, 3, 3)' in msg


def test_checkpoint_of_another_architecture():
  sd = torchvision.models.resnet50(num_classes=3).state_dict()
  with pytest.raises(it.ConversionError, match='does not fit resnet18'):
    it.from_torch('resnet18', sd, num_classes=3)


def test_load_state_dict_formats(tmp_path):
  from safetensors.torch import save_file
  sd = torchvision.models.resnet18(num_classes=3).state_dict()
  save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / 'w.safetensors'))
  torch.save({'state_dict': {'module.' + k: v for k, v in sd.items()}}, tmp_path / 'w.pth')
  a = it.load_state_dict(str(tmp_path / 'w.safetensors'))
  b = it.load_state_dict(str(tmp_path / 'w.pth'))
  assert sorted(a) == sorted(b) == sorted(sd)
  np.testing.assert_array_equal(a['fc.weight'], b['fc.weight'])
  torch.save({'model': torch.nn.Linear(2, 2)}, tmp_path / 'pickled.pth')
  with pytest.raises(it.ConversionError, match='weights-only'):
    it.load_state_dict(str(tmp_path / 'pickled.pth'))
  with pytest.raises(FileNotFoundError, match='no such checkpoint'):
    it.load_state_dict(str(tmp_path / 'nope.pt'))


def _caffe_resnet50(num_classes):
  """torchvision's ResNet-50 rewired as the caffe-converted VGGFace2 net (same key names)."""
  m = torchvision.models.resnet50(num_classes=num_classes)
  m.maxpool = torch.nn.MaxPool2d(3, 2, 0, ceil_mode=True)
  for layer in (m.layer2, m.layer3, m.layer4):
    layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
  return m


@pytest.mark.parametrize('size', [64, 72])   # 72: the ceil-mode pool keeps a partial window
def test_vggface2_caffe_resnet50_parity(size):
  x = np.random.default_rng(1).normal(size=(1, size, size, 3)).astype(np.float32)
  # Random BN statistics make these logits ~150: float32 rounding is ~1e-6 relative.
  check_roundtrip('resnet50_vggface2', lambda: _caffe_resnet50(6), x, dict(num_classes=6),
                  atol=2e-4, rtol=1e-5)


def test_numpy_pickle_loads_and_code_pickles_are_refused(tmp_path):
  import pickle
  sd = {k: v.numpy() for k, v in torchvision.models.resnet18(num_classes=3).state_dict().items()}
  with open(tmp_path / 'w.pkl', 'wb') as f:
    pickle.dump(sd, f, protocol=2)
  got = it.load_state_dict(str(tmp_path / 'w.pkl'))
  np.testing.assert_array_equal(got['layer1.0.conv1.weight'], sd['layer1.0.conv1.weight'])

  class Evil:
    def __reduce__(self):
      return (print, ('pwned',))

  with open(tmp_path / 'evil.pkl', 'wb') as f:
    pickle.dump({'x': Evil()}, f)
  with pytest.raises(it.ConversionError, match='builtins.print'):
    it.load_state_dict(str(tmp_path / 'evil.pkl'))


@pytest.mark.parametrize('arch', ['resnet18', 'resnet34', 'resnet50'])
def test_full_size_param_counts_equal_torchvision(arch):
  import jax
  tree = it.abstract_variables(arch, num_classes=1000)
  n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree['params']))
  ref = getattr(torchvision.models, arch)()
  assert n == sum(p.numel() for p in ref.parameters())
