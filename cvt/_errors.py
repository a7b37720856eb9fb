"""User-facing error types shared by every room of cvt-nas.

Anything raised as a :class:`UserError` is a mistake in what the user gave (a config, a budget, a path):
command-line entry points print its message as one line and exit with code 2, no traceback.
"""


class UserError(ValueError):
    """Bad input from the user; the message says what is wrong and how to fix it."""


class ConfigError(UserError):
    """An invalid model configuration (names the offending key and stage/block)."""


class CheckpointError(UserError):
    """A checkpoint that does not fit the model (missing/unexpected keys, wrong shapes)."""
