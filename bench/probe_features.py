"""Linear probes on a frozen encoder: what its features already know about a task.

For each model (a directory, or a preset initialised at random with --seed), the encoder runs once
over a task's training subset and dev split, and three feature vectors per text are kept: the
[CLS] output h[:, 0], the pooler's tanh(W h[:, 0] + b), and the mean of the real tokens' outputs.
A ridge classifier (one-vs-rest, closed form, on features standardised with the training
statistics) is fitted on the training features and scored on dev. Also printed: how alike the
[CLS] outputs of different texts are (mean cosine similarity of 2,000 random pairs; 1.0 means
the classifier sees the same vector whatever the text).

  python bench/probe_features.py --task zh_sentiment --models runs/zh/pt_tiny24k/final tiny \\
      --vocab $BERT_NP_DATA/vocab/bert-base-chinese/vocab.txt --max-train-examples 4000

No training of the encoder, so the probe separates what pretraining put into each feature from
what fine-tuning adds.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import bert_np
from bert_np.data.tasks import get_task, load_split
from bert_np.tokenization import BertTokenizer
from bert_np.train.finetune import check_model_spec, subset

FEATURES = ("cls", "pooler", "mean")


def encoder_features(model, tokenizer, examples, max_length, batch_size=64) -> dict:
    """{feature name: (N, H)} for the examples, in their order."""
    out = {name: [] for name in FEATURES}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = tokenizer.encode_batch([e.text_a for e in chunk],
                                       None if chunk[0].text_b is None else
                                       [e.text_b for e in chunk], max_length=max_length)
        result = model.forward(**batch)
        h, mask = result["last_hidden_state"], batch["attention_mask"][..., None]    # (B, T, H)
        out["cls"].append(h[:, 0])
        out["pooler"].append(result["pooler_output"])
        out["mean"].append((h * mask).sum(1) / mask.sum(1))
    return {name: np.concatenate(v).astype(np.float64) for name, v in out.items()}


def ridge_probe(x_train, y_train, x_dev, y_dev, num_labels, alpha=1.0) -> float:
    """Dev accuracy of a ridge classifier: W = (X^T X + alpha I)^-1 X^T Y, Y one-hot in {-1, 1}."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
    a = np.hstack([(x_train - mu) / sd, np.ones((len(x_train), 1))])           # (N, H + 1)
    b = np.hstack([(x_dev - mu) / sd, np.ones((len(x_dev), 1))])
    y = -np.ones((len(y_train), num_labels))
    y[np.arange(len(y_train)), y_train] = 1.0
    w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ y)         # (H + 1, C)
    return float(((b @ w).argmax(1) == y_dev).mean())


def mean_pair_cosine(x, pairs=2000, seed=0) -> float:
    """Mean cosine similarity of random pairs of different rows of x."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), pairs)
    j = (i + rng.integers(1, len(x), pairs)) % len(x)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return float((unit[i] * unit[j]).sum(1).mean())


def load_model(spec, vocab_size, seed):
    """The encoder of a saved model, or a preset's initialised with `seed` (the same weights as
    the encoder of `bert-np finetune --model PRESET --seed SEED`)."""
    if os.path.isdir(spec):
        return bert_np.BertModel.from_pretrained(spec, dtype=np.float32)
    cfg = bert_np.BertConfig.preset(spec, vocab_size=vocab_size)
    return bert_np.BertModel(cfg, seed=seed, dtype=np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--models", nargs="+", required=True, help="directories or presets")
    p.add_argument("--vocab", required=True, help="vocab.txt shared by the models")
    p.add_argument("--cased", action="store_true", help="keep the case (default: lower-case)")
    p.add_argument("--max-train-examples", type=int, default=4000,
                   help="a seeded subset of the training split (0: all of it)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="of the subset and of random presets")
    args = p.parse_args(argv)
    for spec in args.models:
        try:
            check_model_spec(spec)
        except FileNotFoundError as e:
            p.error(f"--models: {e}")
    if not os.path.isfile(args.vocab):
        p.error(f"--vocab {args.vocab}: no such file")
    task = get_task(args.task)
    if task.is_regression:
        p.error(f"--task {task.name}: the probe is a classifier")
    tokenizer = BertTokenizer.from_vocab(args.vocab, lowercase=not args.cased)
    if args.max_train_examples < 0:
        p.error(f"--max-train-examples must be >= 0, got {args.max_train_examples}")
    train = subset(load_split(task, "train"), args.max_train_examples or None, args.seed)
    dev = load_split(task, "dev")
    y_train = np.array([e.label for e in train])
    y_dev = np.array([e.label for e in dev])
    print(f"{task.name}: {len(train)} training and {len(dev)} dev examples, "
          f"T <= {args.max_seq_length}; majority class on dev "
          f"{np.bincount(y_dev).max() / len(y_dev):.4f}")
    print(f"{'model':40s} " + " ".join(f"{f + ' probe':>12s}" for f in FEATURES)
          + f" {'cls cosine':>11s}")
    for spec in args.models:
        model = load_model(spec, tokenizer.vocab_size, args.seed)
        f_train = encoder_features(model, tokenizer, train, args.max_seq_length)
        f_dev = encoder_features(model, tokenizer, dev, args.max_seq_length)
        accs = [ridge_probe(f_train[f], y_train, f_dev[f], y_dev, task.num_labels)
                for f in FEATURES]
        print(f"{spec:40s} " + " ".join(f"{a:12.4f}" for a in accs)
              + f" {mean_pair_cosine(f_dev['cls']):11.3f}", flush=True)


if __name__ == "__main__":
    main()
