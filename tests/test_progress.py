"""Progress of long work (bert_np/train/progress.py): where tqdm cannot draw (a log file, a pipe),
a plain line every `every` seconds. The lines are compared with text worked by hand from a fake
clock, so the elapsed time, the percentage and the time left are exact."""
import io

import pytest

from bert_np.train import progress
from bert_np.train.progress import LineProgress, progress_bar


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", c)
    return c


def test_a_line_a_minute_with_the_time_left_and_the_postfix(clock):
    # 10 steps, resumed at step 2. At 30 s step 3 (no line: under a minute since the start); at
    # 61 s step 4: 2 steps in 61 s, so 6 more take 6 x 30.5 = 183 s = 3m 03s. At 70 s step 5 (no
    # line: 9 s since the last), then close() prints it: 3 steps in 70 s, 5 more take
    # 5 x 70 / 3 = 116.7 s, 1m 57s.
    out = io.StringIO()
    bar = progress_bar(total=10, initial=2, desc="train", unit="step", every=60, file=out)
    assert isinstance(bar, LineProgress)
    clock.now = 30
    bar.update(1)
    assert out.getvalue() == ""
    clock.now = 61
    bar.set_postfix({"loss": "0.412", "tok_s": "2050"})
    bar.update(1)
    clock.now = 70
    bar.update(1)
    bar.close()
    bar.close()                                   # a second close prints nothing more
    assert out.getvalue().splitlines() == [
        "train: 4/10 steps (40%), 1m 01s, about 3m 03s left, loss=0.412 tok_s=2050",
        "train: 5/10 steps (50%), 1m 10s, about 1m 57s left, loss=0.412 tok_s=2050"]


def test_short_work_and_disabled_progress_print_nothing(clock):
    out = io.StringIO()
    bar = progress_bar(total=3, desc="train", every=60, file=out)
    for t in (10, 20, 30):
        clock.now = t
        bar.update(1)
    bar.close()
    quiet = progress_bar(total=3, desc="train", every=60, file=out, enabled=False)
    clock.now = 1000
    quiet.update(3)
    quiet.close()
    assert out.getvalue() == ""


def test_iterating_counts_each_item_and_ends_with_the_total(clock):
    # every=0: a line at each item; the loop's end adds no line (the count did not move since).
    out = io.StringIO()
    seen = []
    for item in progress_bar(["a", "b", "c"], desc="evaluate", unit="batch", every=0, file=out):
        clock.now += 7200                         # two hours per batch
        seen.append(item)
    assert seen == ["a", "b", "c"]
    assert out.getvalue().splitlines() == [
        "evaluate: 1/3 batches (33%), 2h 00m, about 4h 00m left",
        "evaluate: 2/3 batches (67%), 4h 00m, about 2h 00m left",
        "evaluate: 3/3 batches (100%), 6h 00m"]


def test_tqdm_draws_where_it_can(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    from tqdm.auto import tqdm
    bar = progress_bar(total=3, file=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
