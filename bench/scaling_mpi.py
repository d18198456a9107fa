"""Data-parallel scaling: 1 rank x 2 threads against 2 ranks x 1 thread, and a model for N nodes.

    python bench/scaling_mpi.py                                   # tiny; model table tiny..base
    python bench/scaling_mpi.py --preset mini --model-presets tiny mini small

Part 1 (measured). The same pretraining run (BertForPreTraining, float32, global batch B x T of
random ids, 15% MLM labels, dropout on, AdamW) as one process with 2 threads and as `mpirun -n 2`
with 1 thread per rank (each rank: B/2 rows, one Allreduce of the float32 gradient per step). Both
are run as fresh processes; each reports the median step time after warm-up, tokens/s of the
global batch, and for MPI the median time spent in the Allreduce.

Part 2 (modelled). For each preset: the gradient bytes a step allreduces (every parameter, float32)
and the one-process step time measured here (B x T per node, this machine's 2 cores standing for a
node). Data parallelism over N nodes with a ring allreduce of S bytes at bandwidth W:
    t_comm = 2 (N - 1) / N * S / W,   t_step(N) = t_compute + t_comm   (no overlap: bert_np reduces
    after the backward),  speed-up = N t_compute / t_step(N),  efficiency = speed-up / N
with the batch per node fixed (the global batch grows with N). Latency and the allreduce's own
arithmetic are ignored: a lower bound on the cost.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_run(preset: str, B: int, T: int):
    """(model, optimizer, batch) of a pretraining step on random ids, the same on every rank."""
    import bert_np
    from bert_np.optim import AdamW
    cfg = bert_np.BertConfig.preset(preset)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, cfg.vocab_size, (B, T))
    batch = dict(input_ids=ids, token_type_ids=np.zeros_like(ids),
                 attention_mask=np.ones_like(ids),
                 labels=np.where(rng.random((B, T)) < 0.15, ids, -100),
                 next_sentence_label=rng.integers(0, 2, B))
    model = bert_np.BertForPreTraining(cfg, seed=0)
    return model, AdamW(model.params, lr=1e-5), batch


def worker(args) -> None:
    """Timed steps on this process (a rank under mpirun); rank 0 prints one JSON line."""
    import bert_np
    from bert_np.train import parallel
    from bert_np.train.loop import apply_gradients, default_compute_grads
    bert_np.tune_process()
    comm = parallel.world()
    reduce_seconds = []
    allreduce = comm.allreduce_sum

    def timed_allreduce(buffer):
        start = time.perf_counter()
        allreduce(buffer)
        reduce_seconds.append(time.perf_counter() - start)
    comm.allreduce_sum = timed_allreduce
    model, optimizer, batch = make_run(args.preset, args.batch_size, args.seq_len)
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        if comm.size == 1:
            loss, grads = default_compute_grads(model, batch, None)
        else:
            loss, grads = parallel.split_step_grads(model, batch, default_compute_grads, None, 1,
                                                    step + 1, comm)
        apply_gradients(optimizer, loss, grads, 1.0, step + 1)
        times.append(time.perf_counter() - start)
    if comm.rank == 0:
        step = statistics.median(times[args.warmup:])
        print(json.dumps({
            "ranks": comm.size, "step_s": step,
            "tokens_per_s": args.batch_size * args.seq_len / step,
            "allreduce_s": statistics.median(reduce_seconds[args.warmup:]) if reduce_seconds
            else 0.0}))


def launch(ranks: int, threads: int, args, preset: str, batch_size: int, steps: int) -> dict:
    """A fresh process (or mpirun job) running `worker`; its JSON result."""
    env = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = [sys.executable, __file__, "--worker", "--preset", preset, "--batch-size",
               str(batch_size), "--seq-len", str(args.seq_len), "--steps", str(steps),
               "--warmup", str(args.warmup)]
    if ranks > 1:
        mpirun = [shutil.which("mpirun"), "--oversubscribe", "-n", str(ranks)]
        for name in ("PYTHONPATH", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            mpirun += ["-x", name]
        command = mpirun + command
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]  # mpirun may add
    return json.loads(lines[-1])                                                 # escape codes


def gradient_bytes(preset: str) -> int:
    import bert_np
    cfg = bert_np.BertConfig.preset(preset)
    shapes = bert_np.BertForPreTraining.param_shapes(cfg)
    return 4 * sum(int(np.prod(s)) for s in shapes.values())


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="model of part 1")
    p.add_argument("--batch-size", type=int, default=32, help="global batch of part 1")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps of part 1")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="fresh runs of each setup in part 1")
    p.add_argument("--model-presets", nargs="*", default=["tiny", "mini", "small", "medium",
                                                          "base"])
    p.add_argument("--model-batch", type=int, default=8, help="rows per node in part 2")
    p.add_argument("--model-steps", type=int, default=2, help="timed steps per preset in part 2")
    p.add_argument("--nodes", type=int, nargs="*", default=[2, 4, 8, 16])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    print(f"## 1 rank x 2 threads vs 2 ranks x 1 thread: {args.preset}, pretraining, float32, "
          f"global batch {args.batch_size} x {args.seq_len}, median of {args.steps} steps, "
          f"{args.repeats} fresh runs each\n")
    print("| setup | run | step (s) | tokens/s | Allreduce (s) |\n|---|---|---|---|---|")
    results = {"1x2": [], "2x1": []}
    for r in range(args.repeats):              # alternate, so both meet the same drift
        for name, ranks, threads in (("1x2", 1, 2), ("2x1", 2, 1)):
            res = launch(ranks, threads, args, args.preset, args.batch_size, args.steps)
            results[name].append(res)
            print(f"| {ranks} rank x {threads} thread | {r + 1} | {res['step_s']:.3f} | "
                  f"{res['tokens_per_s']:,.0f} | {res['allreduce_s']:.4f} |", flush=True)
    ratio = (statistics.median(x["tokens_per_s"] for x in results["2x1"])
             / statistics.median(x["tokens_per_s"] for x in results["1x2"]))
    print(f"\ntokens/s of 2 ranks x 1 thread / 1 rank x 2 threads (medians): {ratio:.2f}\n")

    print(f"## Modelled scaling over N nodes (ring allreduce, {args.model_batch} x {args.seq_len} "
          f"per node, compute measured here on 1 process x 2 threads)\n")
    head = " | ".join(f"N={n} {bw}G" for bw in (10, 100) for n in args.nodes)
    print(f"| preset | gradient MB | step (s) | {head} |\n|" + "---|" * (3 + 2 * len(args.nodes)))
    for preset in args.model_presets:
        size = gradient_bytes(preset)
        t = launch(1, 2, args, preset, args.model_batch, args.model_steps)["step_s"]
        cells = []
        for gbit in (10, 100):
            for n in args.nodes:
                comm = 2 * (n - 1) / n * size / (gbit * 1e9 / 8)
                cells.append(f"{n * t / (t + comm):.1f}x ({100 * t / (t + comm):.0f}%)")
        print(f"| {preset} | {size / 1e6:.1f} | {t:.3f} | " + " | ".join(cells) + " |", flush=True)
    print("\ncells: speed-up over one node (parallel efficiency)")


if __name__ == "__main__":
    sys.exit(main())
