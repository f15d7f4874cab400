"""Errors a user can fix. The binaries print their message on one line, with no traceback, and exit 2."""


def first_line(error: BaseException, limit: int = 300) -> str:
  """The first line of an error's message, at most `limit` characters: for one-line reports."""
  return (str(error).strip().splitlines() or [''])[0][:limit]


class UserError(Exception):
  """Bad input: a config value, a data directory, a checkpoint, a weights file. The message names the
  key or path, what is wrong and what to do."""


class ConfigError(UserError, ValueError):
  """A config value out of range or of the wrong kind."""


class DataError(UserError, ValueError):
  """Records that are missing, of another builder version, or not what the config asks for."""


class PathError(UserError, OSError):
  """A directory to write in that is a file, cannot be created, or cannot be written."""
