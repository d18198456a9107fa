"""Numba's on-disk cache, kept in step with every source file the kernels are built from.

Numba stamps a cached function with the content of the one file that defines it. A kernel's
machine code also holds what it took from other files: the helpers it inlines (the GEMM micro
tile, softmax_row, counter_uniform, the GELU of the int8 epilogue) and the module constants it
reads (MR, NR, UNIFORM_BITS), all frozen in at compile time. Edit one of those files and every
kernel built from it would keep loading its old machine code from the cache: a silently wrong
kernel for whoever is changing the code to learn from it.

So the package's cache is stamped as a whole: the SHA-256 of all the source files is kept in the
cache directory beside Numba's files; when it differs from the sources', the cached kernels of
these files are removed before any is loaded, and the kernels compile afresh once.
"""
import hashlib
import os
from pathlib import Path

STAMP_NAME = "bert_np-kernel-sources.sha256"


def sources_digest(sources) -> str:
    """The SHA-256 of the files `sources`, in a fixed order, names and contents."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in sources):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def refresh(cache_dir, sources) -> bool:
    """Remove the Numba cache files (`<module>.*.nbi`, `<module>.*.nbc`) of the modules `sources`
    from `cache_dir` unless the stamp there matches the sources' digest; then write the stamp.
    True when something was stale. A cache directory that cannot be written is left alone (Numba
    then does not cache there either)."""
    cache_dir = Path(cache_dir)
    stamp = cache_dir / STAMP_NAME
    digest = sources_digest(sources)
    try:
        if stamp.read_text().strip() == digest:
            return False
    except OSError:
        pass                                  # no stamp yet: anything cached may be stale
    modules = {Path(p).stem for p in sources}
    try:
        for entry in cache_dir.iterdir():
            if entry.suffix in (".nbi", ".nbc") and entry.name.split(".", 1)[0] in modules:
                entry.unlink(missing_ok=True)
        partial = cache_dir / f"{STAMP_NAME}.{os.getpid()}.tmp"
        partial.write_text(digest + "\n")
        os.replace(partial, stamp)            # another process reads the old stamp or the new
    except OSError:
        return False
    return True
