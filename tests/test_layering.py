"""The layering contracts of pyproject.toml hold (`lint-imports`)."""
import os
import subprocess
import sys

from tests.conftest import REPO


def test_import_contracts_hold():
  exe = os.path.join(os.path.dirname(sys.executable), 'lint-imports')
  result = subprocess.run([exe, '--no-cache'], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert 'Contracts: 2 kept, 0 broken' in result.stdout
