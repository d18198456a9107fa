"""bert_np against transformers + PyTorch on this CPU, in one run.

For each preset and each job, both frameworks process the same batch (B=32, T=128 by default,
random token ids, 15% MLM labels), each in a subprocess of its own so that its peak memory (max
RSS) is its own. The two processes take turns: one runs steps for about --turn-seconds while the
other waits, then the other, until each has at least --steps steps and --min-seconds of them. The
speed of a shared VM drifts by 20-50% within minutes; taking turns puts both frameworks through
the same drift, which a run of one after the other does not. A short pause after each turn lets
the threads of the process that just ran (PyTorch's OpenMP workers, OpenBLAS's) go to sleep
before the other starts. Two processes running the very same step also differ, by up to ~17% on
the VM of the README (memory placement, whatever the cause), so each pair is started --repeats
times afresh. Reported: tokens/s from the median step time of each process, the median over the
repeats, and the ratio as the median of the repeats' ratios with their range; peak memory is the
largest of the repeats.
  pretrain   BertForPreTraining: forward, backward, AdamW step        (MLM + NSP loss)
  finetune   BertForSequenceClassification: forward, backward, AdamW step
  inference  BertForSequenceClassification: forward only
It prints tokens/s of each, the ratio bert_np / PyTorch, peak memory of each, and the fraction of
the machine's float32 peak that bert_np's model FLOPs reach (peak = np.matmul on a 2048^3 GEMM,
measured in the same run). transformers runs with its default attention and dropout on (training
jobs), the same thread count as NumPy/Numba, and glibc's default malloc settings (bert_np's own
process applies bert_np.tune_process(), as `bert-np` does; --tune-torch-malloc gives PyTorch its
malloc setting too).

    python bench/compare_torch.py                      # tiny mini small medium base
    python bench/compare_torch.py --presets tiny mini --steps 20
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from turns import Child, serve, take_turns, warm_caches

JOBS = ("pretrain", "finetune", "inference")


def make_batch(cfg, B, T, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, cfg.vocab_size, (B, T))
    mlm = np.where(rng.random((B, T)) < 0.15, ids, -100)
    return dict(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=np.ones_like(ids),
                mlm_labels=mlm, nsp_labels=rng.integers(0, 2, B), cls_labels=rng.integers(0, 2, B))


def model_flops_per_token(cfg, T, job, masked_fraction=0.15):
    """Matmul FLOPs per token of one step as bert_np computes it (training = 3x forward)."""
    H, I, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    per_layer = 2 * (4 * H * H + 2 * H * I) + 2 * 2 * T * H      # projections + QK^T and PV
    forward = L * per_layer
    if job == "pretrain":
        forward += masked_fraction * 2 * (H * H + H * V)          # MLM head at masked positions
    return forward * (1 if job == "inference" else 3)


def bert_np_step(preset, job, B, T):
    """One training or inference step of bert_np, as a function of no arguments."""
    import bert_np
    from bert_np.optim import AdamW
    cfg = bert_np.BertConfig.preset(preset, hidden_dropout_prob=0.1)
    batch = make_batch(cfg, B, T)
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    if job == "pretrain":
        model = bert_np.BertForPreTraining(cfg, seed=0)
        labels = dict(labels=batch["mlm_labels"], next_sentence_label=batch["nsp_labels"])
    else:
        model = bert_np.BertForSequenceClassification(cfg, seed=0)
        labels = dict(labels=batch["cls_labels"])
    opt = AdamW(model.params, lr=1e-5) if job != "inference" else None   # its moments: 2x the model

    def step():
        if job == "inference":
            model.forward(**inputs)
        else:
            _, grads = model.loss_and_grads(**inputs, **labels, training=True)
            opt.step(grads)
    return step


def torch_step(preset, job, B, T):
    """The same step in transformers + PyTorch."""
    import torch
    import transformers
    import bert_np
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    cfg = bert_np.BertConfig.preset(preset)
    fields = {k: v for k, v in cfg.to_dict().items() if k != "model_type"}
    hf_cfg = transformers.BertConfig(**fields)
    batch = {k: torch.tensor(v) for k, v in make_batch(cfg, B, T).items()}
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    if job == "pretrain":
        model = transformers.BertForPreTraining(hf_cfg)
        labels = dict(labels=batch["mlm_labels"], next_sentence_label=batch["nsp_labels"])
    else:
        model = transformers.BertForSequenceClassification(hf_cfg)
        labels = dict(labels=batch["cls_labels"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        if job == "inference":
            model.eval()
            with torch.inference_mode():
                model(**inputs)
        else:
            model.train()
            opt.zero_grad(set_to_none=True)
            model(**inputs, **labels).loss.backward()
            opt.step()
    return step


def serve_child(args):
    """The child process: one framework's step, served in turns (turns.py). The bert_np child
    applies bert_np.tune_process(), as the bert-np command does; the PyTorch child keeps glibc's
    malloc defaults, as in a user's own script, unless --tune-torch-malloc is given."""
    from bert_np.kernels.process import keep_freed_memory, tune_process
    if args.framework == "bert_np":
        tune_process()
    elif args.tune_torch_malloc:
        keep_freed_memory()
    make_step = bert_np_step if args.framework == "bert_np" else torch_step
    serve(make_step(args.preset, args.job, args.batch_size, args.seq_len), args.warmup)


