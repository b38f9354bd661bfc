"""ferjax.cli.run: --help exits 0, user mistakes are one `error:` line with exit 2, --debug
shows the traceback; console scripts point at modules with a cli() entry point.

Each case runs a tiny absl program in a subprocess: absl parses flags once per process.
"""
import ast
import os
import subprocess
import sys
import tomllib

import pytest

from ferjax import cli, errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'baseline_synthetic.py')

TOOL = '''"""A tiny command for the tests."""
import os
from absl import app, flags
from ml_collections import config_flags
from ferjax import cli as cli_lib

config_flags.DEFINE_config_file('config', None, 'Config file.')
flags.DEFINE_string('mode', 'ok', 'What main() does.')
flags.DEFINE_integer('count', 1, 'A number.')
flags.DEFINE_boolean('per_class', False, 'An underscore flag.')
FLAGS = flags.FLAGS


def main(argv):
  mode = FLAGS.mode
  if mode == 'user':
    raise cli_lib.UserError('unknown dataset spec "rafdb:tset"; the splits are train, test')
  if mode == 'usage':
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if mode == 'missing_file':
    open(os.path.join(os.path.dirname(__file__), 'no_such_file.msgpack'))
  if mode == 'bug':
    raise RuntimeError('a bug, not a user mistake')
  if mode == 'config':
    print('width', FLAGS.config.model.width)
  print('ran', argv[1:])


def cli():
  cli_lib.run(main)


if __name__ == '__main__':
  cli()
'''


@pytest.fixture
def tool(tmp_path):
  (tmp_path / 'tool.py').write_text(TOOL)
  return tmp_path


def _run(tool_dir, *args, script=True):
  """Runs the tool as `python tool.py ARGS` or, like a console script, through an import."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tool_dir), REPO]))
  cmd = ([sys.executable, str(tool_dir / 'tool.py')] if script else
         [sys.executable, '-c', 'import tool; tool.cli()'])
  return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, cwd=REPO,
                        timeout=120)


def _assert_one_error_line(p, *fragments):
  lines = p.stderr.splitlines()
  assert p.returncode == 2, p.stderr
  assert len(lines) == 1 and lines[0].startswith('error: '), p.stderr
  for fragment in fragments:
    assert fragment in lines[0]


@pytest.mark.parametrize('arg', ['--help', '-h', '--helpfull'])
def test_help_exits_0_and_lists_the_flags(tool, arg):
  p = _run(tool, arg)
  assert p.returncode == 0, p.stderr
  for flag in ('--mode', '--[no]per_class', '--[no]debug', '--config'):
    assert flag in p.stdout
  assert 'A tiny command for the tests.' in p.stdout


def test_help_of_a_console_script_lists_its_flags(tool):
  # A console script's __main__ is a wrapper without the flags or docstring of its module.
  p = _run(tool, '--help', script=False)
  assert p.returncode == 0, p.stderr
  for flag in ('--mode', '--[no]per_class', '--[no]debug'):
    assert flag in p.stdout
  assert 'A tiny command for the tests.' in p.stdout


def test_runs_main_with_the_remaining_arguments(tool):
  p = _run(tool, '--per_class', 'extra', script=False)
  assert p.returncode == 0, p.stderr
  assert "ran ['extra']" in p.stdout


@pytest.mark.parametrize('mode,fragment', [
    ('user', 'the splits are train, test'),
    ('usage', 'unexpected arguments'),
    ('missing_file', 'no_such_file.msgpack'),
])
def test_user_mistake_is_one_error_line(tool, mode, fragment):
  p = _run(tool, f'--mode={mode}', 'x' if mode == 'usage' else '--count=1')
  _assert_one_error_line(p, fragment)


@pytest.mark.parametrize('args,fragment', [
    (['--per-class'], 'per_class'),         # dashes: absl suggests the underscore name
    (['--count=many'], '--count=many'),
    (['--nonexistent=1'], 'nonexistent'),
])
def test_flag_error_is_one_error_line(tool, args, fragment):
  _assert_one_error_line(_run(tool, *args), fragment)


@pytest.mark.parametrize('args,fragment', [
    ([f'--config={CONFIG}', '--config.model.nonexistent=1'], '--config.model.nonexistent'),
    ([f'--config={CONFIG}', '--config.nonexistent.width=1'], '--config.nonexistent.width'),
    ([f'--config={CONFIG}', '--config.model.width=wide'], '--config.model.width=wide'),
    ([f'--config={CONFIG}:nope'], "unknown config argument 'nope'"),
    (['--config=configs/no_such_config.py'], 'no_such_config.py'),
    ([f'--config={os.path.join(REPO, "pyproject.toml")}'], 'pyproject.toml'),
])
def test_config_error_is_one_error_line(tool, args, fragment):
  _assert_one_error_line(_run(tool, '--mode=config', *args), fragment)


def test_config_override_still_works(tool):
  p = _run(tool, '--mode=config', f'--config={CONFIG}:cpu', '--config.model.width=24')
  assert p.returncode == 0, p.stderr
  assert 'width 24' in p.stdout


@pytest.mark.parametrize('args', [
    ['--mode=user', '--debug'],
    ['--debug', f'--config={CONFIG}', '--config.model.nonexistent=1'],
    [f'--config={CONFIG}', '--config.model.nonexistent=1', '--debug'],   # --debug parsed later
])
def test_debug_shows_the_traceback(tool, args):
  p = _run(tool, *args)
  assert p.returncode != 0
  assert 'Traceback (most recent call last)' in p.stderr
  assert not any(line.startswith('error: ') for line in p.stderr.splitlines())


def test_a_bug_keeps_its_traceback(tool):
  p = _run(tool, '--mode=bug')
  assert p.returncode == 1
  assert 'Traceback (most recent call last)' in p.stderr
  assert 'RuntimeError: a bug' in p.stderr


def test_user_error_is_importable_without_absl():
  # Low-level modules raise UserError without depending on absl or the CLI.
  code = 'import sys, ferjax.errors; assert "absl" not in sys.modules, sorted(sys.modules)'
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)
  assert cli.UserError is errors.UserError


def _scripts():
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']['scripts']


@pytest.mark.parametrize('name', sorted(_scripts()))
def test_console_script_has_a_cli_entry_point(name):
  # Read, not imported: the commands' absl flags cannot all be defined in one process.
  module, func = _scripts()[name].split(':')
  assert name.startswith('ferjax-') and func == 'cli'
  path = os.path.join(REPO, *module.split('.'))
  path = os.path.join(path, '__init__.py') if os.path.isdir(path) else path + '.py'
  assert os.path.exists(path), f'{name}: no module {module}'
  with open(path) as f:
    tree = ast.parse(f.read())
  defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'cli']
  assert defs, f'{name}: {module} has no top-level `def cli(): cli_lib.run(main)`'
  assert not defs[0].args.args, f'{module}.cli() must take no arguments'
