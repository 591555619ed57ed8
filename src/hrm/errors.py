"""One exception type for every user mistake the framework can name.

Command-line entry points catch `HRMError` and print its message as a single line, so a wrong path or
a mistyped key never ends in a traceback. Library callers can catch it like any other exception.
"""


class HRMError(Exception):
    """A problem with the user's input (paths, configs, checkpoints, datasets) and how to fix it."""


class ConfigError(HRMError, ValueError):
    """An invalid or unknown configuration key or value."""


class CheckpointError(HRMError):
    """A checkpoint that is missing, unreadable or does not fit the model or data."""


class DatasetError(HRMError):
    """A dataset folder or source file that is missing or malformed."""
