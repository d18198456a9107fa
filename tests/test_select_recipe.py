"""bench/select_recipe.py: the rule that picks a task's fine-tuning recipe from a grid of
bench/finetune_compare.py records (bench/README.md, "Choosing each task's recipe")."""
import importlib.util
import json
import shlex
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "select_recipe.py"
spec = importlib.util.spec_from_file_location("select_recipe", SCRIPT)
select_recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(select_recipe)


def record(tmp_path, batch_size, lr, dev_by_seed, task="mrpc", **settings):
    """A finetune_compare.py record with bert_np's dev F1 per epoch for each seed."""
    settings = {"task": task, "model": "M", "lr": lr, "batch_size": batch_size,
                "epochs": len(next(iter(dev_by_seed.values()))), "max_train_examples": None,
                "max_dev_examples": None, "max_seq_length": 128, "truncation": "head",
                "test": False, **settings}
    runs = [{"seed": seed, "bert_np": {"epochs": [{"epoch": e, "dev": {"f1": v}}
                                                  for e, v in enumerate(values, start=1)]}}
            for seed, values in dev_by_seed.items()]
    path = tmp_path / f"{task}-b{batch_size}-lr{lr}.json"
    path.write_text(json.dumps({"task": task, "main_metric": "f1", "settings": settings,
                                "runs": runs}))
    return path


def test_the_best_bert_np_dev_metric_of_the_selection_seed_wins(tmp_path, capsys):
    paths = [record(tmp_path, 16, 1e-4, {0: [0.80, 0.84, 0.83, 0.82], 1: [0.99] * 4}),
             record(tmp_path, 32, 5e-5, {0: [0.81, 0.82, 0.86, 0.85]})]
    best = select_recipe.main([str(p) for p in paths])
    # seed 1's 0.99 does not count: it is not the selection seed
    assert (best["batch_size"], best["lr"], best["epoch"], best["value"]) == (32, 5e-5, 3, 0.86)
    command = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    i = command.index
    assert command[i("--batch-size") + 1] == "32" and command[i("--lr") + 1] == "5e-05"
    assert command[i("--epochs") + 1] == "4" and command[i("--epoch") + 1] == "3"
    assert command[i("--seed") + 1:i("--seed") + 3] == ["0", "1"]
    assert command[i("--max-train-examples") + 1] == "0"    # all, not SST-2's 8,000 default


def test_ties_go_to_the_earlier_epoch_then_the_larger_batch_then_the_larger_lr():
    rows = [{"value": 0.9, "epoch": 2, "batch_size": 32, "lr": 1e-4},
            {"value": 0.9, "epoch": 1, "batch_size": 16, "lr": 3e-5},
            {"value": 0.9, "epoch": 1, "batch_size": 32, "lr": 3e-5},
            {"value": 0.9, "epoch": 1, "batch_size": 32, "lr": 5e-5}]
    assert select_recipe.choose(rows) == rows[3]


def test_records_of_other_tasks_or_other_fixed_settings_are_refused(tmp_path):
    one = record(tmp_path, 16, 1e-4, {0: [0.8]})
    with pytest.raises(SystemExit, match="several tasks: mrpc, rte"):
        select_recipe.main([str(one), str(record(tmp_path, 16, 1e-4, {0: [0.8]}, task="rte"))])
    other = record(tmp_path, 32, 1e-4, {0: [0.8]}, max_seq_length=64)
    with pytest.raises(SystemExit, match="differ in model, max_train_examples"):
        select_recipe.main([str(one), str(other)])


def test_seeds_sets_the_comparison_seeds_and_only_them(tmp_path, capsys):
    """--seeds widens the printed comparison (the small tasks run six); the choice itself still
    comes from the selection seed alone."""
    paths = [str(record(tmp_path, 16, 1e-4, {0: [0.80, 0.84], 1: [0.99, 0.99]})),
             str(record(tmp_path, 32, 5e-5, {0: [0.81, 0.86]}))]
    best = select_recipe.main([*paths, "--seeds", "0", "1", "2", "3", "4", "5"])
    assert (best["batch_size"], best["epoch"]) == (32, 2)
    command = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    seeds = command[command.index("--seed") + 1:command.index("--model")]
    assert seeds == ["0", "1", "2", "3", "4", "5"]
