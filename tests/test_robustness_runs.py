"""Robustness of the runs and the command line (issue 18): settings refused where they enter,
unlabelled data never scored, output directories never clobbered, resume that survives a torn log
and moved paths, long corpus lines, and every user error one line with a non-zero exit.

Each test reproduces a failure first seen as a traceback, a hang or a silent wrong result; the
user's view (exit status, one-line message) is checked through `cli.main` where it matters.
"""
import json
import re
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bert_np
from bert_np import cli

import toy_data
from toy_data import WORDS, tiny_examples


@pytest.fixture(scope="module")
def corpus_and_vocab(tmp_path_factory):
    return toy_data.corpus_and_vocab(tmp_path_factory.mktemp("corpus"))


def tiny_config(vocab_size, **kw):
    fields = dict(vocab_size=vocab_size, hidden_size=24, num_hidden_layers=1,
                  num_attention_heads=3, intermediate_size=40, max_position_embeddings=32,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    fields.update(kw)
    return bert_np.BertConfig(**fields)


@pytest.fixture
def pretrain_args(corpus_and_vocab, tmp_path):
    """Command-line arguments of a 4-step tiny pretraining run into tmp_path/<out>."""
    corpus, vocab, tokenizer = corpus_and_vocab
    tiny_config(tokenizer.vocab_size).to_json_file(tmp_path / "config.json")

    def make(out, *extra):
        return ["pretrain", "--corpus", str(corpus), "--vocab", str(vocab),
                "--out", str(tmp_path / out), "--config", str(tmp_path / "config.json"),
                "--steps", "4", "--batch-size", "4", "--max-seq-length", "32",
                "--max-predictions", "5", "--warmup-steps", "1", "--checkpoint-every", "2",
                "--eval-every", "100", *extra]
    return make


def pretrain_settings(args):
    from bert_np.train.pretrain import PretrainSettings
    parsed = cli.build_parser().parse_args(args)
    return cli.settings_from_args(PretrainSettings, parsed)


def write_jsonl(path, examples, labelled=True):
    with open(path, "w", encoding="utf-8") as f:
        for e in examples:
            row = {"text_a": e.text_a}
            if labelled:
                row["label"] = e.label
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def finetune_args(corpus_and_vocab, tmp_path):
    """Command-line arguments of a 1-epoch tiny SST-2 fine-tuning run into tmp_path/<out>."""
    _, vocab, tokenizer = corpus_and_vocab
    model_dir = tmp_path / "init"
    bert_np.BertModel(tiny_config(tokenizer.vocab_size), seed=0).save_pretrained(model_dir)
    write_jsonl(tmp_path / "train.jsonl", tiny_examples(16, 0))
    write_jsonl(tmp_path / "dev.jsonl", tiny_examples(8, 1))

    def make(out, *extra):
        return ["finetune", "--task", "sst2", "--model", str(model_dir), "--vocab", str(vocab),
                "--train-file", str(tmp_path / "train.jsonl"),
                "--dev-file", str(tmp_path / "dev.jsonl"), "--out", str(tmp_path / out),
                "--epochs", "1", "--batch-size", "8", "--max-seq-length", "16", *extra]
    return make


def run_cli(args, capsys):
    """(exit status, stderr) of `bert-np args`; a user error must be exactly one line."""
    status = cli.main(args)
    err = capsys.readouterr().err.strip()
    return status, err


def ok(args, capsys):
    """Run `bert-np args`, which must succeed; its output is consumed."""
    status = cli.main(args)
    out = capsys.readouterr()
    assert status == 0, out.err
    return out.out


def user_error(args, capsys, match):
    status, err = run_cli(args, capsys)
    lines = [line for line in err.splitlines()
             if line.strip() and not re.search(r"\d+%\||\(\d+%\), ", line)]  # progress aside
    assert status != 0, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"bert-np {args[0]}: error: "), err
    assert re.search(match, lines[0]), lines[0]
    return lines[0]


# ================================================================ item 5: numeric settings

