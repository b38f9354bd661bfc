"""One architecture table serves ferjax.models.build and ferjax.interop.torch (no torch needed:
the key maps import it only to make tensors)."""
import dataclasses

import pytest

from ferjax import models
from ferjax.interop import torch as it
from ferjax.models import registry


def test_models_and_interop_list_the_same_table():
  assert models.archs() == sorted(a for a, e in registry.ARCHS.items() if e.backbone)
  assert it.archs() == sorted(registry.ARCHS)
  # Methods' models, not backbones:
  assert set(it.archs()) - set(models.archs()) == {'cafe', 'ran', 'mten'}


@pytest.mark.parametrize('arch', sorted(registry.ARCHS))
def test_every_entry_resolves(arch):
  e = registry.ARCHS[arch]
  m = it.get(arch)
  assert m.build is registry.resolve(e.build) and callable(m.build)
  keys = registry.resolve(e.keys)
  assert isinstance(keys, it.KeyMap)
  assert (m.name, m.extra_torch) == (keys.name, keys.extra_torch)
  assert tuple(m.input_shape) == e.input_shape and len(e.input_shape) == 4
  assert m.reference == e.reference and e.reference
  if e.backbone:
    assert type(models.build(arch)) is type(m.build())


def test_unknown_and_non_backbone_archs_are_refused():
  with pytest.raises(ValueError, match="unknown architecture 'resnet7'"):
    models.build('resnet7')
  with pytest.raises(ValueError, match="unknown architecture 'cafe'"):
    models.build('cafe')
  with pytest.raises(it.ConversionError, match="unknown architecture 'resnet7'"):
    it.get('resnet7')


def test_one_entry_adds_an_architecture(monkeypatch):
  entry = dataclasses.replace(registry.ARCHS['resnet18'], reference='a narrow ResNet-18')
  monkeypatch.setitem(registry.ARCHS, 'resnet18_test', entry)
  monkeypatch.setattr(it, '_RESOLVED', dict(it._RESOLVED))   # forget the entry afterwards
  assert 'resnet18_test' in models.archs() and 'resnet18_test' in it.archs()
  assert models.build('resnet18_test', width=8).width == 8
  assert it.get('resnet18_test').reference == 'a narrow ResNet-18'
