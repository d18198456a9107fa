"""The teaching notebooks (notebooks/*.ipynb) run top to bottom without an error (every numeric
claim they make is an assert in the cell that shows it), in a fresh `python3` kernel with
notebooks/ as the working directory; the committed files carry their outputs, so they render with
their plots on GitHub; and those outputs are the ones the current code prints.

Each notebook is executed once per run of this module, in memory (the committed files are not
rewritten), and that one execution serves both test_notebook_runs and
test_committed_outputs_match_a_fresh_run. To refresh the outputs after a change, see
notebooks/README.md.
"""
import copy
import os
import sys
import time
from pathlib import Path

import pytest

from notebook_numbers import compare_notebooks

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT = 600        # seconds per cell: only against a hang (no cell takes near that)
MAX_FILE_BYTES = 1_000_000
IN_CI = os.environ.get("CI", "").lower() == "true"


def _read(path):
    return nbformat.read(path, as_version=4)


def _source(nb):
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


def _require_module(name):
    try:
        __import__(name)
    except ImportError:
        if IN_CI:
            pytest.fail(f"CI must provide {name}, which a notebook imports")
        pytest.skip(f"{name} is not installed")


def _run(nb):
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                                     record_timing=False,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    return client.execute()


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    for expected in ("01_tokenization_embeddings.ipynb", "02_self_attention.ipynb",
                     "03_layernorm_gelu.ipynb", "04_attention_backward.ipynb",
                     "05_backward_vs_transformers.ipynb", "06_pretraining.ipynb",
                     "07_finetuning_sst2.ipynb", "08_kernels.ipynb",
                     "09_hf_heads_and_checkpoints.ipynb", "10_quantization.ipynb"):
        assert expected in names


def test_kernel_imports_this_bert_np():
    """The default python3 kernel (the one jupyter lab starts) finds the bert_np under test."""
    import bert_np
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import bert_np; print(bert_np.__file__)")]
    _run(nb)
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert Path(printed).resolve() == Path(bert_np.__file__).resolve(), printed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_executed(path):
    """Every code cell was run, in order, without an error, and the plots are in the file."""
    assert path.stat().st_size < MAX_FILE_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    nb = _read(path)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code_cells]
    assert counts == list(range(1, len(code_cells) + 1)), \
        f"{path.name} is not saved executed top to bottom (execution counts {counts})"
    outputs = [o for c in code_cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{path.name} holds an error"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} has no plot"


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=lambda p: p.name)
def fresh_run(request):
    """(path, the notebook executed now, the error or None, seconds): one execution per notebook,
    shared by the tests that need it. Skips (fails in CI) when a resource the notebook uses is
    missing."""
    path = request.param
    nb = _read(path)
    source = _source(nb)
    if "minilm_dir" in source:
        request.getfixturevalue("minilm_dir")     # skips (or fails in CI) without the weights
    if "data_dir()" in source:
        request.getfixturevalue("data_dir")       # skips (or fails in CI) without $BERT_NP_DATA
    for module in ("torch", "transformers"):
        if f"import {module}" in source:
            _require_module(module)
    executed = copy.deepcopy(nb)
    start = time.perf_counter()
    try:
        _run(executed)
        error = None
    except nbclient.exceptions.CellExecutionError as e:
        error = e
    return path, executed, error, time.perf_counter() - start


def test_notebook_runs(fresh_run):
    """Every cell runs without an error, asserts included. No duration is asserted: a shared
    machine makes any budget flaky; the elapsed time is printed (pytest -s, or the captured
    output) and CELL_TIMEOUT only guards against a hang."""
    path, _, error, elapsed = fresh_run
    print(f"{path.name}: executed in {elapsed:.1f} s", file=sys.stderr)
    if error is not None:
        pytest.fail(f"{path.name} failed:\n{error}", pytrace=False)


def test_committed_outputs_match_a_fresh_run(fresh_run):
    """The numbers in each code cell's committed text outputs (stdout and text/plain, in order)
    equal those of the fresh execution, within the tolerances of
    notebook_numbers.numbers_match: exact for integers (counts, shapes, ids), one unit in the last
    printed digit for values, an order of magnitude for error magnitudes below 1e-3 (rounding
    errors depend on the CPU's vector width and the BLAS build, e.g. AVX2 vs AVX-512; float64
    residues below 1e-12 all count as zero).

    Cells tagged "varies" in their metadata are skipped: their numbers are measurements of the
    machine, not of the code (timings, GFLOP/s, load average, core count, library versions,
    cache paths), and differ from run to run. A stale output (a committed number the current code
    no longer prints) fails here, so a notebook's prose and pictures cannot drift from what it
    computes."""
    path, executed, error, _ = fresh_run
    if error is not None:
        pytest.skip(f"{path.name} did not run (test_notebook_runs reports why)")
    problems = compare_notebooks(_read(path), executed)
    assert not problems, (f"{path.name}: the committed outputs are not those of a fresh run "
                          f"(refresh them, see notebooks/README.md):\n" + "\n".join(problems))