@pytest.mark.parametrize("option, value, message", [
    ("--max-grad-norm", "-1", r"max_grad_norm \(--max-grad-norm\) must be > 0, got -1.0"),
    ("--max-grad-norm", "0", r"max_grad_norm \(--max-grad-norm\) must be > 0, got 0.0"),
    ("--max-grad-norm", "nan", r"max_grad_norm \(--max-grad-norm\) must be a finite number"),
    ("--lr", "nan", r"lr \(--lr\) must be a finite number, got nan"),
    ("--lr", "inf", r"lr \(--lr\) must be a finite number, got inf"),
    ("--lr", "0", r"lr \(--lr\) must be > 0"),
    ("--weight-decay", "-0.1", r"weight_decay \(--weight-decay\) must be >= 0"),
    ("--seed", "-1", r"seed \(--seed\) must be >= 0"),
])
@pytest.mark.parametrize("verb", ["pretrain", "finetune"])
def test_numeric_settings_are_refused_where_they_enter_naming_the_flag(
        verb, option, value, message, pretrain_args, finetune_args, capsys):
    args = (pretrain_args if verb == "pretrain" else finetune_args)("out", option, value)
    user_error(args, capsys, message)
    assert not (Path(args[args.index("--out") + 1])).exists()


@pytest.mark.parametrize("option, value, message", [
    ("--warmup-steps", "-1", r"warmup_steps \(--warmup-steps\) must be >= 0"),
    ("--max-minutes", "-5", r"max_minutes \(--max-minutes\) must be > 0"),
    ("--max-predictions", "0", r"max_predictions_per_seq \(--max-predictions\) must be >= 1"),
])
def test_pretraining_settings_are_refused_naming_the_flag(option, value, message, pretrain_args,
                                                          capsys):
    user_error(pretrain_args("out", option, value), capsys, message)


def test_the_python_api_refuses_the_same_values(pretrain_args):
    from bert_np.train.finetune import FinetuneSettings
    s = pretrain_settings(pretrain_args("out"))
    with pytest.raises(ValueError, match=r"lr \(--lr\) must be a finite number, got nan"):
        type(s)(**{**s.__dict__, "lr": float("nan")})
    with pytest.raises(ValueError, match=r"steps \(--steps\) must be an integer, got '8'"):
        type(s)(**{**s.__dict__, "steps": "8"})
    with pytest.raises(ValueError, match=r"warmup_ratio \(--warmup-ratio\) must be < 1"):
        FinetuneSettings(task="sst2", model="tiny", out="o", warmup_ratio=1.0)
    with pytest.raises(ValueError, match=r"max_norm must be > 0"):
        bert_np.optim.clip_grad_norm({"w": np.ones(3)}, -1.0)


def test_no_clipping_is_spelled_none(pretrain_args):
    """--max-grad-norm none is None (no clipping); the loop then leaves the gradients alone."""
    assert pretrain_settings(pretrain_args("out", "--max-grad-norm", "none")).max_grad_norm is None
    assert pretrain_settings(pretrain_args("out")).max_grad_norm == 1.0
    from bert_np.train import loop
    grads = {"w": np.full(4, 10.0)}

    class Recorder:
        def step(self, g):
            self.g = {k: v.copy() for k, v in g.items()}
    opt = Recorder()
    norm = loop.apply_gradients(opt, 1.0, grads, None, step=1)
    assert norm == 20.0 and np.array_equal(opt.g["w"], np.full(4, 10.0))
    loop.apply_gradients(opt, 1.0, grads, 2.0, step=1)
    assert math.isclose(float(np.linalg.norm(opt.g["w"])), 2.0, rel_tol=1e-6)


# ================================================================ item 13: runs that do nothing

@pytest.mark.parametrize("extra, message", [
    (("--max-train-examples", "0"), r"max_train_examples \(--max-train-examples\) must be >= 1"),
    (("--max-eval-examples", "0"), r"max_eval_examples \(--max-eval-examples\) must be >= 1"),
    (("--max-seq-length", "2"), r"max_seq_length \(--max-seq-length\) must be >= 3, got 2"),
])
def test_finetuning_that_would_train_on_nothing_is_refused(extra, message, finetune_args, capsys):
    args = finetune_args("out", *extra)
    user_error(args, capsys, message)
    assert not Path(args[args.index("--out") + 1]).exists()


def test_pair_tasks_need_room_for_both_texts(finetune_args, capsys):
    args = finetune_args("out", "--max-seq-length", "4")
    args[args.index("sst2")] = "rte"
    user_error(args, capsys, r"max_seq_length \(--max-seq-length\) must be >= 5, got 4")


