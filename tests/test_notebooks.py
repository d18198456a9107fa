"""The teaching notebooks (notebooks/*.ipynb) run top to bottom without an error, in a fresh
`python3` kernel with notebooks/ as the working directory, each within the time budget; and the
committed files carry their outputs, so they render with their plots on GitHub.

The notebooks are executed in memory: the committed files are not rewritten. To refresh their
outputs after a change, see notebooks/README.md.
"""
import copy
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT = 120        # seconds per cell
NOTEBOOK_BUDGET = 120     # seconds per notebook, kernel start included (2 cores)
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
                     "07_finetuning_sst2.ipynb", "08_kernels.ipynb"):
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, request):
    nb = _read(path)
    source = _source(nb)
    if "minilm_dir" in source:
        request.getfixturevalue("minilm_dir")     # skips (or fails in CI) without the weights
    if "data_dir()" in source:
        request.getfixturevalue("data_dir")       # skips (or fails in CI) without $BERT_NP_DATA
    for module in ("torch", "transformers"):
        if f"import {module}" in source:
            _require_module(module)
    start = time.perf_counter()
    try:
        _run(copy.deepcopy(nb))
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}", pytrace=False)
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s", file=sys.stderr)
    assert elapsed < NOTEBOOK_BUDGET, \
        f"{path.name} took {elapsed:.0f} s (budget {NOTEBOOK_BUDGET} s)"
