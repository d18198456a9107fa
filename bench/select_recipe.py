"""Pick a task's fine-tuning recipe from the records of a grid of bench/finetune_compare.py runs.

The rule (bench/README.md): among every (batch size, learning rate, epochs of the schedule, epoch
k) of the records, on the selection seed (default 0), the one with the best bert_np dev main
metric; ties go to the earlier epoch k, then the larger batch, then the larger learning rate.
PyTorch gets the same choice: the script prints the finetune_compare command that runs both
frameworks with it (`--epoch k`, seeds 0 and 1, or those of `--seeds`), whose seeds other than the
selection seed were not used to choose.

    python bench/select_recipe.py bench/results/finetune_compare/mrpc-*.json [--seeds 0 1 2 3 4 5]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

# the settings of a record that are not part of the grid but must be the same in the final run
KEPT = ("model", "max_train_examples", "max_dev_examples", "max_seq_length", "truncation")


def candidates(records: list[dict], seed: int) -> list[dict]:
    """One row per record and epoch of the selection seed's bert_np run."""
    rows = []
    for path, record in records:
        settings = record["settings"]
        for run in record["runs"]:
            if run["seed"] != seed:
                continue
            for epoch in run["bert_np"]["epochs"]:
                rows.append({"path": path, "settings": settings,
                             "batch_size": settings["batch_size"], "lr": settings["lr"],
                             "epochs": settings["epochs"], "epoch": epoch["epoch"],
                             "value": epoch["dev"][record["main_metric"]]})
    return rows


def choose(rows: list[dict]) -> dict:
    """The best value; ties: the earlier epoch, the larger batch, the larger learning rate."""
    return max(rows, key=lambda r: (r["value"], -r["epoch"], r["batch_size"], r["lr"]))


def final_command(best: dict, task: str, seeds=(0, 1)) -> str:
    argv = ["python", "bench/finetune_compare.py", "--task", task,
            "--batch-size", str(best["batch_size"]), "--lr", f"{best['lr']:g}",
            "--epochs", str(best["epochs"]), "--epoch", str(best["epoch"]),
            "--seed", *map(str, seeds)]
    settings = dict(best["settings"])
    if settings.get("max_train_examples") is None:
        settings["max_train_examples"] = 0  # all: said explicitly, SST-2's default is a subset
    for name in KEPT:
        if settings.get(name) is not None:
            argv += ["--" + name.replace("_", "-"), str(settings[name])]
    if settings.get("test"):
        argv.append("--test")
    return shlex.join(argv)


def load(paths: list[Path]) -> tuple[str, list]:
    """The records, all of one task and with the same settings outside the grid."""
    records = [(str(p), json.loads(Path(p).read_text())) for p in paths]
    if not records:
        sys.exit("select_recipe: no records given")
    tasks = {r["task"] for _, r in records}
    if len(tasks) != 1:
        sys.exit(f"select_recipe: the records are of several tasks: {', '.join(sorted(tasks))}")
    kept = {json.dumps([r["settings"].get(k) for k in KEPT]) for _, r in records}
    if len(kept) != 1:
        sys.exit(f"select_recipe: the records differ in {', '.join(KEPT)}; a grid varies only "
                 "the batch size, the learning rate and the epochs")
    return tasks.pop(), records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", nargs="+", type=Path, help="JSON records of finetune_compare.py")
    p.add_argument("--seed", type=int, default=0, help="the selection seed (default 0)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="the seeds of the printed comparison command (default 0 1)")
    args = p.parse_args(argv)
    task, records = load(args.records)
    rows = candidates(records, args.seed)
    if not rows:
        sys.exit(f"select_recipe: no run with seed {args.seed} in the records")
    metric = records[0][1]["main_metric"]
    print(f"{task}: bert_np dev {metric} (seed {args.seed}) per batch size, lr, epochs, epoch")
    for row in sorted(rows, key=lambda r: (r["batch_size"], -r["lr"], r["epochs"], r["epoch"])):
        print(f"  batch {row['batch_size']:3d}  lr {row['lr']:<7g} epochs {row['epochs']}  "
              f"epoch {row['epoch']}  {100 * row['value']:6.2f}")
    best = choose(rows)
    print(f"chosen: batch {best['batch_size']}, lr {best['lr']:g}, {best['epochs']}-epoch "
          f"schedule, epoch {best['epoch']} ({100 * best['value']:.2f}; {best['path']})")
    print(final_command(best, task, args.seeds))
    return best


if __name__ == "__main__":
    main()
