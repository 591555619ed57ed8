"""One exception type for every user mistake the framework can name, and one way to print any error as a line.

Command-line entry points catch `HRMError` and print its message as a single line, so a wrong path or
a mistyped key never ends in a traceback. Library callers can catch it like any other exception.
"""


class HRMError(Exception):
    """A problem with the user's input (paths, configs, checkpoints, datasets) and how to fix it."""


class Interrupted(HRMError):
    """The user stopped the command (Ctrl-C, SIGTERM); the message says what was kept. Exit status 130."""


class ConfigError(HRMError, ValueError):
    """An invalid or unknown configuration key or value."""


class CheckpointError(HRMError):
    """A checkpoint that is missing, unreadable or does not fit the model or data."""


class DatasetError(HRMError):
    """A dataset folder or source file that is missing or malformed."""


class AnalysisError(HRMError):
    """A request the analysis tools cannot serve (wrong task, unsupported model, bad puzzle string)."""


class TaskError(AnalysisError):
    """A puzzle typed as text that its task cannot read, or a task feature the task does not have."""


def one_line(err: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type name when the message is empty.

    Exceptions from libraries (torch, numpy, the OS) may carry an empty or many-line message; the
    one-line error of a CLI must never fail on that, so every CLI formats foreign errors through here.
    """
    text = str(err)
    if isinstance(err, OSError) and err.strerror:
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


def error_line(err: BaseException) -> str:
    """`error: <message>` for a CLI's stderr (always exactly one line)."""
    return f"error: {one_line(err)}"
