"""User-facing errors, kept apart from bugs.

A `MosaicPretrainError` means the user gave us something we cannot use (a config value, a data
path, a checkpoint). Its message says what is wrong, where, and how to fix it, and the CLI prints
it as one line with exit code 2. Anything else that escapes is a bug in our code and keeps its
traceback.
"""


class MosaicPretrainError(Exception):
    """Base class for problems the user can fix. `problems` lists them one by one when several
    were found at once (the message joins them)."""

    def __init__(self, message: str = "", problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


def first_line(error: BaseException) -> str:
    """A library error's first line (or its type), to quote inside our one-line messages."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ConfigError(MosaicPretrainError, ValueError):
    """A configuration value is unknown, of the wrong type, or inconsistent with another."""


class DataError(MosaicPretrainError):
    """A dataset, shard, tokenizer or batch cannot be used as given."""


class CheckpointError(MosaicPretrainError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class FolderInUseError(MosaicPretrainError):
    """Another live run holds the folder this one would write to (its lock file says who)."""


class RunStopped(Exception):
    """A run stopped on request (SIGTERM, Ctrl-C) after saving its state: not an error of the
    user's, but not a finished run either. The exit code is the shell's for that signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Problems:
    """Collects user problems from several checks: a failing check's problems are kept and the
    next check still runs, so one pass reports everything."""

    def __init__(self):
        self.found: list[str] = []

    def attempt(self, check, *args, **kwargs):
        """`check(*args, **kwargs)`, or None after recording its problems."""
        try:
            return check(*args, **kwargs)
        except MosaicPretrainError as error:
            self.found.extend(error.problems)
            return None

    def add(self, problem: str) -> None:
        self.found.append(problem)
