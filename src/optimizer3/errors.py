"""Errors that speak to the user: the CLI prints them as one line and exits non-zero."""


class Optimizer3Error(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""


class UsageError(Optimizer3Error, ValueError):
    """An invalid setting: a bad name, count or combination of values."""


class CheckpointError(Optimizer3Error):
    """A checkpoint that is missing, unreadable, not ours, or for another architecture."""


class RunDirectoryError(Optimizer3Error):
    """A run directory that would be overwritten, or cannot be written."""
