"""The data commands end to end, as a user runs them: `python -m ferjax.data.prepare`, `inspect`
and `synthetic` in subprocesses (absl parses flags once per process). `--help` exits 0, a
mistake prints one `error:` line and exits 2, `--debug` shows the traceback.

The functions behind them (prepare.prepare, inspect.report) are tested in test_prepare.py.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ferjax import labels

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMANDS = ('ferjax.data.prepare', 'ferjax.data.inspect', 'ferjax.data.synthetic')


def _run(module, *args):
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop('FERJAX_DATA_DIR', None)
  return subprocess.run([sys.executable, '-m', module, *map(str, args)], capture_output=True,
                        text=True, env=env, cwd=REPO, timeout=300)


def _assert_one_error_line(p, *fragments):
  assert p.returncode == 2, p.stderr
  lines = p.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), p.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
  """A folder tree: train with 2 happy and 1 angry image, test with 1 neutral."""
  root = tmp_path_factory.mktemp('raw')
  rng = np.random.default_rng(0)
  for split, cls, n in [('train', 'happy', 2), ('train', 'angry', 1), ('test', 'neutral', 1)]:
    os.makedirs(root / split / cls)
    for i in range(n):
      Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
          root / split / cls / f'{i}.png')
  return root


@pytest.fixture(scope='module')
def prepared(raw, tmp_path_factory):
  out = tmp_path_factory.mktemp('tfds')
  p = _run('ferjax.data.prepare', '--dataset', 'folder', '--manual_dir', raw, '--data_dir', out,
           '--noprogress')
  assert p.returncode == 0, p.stderr
  return out, p.stdout


def test_prepare_then_inspect(prepared, tmp_path):
  out, stdout = prepared
  assert 'train          3' in stdout and 'test           1' in stdout
  assert f"'folder:SPLIT@{out}'" in stdout
  grid = tmp_path / 'grid.png'
  p = _run('ferjax.data.inspect', '--dataset', 'folder', '--data_dir', out, '--grid', grid,
           '--split', 'train', '--per_class', 1, '--size', 16)
  assert p.returncode == 0 and not p.stderr, p.stderr    # no TFDS INFO lines
  rows = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines()[1:]}
  assert rows['split'] == [*labels.class_names('affectnet7'), 'total']
  assert rows['train'][-1] == '3' and rows['test'][-1] == '1'
  assert Image.open(grid).width == 7 * (16 + 2)


def test_prepare_keeps_the_older_flag_spelling(raw, prepared):
  out, _ = prepared   # already prepared: the counts come back without a rebuild
  p = _run('ferjax.data.prepare', '--dataset=folder', f'--manual_dir={raw}', f'--data_dir={out}',
           '--no_progress', '--splits=train')
  assert p.returncode == 0, p.stderr
  assert 'train          3' in p.stdout


@pytest.mark.parametrize('module', COMMANDS)
def test_help_exits_0(module):
  p = _run(module, '--help')
  assert p.returncode == 0, p.stderr
  assert '--[no]debug' in p.stdout
  assert ('--dataset' in p.stdout) == (module != 'ferjax.data.synthetic')


@pytest.mark.parametrize('module', COMMANDS[:2])
def test_console_script_help_lists_the_flags(module):
  # ferjax-prepare / ferjax-inspect import the module and call cli(); __main__ is the wrapper.
  p = subprocess.run([sys.executable, '-c', f'import {module} as m; m.cli()', '--help'],
                     capture_output=True, text=True, cwd=REPO, timeout=300,
                     env=dict(os.environ, PYTHONPATH=REPO))
  assert p.returncode == 0, p.stderr
  assert '--dataset' in p.stdout and '--data_dir' in p.stdout and '--[no]debug' in p.stdout


def test_prepare_mistakes_are_one_error_line(raw, tmp_path):
  out = tmp_path / 'out'
  _assert_one_error_line(_run('ferjax.data.prepare', '--dataset', 'nope', '--manual_dir', raw),
                         '--dataset=nope', 'rafdb')
  _assert_one_error_line(_run('ferjax.data.prepare', '--dataset', 'folder'), '--manual_dir')
  _assert_one_error_line(
      _run('ferjax.data.prepare', '--dataset', 'folder', '--manual_dir', tmp_path / 'missing',
           '--data_dir', out), 'missing', 'does not exist', 'ROOT/<split>/<class name>')
  _assert_one_error_line(
      _run('ferjax.data.prepare', '--dataset', 'folder', '--manual_dir', raw, '--data_dir', out,
           '--option', 'crop_box'), "--option 'crop_box': expected key=value")
  # The builder's and the readers' ValueErrors are the user's here.
  _assert_one_error_line(
      _run('ferjax.data.prepare', '--dataset', 'folder', '--manual_dir', raw, '--data_dir', out,
           '--splits', 'tset', '--noprogress'), "no split(s) ['tset']")
  assert not os.path.exists(out / 'folder')


def test_reader_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
  bad = tmp_path / 'bad' / 'train' / 'happy'
  os.makedirs(bad)
  Image.new('RGB', (8, 8)).save(bad / 'a.png')
  (bad / 'b.png').write_bytes(b'not an image')
  args = ('--dataset', 'folder', '--manual_dir', tmp_path / 'bad', '--data_dir', tmp_path / 'out',
          '--noprogress', '--option', 'bad_images=error')
  _assert_one_error_line(_run('ferjax.data.prepare', *args), 'b.png', 'cannot decode image')
  p = _run('ferjax.data.prepare', *args, '--debug')
  assert p.returncode != 0 and 'Traceback (most recent call last)' in p.stderr
  assert 'BadImage' in p.stderr


def test_inspect_and_synthetic_mistakes_are_one_error_line(prepared, tmp_path):
  out, _ = prepared
  # The fix goes on an indented second line: the command that prepares it.
  p = _run('ferjax.data.inspect', '--dataset', 'rafdb', '--data_dir', out)
  assert p.returncode == 2 and 'Traceback' not in p.stderr, p.stderr
  first, fix, *_ = p.stderr.splitlines()
  assert first.startswith("error: dataset 'rafdb' is not prepared")
  assert fix.startswith('    python -m ferjax.data.prepare --dataset rafdb ')
  _assert_one_error_line(_run('ferjax.data.inspect', '--dataset', 'folder', '--data_dir', out,
                              '--split', 'val'), "no split 'val'")
  _assert_one_error_line(_run('ferjax.data.synthetic'), 'nothing to do')
  _assert_one_error_line(_run('ferjax.data.synthetic', '--per-class', 2), 'per_class')


def test_importing_the_commands_defines_no_flags():
  # prepare() and report() are used as a library: their flags (and ferjax.cli's --debug) come
  # only with cli(), so they import beside each other and beside a program's own flags.
  code = ('import ferjax.data.prepare, ferjax.data.inspect, ferjax.data.synthetic\n'
          'from absl import flags\n'
          'defined = {"dataset", "data_dir", "grid", "per_class", "debug"} & set(flags.FLAGS)\n'
          'assert not defined, defined\n')
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO, timeout=300)
