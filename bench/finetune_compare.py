"""The same fine-tuning recipe in bert_np and in transformers + PyTorch, one after the other.

For every seed, on any task of bert_np.data.tasks (sst2 mrpc cola stsb rte imdb tnews
zh_sentiment; STS-B is a regression trained with MSE):
1. bert_np: `bert_np.train.finetune.finetune`, what `bert-np finetune` runs, on the examples
   below; dev metrics before training and after every epoch.
2. PyTorch: `transformers.BertForSequenceClassification` loaded from the same model directory,
   its classifier set to bert_np's initial head (read from bert_np's model before its first
   step), trained on the same token ids (bert_np's tokenizer and truncation) in the same
   length-bucketed batches (finetune.training_batches, the same seed), with torch.optim.AdamW
   (the same lr, betas (0.9, 0.999), eps 1e-6, weight decay 0.01 except on biases and LayerNorm),
   the same warmup + linear decay (bert_np.optim.linear_warmup_decay in a LambdaLR), global-norm
   clipping at 1.0 and the model's dropout (0.1 for MiniLM). Only the dropout masks differ.
3. Both are evaluated on dev after every epoch. The figures compared are those of the chosen
   epoch: `--epoch K`, or else the epoch where bert_np's dev main metric is best (the one
   `bert-np finetune` keeps in best/); PyTorch is read at the same epoch. With `--test` both
   are evaluated at that epoch on the task's test split too (labelled: MRPC, IMDB, TNEWS,
   zh_sentiment).
It prints the metrics of both per epoch (and each side's progress: a bar on a terminal, a line a
minute in a log file), the difference at the chosen epoch, its spread over the seeds, and writes
a JSON record (command, commit, machine, settings, per-seed metrics per epoch, wall times) under
bench/results/finetune_compare/ (or --out). bench/README.md gives the command for each task and
the rule that picks the recipe.

    BERT_NP_DATA=../shared/data python bench/finetune_compare.py                  # SST-2, 8,000
    BERT_NP_DATA=../shared/data python bench/finetune_compare.py --task mrpc --batch-size 16 \\
        --lr 5e-5 --epochs 4 --seed 0 1
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # the sibling results_table.py

import numba  # noqa: E402

import bert_np  # noqa: E402
from bert_np import paths  # noqa: E402
from bert_np.data.batching import EncodedSplit, length_sorted_batches, pad_batch  # noqa: E402
from bert_np.data.tasks import TASKS, get_task, load_split  # noqa: E402
from bert_np.files import atomic_write_text  # noqa: E402
from bert_np.optim import decays, linear_warmup_decay  # noqa: E402
from bert_np.tokenization import TRUNCATIONS  # noqa: E402
from bert_np.train.finetune import (FinetuneSettings, encode_examples,  # noqa: E402
                                    evaluate_classifier, finetune, load_tokenizer, predict_logits,
                                    subset, training_batches, warmup_and_total_steps)
from bert_np.train.metrics import compute_metrics, format_metrics  # noqa: E402
from bert_np.train.progress import progress_bar  # noqa: E402
from results_table import spread  # noqa: E402  (bench/, on the path above)

REPO = Path(_HERE).parent
RESULTS = REPO / "bench" / "results" / "finetune_compare"
# defaults that differ by task: SST-2 keeps the 8,000-sentence, 64-token comparison this script
# has always run; the other tasks train on every example at 128 tokens unless told otherwise
TASK_DEFAULTS = {"sst2": {"max_train_examples": 8000, "max_seq_length": 64}}
GENERAL_DEFAULTS = {"max_train_examples": None, "max_seq_length": 128}
FIRST_ROWS = 64  # dev rows on which the initial logits of the two models are compared


# ---- bert_np --------------------------------------------------------------------------------

def first(split: EncodedSplit, n: int) -> EncodedSplit:
    """The first n examples of an encoded split."""
    return EncodedSplit(split.ids[:n], split.types[:n], split.labels[:n])


def run_bert_np(settings, task, examples, test, chosen_epoch, log):
    """finetune() on the examples; returns the run's record, bert_np's initial head and its
    initial logits on the first dev rows."""
    seen = {"head": None, "logits": None, "best": None, "snapshot": None, "model": None}
    first_rows = first(examples["dev_encoded"], FIRST_ROWS)

    def on_eval(epoch, model, metrics):
        if epoch == 0:
            seen["head"] = {k: v.copy() for k, v in model.params.items()
                            if k.startswith("classifier.")}
            seen["logits"] = predict_logits(model, first_rows, examples["pad_id"])
            seen["model"] = model
            return
        main = metrics[task.main_metric]
        improved = seen["best"] is None or main > seen["best"]
        seen["best"] = main if improved else seen["best"]
        if test is not None and (epoch == chosen_epoch or (chosen_epoch is None and improved)):
            seen["snapshot"] = {k: v.copy() for k, v in model.params.items()}

    result = finetune(settings, progress=True, train_examples=examples["train"],
                      dev_examples=examples["dev"], log=lambda m: log(f"bert_np {m}"),
                      on_eval=on_eval)
    losses = epoch_losses(Path(settings.out) / "log.jsonl")
    run = {"before": result["before"],
           "epochs": [{"epoch": e, "dev": m, "train_loss": losses.get(e)}
                      for e, m in enumerate(result["epochs"], start=1)],
           "best_dev_epoch": result["best"]["epoch"],
           "train_seconds": result["train_seconds"] - result["eval_seconds"],
           "eval_seconds": result["eval_seconds"], "test": None}
    if test is not None:
        model = seen["model"]
        for k, v in seen["snapshot"].items():
            model.params[k][...] = v
        started = time.perf_counter()
        run["test"] = evaluate_classifier(model, test, task, examples["pad_id"], progress=True)
        run["eval_seconds"] += time.perf_counter() - started
    return run, seen["head"], seen["logits"]


def epoch_losses(log_path: Path) -> dict[int, float]:
    """The mean training loss of each epoch, from finetune's log.jsonl."""
    by_epoch = {}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            by_epoch.setdefault(record["epoch"], []).append(record["loss"])
    return {epoch: float(np.mean(losses)) for epoch, losses in by_epoch.items()}


