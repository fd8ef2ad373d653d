"""Files written so that a kill at any moment leaves the old complete file or the new one."""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable

_SUFFIX = ".tmp"


def _prefix(name: str) -> str:
    return f".{name}."


def write_atomic(path: str | os.PathLike, write: Callable, binary: bool = True) -> None:
    """``write(file)`` into a temporary file next to ``path``, flushed and fsynced, then renamed
    over ``path`` (os.replace is atomic within a folder) and the folder fsynced."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=_prefix(name), suffix=_SUFFIX, dir=folder)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600, made what open() would have made
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_folder(folder)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporaries(path: str | os.PathLike) -> list[str]:
    """The temporary files write_atomic(path) leaves when the process is killed mid-write."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return sorted(glob.glob(os.path.join(glob.escape(folder), glob.escape(_prefix(name)) + "*" + _SUFFIX)))


def remove_temporaries(path: str | os.PathLike) -> None:
    for temporary in temporaries(path):
        os.remove(temporary)
