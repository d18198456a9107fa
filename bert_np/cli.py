"""The bert-np command line: demo, pretrain, train-tokenizer, finetune, distill, evaluate, predict,
quantize.

The options of `pretrain`, `finetune`, `distill` and `quantize` are built from the fields of their settings
dataclasses (bert_np.train.settings), and the defaults of the other verbs are read from the
signatures of the functions they call: each default is written once, and `--help` shows every
option's description and default.

Under `mpirun -n N bert-np pretrain|finetune|distill ...` the ranks train one model together
(bert_np/train/parallel.py); rank 0 prints the result, and an error on any rank ends the whole
job: `bert-np: rank R failed: ...` on stderr, then MPI Abort with exit code 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import traceback
import typing


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default: "(default: X)", "(required)", or for an on/off
    flag "(default: off)"."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


# ---- options from a settings dataclass ----------------------------------------------------------

def _option_type(hint):
    """(type, nargs) of a field's annotation: int, float, str, list[str], X | None (the option
    then also takes the word "none")."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:
        return args[0], "*"
    if args:  # X | None
        return _or_none(args[0]), None
    return hint, None


def _or_none(value_type):
    """An argparse type: "none" is None, anything else is value_type(text)."""
    def convert(text: str):
        return None if text.strip().lower() == "none" else value_type(text)
    convert.__name__ = value_type.__name__  # argparse's message: "invalid float value: 'x'"
    return convert


def add_settings_options(parser: argparse.ArgumentParser, settings_class) -> None:
    """One option per field of `settings_class`, named --field-name (or the field's `flag`), with
    its help, default and type; a field without a default is a required option."""
    hints = typing.get_type_hints(settings_class)
    for f in dataclasses.fields(settings_class):
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        kwargs = dict(dest=f.name, help=f.metadata["help"])
        value_type, nargs = _option_type(hints[f.name])
        if value_type is bool:
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs.update(type=value_type, choices=f.metadata.get("choices"))
            if nargs:
                kwargs["nargs"] = nargs
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        else:
            kwargs["required"] = True
            if nargs:
                kwargs["nargs"] = "+"
        parser.add_argument(flag, **kwargs)


def settings_from_args(settings_class, args: argparse.Namespace):
    """The settings dataclass filled from the parsed options."""
    return settings_class(**{f.name: getattr(args, f.name)
                             for f in dataclasses.fields(settings_class)})


def default_of(function, name: str):
    """The default value of a function's parameter."""
    return inspect.signature(function).parameters[name].default


def _parser(sub, name: str, summary: str) -> argparse.ArgumentParser:
    """A verb's parser, its summary in `bert-np --help` and atop its own --help."""
    return sub.add_parser(name, help=summary, description=summary, formatter_class=HelpFormatter)


# ---- the verbs ----------------------------------------------------------------------------------

def _add_pretrain(sub):
    from .train.pretrain import PretrainSettings
    p = _parser(sub, "pretrain", "pretrain BertForPreTraining (MLM + NSP) from raw text")
    add_settings_options(p, PretrainSettings)
    _add_resume(p)
    p.set_defaults(func=_run_pretrain)


def _add_resume(p):
    """--resume, of the runs that save resumable checkpoints (pretrain, finetune, distill)."""
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --out (the same settings and "
                        "inputs; --max-steps and --max-minutes may change)")


def _run_pretrain(args):
    from .train.pretrain import PretrainSettings, pretrain
    from .train.parallel import is_main_process
    result = pretrain(settings_from_args(PretrainSettings, args), resume=args.resume)
    if is_main_process():
        print(json.dumps(result, indent=1))


def _add_train_tokenizer(sub):
    from .tokenization import train_wordpiece
    p = _parser(sub, "train-tokenizer", "learn a WordPiece vocab.txt from text files")
    p.add_argument("--corpus", nargs="+", required=True, help="text files to learn from")
    p.add_argument("--vocab-size", type=int, default=8000,
                   help="tokens in the vocabulary, the 5 special tokens included")
    p.add_argument("--min-frequency", type=int, default=default_of(train_wordpiece, "min_frequency"),
                   help="merge only pairs of pieces seen at least this often")
    p.add_argument("--cased", action="store_true", help="do not lower-case the text")
    p.add_argument("--out", required=True, help="directory for vocab.txt")
    p.set_defaults(func=_run_train_tokenizer)


