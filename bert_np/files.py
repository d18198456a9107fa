"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

A file is written completely into a temporary file beside its target, flushed to disk (fsync) and
renamed over the target (`os.replace`, atomic on POSIX and Windows). `write_temp` and `second_name`
are the pieces from which multi-file saves (hf.write_checkpoint) build their own all-or-nothing
replacement.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_temp(path: Path, write) -> str:
    """Call write(tmp) for a fresh temporary file beside `path`, fsync it and return its name; on
    any failure the temporary file is removed and the error re-raised."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; a saved model is an ordinary file
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        remove_quietly(tmp)
        raise
    return tmp


def umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_quietly(path) -> None:
    """Remove a file that may already be gone."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def atomic_write_bytes(path: Path, write) -> None:
    """Call write(tmp_path), fsync it, then rename it over `path`: readers see old or new, never half."""
    path = Path(path)
    tmp = write_temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` as UTF-8 to `path` atomically."""
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def second_name(path: Path) -> str:
    """A second name for the current file (a hard link, or a copy where links are unsupported)."""
    fd, backup = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
    os.close(fd)
    os.remove(backup)
    try:
        os.link(path, backup)
    except OSError:
        shutil.copy2(path, backup)
    return backup
