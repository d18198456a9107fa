"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

A file is written completely into a temporary file beside its target, `.<name>.<8 random
characters>.tmp`, flushed to disk (fsync) and renamed over the target (`os.replace`, atomic on
POSIX and Windows). Temporary files are created with mode 0666 minus the umask, as open() creates
any file, so a saved file gets the mode the user's umask gives. `write_temp` and `second_name` are
the pieces from which multi-file saves (hf.write_checkpoint) build their own all-or-nothing
replacement.
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


def create_temp(path: Path, suffix: str = ".tmp") -> str:
    """Create an empty file `.<name>.<random>.tmp` beside `path` and return its name. It is made by
    open() with mode 0666, so the umask (and a default ACL) applies as to any new file; mkstemp
    would make it 0600."""
    path = Path(path)
    while True:
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            continue


def write_temp(path: Path, write) -> str:
    """Call write(tmp) for a fresh temporary file beside `path`, fsync it and return its name; on
    any failure the temporary file is removed and the error re-raised."""
    tmp = create_temp(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        remove_quietly(tmp)
        raise
    return tmp


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
    """A second name `.<name>.<random>.old` for the current file (a hard link, or a copy where
    links are unsupported)."""
    backup = create_temp(path, suffix=".old")
    os.remove(backup)
    try:
        os.link(path, backup)
    except OSError:
        shutil.copy2(path, backup)
    return backup
