"""The kernels' on-disk cache is never stale (bert_np/kernels/cache.py).

Numba stamps a cached function with its own source file only, so a kernel that inlines a helper
from another file keeps its old machine code after that helper changes. The end-to-end test
builds that situation in a throwaway package (a helper in one file, a kernel in another, both
cached, the helper edited) and runs each stage in a fresh interpreter, as a user would:
  - without cache.refresh the edited helper is ignored: Numba's behaviour, the reason for the
    module (if this part fails, Numba has learnt to track callees and cache.py can go);
  - with cache.refresh before the import the kernel computes with the edited helper.
Exact integers are compared: the answer is either the old helper's or the new one's.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from bert_np.kernels import cache

HELPER = """
from numba import njit

@njit(cache=True, inline="always")
def step(x):
    return x + {increment}
"""

KERNEL = """
from numba import njit
from .helper import step

@njit(cache=True)
def kernel(x):
    return step(x) * 10
"""

RUN = """
import sys
sys.path.insert(0, {root!r})
if {refresh}:
    from pathlib import Path
    from bert_np.kernels import cache
    package = Path({root!r}) / "pkg"
    cache.refresh(package / "__pycache__", sorted(package.glob("*.py")))
from pkg.kernel import kernel
print(kernel(1))
"""


def write_package(root, increment):
    package = root / "pkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text(textwrap.dedent(HELPER.format(increment=increment)))
    (package / "kernel.py").write_text(textwrap.dedent(KERNEL))


def run_kernel(root, refresh) -> int:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}   # in-tree __pycache__
    code = RUN.format(root=str(root), refresh=refresh)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


def test_an_edited_helper_reaches_the_cached_kernel_only_with_refresh(tmp_path):
    write_package(tmp_path, increment=1)
    assert run_kernel(tmp_path, refresh=False) == 20          # (1 + 1) * 10, compiled and cached
    write_package(tmp_path, increment=2)                       # the helper's file alone changes
    assert run_kernel(tmp_path, refresh=False) == 20          # Numba: the stale kernel, silently
    assert run_kernel(tmp_path, refresh=True) == 30           # refreshed: (1 + 2) * 10
    assert run_kernel(tmp_path, refresh=True) == 30           # and cached again as such


def make_cache(directory):
    """Numba-named files of two of our modules and one foreign module."""
    directory.mkdir(exist_ok=True)
    names = ["gemm.gemm_kernel-64.py311.nbi", "gemm.gemm_kernel-64.py311.1.nbc",
             "softmax.softmax_row-20.py311.nbi", "other.f-3.py311.nbi", "gemm.cpython-311.pyc"]
    for name in names:
        (directory / name).write_bytes(b"x")
    return names


@pytest.fixture
def sources(tmp_path):
    files = [tmp_path / "gemm.py", tmp_path / "softmax.py"]
    for f in files:
        f.write_text(f"# {f.name}\n")
    return files


def test_refresh_removes_only_our_modules_cache_files_and_only_when_a_source_changed(
        tmp_path, sources):
    cache_dir = tmp_path / "__pycache__"
    make_cache(cache_dir)
    assert cache.refresh(cache_dir, sources) is True           # no stamp yet: stale
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        ["other.f-3.py311.nbi", "gemm.cpython-311.pyc", cache.STAMP_NAME])
    make_cache(cache_dir)
    assert cache.refresh(cache_dir, sources) is False          # same sources: kept
    assert (cache_dir / "gemm.gemm_kernel-64.py311.1.nbc").exists()
    sources[1].write_text("# softmax.py, edited\n")
    assert cache.refresh(cache_dir, sources) is True           # one source changed: all cleared
    assert not (cache_dir / "gemm.gemm_kernel-64.py311.nbi").exists()
    assert (cache_dir / cache.STAMP_NAME).read_text().strip() == cache.sources_digest(sources)


def test_refresh_of_a_cache_it_cannot_use_changes_nothing(tmp_path, sources):
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("a file where the cache directory would be")
    assert cache.refresh(not_a_directory, sources) is False
    assert not_a_directory.read_text() == "a file where the cache directory would be"
