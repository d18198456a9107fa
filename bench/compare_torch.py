"""bert_np against transformers + PyTorch on this CPU, in one run.

For each preset and each job, both frameworks process the same batch (B=32, T=128 by default,
random token ids, 15% MLM labels), each in a fresh subprocess so that its peak memory (max RSS)
is its own:
  pretrain   BertForPreTraining: forward, backward, AdamW step        (MLM + NSP loss)
  finetune   BertForSequenceClassification: forward, backward, AdamW step
  inference  BertForSequenceClassification: forward only
It prints tokens/s of each, the ratio bert_np / PyTorch, peak memory of each, and the fraction of
the machine's float32 peak that bert_np's model FLOPs reach (peak = np.matmul on a 2048^3 GEMM,
measured in the same run). transformers runs with its default attention and dropout on (training
jobs), the same thread count as NumPy/Numba, and glibc's default malloc settings (bert_np's own
process keeps freed memory, bert_np/allocator.py; --tune-torch-malloc gives PyTorch the same).

    python bench/compare_torch.py                      # tiny mini small medium base
    python bench/compare_torch.py --presets tiny mini --steps 5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

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


def run_bert_np(preset, job, B, T, steps, warmup):
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
    return time_steps(step, steps, warmup)


def run_torch(preset, job, B, T, steps, warmup):
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
    return time_steps(step, steps, warmup)


def time_steps(step, steps, warmup, min_seconds=3.0):
    """Median seconds per step over at least `steps` timed steps and at least `min_seconds`: a
    BERT-tiny inference step takes ~40 ms, and the median of three of them is mostly noise."""
    for _ in range(warmup):
        step()
    times = []
    while len(times) < steps or sum(times) < min_seconds:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def child(args):
    """Run one measurement and print it as JSON (called in a subprocess)."""
    runner = run_bert_np if args.framework == "bert_np" else run_torch
    seconds = runner(args.preset, args.job, args.batch_size, args.seq_len, args.steps, args.warmup)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def measure(framework, preset, job, args):
    """Run one job in a fresh interpreter. The PyTorch child imports bert_np for its presets, and
    that import applies bert_np's malloc settings (bert_np/allocator.py) to the process; unless
    --tune-torch-malloc is given they are switched off there, so PyTorch runs with glibc's
    defaults, as in a user's own script."""
    cmd = [sys.executable, __file__, "--child", "--framework", framework, "--preset", preset,
           "--job", job, "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    env = dict(os.environ)
    if framework == "torch" and not args.tune_torch_malloc:
        env["BERT_NP_KEEP_FREED_MEMORY"] = "0"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{framework} {preset} {job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
                   help="timed steps at least, and at least 3 s of them (the median is reported)")
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
        return child(args)

    import bert_np
    peak = matmul_peak_gflops()
    tokens = args.batch_size * args.seq_len
    print(f"machine: {os.cpu_count()} cores, float32 matmul peak {peak:.0f} GFLOP/s "
          f"(np.matmul 2048^3); bert_np backend {bert_np.get_backend()}; B={args.batch_size} "
          f"T={args.seq_len}, median of >= {args.steps} steps and >= 3 s, {args.warmup} warm-up; "
          f"PyTorch malloc: {'bert_np settings' if args.tune_torch_malloc else 'glibc defaults'}")
    header = (f"{'preset':7s} {'job':9s} {'bert_np tok/s':>13s} {'torch tok/s':>11s} {'ratio':>6s} "
              f"{'bert_np MB':>10s} {'torch MB':>9s} {'% peak':>7s}")
    print(header)
    print("-" * len(header))
    rows = []
    for preset in args.presets:
        cfg = bert_np.BertConfig.preset(preset)
        for job in args.jobs:
            ours = measure("bert_np", preset, job, args)
            theirs = measure("torch", preset, job, args)
            ours_tps, theirs_tps = tokens / ours["seconds"], tokens / theirs["seconds"]
            frac = model_flops_per_token(cfg, args.seq_len, job) * ours_tps / 1e9 / peak
            row = dict(preset=preset, job=job, bert_np_tokens_per_s=ours_tps,
                       torch_tokens_per_s=theirs_tps, ratio=ours_tps / theirs_tps,
                       bert_np_peak_mb=ours["peak_mb"], torch_peak_mb=theirs["peak_mb"],
                       fraction_of_peak=frac)
            rows.append(row)
            print(f"{preset:7s} {job:9s} {ours_tps:13.0f} {theirs_tps:11.0f} {row['ratio']:6.2f} "
                  f"{ours['peak_mb']:10.0f} {theirs['peak_mb']:9.0f} {100 * frac:6.1f}%", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_gflops": peak, "torch_malloc_tuned": args.tune_torch_malloc,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