def test_an_empty_training_file_is_refused(finetune_args, tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text("\n\n", encoding="utf-8")
    user_error(finetune_args("out"), capsys, r"no training examples in \S*train.jsonl")


def test_pretraining_on_cls_sep_alone_is_refused(pretrain_args, capsys):
    user_error(pretrain_args("out", "--max-seq-length", "4"), capsys,
               r"max_seq_length \(--max-seq-length\) must be >= 5, got 4")


# ================================================================ item 2: evaluate what has labels

@pytest.fixture
def saved_classifier(corpus_and_vocab, tmp_path):
    """A 2-label classifier with its vocabulary, as fine-tuning saves it."""
    _, _, tokenizer = corpus_and_vocab
    model = bert_np.BertForSequenceClassification(tiny_config(tokenizer.vocab_size, num_labels=2),
                                                  seed=0)
    model.save_pretrained(tmp_path / "clf")
    tokenizer.save(tmp_path / "clf")
    return tmp_path / "clf"


@pytest.mark.parametrize("task", ["sst2", "rte"])
def test_evaluate_refuses_an_unlabelled_test_split(task, saved_classifier, tmp_path, monkeypatch,
                                                   capsys):
    """GLUE's SST-2 and RTE test sets have no labels: scoring them printed "accuracy": 0.0."""
    monkeypatch.setenv("BERT_NP_CACHE", str(tmp_path / "cache"))
    from bert_np.data.tasks import task_cache_dir
    folder = task_cache_dir(task)
    folder.mkdir(parents=True)
    rows = [{"text_a": "the cat sat", **({"text_b": "a dog ran"} if task == "rte" else {})}] * 3
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    user_error(["evaluate", "--model", str(saved_classifier), "--task", task, "--split", "test"],
               capsys, rf"the test split of {task} has no labels.*use `bert-np predict`")


def test_evaluate_refuses_a_model_with_another_number_of_labels(saved_classifier, tmp_path,
                                                                capsys):
    rows = [{"text_a": "the cat sat", "label": k} for k in range(15)]
    (tmp_path / "tnews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    user_error(["evaluate", "--model", str(saved_classifier), "--task", "tnews",
                "--file", str(tmp_path / "tnews.jsonl")], capsys,
               r"\S*clf has 2 labels, task tnews has 15")


def test_evaluate_refuses_a_model_fine_tuned_for_another_task(saved_classifier, tmp_path,
                                                              capsys):
    """Two labels each, so the count alone let an SST-2 model be scored on MRPC pairs; its saved
    label names say what it was fine-tuned for. Sentiment models stay usable on both sentiment
    tasks (sst2, imdb and zh_sentiment share negative/positive)."""
    config = json.loads((saved_classifier / "config.json").read_text())
    config["id2label"] = {"0": "negative", "1": "positive"}
    config["label2id"] = {"negative": 0, "positive": 1}
    (saved_classifier / "config.json").write_text(json.dumps(config))
    rows = [{"text_a": "the cat sat", "text_b": "a cat sat", "label": k} for k in (0, 1)]
    (tmp_path / "mrpc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    user_error(["evaluate", "--model", str(saved_classifier), "--task", "mrpc",
                "--file", str(tmp_path / "mrpc.jsonl")], capsys,
               r"\S*clf has the labels of sst2, imdb, zh_sentiment \(negative, positive\), not "
               r"those of mrpc \(not_equivalent, equivalent\): it was not fine-tuned on this task")
    rows = [{"text_a": "a fine film", "label": k} for k in (0, 1)]
    (tmp_path / "imdb.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["evaluate", "--model", str(saved_classifier), "--task", "imdb",
                     "--file", str(tmp_path / "imdb.jsonl")]) == 0


