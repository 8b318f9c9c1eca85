"""Errors that stop a run with a message for the user, not a traceback.

``launch.py`` catches ``RunError`` and prints its message (one paragraph
saying what happened and what to do); the exit code is non-zero. Bad config
values are ``ValueError`` and are raised before anything is built.
"""


class RunError(Exception):
  """A run cannot start or continue; the message says why and what to do."""


class ConfigMismatchError(RunError):
  """The workdir holds a run with a different resolved config."""


class CheckpointError(RunError):
  """A checkpoint cannot be restored: damaged, or written by a different model/optimizer."""


class NonFiniteError(RunError):
  """The loss or a gradient became NaN/Inf; nothing from that step on was saved."""


class InvalidConfigError(RunError, ValueError):
  """A config value is out of range or names nothing registered; raised before any compile."""


class StorageError(RunError):
  """A file or folder of the run cannot be written or read: disk full, permission, read-only,
  a path that is a file. The message names the path, the cause, and what is intact."""


class DataNotFoundError(RunError):
  """The task's data set is missing; the message says how to get it."""
