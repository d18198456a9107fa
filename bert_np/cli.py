"""The `bert-np` command line: demo, pretrain, train-tokenizer, finetune, evaluate, predict."""
from __future__ import annotations

import argparse
import json
import sys


def _add_pretrain(sub):
    p = sub.add_parser("pretrain", help="pretrain BertForPreTraining (MLM + NSP) from raw text")
    p.add_argument("--config", default="tiny", help="preset (tiny mini small medium base large) "
                   "or a config.json path (default: tiny)")
    p.add_argument("--corpus", nargs="+", required=True, help="training text files: one sentence "
                   "per line and blank lines between documents, or WikiText")
    p.add_argument("--eval-corpus", nargs="*", default=[], help="held-out text files")
    p.add_argument("--vocab", required=True, help="vocab.txt")
    p.add_argument("--cased", action="store_true", help="do not lower-case (a cased vocabulary)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=20, help="max masked tokens per sequence")
    p.add_argument("--whole-word-masking", action="store_true")
    p.add_argument("--new-pairs-each-epoch", action="store_true",
                   help="draw new NSP segment pairs every epoch (else built once; masks are "
                        "always fresh), so a small corpus is not memorised")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-batches", type=int, default=20)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(a):
    from .pretrain import PretrainSettings, pretrain
    settings = PretrainSettings(
        corpus=a.corpus, eval_corpus=a.eval_corpus, vocab=a.vocab, out=a.out, config=a.config,
        steps=a.steps, batch_size=a.batch_size, max_seq_length=a.max_seq_length,
        max_predictions_per_seq=a.max_predictions, whole_word_masking=a.whole_word_masking,
        new_pairs_each_epoch=a.new_pairs_each_epoch, lr=a.lr, warmup_steps=a.warmup_steps,
        weight_decay=a.weight_decay,
        max_grad_norm=a.max_grad_norm, lowercase=not a.cased, seed=a.seed, dtype=a.dtype,
        checkpoint_every=a.checkpoint_every, eval_every=a.eval_every,
        eval_batches=a.eval_batches, max_minutes=a.max_minutes)
    result = pretrain(settings, resume=a.resume)
    print(json.dumps(result, indent=1))


def _add_train_tokenizer(sub):
    p = sub.add_parser("train-tokenizer", help="learn a WordPiece vocab.txt from text files")
    p.add_argument("--corpus", nargs="+", required=True)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument("--cased", action="store_true")
    p.add_argument("--out", required=True, help="directory for vocab.txt")
    p.set_defaults(func=_run_train_tokenizer)


def _run_train_tokenizer(a):
    from .tokenization import train_wordpiece
    tok = train_wordpiece(a.corpus, a.vocab_size, a.out, lowercase=not a.cased,
                          min_frequency=a.min_frequency)
    print(f"wrote {a.out}/vocab.txt with {tok.vocab_size} tokens")


def _add_finetune(sub):
    p = sub.add_parser("finetune", help="fine-tune a sequence classifier on a task")
    p.add_argument("--task", required=True, help="sst2 mrpc cola stsb rte imdb tnews zh_sentiment")
    p.add_argument("--model", required=True, help="a Hugging Face model directory, or a preset "
                   "name to start from random weights")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--max-eval-examples", type=int, default=None)
    p.add_argument("--train-file", default=None, help="JSONL instead of the task's train split")
    p.add_argument("--dev-file", default=None, help="JSONL instead of the task's dev split")
    p.add_argument("--vocab", default=None, help="vocab.txt when --model has none")
    p.set_defaults(func=_run_finetune)


def _run_finetune(a):
    from .finetune import FinetuneSettings, finetune
    settings = FinetuneSettings(
        task=a.task, model=a.model, out=a.out, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
        max_seq_length=a.max_seq_length, warmup_ratio=a.warmup_ratio, weight_decay=a.weight_decay,
        seed=a.seed, max_train_examples=a.max_train_examples,
        max_eval_examples=a.max_eval_examples, train_file=a.train_file, dev_file=a.dev_file,
        vocab=a.vocab)
    result = finetune(settings)
    print(json.dumps(result, indent=1))


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="metrics of a fine-tuned model on a task split")
    p.add_argument("--model", required=True, help="a fine-tuned model directory")
    p.add_argument("--task", required=True)
    p.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    p.add_argument("--file", default=None, help="a JSONL file instead of the task's split")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(a):
    from .finetune import evaluate_saved
    print(json.dumps(evaluate_saved(a.model, a.task, a.split, a.max_seq_length, a.file), indent=1))


def _add_predict(sub):
    p = sub.add_parser("predict", help="classify a text (or a text pair) with a fine-tuned model")
    p.add_argument("text", nargs="+", help="one or more texts")
    p.add_argument("--text-b", default=None, help="second text of a pair (one text only)")
    p.add_argument("--model", required=True, help="a fine-tuned model directory")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.set_defaults(func=_run_predict)


def _run_predict(a):
    from .finetune import load_for_inference, predict_texts
    if a.text_b is not None and len(a.text) != 1:
        raise ValueError("--text-b goes with exactly one text")
    model, tokenizer = load_for_inference(a.model)
    scores = predict_texts(model, tokenizer, a.text, None if a.text_b is None else [a.text_b],
                           a.max_seq_length)
    names = model.config.id2label or {}
    for text, row in zip(a.text, scores):
        if model.config.num_labels == 1:
            print(f"{row[0]:.4f}\t{text}")
        else:
            k = int(row.argmax())
            print(f"{names.get(str(k), names.get(k, k))}\t{row[k]:.4f}\t{text}")


def _add_demo(sub):
    p = sub.add_parser("demo", help="fine-tune all-MiniLM-L6-v2 on the shipped SST-2 sample")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=2)
    p.set_defaults(func=lambda a: __import__("bert_np.demo", fromlist=["run_demo"]).run_demo(
        out=a.out, epochs=a.epochs))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert-np", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_pretrain(sub)
    _add_train_tokenizer(sub)
    _add_finetune(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"bert-np {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bert-np {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
