"""Typed exceptions. The library raises these; the CLI turns them into one-line messages."""

from __future__ import annotations

import contextlib
import os

__all__ = [
    "PlainnetError",
    "UnknownModelError",
    "WeightsError",
    "EquivalenceError",
    "ConfigError",
    "DataError",
    "writing_into",
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
