"""bench/finetune_table.sh, the driver of the accuracy table's runs: which finetune_compare.py
invocations it makes for a task, given the records already there.

The script runs in a copy of bench/ where finetune_compare.py is a stand-in that only appends its
arguments to calls.txt (the real one trains for minutes to hours; its own test is
test_finetune_compare.py); select_recipe.py is the real one, reading hand-made grid records."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
GRID = [(16, 1e-4), (16, 5e-5), (16, 3e-5), (32, 1e-4), (32, 5e-5), (32, 3e-5)]
STAND_IN = """import sys
from pathlib import Path
with open(Path(__file__).parent.parent / "calls.txt", "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "bench" / "results" / "finetune_compare").mkdir(parents=True)
    for name in ("finetune_table.sh", "select_recipe.py"):
        shutil.copy(BENCH / name, tmp_path / "bench" / name)
    (tmp_path / "bench" / "finetune_compare.py").write_text(STAND_IN)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def grid_record(repo, task, batch, lr, dev, epochs=4):
    """A grid record of bert_np's seed 0: the dev main metric after each epoch."""
    name = f"{task}-b{batch}-lr{lr}-e{epochs}-s0-20261205-120000.json"
    (repo / "bench/results/finetune_compare" / name).write_text(json.dumps({
        "task": task, "main_metric": "accuracy",
        "settings": {"batch_size": batch, "lr": lr, "epochs": epochs, "model": "M",
                     "max_train_examples": 0, "max_seq_length": 128, "truncation": "head"},
        "runs": [{"seed": 0, "bert_np": {"epochs": [
            {"epoch": k + 1, "dev": {"accuracy": v}} for k, v in enumerate(dev)]}}]}))


def chosen_record(repo, task, runs):
    (repo / f"bench/results/finetune_compare/{task}-chosen.json").write_text(
        json.dumps({"seeds": [r["seed"] for r in runs], "runs": runs}))


def run(repo, *tasks):
    """The script's result and the stand-in's calls, `python` being this interpreter."""
    env = {**os.environ, "LOGS": str(repo / "logs"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    done = subprocess.run(["bash", "bench/finetune_table.sh", *tasks], cwd=repo, env=env,
                          capture_output=True, text=True)
    calls = (repo / "calls.txt").read_text().splitlines() if (repo / "calls.txt").exists() else []
    return done, calls


@pytest.mark.parametrize("task, seeds", [("rte", "0 1 2 3 4 5"), ("stsb", "0 1")])
def test_a_missing_grid_run_runs_then_the_choice_goes_to_both_frameworks(repo, task, seeds):
    # five of the six grid runs are there; (16, 5e-5) reaches 0.70 at epoch 3, the best. The small
    # tasks (CoLA, MRPC, RTE) compare on seeds 0 to 5, the others on 0 and 1.
    for batch, lr in GRID:
        if (batch, lr) != (32, 3e-5):
            grid_record(repo, task, batch, lr,
                        [0.5, 0.6, 0.7, 0.65] if (batch, lr) == (16, 5e-5) else [0.5, 0.55, 0.6, 0.6])
    done, calls = run(repo, task)
    assert done.returncode == 0, done.stderr
    assert calls[0] == (f"--task {task} --batch-size 32 --lr 3e-5 --epochs 4 --seed 0 "
                        "--bert-np-only --max-train-examples 0")
    assert calls[1] == (f"--task {task} --batch-size 16 --lr 5e-05 --epochs 4 --epoch 3 --seed "
                        f"{seeds} --model M --max-train-examples 0 --max-seq-length 128 "
                        f"--truncation head --out bench/results/finetune_compare/{task}-chosen.json")
    assert len(calls) == 2


def test_finished_work_is_skipped_and_an_unfinished_comparison_resumes(repo):
    for batch, lr in GRID:
        grid_record(repo, "rte", batch, lr, [0.5, 0.6, 0.7, 0.65])
    chosen_record(repo, "rte", [{"seed": s} for s in range(6)])   # every seed, both frameworks
    done, calls = run(repo, "rte")
    assert done.returncode == 0, done.stderr
    assert calls == []
    for runs in ([{"seed": s} for s in range(5)] + [{"seed": 5, "torch_pending": {}}],  # stopped
                 [{"seed": 0}, {"seed": 1}]):                  # in torch; two seeds of the six
        (repo / "calls.txt").unlink(missing_ok=True)
        chosen_record(repo, "rte", runs)
        done, calls = run(repo, "rte")
        assert done.returncode == 0, done.stderr
        assert len(calls) == 1
        assert calls[0].endswith("--seed 0 1 2 3 4 5 --model M --max-train-examples 0 "
                                 "--max-seq-length 128 --truncation head "
                                 "--out bench/results/finetune_compare/rte-chosen.json --resume")


def test_imdb_runs_its_grid_on_4000_reviews_and_its_choice_on_all_with_the_test_split(repo):
    for batch, lr in GRID:
        dev = [0.88] if (batch, lr) == (32, 5e-5) else [0.86]
        grid_record(repo, "imdb", batch, lr, dev, epochs=1)
    done, calls = run(repo, "imdb")
    assert done.returncode == 0, done.stderr
    assert calls == ["--task imdb --max-seq-length 256 --truncation head_tail --epochs 1 "
                     "--batch-size 32 --lr 5e-05 --seed 0 --max-train-examples 0 --test "
                     "--out bench/results/finetune_compare/imdb-chosen.json"]


def test_an_unknown_task_is_refused_by_name(repo):
    done, calls = run(repo, "qnli")
    assert done.returncode == 2 and calls == []
    assert "unknown task qnli" in done.stderr


def test_sst2_runs_its_grid_on_8000_sentences_and_its_choice_on_all_with_one_seed(repo):
    # no grid record yet: the six 2-epoch runs on the 8,000-sentence subset come first. Then the
    # choice: (16, 3e-5) reaches 0.84 after epoch 2, the best of the hand-made records written
    # below as the stand-in's grid; the comparison trains on all sentences, seed 0, and compares
    # at bert_np's best dev epoch (no --epoch: the subset's epoch says little about the full set's).
    done, calls = run(repo, "sst2")
    assert done.returncode != 0                       # the stand-in wrote no grid record
    assert calls == [f"--task sst2 --batch-size {b} --lr {lr} --epochs 2 --seed 0 --bert-np-only "
                     "--max-train-examples 8000" for b in (16, 32) for lr in ("1e-4", "5e-5", "3e-5")]
    for batch, lr in GRID:
        grid_record(repo, "sst2", batch, lr, [0.80, 0.84] if (batch, lr) == (16, 3e-5) else
                    [0.80, 0.82], epochs=2)
    (repo / "calls.txt").unlink()
    done, calls = run(repo, "sst2")
    assert done.returncode == 0, done.stderr
    assert calls == ["--task sst2 --epochs 2 --batch-size 16 --lr 3e-05 --seed 0 "
                     "--max-train-examples 0 --out bench/results/finetune_compare/sst2-chosen.json"]