# ---- transformers + PyTorch -----------------------------------------------------------------

def torch_logits(model, split, pad_id, num_labels, batch_size=64):
    """Logits of every example in eval mode, batched by length like bert_np's predict_logits."""
    import torch
    logits = np.zeros((len(split.ids), num_labels), dtype=np.float32)
    batches = length_sorted_batches([len(x) for x in split.ids], batch_size)
    with torch.inference_mode():
        for rows in progress_bar(batches, desc="torch evaluate", unit="batch", leave=False):
            batch = pad_batch(split, rows, pad_id, np.float32, regression=True)
            batch.pop("labels")
            logits[rows] = model(**{k: torch.tensor(v) for k, v in batch.items()}).logits.numpy()
    return logits


def run_torch(settings, task, examples, test, chosen_epoch, head, first_logits, log):
    """The same training in transformers + PyTorch; returns the run's record."""
    import torch
    import transformers
    torch.manual_seed(settings.seed)
    train, dev, pad_id = examples["train_encoded"], examples["dev_encoded"], examples["pad_id"]
    model = transformers.BertForSequenceClassification.from_pretrained(
        settings.model, num_labels=task.num_labels)
    with torch.no_grad():
        for name, value in head.items():
            model.get_parameter(name).copy_(torch.from_numpy(value))
    named = dict(model.named_parameters())
    groups = [{"params": [p for n, p in named.items() if decays(n)],
               "weight_decay": settings.weight_decay},
              {"params": [p for n, p in named.items() if not decays(n)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.999), eps=1e-6)
    warmup, total = warmup_and_total_steps(len(train.ids), settings.batch_size, settings.epochs,
                                           settings.warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: linear_warmup_decay(k, warmup, total))

    def evaluate(split):
        model.eval()
        metrics = compute_metrics(task, torch_logits(model, split, pad_id, task.num_labels),
                                  split.labels)
        model.train()
        return metrics

    model.eval()
    initial = torch_logits(model, first(dev, FIRST_ROWS), pad_id, task.num_labels)
    run = {"initial_logits_max_abs_diff": float(np.abs(initial - first_logits).max()),
           "before": evaluate(dev), "epochs": [], "test": None, "train_seconds": 0.0}
    log(f"torch   dev before fine-tuning: {format_metrics(run['before'])}; initial logits on the first "
        f"{len(initial)} dev examples differ from bert_np's by at most "
        f"{run['initial_logits_max_abs_diff']:.1e}")
    lengths = [len(x) for x in train.ids]
    start = time.perf_counter()
    model.train()
    for epoch in range(1, settings.epochs + 1):
        started, losses = time.perf_counter(), []
        batches = training_batches(lengths, settings.batch_size, settings.seed, epoch)
        bar = progress_bar(total=len(batches), desc=f"torch epoch {epoch}", unit="step")
        for rows in batches:
            batch = pad_batch(train, rows, pad_id, np.float32, task.is_regression)
            optimizer.zero_grad(set_to_none=True)
            loss = model(**{k: torch.tensor(v) for k, v in batch.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
        run["train_seconds"] += time.perf_counter() - started
        run["epochs"].append({"epoch": epoch, "dev": evaluate(dev),
                              "train_loss": float(np.mean(losses))})
        log(f"torch   epoch {epoch}: dev {format_metrics(run['epochs'][-1]['dev'])}")
        if test is not None and epoch == chosen_epoch:
            run["test"] = evaluate(test)
    run["eval_seconds"] = time.perf_counter() - start - run["train_seconds"]
    return run


# ---- one seed, the record, the printout ------------------------------------------------------

def run_seed(seed, args, task, splits, tokenizer, log, save, pending=None):
    """Both frameworks on one seed: {"seed", "chosen_epoch", "bert_np", "torch", "examples"}.

    `save(run)` is called when bert_np's side is done, with the run's "torch_pending": bert_np's
    initial head and its logits on the first dev rows, which PyTorch starts from and is checked
    against. Given such a saved run as `pending`, bert_np's side is not run again: a long
    comparison stopped during PyTorch's side keeps bert_np's."""
    train = subset(splits["train"], args.max_train_examples, seed)
    dev = subset(splits["dev"], args.max_dev_examples, seed)

    def encode(examples):
        return encode_examples(examples, tokenizer, args.max_seq_length, args.truncation)

    examples = {"train": train, "dev": dev, "train_encoded": encode(train),
                "dev_encoded": encode(dev), "pad_id": tokenizer.pad_id}
    test = encode(subset(splits["test"], args.max_test_examples, seed)) if args.test else None
    with tempfile.TemporaryDirectory(prefix="finetune_compare_") as out:
        settings = FinetuneSettings(task=task.name, model=args.model, out=out, epochs=args.epochs,
                                    lr=args.lr, batch_size=args.batch_size,
                                    max_seq_length=args.max_seq_length,
                                    truncation=args.truncation, seed=seed, overwrite=True,
                                    checkpoint_every=None)  # training time without saves
        if pending is None:
            ours, head, first_logits = run_bert_np(settings, task, examples, test, args.epoch, log)
            run = {"seed": seed, "chosen_epoch": args.epoch or ours["best_dev_epoch"],
                   "bert_np": ours, "torch": None,
                   "examples": {"train": len(train), "dev": len(dev),
                                "test": None if test is None else len(test.ids)}}
            if args.bert_np_only:
                return run
            run["torch_pending"] = {"head": {k: v.tolist() for k, v in head.items()},
                                    "first_logits": first_logits.tolist()}
            save(run)
        else:
            run = dict(pending)
        start = run.pop("torch_pending")
        head = {k: np.asarray(v, dtype=np.float32) for k, v in start["head"].items()}
        first_logits = np.asarray(start["first_logits"], dtype=np.float32)
        run["torch"] = run_torch(settings, task, examples, test, run["chosen_epoch"], head,
                                 first_logits, log)
    return run


def at_chosen(run: dict, side: str, split: str) -> dict | None:
    """A side's metrics on 'dev' or 'test' at the run's chosen epoch."""
    record = run[side]
    if record is None:
        return None
    return record["test"] if split == "test" else record["epochs"][run["chosen_epoch"] - 1]["dev"]


def summary(runs: list[dict], task, splits=("dev", "test")) -> dict:
    """Per split and metric: each side's values at the chosen epochs, and their differences."""
    out = {}
    for split in splits:
        for metric in task.metrics:
            values = {side: [at_chosen(r, side, split)[metric] for r in runs
                             if at_chosen(r, side, split) is not None]
                      for side in ("bert_np", "torch")}
            if not values["bert_np"]:
                continue
            entry = dict(values)
            if len(values["torch"]) == len(values["bert_np"]):
                entry["difference"] = [a - b for a, b in zip(values["bert_np"], values["torch"])]
            out[f"{split} {metric}"] = entry
    return out


def print_epochs(run: dict, task, log) -> None:
    """Per epoch: the main dev metric of both (points) and their mean training losses."""
    metric = task.main_metric
    log(f"{'epoch':>5s} {'bert_np ' + metric:>16s} {'torch ' + metric:>14s} {'difference':>10s} "
        f"{'bert_np loss':>12s} {'torch loss':>10s}")
    for e, ours in enumerate(run["bert_np"]["epochs"]):
        theirs = run["torch"]["epochs"][e] if run["torch"] else None
        a = 100 * ours["dev"][metric]
        b = f"{100 * theirs['dev'][metric]:14.2f} {a - 100 * theirs['dev'][metric]:+10.2f}" \
            if theirs else f"{'-':>14s} {'-':>10s}"
        loss = f"{theirs['train_loss']:10.4f}" if theirs else f"{'-':>10s}"
        mark = "  <- chosen" if ours["epoch"] == run["chosen_epoch"] else ""
        log(f"{ours['epoch']:5d} {a:16.2f} {b} {ours['train_loss']:12.4f} {loss}{mark}")


def print_summary(table: dict, task, seeds, log) -> None:
    log(f"at the chosen epoch, {len(seeds)} seed(s) {' '.join(map(str, seeds))}: "
        f"bert_np / PyTorch / difference (points; range over seeds)")
    for name, entry in table.items():
        main = "  <- main metric" if name.endswith(task.main_metric) else ""
        cells = [spread(entry[side]) for side in ("bert_np", "torch") if entry[side]]
        if "difference" in entry:
            cells.append(spread(entry["difference"], signed=True))
        log(f"  {name:16s} " + " / ".join(cells) + main)


def continued(record: dict, path: Path) -> tuple[dict, set, dict]:
    """The record saved at `path`, to be continued by this run (`record`, not yet run): refused
    unless every setting but the seeds is the same. All its runs are kept; returned with it are
    the seeds done (not to be run again) and the runs whose PyTorch side is still to run (by
    seed); this run's command and commit are added to `continued_by`."""
    saved = json.loads(path.read_text())
    ignore = ("seed", "resume", "out")
    differ = sorted(k for k in set(saved["settings"]) | set(record["settings"]) if k not in ignore
                    and saved["settings"].get(k) != record["settings"].get(k))
    if differ:
        sys.exit(f"finetune_compare: --resume {path}: the record was run with other settings: "
                 f"{', '.join(differ)}")
    recorded = [r["seed"] for r in saved["runs"]]
    saved["seeds"] = recorded + [s for s in record["seeds"] if s not in recorded]
    saved.setdefault("continued_by", []).append(
        {k: record[k] for k in ("command", "commit", "uncommitted_changes", "date")})
    pending = {r["seed"]: r for r in saved["runs"] if "torch_pending" in r}
    return saved, set(recorded) - set(pending), pending


def machine(threads: int) -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                    if line.startswith("Model name")), platform.processor())
    except OSError:
        cpu = platform.processor()
    import torch
    import transformers
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "bert_np_backend": bert_np.get_backend()}


