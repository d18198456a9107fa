"""The same fine-tuning recipe in bert_np and in transformers + PyTorch, in one run.

Both start from all-MiniLM-L6-v2 with the same freshly initialised classifier head (bert_np's
initial head is copied into the torch model), see the same SST-2 training sentences in the same
length-bucketed batches (bert_np.finetune.bucketed_batches, same seed), and use the same AdamW
(lr, betas, eps 1e-6, weight decay 0.01 except on biases and LayerNorm), the same warmup + linear
decay, global-norm clipping at 1.0 and dropout 0.1. Only the dropout masks differ (each framework
draws its own). Both are evaluated on the full SST-2 dev set (872 sentences).

    BERT_NP_DATA=../shared/data python bench/finetune_compare.py --train-examples 8000 --epochs 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

# bench/ holds a kernels.py, which would shadow the `kernels` package transformers may import
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [d for d in sys.path if os.path.abspath(d or ".") != _HERE]

import bert_np
from bert_np import paths
from bert_np.data.tasks import get_task, load_split
from bert_np.data.batching import bucketed_batches, pad_batch
from bert_np.train.finetune import encode_examples, load_classifier, predict_logits, subset
from bert_np.train.metrics import compute_metrics
from bert_np.optim import AdamW, clip_grad_norm, decays, linear_warmup_decay
from bert_np.tokenization import BertTokenizer


def epoch_batches(train, args):
    lengths = [len(x) for x in train.ids]
    return [bucketed_batches(lengths, args.batch_size, np.random.default_rng([args.seed, e]))
            for e in range(1, args.epochs + 1)]


def train_bert_np(model, train, dev, schedule, args, pad_id, task):
    opt = AdamW(model.params, lr=args.lr, weight_decay=0.01, schedule=schedule)
    start = time.perf_counter()
    for batches in epoch_batches(train, args):
        for rows in batches:
            _, grads = model.loss_and_grads(**pad_batch(train, rows, pad_id, model.dtype, False),
                                            training=True)
            clip_grad_norm(grads, 1.0)
            opt.step(grads)
    seconds = time.perf_counter() - start
    return compute_metrics(task, predict_logits(model, dev, pad_id), dev.labels), seconds


def train_torch(model_dir, head, train, dev, schedule, args, pad_id, task):
    import torch
    import transformers
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count())
    model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(head["classifier.weight"]))
        model.classifier.bias.copy_(torch.tensor(head["classifier.bias"]))
    named = dict(model.named_parameters())
    groups = [{"params": [p for n, p in named.items() if decays(n)], "weight_decay": 0.01},
              {"params": [p for n, p in named.items() if not decays(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    start = time.perf_counter()
    model.train()
    for batches in epoch_batches(train, args):
        for rows in batches:
            batch = {k: torch.tensor(v) for k, v in pad_batch(train, rows, pad_id, np.float32, False).items()}
            opt.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    model.eval()
    logits = []
    order = np.argsort([len(x) for x in dev.ids], kind="stable")
    with torch.inference_mode():
        for s in range(0, len(order), 64):
            rows = order[s:s + 64]
            batch = pad_batch(dev, rows, pad_id, np.float32, False)
            batch.pop("labels")
            logits.append((rows, model(**{k: torch.tensor(v) for k, v in batch.items()}).logits.numpy()))
    out = np.zeros((len(order), 2), dtype=np.float32)
    for rows, lg in logits:
        out[rows] = lg
    return compute_metrics(task, out, dev.labels), seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-examples", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    task = get_task("sst2")
    model_dir = paths.minilm_dir()
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    train = encode_examples(subset(load_split(task, "train"), args.train_examples, args.seed),
                            tokenizer, args.max_seq_length)
    dev = encode_examples(load_split(task, "dev"), tokenizer, args.max_seq_length)
    total = args.epochs * sum(len(b) for b in epoch_batches(train, args)[:1])
    warmup = int(0.1 * total)
    schedule = lambda k: linear_warmup_decay(k, warmup, total)  # noqa: E731
    model = load_classifier(str(model_dir), 2, tokenizer.vocab_size, args.seed, np.float32,
                            args.max_seq_length)
    head = {k: model.params[k].copy() for k in ("classifier.weight", "classifier.bias")}

    print(f"SST-2: {len(train.ids)} training sentences, {args.epochs} epoch(s), lr {args.lr}, "
          f"batch {args.batch_size}, max_seq_length {args.max_seq_length}, dev {len(dev.ids)}; "
          f"bert_np backend {bert_np.get_backend()}, {os.cpu_count()} cores")
    ours, ours_s = train_bert_np(model, train, dev, schedule, args, tokenizer.pad_id, task)
    theirs, theirs_s = train_torch(str(model_dir), head, train, dev, schedule, args,
                                   tokenizer.pad_id, task)
    print(f"{'':22s} {'dev accuracy':>12s} {'train seconds':>13s}")
    print(f"{'bert_np':22s} {100 * ours['accuracy']:12.2f} {ours_s:13.0f}")
    print(f"{'transformers + torch':22s} {100 * theirs['accuracy']:12.2f} {theirs_s:13.0f}")
    diff = 100 * (ours["accuracy"] - theirs["accuracy"])
    print(f"accuracy difference {diff:+.2f} points (target: within 1); "
          f"time ratio bert_np / torch {ours_s / theirs_s:.2f}")


if __name__ == "__main__":
    main()
