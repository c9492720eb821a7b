"""Errors that reach the user as one line."""


class RunbookError(Exception):
    """A problem the user can fix (bad input, missing config); printed as one line."""


class ConfigError(RunbookError):
    """An environment file, parameter or threshold that is malformed."""
