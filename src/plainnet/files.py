"""Writing files so that a crash, a kill or a full disk never leaves a half-written one where a good one was.

Every file plainnet writes into a run directory or a cache goes through :func:`atomic_write`: the bytes
go to a temporary file beside the destination, are synced, and the temporary file is renamed over the
destination; a failed write removes the temporary file, leaves the old file untouched and raises an
``OSError`` that names the destination.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text", "atomic_torch_save"]


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """``with atomic_write(path, "w") as f: ...`` -- ``path`` appears complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # (one temporary name per writer: processes may write the same file at once)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    try:
        with atomic_write(path) as f:
            torch.save(obj, f)
    except RuntimeError as e:  # torch's zip writer reports a failed write as a RuntimeError
        if "write" not in str(e).lower():
            raise
        full = shutil.disk_usage(Path(path).parent).free < (1 << 20)
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from None
    return Path(path)
