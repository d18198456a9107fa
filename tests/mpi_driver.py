"""Driver for tests/test_mpi.py: one training step's loss and gradients, dumped to .npz.

    mpirun -n N python tests/mpi_driver.py {pretrain,classify} OUT [--dropout P] [--accumulation K]

Every rank builds the same tiny float64 model and global batch (`build`); the step's gradient is
computed by bert_np.train.parallel.split_step_grads (rank r's shard, K micro-batches, one
Allreduce), and rank 0 writes OUT (loss, every parameter's gradient, and a SHA-256 of every
rank's gradient buffer, to show that all ranks hold the same bits). The test computes the
single-process gradient with the same `build` and compares.
"""
import argparse
import hashlib
import sys

import numpy as np

import bert_np
from bert_np.config import BertConfig

CFG = dict(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
           intermediate_size=48, max_position_embeddings=32)
B, T = 6, 12


def build(task: str, dropout: float):
    """(model, global batch): pretraining with a different number of masked positions per row
    (0 in some rows) and an unlabelled NSP row; or classification with padded rows."""
    rng = np.random.default_rng(5)
    cfg = BertConfig(**CFG, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                     num_labels=3)
    lengths = np.array([12, 5, 9, 3, 12, 7])
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, 50, (B, T)) * mask
    types = (np.arange(T)[None, :] >= lengths[:, None] // 2).astype(np.int64) * mask
    batch = dict(input_ids=ids, token_type_ids=types, attention_mask=mask)
    if task == "pretrain":
        model = bert_np.BertForPreTraining(cfg, seed=3, dtype=np.float64)
        masked = np.zeros((B, T), bool)
        for row, count in enumerate([5, 1, 0, 2, 4, 1]):        # uneven masked positions per row
            masked[row, rng.choice(lengths[row], count, replace=False)] = True
        batch["labels"] = np.where(masked, rng.integers(1, 50, (B, T)), -100)
        batch["next_sentence_label"] = np.array([0, 1, 1, -100, 0, 1])
    else:
        model = bert_np.BertForSequenceClassification(cfg, seed=3, dtype=np.float64)
        batch["labels"] = np.array([2, 0, 1, 1, -100, 2])
    return model, batch


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["pretrain", "classify"])
    parser.add_argument("out")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--accumulation", type=int, default=1)
    args = parser.parse_args(argv)
    from bert_np.train.loop import default_compute_grads
    from bert_np.train.parallel import split_step_grads, world
    model, batch = build(args.task, args.dropout)
    loss, grads = split_step_grads(model, batch, default_compute_grads, None, args.accumulation,
                                   step=1)
    comm = world()
    digest = hashlib.sha256(b"".join(g.tobytes() for g in grads.values())).hexdigest()
    checksums = comm.allgather(digest)
    if comm.rank == 0:
        np.savez(args.out, __loss__=loss, __checksums__=np.array(checksums),
                 __size__=comm.size, **grads)


if __name__ == "__main__":
    sys.exit(main())
