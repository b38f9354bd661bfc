"""Errors that are the user's to fix.

A command prints a `UserError` as one `error: <message>` line and exits 2, without a traceback
(`ferjax.cli.run`). This module imports nothing, so that any layer (readers, checkpoints,
interop) can raise or subclass it without depending on absl or the CLI.
"""


class UserError(Exception):
  """A mistake in the command line, a config, a dataset spec or an input file.

  The message should name what was wrong and how to fix it, e.g.
  `--datasets rafdb:tset: unknown split 'tset'; the splits are train, test`.
  """


class ConfigError(UserError, ValueError):
  """A config that cannot work as given (a class space that does not fit, a resumed run whose
  config changed, an unknown metric). A ValueError too, for code that catches those."""


class DataError(UserError, ValueError):
  """A dataset name, spec or option that names nothing or does not parse (`nope:test`,
  `rafdb:train@`, `--option crop_box`). A ValueError too, for code that catches those."""
