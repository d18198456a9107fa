"""Progress of long work: tqdm's bar on a terminal or in Jupyter, plain lines in a log file.

tqdm redraws its bar with carriage returns. A terminal overwrites the bar in place; a file
(`nohup bert-np pretrain ... > run.log 2>&1`) keeps every redraw on one ever-growing line. So when
stderr is neither a terminal nor a notebook, progress_bar() returns a LineProgress, which prints a
line of its own every `every` seconds:

    train: 1200/8420 steps (14%), 6m 12s, about 37m 20s left, loss=0.412 tok_s=2050
"""
import sys
import time

LINE_EVERY_S = 60.0   # a log file gains a progress line a minute


def progress_bar(iterable=None, total: int | None = None, initial: int = 0, desc: str = "",
                 unit: str = "it", enabled: bool = True, leave: bool = True,
                 every: float = LINE_EVERY_S, file=None):
    """tqdm.auto's bar where it can draw (a terminal, Jupyter), else a LineProgress; both have
    update(n), set_postfix(dict), close() and iterate over `iterable` if one is given."""
    file = sys.stderr if file is None else file
    if _draws_bars(file):
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit,
                    disable=not enabled, leave=leave, file=file)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return LineProgress(iterable, total, initial, desc, unit, every if enabled else None, file)


def _draws_bars(file) -> bool:
    """A terminal, or a Jupyter kernel's stream (tqdm.auto draws a widget there)."""
    return file.isatty() or type(file).__module__.startswith("ipykernel")


class LineProgress:
    """The part of tqdm's interface the training loop and evaluation use, printed as a line every
    `every` seconds (never, if `every` is None); close() prints the final count if a line was
    printed before it and the count has moved since."""

    def __init__(self, iterable, total: int | None, initial: int, desc: str, unit: str,
                 every: float | None, file):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.first = initial
        self.every, self.file, self.postfix = every, file, {}
        self.started = self.last_line = time.perf_counter()
        self.printed_at = None    # self.n when the last line was printed
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.every is not None and now - self.last_line >= self.every:
            self.last_line = now
            self._print(now)

    def set_postfix(self, fields: dict | None = None, **more) -> None:
        self.postfix = {**(fields or {}), **more}

    def close(self) -> None:
        if self.printed_at is not None and self.printed_at != self.n and not self.closed:
            self._print(time.perf_counter())     # long work ends with a line; short work is silent
        self.closed = True

    def _print(self, now: float) -> None:
        elapsed = now - self.started
        units = "" if self.unit == "it" else " " + _plural(self.unit)
        where = f"{self.n}/{self.total}{units}" if self.total else f"{self.n}{units}"
        parts = [f"{self.desc}: {where}" if self.desc else where]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(_duration(elapsed))
        done = self.n - self.first
        if self.total and 0 < done and self.n < self.total:
            parts.append(f"about {_duration(elapsed / done * (self.total - self.n))} left")
        line = ", ".join(parts)
        if self.postfix:
            line += ", " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(line, file=self.file, flush=True)
        self.printed_at = self.n


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("ch", "s", "x")) else "s")


def _duration(seconds: float) -> str:
    """'45s', '6m 12s', '2h 03m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"