@pytest.mark.parametrize("names, text_b, message", [
    (["not_equivalent", "equivalent"], None,
     r"--text-b: \S*clf was fine-tuned on text pairs \(mrpc\); give the second text with --text-b"),
    (["negative", "positive"], "a second text",
     r"--text-b: \S*clf was fine-tuned on single texts \(sst2, imdb, zh_sentiment\); it takes "
     r"no second text"),
])
def test_predict_refuses_one_text_for_a_pair_model_and_a_pair_for_a_single_text_model(
        names, text_b, message, saved_classifier, capsys):
    """The tokenizer makes a batch of either shape, so an MRPC model given one sentence printed
    a confident "equivalent"; the saved label names say which shape the model was trained on."""
    config = json.loads((saved_classifier / "config.json").read_text())
    config["id2label"] = dict(enumerate(names))
    config["label2id"] = {name: k for k, name in enumerate(names)}
    (saved_classifier / "config.json").write_text(json.dumps(config))
    argv = ["predict", "--model", str(saved_classifier), "the cat sat"]
    user_error(argv + ([] if text_b is None else ["--text-b", text_b]), capsys, message)
    ok = argv + (["--text-b", "a cat sat"] if text_b is None else [])
    assert cli.main(ok) == 0


# ================================================================ item 3: output directories

def test_pretraining_into_a_used_out_is_refused_unless_resume_or_overwrite(pretrain_args,
                                                                            tmp_path, capsys):
    """The old run's step-6/step-8 outlived pruning, so every new checkpoint was deleted as soon
    as it was written and `latest` named nothing; and log.jsonl was deleted."""
    from bert_np.train import checkpoints
    longer = pretrain_args("run")
    longer[longer.index("--steps") + 1] = "8"
    ok(longer, capsys)
    log_before = (tmp_path / "run" / "log.jsonl").read_bytes()
    user_error(pretrain_args("run"), capsys,
               r"--out \S*run is not empty \(.*\); pass --resume to continue its run, "
               r"--overwrite to clear it")
    assert (tmp_path / "run" / "log.jsonl").read_bytes() == log_before
    user_error(pretrain_args("run", "--resume", "--overwrite"), capsys, r"pass one of them")
    ok(pretrain_args("run", "--overwrite"), capsys)
    assert checkpoints.latest_checkpoint(tmp_path / "run").name == "step-4"
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == ["step-2", "step-4"]
    steps = [json.loads(line)["step"] for line in open(tmp_path / "run" / "log.jsonl")]
    assert max(steps) == 4


@pytest.mark.parametrize("verb", ["pretrain", "finetune"])
def test_an_out_that_is_a_file_is_refused(verb, pretrain_args, finetune_args, tmp_path, capsys):
    (tmp_path / "taken").write_text("not a directory")
    args = (pretrain_args if verb == "pretrain" else finetune_args)("taken")
    user_error(args, capsys, r"--out \S*taken is a file, not a directory")


def test_an_out_that_cannot_be_written_is_refused(finetune_args, tmp_path, capsys):
    """A read-only directory (root writes into those, so there /proc stands in for one)."""
    args = finetune_args("ro/out")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args[args.index("--out") + 1] = "/proc/bert-np-out"
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        user_error(args, capsys, r"--out \S*out cannot be written: \w")
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_finetuning_into_a_used_out_is_refused_and_overwrite_clears_it(finetune_args, tmp_path,
                                                                       capsys):
    ok(finetune_args("out"), capsys)
    (tmp_path / "out" / "stale.txt").write_text("from an older run")
    user_error(finetune_args("out"), capsys, r"--out \S*out is not empty \(best, .*\); pass "
                                             r"--resume to continue its run, --overwrite to "
                                             r"clear it")
    ok(finetune_args("out", "--overwrite"), capsys)
    assert not (tmp_path / "out" / "stale.txt").exists()
    assert (tmp_path / "out" / "best" / "vocab.txt").is_file()


