"""The memory a serving process needs before it holds any model: each runtime with one trivial op.

compare_engines.py reports each engine's peak memory (max RSS) serving a model. This script
measures the part of it that no model and no kernel of bert_np's can change: a fresh Python
process that imports its runtime and runs one trivial operation, and nothing else.

  python + numpy              import numpy
  + bert_np                   import bert_np (no Numba yet: kernels are compiled or loaded lazily)
  + numba                     import numba
  + numba, one cached kernel  an @njit(cache=True) sum over 3 numbers, loaded from Numba's cache
                              (the stage runs twice; the second run, which only loads, is reported)
  + onnxruntime               import onnxruntime
  + onnxruntime, one op       an InferenceSession of a one-node graph (Add of 3 numbers), run once

Each stage is a process of its own (so a peak is that stage's alone), 1 thread; reported: max RSS
in MB and the difference to python + numpy. The onnxruntime stages need the bench extra
(`pip install -e ".[bench]"`) and are left out, saying so, without it.

    python bench/memory_floor.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

PEAK = ("import resource; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")

NUMBA_KERNEL = '''
import numpy as np
from numba import njit

@njit(cache=True)
def total(x):
    return x.sum()

total(np.ones(3))
'''

ORT_ONE_OP = '''
import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "one_op", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
session.run(["y"], {"x": np.ones(3, np.float32)})
'''

STAGES = [
    ("python + numpy", "import numpy\n", None),
    ("+ bert_np", "import numpy\nimport bert_np\n", None),
    ("+ numba", "import numpy\nimport numba\n", None),
    ("+ numba, one cached kernel", NUMBA_KERNEL, None),
    ("+ onnxruntime", "import numpy\nimport onnxruntime\n", "onnxruntime"),
    ("+ onnxruntime, one op", ORT_ONE_OP, "onnxruntime"),
]


def peak_mb(code: str, directory: str, runs: int) -> float:
    """Max RSS (MB) of a fresh interpreter running `code` from a file in `directory`; the last
    of `runs` runs (earlier runs fill Numba's cache beside the file)."""
    path = os.path.join(directory, "stage.py")
    with open(path, "w") as f:
        f.write(code + "\n" + PEAK + "\n")
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMBA_CACHE_DIR=os.path.join(directory, "numba_cache"))
    for _ in range(runs):
        done = subprocess.run([sys.executable, path], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(f"memory_floor.py: a stage failed:\n{done.stderr.strip()}")
    return float(done.stdout.split()[-1])


def available(module: str | None) -> bool:
    if module is None:
        return True
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return done.returncode == 0


def main() -> None:
    print(f"python {sys.version.split()[0]}; each stage a fresh process, 1 thread; max RSS")
    print(f"{'stage':28s} {'peak MB':>8s} {'over numpy':>10s}")
    base = None
    for name, code, needs in STAGES:
        if not available(needs):
            print(f"{name:28s} {'-':>8s} {'-':>10s}  ({needs} not installed: the bench extra)")
            continue
        with tempfile.TemporaryDirectory() as directory:
            mb = peak_mb(code, directory, runs=2 if "cache=True" in code else 1)
        base = mb if base is None else base
        print(f"{name:28s} {mb:8.0f} {mb - base:10.0f}", flush=True)


if __name__ == "__main__":
    main()