def start_child(framework, preset, job, args):
    cmd = [sys.executable, __file__, "--child", "--framework", framework, "--preset", preset,
           "--job", job, "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
           "--warmup", str(args.warmup)] + (["--tune-torch-malloc"] if args.tune_torch_malloc
                                            else [])
    return Child(cmd, dict(os.environ), f"{framework} {preset} {job}")


def measure_pair(preset, job, args):
    """bert_np and PyTorch in turns (module docstring); returns ({seconds, steps, peak_mb}, ...)."""
    warm_caches([start_child("bert_np", preset, job, args)])
    children = [start_child(framework, preset, job, args) for framework in ("bert_np", "torch")]
    return tuple(take_turns(children, args.steps, args.min_seconds, args.turn_seconds,
                            args.pause))


def matmul_peak_gflops(n=2048, repeats=5):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "mini", "small", "medium", "base"])
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=3,
                   help="timed steps per framework at least (the median is reported)")
    p.add_argument("--min-seconds", type=float, default=6.0,
                   help="and at least this many seconds of timed steps per framework")
    p.add_argument("--turn-seconds", type=float, default=1.0,
                   help="steps run for about this long (at least one step) before the other "
                        "framework takes its turn")
    p.add_argument("--pause", type=float, default=0.3,
                   help="seconds of idle before each turn, for the other process's threads to sleep")
    p.add_argument("--repeats", type=int, default=3,
                   help="fresh pairs of processes per job; the medians over them are reported")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--tune-torch-malloc", action="store_true",
                   help="give the PyTorch process bert_np's malloc settings too (no mmap per "
                        "large block, no heap trimming); by default it keeps glibc's")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--framework", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return serve_child(args)

    import bert_np
    peak = matmul_peak_gflops()
    tokens = args.batch_size * args.seq_len
    print(f"machine: {os.cpu_count()} cores, float32 matmul peak {peak:.0f} GFLOP/s "
          f"(np.matmul 2048^3); bert_np backend {bert_np.get_backend()}; B={args.batch_size} "
          f"T={args.seq_len}; the two take turns of ~{args.turn_seconds:g} s, each timing >= "
          f"{args.steps} steps and >= {args.min_seconds:g} s (median), {args.warmup} warm-up, "
          f"{args.repeats} pairs of processes per job; "
          f"PyTorch malloc: {'bert_np settings' if args.tune_torch_malloc else 'glibc defaults'}")
    header = (f"{'preset':7s} {'job':9s} {'bert_np tok/s':>13s} {'torch tok/s':>11s} {'ratio':>6s} "
              f"{'range':>11s} {'bert_np MB':>10s} {'torch MB':>9s} {'% peak':>7s}")
    print(header)
    print("-" * len(header))
    rows = []
    for preset in args.presets:
        cfg = bert_np.BertConfig.preset(preset)
        for job in args.jobs:
            pairs = [measure_pair(preset, job, args) for _ in range(args.repeats)]
            ours_tps = [tokens / ours["seconds"] for ours, _ in pairs]
            theirs_tps = [tokens / theirs["seconds"] for _, theirs in pairs]
            ratios = [a / b for a, b in zip(ours_tps, theirs_tps)]
            row = dict(preset=preset, job=job, bert_np_tokens_per_s=float(np.median(ours_tps)),
                       torch_tokens_per_s=float(np.median(theirs_tps)),
                       ratio=float(np.median(ratios)), ratios=ratios,
                       bert_np_peak_mb=max(ours["peak_mb"] for ours, _ in pairs),
                       torch_peak_mb=max(theirs["peak_mb"] for _, theirs in pairs),
                       bert_np_steps=[ours["steps"] for ours, _ in pairs],
                       torch_steps=[theirs["steps"] for _, theirs in pairs])
            row["fraction_of_peak"] = (model_flops_per_token(cfg, args.seq_len, job)
                                       * row["bert_np_tokens_per_s"] / 1e9 / peak)
            rows.append(row)
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
            print(f"{preset:7s} {job:9s} {row['bert_np_tokens_per_s']:13.0f} "
                  f"{row['torch_tokens_per_s']:11.0f} {row['ratio']:6.2f} {spread:>11s} "
                  f"{row['bert_np_peak_mb']:10.0f} {row['torch_peak_mb']:9.0f} "
                  f"{100 * row['fraction_of_peak']:6.1f}%", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_gflops": peak, "torch_malloc_tuned": args.tune_torch_malloc,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
