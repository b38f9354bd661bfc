"""The reader registry: every registered reader has a consistent DatasetInfo, and the readers
import without jax."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ferjax import labels
from ferjax.data import readers
from ferjax.data.readers import fer2013

NAMES = ('emotic', 'lsd', 'affwild2', 'jaffe', 'ferg')


@pytest.mark.parametrize('name', ['rafdb', 'fer2013', 'ferplus', 'affectnet', 'sfew', 'mma',
                                  'folder'])
def test_registry_and_infos_are_consistent(name):
  module = readers.get(name)
  info = fer2013.info(name) if module is fer2013 else module.INFO
  assert info.name == name
  # Every native order is made of canonical names that exist in the declared space.
  assert -1 not in labels.index_map(info.native_classes, info.class_space)
  assert callable(module.examples)


@pytest.mark.parametrize('name', NAMES)
def test_info_is_registered_and_consistent(name):
  module = readers.get(name)
  info = module.INFO
  assert info.name == name and info.splits and info.layout
  assert set(info.native_classes) <= set(labels.CANONICAL)
  assert info.class_space in labels.SPACES
  if 'multilabel' in info.features:
    assert info.multilabel_space in labels.MULTILABEL_SPACES


def test_readers_do_not_import_jax():
  code = ('import sys\n'
          + ''.join(f'import ferjax.data.readers.{n}\n' for n in NAMES)
          + 'assert "jax" not in sys.modules, sorted(m for m in sys.modules if "jax" in m)\n')
  repo = os.path.dirname(os.path.dirname(os.path.abspath(labels.__file__)))
  subprocess.run([sys.executable, '-c', code], check=True, cwd=repo)
