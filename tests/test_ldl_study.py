"""python -m ferjax.studies.label_distribution: cells, resuming, results.csv and figures, errors
(the smoke budget of configs/ldl_synthetic.py)."""
import csv
import json
import os

import pytest

from ferjax.errors import UserError
from ferjax.studies import label_distribution as study
from tests.conftest import REPO

CONFIG = os.path.join(REPO, 'configs', 'ldl_synthetic.py') + ':smoke'


def test_cells_of_the_paper_grid():
  got = study.cells(['vgg16', 'dan'], ['mse', 'pld', 'cce'], [1, 8])
  assert got == [('vgg16', 'mse', 8), ('vgg16', 'pld', 8), ('vgg16', 'cce', 8),
                 ('vgg16', 'mse', 1), ('dan', 'mse', 1), ('dan', 'mse', 8)]
  assert len(study.cells(['a', 'b'], ['mse', 'pld'], [1, 2, 3], grid='full')) == 12
  assert study.parse_nhot('1-3,8') == [1, 2, 3, 8]
  assert len(study.parse_losses('all')) == 10
  with pytest.raises(UserError, match='1..8'):
    study.parse_nhot('0-3')
  with pytest.raises(UserError, match='unknown'):
    study.parse_losses('mse,focal')


def test_unknown_model_is_named():
  with pytest.raises(UserError, match="model 'alexnet' is not available.*vgg16"):
    study.study(CONFIG, '/nonexistent/never', ['alexnet'], ['mse'], [8])


def test_dan_cell_config():
  cfg = study.cell_config(CONFIG, 'dan', 'kld', 2)
  assert (cfg.method, cfg.loss.name, cfg.data.nhot, cfg.loss.target) == ('dan', 'kld', 2, 'soft')


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('ldl'))
  rows = study.study(CONFIG, workdir, ['vgg16'], ['mse', 'pld'], [1, 8])
  return workdir, rows


def test_sweep_writes_table_and_figures(sweep):
  workdir, rows = sweep
  assert [(r['model'], r['loss'], r['nhot']) for r in rows] == [
      ('vgg16', 'mse', 8), ('vgg16', 'pld', 8), ('vgg16', 'mse', 1)]
  with open(os.path.join(workdir, 'results.csv')) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 3 and set(study.COLUMNS) == set(table[0])
  for r in table:
    assert 0 <= float(r['ordinary_anymax']) <= 100 and int(r['complex_n']) > 0
  for name in ('fig26_losses', 'fig28_nhot_ordinary', 'fig29_nhot_complex'):
    assert os.path.getsize(os.path.join(workdir, name + '.png')) > 1000


def test_finished_cells_are_skipped_and_a_lost_marker_recovers(sweep):
  workdir, rows = sweep
  marker = os.path.join(workdir, 'cells', 'vgg16-pld-n8', 'cell.json')
  with open(marker) as f:
    before = json.load(f)
  os.remove(marker)           # as if the sweep was killed after training, before the marker
  again = study.study(CONFIG, workdir, ['vgg16'], ['mse', 'pld'], [1, 8])
  after = again[1]
  assert after['ordinary_anymax'] == before['ordinary_anymax'] and after['steps'] == 10
  assert [r['wall_s'] for r in again[::2]] == [r['wall_s'] for r in rows[::2]]   # not rerun


def test_only_finished_trains_nothing(sweep):
  workdir, _ = sweep
  rows = study.study(CONFIG, workdir, ['vgg16'], ['mse'], [1, 2, 8], only_finished=True)
  assert [(r['loss'], r['nhot']) for r in rows] == [('mse', 8), ('mse', 1)]
  assert not os.path.exists(os.path.join(workdir, 'cells', 'vgg16-mse-n2'))
  with open(os.path.join(workdir, 'study.json')) as f:
    assert json.load(f)['of'] == 3
