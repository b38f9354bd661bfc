"""The README's benchmark table is the one bench/readme.py generates from the newest committed
bench/results/*.json: a hand edit, or a new results file without a regenerated table, fails CI.

The commands run in subprocesses: they define absl flags (`--out`, `--check`) that other
modules under test define too.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, 'README.md')
RESULTS = os.path.join(REPO, 'bench', 'results')
BEGIN, END = '<!-- bench:begin -->', '<!-- bench:end -->'


def _run(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                        env=env, timeout=120)


def _table(text):
  return text[text.index(BEGIN):text.index(END)]


def test_readme_table_is_generated_from_the_latest_results():
  p = _run('-m', 'bench.readme', '--check')
  assert p.returncode == 0, p.stderr


def test_check_fails_on_a_hand_edited_table_and_regenerating_restores_it(tmp_path):
  with open(README) as f:
    original = f.read()
  table = _table(original)
  ratio = re.search(r'\| (\d+\.\d+)x \|', table).group(1)    # the first ratio of the table
  edited = original.replace(table, table.replace(f'| {ratio}x |', '| 9.99x |', 1))
  assert edited != original
  readme = tmp_path / 'README.md'
  readme.write_text(edited)
  p = _run('-m', 'bench.readme', '--check', f'--readme={readme}')
  assert p.returncode == 1
  assert 'python -m bench.readme' in p.stderr
  assert readme.read_text() == edited   # --check writes nothing
  p = _run('-m', 'bench.readme', f'--readme={readme}')
  assert p.returncode == 0, p.stderr
  assert readme.read_text() == original


def _results_like_the_repo(tmp_path):
  results = tmp_path / 'results'
  results.mkdir()
  newest = max(n for n in os.listdir(RESULTS) if n.endswith('.json'))
  with open(os.path.join(RESULTS, newest)) as f:
    return results, json.load(f)


def test_the_newest_run_wins_with_its_date_and_machine(tmp_path):
  results, run = _results_like_the_repo(tmp_path)
  run['machine'].update(date='2026-01-01')
  run['machine'].pop('timestamp', None)
  (results / '2026-01-01.json').write_text(json.dumps(run))
  later = json.loads(json.dumps(run))
  later['machine'].update(date='2026-12-01', timestamp='2026-12-01T18:00:00+00:00',
                          cpu_model='Example CPU @ 3.00GHz', jaxlib='0.10.3', jax='0.10.3')
  later['rows'][0].update(ferjax=1234.5, ferjax_spread=[1200.0, 1300.0])
  earlier_same_day = json.loads(json.dumps(later))
  earlier_same_day['machine']['timestamp'] = '2026-12-01T09:00:00+00:00'
  earlier_same_day['rows'][0]['ferjax'] = 999.0
  (results / '2026-12-01.json').write_text(json.dumps(earlier_same_day))
  (results / '2026-12-01_2.json').write_text(json.dumps(later))
  readme = tmp_path / 'README.md'
  readme.write_text(f'# x\n\nprose before\n\n{BEGIN}\nold table\n{END}\n\nprose after\n')
  p = _run('-m', 'bench.readme', f'--readme={readme}', f'--results={results}')
  assert p.returncode == 0, p.stderr
  text = readme.read_text()
  assert text.startswith('# x\n\nprose before\n\n') and text.endswith(f'{END}\n\nprose after\n')
  table = _table(text)
  assert 'old table' not in table
  assert '2026-12-01_2.json' in table and '2026-12-01 18:00:00' in table
  assert 'Example CPU @ 3.00GHz' in table and 'jax 0.10.3' in table
  assert '1,234 img/s (1,200-1,300)' in table
  assert '999 img/s' not in table


def test_readme_without_markers_is_a_one_line_error(tmp_path):
  readme = tmp_path / 'README.md'
  readme.write_text('# no markers\n')
  p = _run('-m', 'bench.readme', f'--readme={readme}')
  assert p.returncode == 2
  assert p.stderr.startswith('error: ') and len(p.stderr.splitlines()) == 1


def test_every_benchmark_has_a_table_label():
  code = ('from bench import common, run\n'
          'missing = (set(run.QUICK) | set(run.FULL)) - set(common.LABELS)\n'
          'assert not missing, missing\n')
  p = _run('-c', code)
  assert p.returncode == 0, p.stderr


@pytest.mark.parametrize('args,rc,stream,fragment', [
    (['--help'], 0, 'stdout', '--suite'),
    (['--only=resnet18_train_112,nope'], 2, 'stderr', "error: --only: unknown benchmarks ['nope']"),
    (['--suite=medium'], 2, 'stderr', 'error: '),
    (['--out=results.txt'], 2, 'stderr', 'error: --out'),
])
def test_bench_run_flags(args, rc, stream, fragment):
  # Fails before any benchmark (or jax) runs.
  p = _run('-m', 'bench.run', *args)
  assert p.returncode == rc, p.stderr
  assert fragment in getattr(p, stream)


def test_results_have_a_date_and_machine():
  for name in os.listdir(RESULTS):
    if name.endswith('.json'):
      with open(os.path.join(RESULTS, name)) as f:
        meta = json.load(f)['machine']
      assert meta.get('date') and (meta.get('cpu_model') or meta.get('platform')), name
      assert meta.get('jax') and meta.get('cpus'), name


def test_regenerating_is_idempotent(tmp_path):
  readme = tmp_path / 'README.md'
  shutil.copy(README, readme)
  for _ in range(2):
    assert _run('-m', 'bench.readme', f'--readme={readme}').returncode == 0
  with open(README) as f:
    assert readme.read_text() == f.read()