def _run_train_tokenizer(args):
    from .tokenization import train_wordpiece
    tokenizer = train_wordpiece(args.corpus, args.vocab_size, args.out, lowercase=not args.cased,
                                min_frequency=args.min_frequency)
    print(f"wrote {args.out}/vocab.txt with {tokenizer.vocab_size} tokens")


def _add_finetune(sub):
    from .train.finetune import FinetuneSettings
    p = _parser(sub, "finetune", "fine-tune a sequence classifier on a task")
    add_settings_options(p, FinetuneSettings)
    _add_resume(p)
    p.set_defaults(func=_run_finetune)


def _run_finetune(args):
    from .train.finetune import FinetuneSettings, finetune
    from .train.parallel import is_main_process
    result = finetune(settings_from_args(FinetuneSettings, args), resume=args.resume,
                      log=print if is_main_process() else lambda message: None)
    if is_main_process():
        print(json.dumps(result, indent=1))


def _add_distill(sub):
    from .train.distill import DistillSettings
    p = _parser(sub, "distill", "distil a fine-tuned teacher into a student on a transfer set "
                                "(then, optionally: bert-np finetune --model <out>/best)")
    add_settings_options(p, DistillSettings)
    _add_resume(p)
    p.set_defaults(func=_run_distill)


def _run_distill(args):
    from .train.distill import DistillSettings, distill
    from .train.parallel import is_main_process
    result = distill(settings_from_args(DistillSettings, args), resume=args.resume)
    if is_main_process():
        print(json.dumps(result, indent=1))


def _add_evaluate(sub):
    from .data.tasks import TASKS
    from .train.finetune import evaluate_saved_model
    p = _parser(sub, "evaluate", "metrics of a fine-tuned model on a task split")
    p.add_argument("--model", required=True,
                   help="a fine-tuned model directory (float, or int8 from `bert-np quantize`)")
    p.add_argument("--task", required=True, choices=tuple(TASKS), help="the task")
    p.add_argument("--split", default=default_of(evaluate_saved_model, "split"),
                   choices=["train", "dev", "test"], help="the task's split to evaluate on")
    p.add_argument("--file", default=default_of(evaluate_saved_model, "file"),
                   help="a JSONL file instead of the task's split")
    p.add_argument("--max-seq-length", type=int,
                   default=default_of(evaluate_saved_model, "max_seq_length"),
                   help="tokens per example; longer texts are truncated")
    _add_truncation(p, default_of(evaluate_saved_model, "truncation"))
    p.set_defaults(func=_run_evaluate)


def _add_truncation(p, default):
    """--truncation, as `bert-np finetune` declares it; give the value the model was trained with."""
    from .tokenization import TRUNCATIONS
    from .train.finetune import TRUNCATION_HELP
    p.add_argument("--truncation", default=default, choices=TRUNCATIONS,
                   help=TRUNCATION_HELP + "; the model's fine-tuning setting")


def _run_evaluate(args):
    from .train.finetune import evaluate_saved_model
    metrics = evaluate_saved_model(args.model, args.task, args.split, args.max_seq_length,
                                   args.file, truncation=args.truncation)
    print(json.dumps(metrics, indent=1))


def _add_predict(sub):
    from .train.finetune import predict_texts
    p = _parser(sub, "predict", "classify a text (or a text pair) with a fine-tuned model")
    p.add_argument("text", nargs="+", help="one or more texts")
    p.add_argument("--text-b", default=None, help="second text of a pair (one text only)")
    p.add_argument("--model", required=True,
                   help="a fine-tuned model directory (float, or int8 from `bert-np quantize`)")
    p.add_argument("--max-seq-length", type=int, default=default_of(predict_texts, "max_seq_length"),
                   help="tokens per text; longer texts are truncated")
    _add_truncation(p, default_of(predict_texts, "truncation"))
    p.set_defaults(func=_run_predict)