def test_best_is_written_with_its_tokenizer_as_one_unit(finetune_args, tmp_path, monkeypatch):
    """best/ appears only when an epoch ends, model and vocabulary together; a failure while
    writing the vocabulary leaves the previous best/ byte for byte, and no temporary directory."""
    from bert_np.train.finetune import FinetuneSettings, finetune
    from bert_np.tokenization import BertTokenizer
    parsed = cli.build_parser().parse_args(finetune_args("out", "--epochs", "2"))
    settings = cli.settings_from_args(FinetuneSettings, parsed)
    calls = {"n": 0}
    original = bert_np.BertForSequenceClassification.loss_and_grads

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return original(self, *a, **k)
    monkeypatch.setattr(bert_np.BertForSequenceClassification, "loss_and_grads", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(settings, progress=False, log=lambda *_: None)
    assert not (tmp_path / "out" / "best").exists()  # no vocabulary without its weights
    monkeypatch.undo()

    scores = iter([0.1, 0.5, 0.9])
    from bert_np.train import finetune as ft
    monkeypatch.setattr(ft, "evaluate_classifier", lambda *a, **k: {"accuracy": next(scores)})
    saves = {"n": 0, "epoch1": None}
    real_save = BertTokenizer.save

    def failing_save(self, directory):
        saves["n"] += 1
        if saves["n"] == 2:
            best = tmp_path / "out" / "best"
            saves["epoch1"] = {p.name: p.read_bytes() for p in best.iterdir()}
            raise OSError(28, "No space left on device")
        return real_save(self, directory)
    monkeypatch.setattr(BertTokenizer, "save", failing_save)
    settings = cli.settings_from_args(FinetuneSettings, cli.build_parser().parse_args(
        finetune_args("out", "--epochs", "2", "--overwrite")))
    with pytest.raises(OSError, match=r"could not write \S*best: .*No space left on device"):
        finetune(settings, progress=False, log=lambda *_: None)
    best = tmp_path / "out" / "best"
    assert {p.name: p.read_bytes() for p in best.iterdir()} == saves["epoch1"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")) == []


# ================================================================ item 11: resume

def test_a_torn_last_log_line_is_dropped_on_resume_and_a_bad_line_is_named(pretrain_args,
                                                                           tmp_path, capsys):
    """A crash mid-write leaves `{"kind": "train", "step": 5, "loss` behind: --resume said only
    "Expecting ':' delimiter: line 1 column 48"."""
    ok(pretrain_args("run"), capsys)
    log = tmp_path / "run" / "log.jsonl"
    good = log.read_text()
    log.write_text(good + '{"kind": "train", "step": 5, "loss": 4.9, "lr": 0.0')
    ok(pretrain_args("run", "--resume"), capsys)  # (the notice went to the consumed stderr)
    log.write_text(good + '{"kind": "train", "step": 5, "loss')
    cli.main(pretrain_args("run", "--resume"))
    assert re.search(r"log.jsonl:\d+: dropped a torn last line", capsys.readouterr().err)
    assert log.read_text() == good
    lines = good.splitlines()
    log.write_text("\n".join(lines[:2] + ['{"kind": "tr'] + lines[2:]) + "\n")
    user_error(pretrain_args("run", "--resume"), capsys, r"log.jsonl:3: not a JSON record")


def test_resume_compares_input_files_by_content_not_by_path(pretrain_args, tmp_path, capsys,
                                                            monkeypatch):
    """./corpus.txt vs corpus.txt, and a run directory moved elsewhere, are the same run; a
    corpus with other content is not."""
    corpus = Path(pretrain_args("x")[2])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.txt").write_bytes(corpus.read_bytes())
    monkeypatch.chdir(tmp_path / "data")
    args = pretrain_args("run")
    args[2] = "./corpus.txt"
    ok(args, capsys)
    os.rename(tmp_path / "run", tmp_path / "moved")
    args = pretrain_args("moved", "--resume")
    args[2] = "corpus.txt"
    ok(args, capsys)
    (tmp_path / "data" / "corpus.txt").write_text("other text.\n\nanother document.\n")
    user_error(args, capsys, r"resume with settings that differ .*\['corpus'\]")


def _kill_and_resume(args, run_dir, timeout=120):
    """Start `bert-np args` in a child process, SIGKILL it once a checkpoint exists and the log
    has moved past it, then resume in this process."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    child = subprocess.Popen([sys.executable, "-m", "bert_np.cli", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            log = run_dir / "log.jsonl"
            steps = [line for line in log.read_text().splitlines()
                     if '"kind": "train"' in line] if log.exists() else []
            if (run_dir / "latest").exists() and len(steps) >= 3:
                break
            assert child.poll() is None, "the child ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the child made no checkpoint in time")
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)


def test_a_sigkilled_pretraining_run_resumes_despite_a_torn_log(pretrain_args, tmp_path, capsys):
    """A real SIGKILL (bounded in time), then the torn line such a kill leaves mid-write: the
    resumed run reaches the last step with one train record per step."""
    args = pretrain_args("run")
    args[args.index("--steps") + 1] = "400"
    args[args.index("--checkpoint-every") + 1] = "2"
    _kill_and_resume(args, tmp_path / "run")
    with open(tmp_path / "run" / "log.jsonl", "a") as f:
        f.write('{"kind": "train", "st')
    ok(args[:args.index("--steps") + 1] + ["400"] + args[args.index("--steps") + 2:]
       + ["--resume", "--max-minutes", "0.05"], capsys)
    records = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3


# ================================================================ item 6: long corpus lines

def test_a_long_corpus_line_is_cut_into_instances_in_linear_time(corpus_and_vocab, tmp_path):
    """A 2 MB line took 89 s (quadratic pair truncation) and gave one instance, the rest of the
    line silently dropped. Now: seconds, and about one instance per max_seq_length - 3 tokens."""
    from bert_np.data.pretraining import (PretrainingDataset, read_documents,
                                          tokenize_documents, truncate_pair)
    _, _, tokenizer = corpus_and_vocab
    rng = np.random.default_rng(0)
    line = " ".join(rng.choice(WORDS, 400_000))  # about 2 MB, one sentence
    path = tmp_path / "long.txt"
    path.write_text(f"{line}\n\nthe cat sat.\nthe dog ran.\n", encoding="utf-8")
    started = time.perf_counter()
    documents = tokenize_documents(read_documents([path]), tokenizer)
    data = PretrainingDataset(documents, tokenizer, max_seq_length=64, batch_size=64)
    instances = data.instances(0)
    assert time.perf_counter() - started < 30
    n_tokens = len(documents[0][0])
    from_long = [x for x in instances[:-2] if len(x.input_ids) > 10]
    assert len(from_long) >= 0.9 * n_tokens / 61
    assert all(len(x.input_ids) <= 64 for x in instances)
    used = sum(int((x.token_type_ids == 0).sum()) - 2 for x in from_long)  # segment A tokens
    assert used >= 0.5 * n_tokens
    # the linear truncation draws exactly what deleting one token at a time drew
    for seed in range(20):
        r = np.random.default_rng(seed)
        a, b = list(range(r.integers(0, 50))), list(range(100, 100 + r.integers(0, 50)))
        expected_a, expected_b, r1 = list(a), list(b), np.random.default_rng([seed, 1])
        while len(expected_a) + len(expected_b) > 30:
            longer = expected_a if len(expected_a) > len(expected_b) else expected_b
            del longer[0 if r1.random() < 0.5 else -1]
        assert truncate_pair(a, b, 30, np.random.default_rng([seed, 1])) == (expected_a,
                                                                            expected_b)


# ================================================================ item 12: one line, not a traceback

@pytest.mark.parametrize("verb", ["finetune", "evaluate"])
def test_an_unknown_task_is_refused_by_the_parser(verb, finetune_args, capsys):
    args = (finetune_args("out") if verb == "finetune"
            else ["evaluate", "--model", "m", "--task", "sst2"])
    args[args.index("sst2")] = "sst5"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    assert "argument --task: invalid choice: 'sst5'" in capsys.readouterr().err
    from bert_np.train.finetune import FinetuneSettings
    with pytest.raises(ValueError, match=r"task \(--task\) 'sst5' is not one of sst2"):
        FinetuneSettings(task="sst5", model="tiny", out="o")


@pytest.mark.parametrize("field, value, message", [
    ("pad_token_id", None, r"pad_token_id must be an integer token id, got None"),
    ("hidden_dropout_prob", "0.1", r"hidden_dropout_prob must be a finite number, got '0.1'"),
    ("num_hidden_layers", "1", r"num_hidden_layers must be a positive integer, got '1'"),
    ("layer_norm_eps", None, r"layer_norm_eps must be a finite number, got None"),
])
def test_config_json_with_null_or_string_numbers_names_file_and_field(field, value, message,
                                                                      pretrain_args, tmp_path,
                                                                      capsys):
    args = pretrain_args("out")
    path = Path(args[args.index("--config") + 1])
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    user_error(args, capsys, r"config.json: BertConfig\." + message)


def test_a_full_disk_during_a_pretraining_checkpoint_names_the_checkpoint(pretrain_args,
                                                                          tmp_path, capsys,
                                                                          monkeypatch):
    """A full disk while the optimizer state is written: the OSError names no file; the error
    names the checkpoint, and no part of it is left behind."""
    from bert_np.train import checkpoints
    real = checkpoints.write_safetensors

    def full_disk(path, tensors, metadata=None):
        if str(path).endswith("optimizer.safetensors"):
            raise OSError(28, "No space left on device")
        return real(path, tensors, metadata)
    monkeypatch.setattr(checkpoints, "write_safetensors", full_disk)
    user_error(pretrain_args("run"), capsys,
               r"could not write \S*run/step-2: .*No space left on device")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["log.jsonl"]


def test_a_full_disk_while_logging_names_the_log(tmp_path, monkeypatch):
    from bert_np.train.checkpoints import JsonlLog
    log = JsonlLog(tmp_path / "log.jsonl")

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OSError, match=r"could not write \S*log.jsonl: No space left on device"):
        log.write({"kind": "train", "step": 1})


def test_read_only_parameters_are_refused_by_the_optimizer():
    model = bert_np.BertForSequenceClassification(tiny_config(60, num_labels=2), seed=0)
    model.params["classifier.bias"].flags.writeable = False
    with pytest.raises(ValueError, match=r"parameter classifier.bias is not a writeable"):
        bert_np.optim.AdamW(model.params)
    with pytest.raises(ValueError, match=r"invalid AdamW settings: lr=nan"):
        bert_np.optim.AdamW({}, lr=float("nan"))


def test_an_absurd_vocabulary_size_is_refused_before_the_trainer_aborts(corpus_and_vocab,
                                                                        tmp_path, capsys):
    corpus = str(corpus_and_vocab[0])
    user_error(["train-tokenizer", "--corpus", corpus, "--vocab-size", "1000000000",
                "--out", str(tmp_path / "v")], capsys,
               r"vocab_size=1000000000 is larger than the 1,000,000 tokens")
    assert not (tmp_path / "v").exists()


def test_a_device_or_a_huge_line_as_train_file_is_refused(finetune_args, tmp_path, capsys,
                                                          monkeypatch):
    """--train-file /dev/zero read one unbounded "line" until memory ran out."""
    args = finetune_args("out")
    args[args.index("--train-file") + 1] = "/dev/zero"
    user_error(args, capsys, r"/dev/zero is not a regular file")
    from bert_np.data import tasks
    monkeypatch.setattr(tasks, "MAX_JSONL_LINE_BYTES", 100)
    (tmp_path / "train.jsonl").write_text('{"text_a": "ok", "label": 1}\n'
                                          '{"text_a": "' + "x" * 200 + '", "label": 1}\n')
    user_error(finetune_args("out"), capsys, r"train.jsonl:2: line longer than 100 bytes")
    monkeypatch.setattr(tasks, "MAX_JSONL_BYTES", 10)
    user_error(finetune_args("out"), capsys, r"train.jsonl has \d+ bytes, more than the 10")


def test_an_internal_error_keeps_its_traceback_and_debug_shows_it_for_user_errors(
        finetune_args, capsys, monkeypatch):
    from bert_np.train import finetune as ft

    def bug(*a, **k):
        raise RuntimeError("a bug")
    monkeypatch.setattr(ft, "load_examples", bug)
    with pytest.raises(RuntimeError, match="a bug"):  # Python prints it, exit status 1
        cli.main(finetune_args("out"))
    status = cli.main(["--debug"] + finetune_args("o2", "--lr", "nan"))
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" in err and err.strip().endswith("got nan")


def test_the_demo_replaces_only_a_previous_demo_output(tmp_path, monkeypatch, capsys):
    """Running `bert-np demo` again replaces its own runs/demo; any other content is refused."""
    from bert_np.train import demo
    seen = []
    monkeypatch.setattr(demo, "finetune", lambda s, **k: seen.append(s.overwrite) or 1 / 0)
    monkeypatch.setattr(demo.paths, "minilm_dir", lambda: tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "log.jsonl").write_text("")
    with pytest.raises(ZeroDivisionError):
        demo.run_demo(out=str(tmp_path / "out"))
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ZeroDivisionError):
        demo.run_demo(out=str(tmp_path / "out"))
    assert seen == [True, False]