def git_commit() -> dict:
    def git(*argv):
        return subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True,
                              text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD") or None,
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


def default_out(args, seeds) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RESULTS / (f"{args.task}-b{args.batch_size}-lr{args.lr:g}-e{args.epochs}-"
                      f"s{'_'.join(map(str, seeds))}-{stamp}.json")


# ---- the command line -----------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2", choices=tuple(TASKS), help="the task (default sst2)")
    p.add_argument("--model", default=None,
                   help="a Hugging Face BERT directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    p.add_argument("--epochs", type=int, default=1,
                   help="epochs; the schedule spans them all (default 1)")
    p.add_argument("--epoch", type=int, default=None,
                   help="compare at this epoch (default: the one with bert_np's best dev main "
                        "metric)")
    p.add_argument("--seed", type=int, nargs="+", action="extend", default=None,
                   help="seeds of the head, data order, subsets and dropout; several (--seed 0 1 "
                        "or --seed 0 --seed 1) give the spread (default 0)")
    p.add_argument("--max-train-examples", "--train-examples", type=int, default=None,
                   dest="max_train_examples",
                   help="a seeded random subset of the training split (default: 8,000 for "
                        "sst2, all for the other tasks; 0: all)")
    p.add_argument("--max-dev-examples", type=int, default=None,
                   help="a seeded random subset of the dev split (default: all)")
    p.add_argument("--max-test-examples", type=int, default=None,
                   help="with --test: a seeded random subset of the test split (default: all)")
    p.add_argument("--max-seq-length", type=int, default=None,
                   help="tokens per example (default: 64 for sst2, 128 for the other tasks)")
    p.add_argument("--truncation", default="head", choices=TRUNCATIONS,
                   help="keep the head, or head + tail, of a longer text (default head)")
    p.add_argument("--test", action="store_true",
                   help="also evaluate both at the chosen epoch on the task's labelled test split")
    p.add_argument("--bert-np-only", action="store_true",
                   help="run bert_np only (to pick a recipe on a grid; then compare the choice)")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON record (default: bench/results/finetune_compare/"
                        "<task>-b<batch>-lr<lr>-e<epochs>-s<seeds>-<date>.json)")
    p.add_argument("--resume", action="store_true",
                   help="continue the record --out names: its seeds are kept, the other seeds "
                        "run, and a seed stopped during PyTorch's side runs that side only "
                        "(the settings must be the same)")
    args = p.parse_args(argv)
    if args.resume and (args.out is None or not args.out.is_file()):
        p.error(f"--resume continues an existing record: give it with --out (got {args.out})")
    if not args.resume and args.out is not None and args.out.exists():
        p.error(f"--out {args.out} exists: --resume continues it, or name another file")
    for name, value in {**GENERAL_DEFAULTS, **TASK_DEFAULTS.get(args.task, {})}.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, least in (("max_train_examples", 0), ("max_dev_examples", 1),
                        ("max_test_examples", 1)):
        if getattr(args, name) is not None and getattr(args, name) < least:
            p.error(f"--{name.replace('_', '-')} must be >= {least}, got {getattr(args, name)}")
    if args.max_train_examples == 0:
        args.max_train_examples = None
    args.seed = args.seed or [0]
    task = get_task(args.task)
    try:  # the settings bert-np finetune refuses, with its messages (which name the option)
        args.model = args.model or str(paths.minilm_dir())
        if not Path(args.model).is_dir():
            p.error(f"--model {args.model} is not a directory (a Hugging Face BERT directory "
                    "both frameworks load)")
        for seed in args.seed:
            FinetuneSettings(task=task.name, model=args.model, out="-", epochs=args.epochs,
                             lr=args.lr, batch_size=args.batch_size,
                             max_seq_length=args.max_seq_length, truncation=args.truncation,
                             seed=seed)
    except (ValueError, OSError) as e:
        p.error(str(e))
    if args.epoch is not None and not 1 <= args.epoch <= args.epochs:
        p.error(f"--epoch {args.epoch} is not one of the epochs 1..{args.epochs}")
    if args.test and not task.test_has_labels:
        p.error(f"--test: the test split of {task.name} has no labels")
    if len(set(args.seed)) != len(args.seed):
        p.error(f"--seed lists a seed twice: {args.seed}")
    return args


