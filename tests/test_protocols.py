"""The cross-domain protocol trains any method on each listed set and tests on all."""
import json
import os

import pytest

from ferjax.protocols import cross_domain
from tests.conftest import REPO


def test_compare_table_means_diagonal_and_off_diagonal(tmp_path):
  rows = {'a/train': {'a/test': 90.0, 'b/test': 20.0, 'c/test': 30.0},
          'b/train': {'a/test': 10.0, 'b/test': 60.0, 'c/test': 40.0},
          'c/train': {'a/test': 50.0, 'b/test': 0.0, 'c/test': 30.0}}
  (tmp_path / 'x').mkdir()
  (tmp_path / 'x' / 'matrix.json').write_text(json.dumps({'config': 'cfg', 'extra': 'v=1',
                                                          'rows': rows}))
  table = cross_domain.compare_table([str(tmp_path / 'x')])
  # diagonal (90 + 60 + 30) / 3 = 60; off-diagonal (20 + 30 + 10 + 40 + 50 + 0) / 6 = 25
  assert table.splitlines()[-1] == '| x | cfg v=1 | 60.00 | 25.00 | 36.67 |'


@pytest.mark.timeout(900)
def test_protocol_runs_a_method_on_each_training_set(tmp_path, monkeypatch):
  """Two training domains x two test domains with the baseline method; rerunning reuses the
  finished runs and gives the same matrix."""
  monkeypatch.setenv('FERJAX_PROGRESS', '0')
  config = os.path.join(REPO, 'configs', 'baseline_synthetic.py') + ':smoke,epochs=1'
  train = ['synthetic:lab:train', 'synthetic:wild:train']
  test = ['synthetic:lab:test', 'synthetic:wild:test']
  rows = cross_domain.run_protocol(config, str(tmp_path), train, test)
  assert list(rows) == ['lab/train', 'wild/train']
  assert all(list(r) == ['lab/test', 'wild/test'] for r in rows.values())
  for name in ('lab_train', 'wild_train'):
    results = cross_domain.final_results(str(tmp_path / name))
    assert results['datasets'] == test
  table = (tmp_path / 'matrix.md').read_text()
  assert f'**{rows["lab/train"]["lab/test"]:.2f}**' in table
  assert cross_domain.run_protocol(config, str(tmp_path), train, test) == rows
