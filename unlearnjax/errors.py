"""Errors that mean "the input is wrong": scripts print them and exit 1."""


class ConfigError(ValueError):
  """A configuration value is invalid; the message says which and why."""


class DatasetUnavailableError(RuntimeError):
  """A data set is not prepared locally and cannot be downloaded."""
