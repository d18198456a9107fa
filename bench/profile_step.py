"""Where the time of one bert_np training or inference step goes, by function (cProfile).

    python bench/profile_step.py --preset tiny --job finetune
    python bench/profile_step.py --preset base --job inference
    python bench/profile_step.py --preset tiny --job inference --int8 --steps 20

Prints the functions that take the most time inside the profiled steps (B=32, T=128, after three
warm-up steps), with their share of the time, so a missed speed target can be traced to its cause.
--steps profiles several steps and sums them, which steadies the shares on a busy machine; --int8
runs inference on `bert_np.quantize_dynamic(model)`.
"""
import argparse
import cProfile
import pstats
import time

import numpy as np

import bert_np
from bert_np.optim import AdamW

bert_np.tune_process()                       # as the bert-np command does


def make_step(preset, job, B, T, int8=False):
    cfg = bert_np.BertConfig.preset(preset)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, cfg.vocab_size, (B, T))
    if job == "pretrain":
        model = bert_np.BertForPreTraining(cfg)
        labels = dict(labels=np.where(rng.random((B, T)) < 0.15, ids, -100),
                      next_sentence_label=rng.integers(0, 2, B))
    else:
        model = bert_np.BertForSequenceClassification(cfg)
        labels = dict(labels=rng.integers(0, 2, B))
    if int8:
        model = bert_np.quantize_dynamic(model)
    opt = None if int8 else AdamW(model.params, lr=1e-5)

    def step():
        if job == "inference":
            model.forward(ids)
        else:
            _, grads = model.loss_and_grads(ids, **labels, training=True)
            opt.step(grads)
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--job", default="finetune", choices=["pretrain", "finetune", "inference"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--steps", type=int, default=1, help="steps to profile (their times summed)")
    p.add_argument("--int8", action="store_true", help="inference of the int8 model")
    a = p.parse_args()
    if a.int8 and a.job != "inference":
        p.error("--int8 is for --job inference")
    step = make_step(a.preset, a.job, a.batch_size, a.seq_len, a.int8)
    for _ in range(3):                                        # the first steps grow the heap
        step()
    start = time.perf_counter()
    step()
    wall = time.perf_counter() - start
    profiler = cProfile.Profile()
    for _ in range(a.steps):
        profiler.runcall(step)
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = sorted(((tt, nc, func) for func, (cc, nc, tt, ct, callers) in stats.stats.items()),
                  reverse=True)[:a.top]
    tokens = a.batch_size * a.seq_len
    print(f"{a.preset} {a.job}{' int8' if a.int8 else ''}: one step {1e3 * wall:.0f} ms "
          f"({tokens / wall:.0f} tokens/s) without the profiler; backend {bert_np.get_backend()}; "
          f"{a.steps} step(s) profiled, ms per step")
    print(f"{'share':>6s} {'ms':>8s} {'calls':>6s}  function")
    for tt, calls, (filename, line, name) in rows:
        where = filename.split("bert_np/")[-1] if "bert_np/" in filename else filename.split("/")[-1]
        print(f"{100 * tt / total:5.1f}% {1e3 * tt / a.steps:8.2f} {calls // a.steps:6d}  {name} "
              f"({where}:{line})")


if __name__ == "__main__":
    main()
