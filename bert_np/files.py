"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

A file is written completely into a temporary file beside its target, `.<name>.<8 random
characters>.tmp`, flushed to disk (fsync) and renamed over the target (`os.replace`, atomic on
POSIX and Windows). Temporary files are created with mode 0666 minus the umask, as open() creates
any file, so a saved file gets the mode the user's umask gives. `write_temp`, `second_name` and
`replace_files` are the pieces from which multi-file saves (hf.write_checkpoint) build their own
all-or-nothing replacement; `directory_lock` keeps two processes from saving into one directory at
once, and `remove_stale_temps` removes what a killed save left behind.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path

# .<target name>.<8 characters of [a-z0-9_]>.tmp (or .old): temporary files and backups made here
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.(?:tmp|old)")
# how long a save waits for the directory's lock before it reports another save (seconds): a load
# holds it for microseconds (save_in_progress), a save for the whole save
_LOCK_PATIENCE = 0.25


class SaveInProgressError(OSError):
    """Another process is saving into the same directory."""


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
    atomic_write_bytes(path, text_writer(text))


def replace_files(writes: dict, before_renames=None) -> None:
    """Replace several files, as far as renames allow together: for each `path: write`, write(tmp)
    fills a temporary file beside `path` (a failure there leaves every target as it was); then
    before_renames() runs, and the files are renamed into place in the order given."""
    temps = {}
    try:
        for path, write in writes.items():
            temps[Path(path)] = write_temp(Path(path), write)
        if before_renames is not None:
            before_renames()
        for path, tmp in temps.items():
            os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            remove_quietly(tmp)


def text_writer(text: str):
    """A `write(tmp)` for write_temp and replace_files that writes `text` as UTF-8."""
    return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")


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


def remove_stale_temps(directory: Path, is_target) -> list[str]:
    """Remove the temporary files and backups (see `second_name`) that saves killed midway left in
    `directory`, for the targets whose names is_target(name) accepts; returns their names. Call it
    only while holding `directory_lock`, so that no live save's files are taken."""
    removed = []
    for entry in Path(directory).iterdir():
        match = _TEMP_NAME.fullmatch(entry.name)
        if match and is_target(match["target"]) and entry.is_file():
            remove_quietly(entry)
            removed.append(entry.name)
    return removed


@contextlib.contextmanager
def directory_lock(directory: Path):
    """Hold an exclusive lock on `directory` (flock on the directory itself, so nothing is added
    to it) for the duration of a save. A second process (or thread) that tries to save into the
    same directory meanwhile gets a SaveInProgressError naming it, instead of interleaving its
    renames with ours. Locks are released by the kernel when a process dies, so a killed save
    leaves no stale lock. Where flock is unavailable (Windows, some network file systems) saves go
    ahead unlocked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        deadline = time.monotonic() + _LOCK_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SaveInProgressError(
                        f"another process is saving into {directory}; two saves into one "
                        "directory would mix their files: wait for it to finish or save "
                        "elsewhere") from None
                time.sleep(0.005)
            except OSError:
                break  # a file system without flock: nothing to detect concurrent saves with
        yield
    finally:
        os.close(fd)


def save_in_progress(directory: Path) -> bool:
    """Whether a save holds `directory_lock` on `directory` now (False where flock is missing)."""
    try:
        import fcntl
        fd = os.open(directory, os.O_RDONLY)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)   # released by the close below
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def file_identities(directory: Path, is_wanted) -> dict | None:
    """{name: (inode, size, modification and change times)} of the files in `directory` whose
    names is_wanted(name) accepts: equal before and after a read, it shows that no file was
    replaced, written or removed meanwhile. None if the directory cannot be listed."""
    identities = {}
    try:
        for entry in os.scandir(directory):
            if is_wanted(entry.name):
                st = entry.stat()
                identities[entry.name] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        return None
    return identities
