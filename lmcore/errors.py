"""One exception type per kind of user mistake.

Each error carries *where* the problem is (file, line, config key) and says
what to do, so the CLI can print it as-is and exit with the right code:
configuration and usage errors exit 2, failures of the work exit 1.
"""

from __future__ import annotations


class LmcoreError(Exception):
    """Base class: a problem lmcore can explain to a user."""

    exit_code = 1


class ConfigError(LmcoreError):
    """A bad configuration key or value. ``key`` is the dotted path."""

    exit_code = 2

    def __init__(self, message: str, key: str | None = None, source: str | None = None):
        self.key = key
        self.source = source
        where = ""
        if source:
            where += f"{source}: "
        if key:
            where += f"{key}: "
        super().__init__(where + message)


class UsageError(LmcoreError):
    """A command given something it cannot use (an output folder that is not empty, a path that is
    not a model id); names it. Exit code 2, like a bad config."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class DataFormatError(LmcoreError):
    """Input data that cannot be used; names the file and line when known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message)


class CheckpointError(LmcoreError):
    """A checkpoint that is missing, corrupted or unsafe to load; names the file."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class StoreError(LmcoreError):
    """A store directory that is incomplete or inconsistent."""


class ModelNotFoundError(LmcoreError):
    """A model id that the registry does not hold."""

    exit_code = 2


class TrainingDivergedError(LmcoreError):
    """Training produced non-finite losses or gradients too many updates in a row; names the last good checkpoint."""

    def __init__(self, message: str, key: str | None = None, step: int | None = None, checkpoint=None):
        self.key = key
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(f"{key}: {message}" if key else message)


class TrainingInterrupted(LmcoreError):
    """Training stopped on a signal after writing a checkpoint; the same command resumes it.

    ``exit_code`` is the shell's convention for a signal: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
    """

    def __init__(self, message: str, signum: int, step: int, checkpoint=None):
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        self.exit_code = 128 + int(signum)
        super().__init__(message)
