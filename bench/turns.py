"""Engines in processes of their own, taking turns on the machine (compare_torch.py,
compare_engines.py).

Every engine runs in a child process started from the same script with its own options: it
builds one step (a training step, a forward pass), warms it up, prints "ready" and then serves
requests on stdin, one line each, answering one line on stdout:

    run S     run steps for at least S seconds (at least one step); answer their times, a JSON
              list of seconds
    quit      answer {"peak_mb": ...} (the child's peak resident memory) and exit
    other     the script's own commands (compare_engines.py: "logits")

The parent keeps every child alive and gives each a turn in rounds, rotating who goes first each
round and pausing before each turn, until every child has at least `steps` steps and
`min_seconds` of them. So slow drifts of the machine (another job, the clock, the heat) fall on
every engine alike, and each engine's figure is the median of its step times.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np


def peak_mb() -> float:
    """This process's peak resident memory in MB: VmHWM, which starts afresh at exec (ru_maxrss
    keeps the high-water mark of the parent the child was forked from)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(step, warmup: int, commands: dict | None = None) -> None:
    """The child's side: warm `step` up `warmup` times, then answer requests (module docstring);
    `commands` maps a further request's name to a function returning its JSON-able answer."""
    for _ in range(warmup):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            break
        if commands and command[0] in commands:
            print(json.dumps(commands[command[0]]()), flush=True)
            continue
        times, deadline = [], time.perf_counter() + float(command[1])
        while not times or time.perf_counter() < deadline:
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        print(json.dumps(times), flush=True)
    print(json.dumps({"peak_mb": peak_mb()}), flush=True)


class Child:
    """The parent's side of one child process: started with `cmd` and `env`, ready on return."""

    def __init__(self, cmd: list[str], env: dict, name: str):
        self.name = name
        self.process = subprocess.Popen(cmd, env=env, text=True, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.times = []
        self._answer()                                         # "ready"

    def _answer(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} failed:\n{self.process.stderr.read()[-3000:]}")
        return line

    def ask(self, command: str):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self._answer())

    def turn(self, seconds: float) -> None:
        self.times += self.ask(f"run {seconds}")

    def close(self) -> None:
        """End the child without a result."""
        self.ask("quit")
        self.process.wait()

    def finish(self) -> dict:
        """Median seconds per step, the number of steps and the peak memory; ends the child."""
        peak = self.ask("quit")["peak_mb"]
        self.process.wait()
        return dict(seconds=float(np.median(self.times)), steps=len(self.times), peak_mb=peak)


def take_turns(children: list[Child], steps: int, min_seconds: float, turn_seconds: float,
               pause: float) -> list[dict]:
    """Rounds of one turn per child, the first child of round k being child k mod n, until each
    child has `steps` steps and `min_seconds` of them; returns every child's finish()."""
    k = 0
    while any(len(c.times) < steps or sum(c.times) < min_seconds for c in children):
        start = k % len(children)
        for child in children[start:] + children[:start]:
            time.sleep(pause)
            child.turn(turn_seconds)
        k += 1
    return [child.finish() for child in children]


def warm_caches(children) -> None:
    """End each child of `children` (a generator that starts them one by one) once it is
    ready, before the measured ones start: each builds and warms up its step, so Numba
    compiles and caches any bert_np kernel that is not cached yet (the first run after a kernel
    source changed). A measured child then loads machine code from the cache; compiling inside
    it would count LLVM's memory in its peak (MiniLM int8 inference peaked at 505 MB in the
    first run after a kernel source changed, at 256 MB in the next) and make its warm-up slow.
    One child at a time, so two never compile the same kernel at once."""
    for child in children:
        child.close()