def main(argv=None):
    args = parse_args(argv)
    task = get_task(args.task)
    bert_np.tune_process()
    # Loading order (docs/kernels.md, "The thread pool"; bench/import_order.py): torch before
    # Numba's libgomp, or PyTorch runs on Numba's copy, 2-10x slower; bert_np's pool before
    # numba.get_num_threads(), which would load libgomp with its default spin.
    if not args.bert_np_only:
        import torch
        import transformers
        torch.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # as many as bert_np's kernels
        transformers.logging.set_verbosity_error()  # its load report lists the new head
    importlib.import_module("bert_np.kernels.common")  # loads Numba's thread pool bert_np's way
    threads = numba.get_num_threads()

    def log(message):
        print(message, flush=True)

    tokenizer = load_tokenizer(args.model, task.language)
    splits = {split: load_split(task, split) for split in ("train", "dev")
              + (("test",) if args.test else ())}
    record = {"benchmark": "finetune_compare",
              "command": shlex.join(["python", "bench/finetune_compare.py",
                                     *(sys.argv[1:] if argv is None else argv)]),
              **git_commit(), "date": datetime.datetime.now().astimezone().isoformat(),
              "machine": machine(threads) if not args.bert_np_only else {"threads": threads},
              "task": task.name, "main_metric": task.main_metric, "seeds": args.seed,
              "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
              "recipe": {"optimizer": "AdamW betas (0.9, 0.999) eps 1e-6",
                         **{k: getattr(FinetuneSettings, k) for k in
                            ("weight_decay", "warmup_ratio", "max_grad_norm")}},
              "runs": []}
    out = args.out or default_out(args, args.seed)
    done, pending = set(), {}
    if args.resume:
        record, done, pending = continued(record, out)
    log(f"{task.name} ({task.description}; main metric {task.main_metric}): "
        f"{len(subset(splits['train'], args.max_train_examples, 0)):,} training and "
        f"{len(subset(splits['dev'], args.max_dev_examples, 0)):,} dev examples"
        + (f", {len(subset(splits['test'], args.max_test_examples, 0)):,} test" if args.test
           else "")
        + f"; lr {args.lr:g}, batch {args.batch_size}, {args.epochs} epoch(s), max_seq_length "
        f"{args.max_seq_length}, truncation {args.truncation}; seeds {args.seed}; model "
        f"{args.model}; bert_np backend {bert_np.get_backend()}, {threads} thread(s)")

    def save(run):
        """The record with `run` in its seed's place, written whole (atomically)."""
        seeds = [r["seed"] for r in record["runs"]]
        if run["seed"] in seeds:
            record["runs"][seeds.index(run["seed"])] = run
        else:
            record["runs"].append(run)
        record["summary"] = summary([r for r in record["runs"] if "torch_pending" not in r],
                                    task)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(record, indent=1) + "\n")

    for seed in args.seed:
        if seed in done:
            log(f"-- seed {seed}: in {out} already")
            continue
        log(f"-- seed {seed}" + (": bert_np's side is in the record, PyTorch's runs now"
                                 if seed in pending else ""))
        run = run_seed(seed, args, task, splits, tokenizer, log, save, pending.get(seed))
        save(run)
        times = [f"{side} {run[side]['train_seconds']:.0f} s training + "
                 f"{run[side]['eval_seconds']:.0f} s evaluation"
                 for side in ("bert_np", "torch") if run[side] is not None]
        print_epochs(run, task, log)
        log(f"seed {seed}: chosen epoch {run['chosen_epoch']}; " + "; ".join(times))
    print_summary(record["summary"], task, record["seeds"], log)
    log(f"record: {out}")
    return record


if __name__ == "__main__":
    # With torch imported first, the short spin bert_np sets as it loads its pool does not reach
    # the libgomp its kernels run on, and its short SST-2 steps ran ~1.5x slower (200 steps: 42
    # against 28 s). Set in the environment, for this process only, before main() imports torch.
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # bert_np.kernels.common.SPIN_COUNT
    main()
