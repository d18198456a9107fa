"""bench/finetune_compare.py, the script behind every "bert_np vs PyTorch on the same recipe" row:
run on a one-layer BERT without dropout, where nothing may differ between the two frameworks but
float32 rounding, and its --resume, which continues a record seed by seed.

With dropout off, both train the same weights on the same batches with the same AdamW, schedule
and clipping, so they must agree closely: the initial logits to 1e-5 (same weights, float32
products summed in another order; measured 6e-9), every epoch's mean training loss to 1e-5
relative (8 AdamW steps at lr 1e-3 carry the rounding of the previous steps along; measured
4e-8), and the dev metrics: STS-B's Pearson correlation, a continuous function of every score, to
5e-4 (measured 3.4e-5: the correlation of 16 scores that barely differ after 8 steps magnifies
their rounding; a different recipe moves it by 1e-2 and more), and SST-2's accuracy exactly (a
rounding-level change of a logit flips none of 16 predictions).
"""
import importlib.util
import json
from pathlib import Path

import pytest

import bert_np
from bert_np.tokenization import BertTokenizer

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "finetune_compare.py"
spec = importlib.util.spec_from_file_location("finetune_compare", SCRIPT)
finetune_compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(finetune_compare)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data_dir):
    """A randomly initialised one-layer BERT (hidden 32) without dropout, with the vocabulary of
    bert-base-uncased; a BertModel checkpoint, as MiniLM is (both frameworks add the head)."""
    root = tmp_path_factory.mktemp("compare_model")
    tokenizer = BertTokenizer.from_vocab(data_dir / "vocab" / "bert-base-uncased" / "vocab.txt")
    cfg = bert_np.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=64, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)
    bert_np.BertModel(cfg, seed=3).save_pretrained(root)
    tokenizer.save(root)
    return root


def argv(model_dir, out, *extra, lr="1e-3", task="sst2"):
    return ["--task", task, "--model", str(model_dir), "--max-train-examples", "32",
            "--max-dev-examples", "16", "--max-seq-length", "32", "--batch-size", "8",
            "--epochs", "2", "--lr", lr, "--out", str(out), *extra]


@pytest.mark.parametrize("task, metric, tolerance", [("sst2", "accuracy", 0.0),
                                                     ("stsb", "pearson", 5e-4)])
def test_without_dropout_both_frameworks_train_alike(model_dir, tmp_path, task, metric, tolerance):
    record = finetune_compare.main(argv(model_dir, tmp_path / "r.json", "--seed", "0", task=task))
    run = record["runs"][0]
    ours, theirs = run["bert_np"], run["torch"]
    assert theirs["initial_logits_max_abs_diff"] <= 1e-5
    assert ours["before"][metric] == pytest.approx(theirs["before"][metric], abs=tolerance)
    for a, b in zip(ours["epochs"], theirs["epochs"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["dev"][metric] == pytest.approx(b["dev"][metric], abs=tolerance)
    assert json.loads((tmp_path / "r.json").read_text())["runs"] == record["runs"]


def test_resume_keeps_the_recorded_seeds_and_runs_the_others(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    first = finetune_compare.main(argv(model_dir, out, "--seed", "0", "--bert-np-only"))
    with pytest.raises(SystemExit) as stop:       # an existing record is not overwritten
        finetune_compare.main(argv(model_dir, out, "--seed", "0", "1", "--bert-np-only"))
    assert stop.value.code == 2
    with pytest.raises(SystemExit, match="other settings: lr"):
        finetune_compare.main(argv(model_dir, out, "--seed", "0", "1", "--bert-np-only",
                                   "--resume", lr="5e-4"))
    ran = []
    real = finetune_compare.run_seed
    monkeypatch.setattr(finetune_compare, "run_seed",
                        lambda seed, *a: ran.append(seed) or real(seed, *a))
    record = finetune_compare.main(argv(model_dir, out, "--seed", "0", "1", "--bert-np-only",
                                        "--resume"))
    assert ran == [1]                             # seed 0 was in the record
    assert [r["seed"] for r in record["runs"]] == [0, 1] and record["seeds"] == [0, 1]
    assert record["runs"][0] == first["runs"][0]
    assert len(record["continued_by"]) == 1 and "--resume" in record["continued_by"][0]["command"]
    assert json.loads(out.read_text())["runs"] == record["runs"]
    with pytest.raises(SystemExit) as stop:       # --resume needs the record
        finetune_compare.main(argv(model_dir, tmp_path / "missing.json", "--resume"))
    assert stop.value.code == 2


def test_a_run_stopped_during_pytorch_resumes_with_pytorch_alone(model_dir, tmp_path, monkeypatch):
    """The record is written when bert_np's side of a seed ends; a stop during PyTorch's side
    (here an exception at its start) keeps it, and --resume runs PyTorch alone, from the initial
    head and logits the record holds (float32 through JSON exactly), to the figures of a run that
    was never stopped: same metrics, same losses, same initial-logit check, nothing timed."""
    whole = finetune_compare.main(argv(model_dir, tmp_path / "whole.json", "--seed", "0", "--test",
                                       "--max-test-examples", "16", task="mrpc"))
    out = tmp_path / "stopped.json"
    real_torch = finetune_compare.run_torch

    def stop(*a):
        raise KeyboardInterrupt
    monkeypatch.setattr(finetune_compare, "run_torch", stop)
    with pytest.raises(KeyboardInterrupt):
        finetune_compare.main(argv(model_dir, out, "--seed", "0", "--test", "--max-test-examples",
                                   "16", task="mrpc"))
    saved = json.loads(out.read_text())
    assert saved["runs"][0]["torch"] is None and "torch_pending" in saved["runs"][0]
    assert saved["summary"] == {}                 # no seed is complete yet

    def no_bert_np(*a):
        raise AssertionError("bert_np's side ran again")
    monkeypatch.setattr(finetune_compare, "run_torch", real_torch)
    monkeypatch.setattr(finetune_compare, "run_bert_np", no_bert_np)
    record = finetune_compare.main(argv(model_dir, out, "--seed", "0", "--test",
                                        "--max-test-examples", "16", "--resume", task="mrpc"))
    run, expected = record["runs"][0], whole["runs"][0]
    assert "torch_pending" not in run and json.loads(out.read_text())["runs"] == record["runs"]
    for side in ("bert_np", "torch"):
        for key in ("before", "epochs", "test"):
            assert run[side][key] == expected[side][key], (side, key)
    assert run["torch"]["initial_logits_max_abs_diff"] == \
        expected["torch"]["initial_logits_max_abs_diff"]
    assert record["summary"] == whole["summary"]
