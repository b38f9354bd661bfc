"""One runner for every ferjax command: absl flags, a `--help` that exits 0, one-line errors.

A command module defines its absl flags (underscore names: `--per_class`) and `main(argv)`, and
exposes `cli()` for its console script (`ferjax-X` in pyproject.toml):

  from ferjax import cli as cli_lib    # not `from ferjax import cli`: `def cli()` would shadow it

  def cli() -> None:
    cli_lib.run(main)

  if __name__ == '__main__':           # python -m ferjax.X
    cli()

What `run` adds to `absl.app.run`:
- `--help`, `-h`, `--helpfull` print usage on stdout and exit 0 (absl exits 1); the command's own
  flags and `--debug` are listed under `ferjax-X` as under `python -m`.
- A user mistake prints one `error: <message>` line on stderr and exits 2, with no traceback:
  `UserError` (ferjax.errors, re-exported here), `absl.app.UsageError`, `FileNotFoundError`,
  flag errors (unknown flag, bad value, missing required flag) and config errors (a config file
  that does not load, an unknown `--config.a.b=v` field, a value of the wrong type).
- `--debug` raises instead, so the full traceback shows.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn, Sequence

from absl import app, flags

from ferjax.errors import UserError

__all__ = ['EXIT_USER_ERROR', 'UserError', 'run']

FLAGS = flags.FLAGS
EXIT_USER_ERROR = 2    # as argparse: 1 stays for failures that are not the user's

_DEBUG = flags.DEFINE_boolean('debug', False,
                              'On an error, raise it with its full traceback instead of '
                              'printing one `error:` line.')

# Raised by main(); anything else is a bug and keeps its traceback.
_USER_ERRORS = (UserError, app.UsageError, FileNotFoundError)
_HELP_SHORTCUT = '-h'


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
  """Parses flags from `argv` (default sys.argv) and calls `main(remaining_argv)`; exits."""
  _list_flags_in_help(main)
  app.run(_guarded(main), argv=list(sys.argv if argv is None else argv),
          flags_parser=_parse_flags)
  raise AssertionError('absl.app.run returned')   # it always exits


def parse_step(value: str | None) -> int | str | None:
  """A `--step` flag: a checkpoint step, 'best', or None for the latest."""
  if value is None or value == 'best':
    return value
  try:
    return int(value)
  except ValueError:
    raise UserError(f"--step={value!r}: expected a step number or 'best'") from None


def quiet_logs() -> None:
  """Library logs at WARNING unless --verbosity was given: absl.app sends INFO to stderr, and
  TFDS's line for every file it reads or writes would bury a command's output."""
  from absl import logging as absl_logging
  if not FLAGS['verbosity'].present:
    absl_logging.set_verbosity(absl_logging.WARNING)


def _guarded(main):

  def guarded(argv):
    try:
      return main(argv)
    except _USER_ERRORS as e:
      if _DEBUG.value:
        raise
      _fail(_main_error_message(e))

  return guarded


def _parse_flags(argv: list[str]) -> list[str]:
  argv = _expand_short_help(argv)
  try:
    rest = FLAGS(argv)
    _raise_deferred_config_error()
    return rest
  except SystemExit as e:
    # absl's --help/--helpshort/--helpfull/--helpxml print usage, then exit 1 from inside
    # parsing; no other flag exits there with 1. Asking for help is not a failure.
    if e.code == 1:
      sys.exit(0)
    raise
  except BrokenPipeError:   # `--help | head` stopped reading: not an error
    # Python would report the pipe again when it flushes stdout at exit.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  except Exception as e:  # noqa: BLE001 - everything here comes from the user's arguments
    if _debug_requested(argv):
      raise
    _fail(_flag_error_message(e))


def _fail(message: str) -> NoReturn:
  sys.stdout.flush()   # so that earlier output is not interleaved after the error line
  sys.stderr.write(f'error: {message}\n')
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


def _expand_short_help(argv: list[str]) -> list[str]:
  """`-h` -> `--help` (absl has only `-?`), unless the command defines `-h` itself."""
  if 'h' in FLAGS:
    return argv
  out = list(argv)
  for i, arg in enumerate(out[1:], 1):
    if arg == '--':
      break
    if arg == _HELP_SHORTCUT:
      out[i] = '--help'
  return out


def _debug_requested(argv: list[str]) -> bool:
  # Flags parse left to right: a `--debug` after the failing flag is not parsed yet (and the
  # FlagHolder refuses reads before parsing ends, the Flag does not).
  if FLAGS['debug'].value:
    return True
  for arg in argv[1:]:
    if arg == '--':
      break
    if arg.lstrip('-').lower() in ('debug', 'debug=true', 'debug=1'):
      return True
  return False


def _list_flags_in_help(main) -> None:
  """Makes `--help` list the command's flags and `--debug`.

  absl's short help lists the key flags of the module named sys.argv[0], which is where flags
  defined in `__main__` go (`python -m ferjax.X`). A console script's sys.argv[0] is
  `.../bin/ferjax-X` while the flags belong to `ferjax.X`, so they are registered there too,
  and `__main__`'s missing docstring (the usage text) becomes the command module's.
  """
  prog = sys.argv[0]
  module = getattr(main, '__module__', None)
  if module and module != '__main__' and module in sys.modules:
    for flag in FLAGS.get_key_flags_for_module(module):
      FLAGS.register_key_flag_for_module(prog, flag)
    main_module = sys.modules.get('__main__')
    if main_module is not None and not main_module.__doc__:
      main_module.__doc__ = sys.modules[module].__doc__
  FLAGS.register_key_flag_for_module(prog, FLAGS['debug'])


def _raise_deferred_config_error() -> None:
  """A config file that cannot be read is not a parse error in ml_collections: the flag holds
  an object that raises on first use, deep inside main. Report it now, as a flag error."""
  config_flags = sys.modules.get('ml_collections.config_flags.config_flags')
  error_config = getattr(config_flags, '_ErrorConfig', None)
  if error_config is None:
    return
  for name in list(FLAGS):
    flag = FLAGS[name]
    if isinstance(flag.value, error_config):
      raise UserError(f'--{name}={getattr(flag, "config_filename", "")}: '
                      f'{_last_line(str(flag.value._error))}')  # noqa: SLF001


def _flag_error_message(e: BaseException) -> str:
  if isinstance(e, UserError):
    return _one_line(str(e))
  if isinstance(e, flags.Error):   # absl names the flag itself: "flag --x=y: ..."
    return _one_line(str(e).replace('Error whilst parsing config file:', ''))
  where = _flag_being_parsed(e)
  if isinstance(e, SyntaxError):   # a config file that is not Python
    msg = f'{e.filename}:{e.lineno}: {e.msg}'
  elif isinstance(e, (KeyError, AttributeError)):   # --config.a.b=v with no field a.b
    msg = f'the config has no field {_plain(e)}'
  else:
    msg = f'{type(e).__name__}: {_plain(e)}'
  return _one_line(f'{where}: {msg}' if where else msg)


def _main_error_message(e: BaseException) -> str:
  if isinstance(e, FileNotFoundError) and e.filename and e.strerror:
    return f'{e.filename}: {e.strerror}'
  # A UserError may list details (e.g. mismatched weight names) on further lines: indented.
  return str(e).strip().replace('\n', '\n  ')


def _flag_being_parsed(e: BaseException) -> str:
  """'--name=value' of the absl Flag.parse in the traceback, or ''.

  ml_collections checks every `--config.a.b=v` override while it parses `--config` itself; its
  frame then holds the override's path, which names the culprit better (message only).
  """
  where = ''
  tb = e.__traceback__
  while tb is not None:
    frame = tb.tb_frame
    owner = frame.f_locals.get('self')
    if isinstance(owner, flags.Flag):
      if frame.f_code.co_name == 'parse' and not where:
        where = f'--{owner.name}={frame.f_locals.get("argument", "")}'
      field_path = frame.f_locals.get('field_path', frame.f_locals.get('override'))
      if isinstance(field_path, str):
        where = f'--{owner.name}.{field_path}'
    tb = tb.tb_next
  return where


def _plain(e: BaseException) -> str:
  """The message of e without the quotes KeyError adds (ml_collections wraps KeyErrors in
  AttributeErrors)."""
  while len(e.args) == 1 and isinstance(e.args[0], BaseException):
    e = e.args[0]
  if len(e.args) == 1 and isinstance(e.args[0], str):
    return e.args[0]
  return str(e)


def _last_line(text: str) -> str:
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  return lines[-1] if lines else ''


def _one_line(text: str) -> str:
  """First line, and the last if there are more (a traceback's last line is its error)."""
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  if len(lines) <= 1:
    return lines[0] if lines else text
  first = lines[0].rstrip(':').rstrip()
  return f'{first}: {lines[-1]}'