def _run_predict(args):
    from .train.finetune import load_for_inference, predict_texts, tasks_with_labels_of
    if args.text_b is not None and len(args.text) != 1:
        raise ValueError("--text-b goes with exactly one text")
    model, tokenizer = load_for_inference(args.model)
    tasks = tasks_with_labels_of(model)
    if tasks and all(t.is_pair for t in tasks) and args.text_b is None:
        raise ValueError(f"--text-b: {args.model} was fine-tuned on text pairs "
                         f"({', '.join(t.name for t in tasks)}); give the second text with --text-b")
    if tasks and not any(t.is_pair for t in tasks) and args.text_b is not None:
        raise ValueError(f"--text-b: {args.model} was fine-tuned on single texts "
                         f"({', '.join(t.name for t in tasks)}); it takes no second text")
    scores = predict_texts(model, tokenizer, args.text,
                           None if args.text_b is None else [args.text_b], args.max_seq_length,
                           args.truncation)
    names = model.config.id2label or {}
    for text, row in zip(args.text, scores):
        if model.config.num_labels == 1:
            print(f"{row[0]:.4f}\t{text}")
        else:
            k = int(row.argmax())
            print(f"{names.get(str(k), names.get(k, k))}\t{row[k]:.4f}\t{text}")


def _add_quantize(sub):
    from .train.quantize import QuantizeSettings
    p = _parser(sub, "quantize", "int8 copy of a saved model (dynamic quantization of the encoder's "
                                 "Linear layers), for predict and evaluate")
    add_settings_options(p, QuantizeSettings)
    p.set_defaults(func=_run_quantize)


def _run_quantize(args):
    from .train.quantize import QuantizeSettings, quantize_saved_model
    print(json.dumps(quantize_saved_model(settings_from_args(QuantizeSettings, args)), indent=1))


def _add_demo(sub):
    from .train.demo import run_demo
    p = _parser(sub, "demo", "fine-tune all-MiniLM-L6-v2 on the shipped SST-2 sample")
    p.add_argument("--out", default=default_of(run_demo, "out"),
                   help="output directory: best/, log.jsonl, curves.png")
    p.add_argument("--epochs", type=int, default=default_of(run_demo, "epochs"),
                   help="passes over the 3,000 training sentences")
    p.add_argument("--overwrite", action="store_true",
                   help="clear a non-empty --out first (a previous demo's output is replaced "
                        "without it)")
    p.set_defaults(func=_run_demo)


def _run_demo(args):
    from .train.demo import run_demo
    run_demo(out=args.out, epochs=args.epochs, overwrite=args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert-np", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback behind a one-line error too")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_pretrain(sub)
    _add_train_tokenizer(sub)
    _add_finetune(sub)
    _add_distill(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_quantize(sub)
    return parser


# Errors that bert_np raises for a bad argument, file, field or environment (a full disk, a
# read-only directory): one line naming it, exit status 2. Any other exception is a bug and prints
# its traceback (as does --debug for these).
USER_ERRORS = (ValueError, OSError)


def _close_progress_bars() -> None:
    """Close the progress bars an exception left open (tqdm keeps a set of its live bars)."""
    from tqdm import tqdm
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .kernels.process import tune_process
    tune_process()            # malloc and OpenBLAS settings for a training or inference run
    from .train.parallel import launched_by_mpirun
    if launched_by_mpirun():
        return _run_on_mpi(args)
    try:
        args.func(args)
    except USER_ERRORS as e:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(e).split("\n"))
        _close_progress_bars()  # so the message starts a line of its own
        print(f"bert-np {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bert-np {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _run_on_mpi(args) -> int:
    """One rank of an mpirun job: any error names the rank and aborts every rank (exit code 1),
    so no rank waits forever in a collective for one that is gone."""
    import traceback

    from .train.parallel import world
    comm = world()
    try:
        args.func(args)
    except BaseException as e:          # noqa: BLE001 - every failure must end the whole job
        print(f"bert-np: rank {comm.rank} failed: {type(e).__name__}: {e}", file=sys.stderr)
        if not isinstance(e, (ValueError, FileNotFoundError, KeyboardInterrupt)):
            traceback.print_exc()
        sys.stderr.flush()
        comm.abort(1)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
