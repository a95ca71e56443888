"""Typed exceptions. The library raises these; the CLI turns them into one-line messages."""

from __future__ import annotations

import contextlib
import errno
import os

__all__ = [
    "PlainnetError",
    "UnknownModelError",
    "WeightsError",
    "EquivalenceError",
    "ConfigError",
    "DataError",
    "writing_into",
    "describe_os_error",
    "describe_error",
    "is_user_error",
]


class PlainnetError(Exception):
    """Base class for errors a user can act on; ``str(err)`` is a complete one-line message."""


class UnknownModelError(PlainnetError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown model"


class WeightsError(PlainnetError):
    """A checkpoint could not be read, recognized or loaded strictly."""


class EquivalenceError(PlainnetError, AssertionError):
    """Two models that should compute the same function do not, within tolerance."""


class ConfigError(PlainnetError, ValueError):
    """A configuration key or value is invalid."""


class DataError(PlainnetError):
    """A dataset folder or file cannot be used."""


@contextlib.contextmanager
def writing_into(folder: str | os.PathLike):
    """A failed write inside the block names ``folder`` when the OS error names no file (a disk that
    fills up mid-write reports only "No space left on device")."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(folder)) from None
        raise


def describe_os_error(e: OSError) -> str:
    """One line for a file-system failure: what happened, to which path, and what to do."""
    path = e.filename or "a file"
    if e.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}: free some space, or write elsewhere (--runs-dir, --out)"
    if e.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {path}: free some space, or write elsewhere (--runs-dir, --out)"
    if e.errno == errno.EROFS:
        return f"{path} is on a read-only file system: write elsewhere (--runs-dir, --out)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {path}: check its permissions, or write elsewhere (--runs-dir, --out)"
    if e.errno == errno.ENOENT:
        return f"{path}: no such file or folder (for an output, its parent folder must exist)"
    return f"{path}: {e.strerror or e}"


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is something the user can act on (a :class:`PlainnetError` or a file-system
    failure) rather than a bug."""
    return isinstance(e, (PlainnetError, OSError))


def describe_error(e: BaseException) -> str:
    """Any failure in one line: a :class:`PlainnetError`'s own message, a file-system failure as
    :func:`describe_os_error` words it, anything else (a bug) as its type and its first 300 characters."""
    if isinstance(e, PlainnetError):
        return str(e)
    if isinstance(e, OSError):
        return describe_os_error(e)
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300] or '(no message)'}"
