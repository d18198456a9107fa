"""`bert-np finetune`, `evaluate` and `predict` end to end on a tiny model and small JSONL files,
and the length-bucketed batching they use.

The model is a randomly initialised BERT-tiny: these tests check the plumbing (files written,
metrics computed on the right examples, predictions printed), not accuracy.
"""
import json

import numpy as np
import pytest

import bert_np
from bert_np import cli
from bert_np.data.batching import bucketed_batches
from bert_np.tokenization import BertTokenizer

POSITIVE = ["a wonderful , moving film", "great acting and a clever script", "i loved it"]
NEGATIVE = ["a dull , lifeless mess", "the worst film of the year", "boring and far too long"]


def write_jsonl(path, n, seed):
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            label = int(rng.integers(0, 2))
            text = (POSITIVE if label else NEGATIVE)[i % 3]
            f.write(json.dumps({"text_a": text, "label": label}) + "\n")


@pytest.fixture
def run_dir(tmp_path, data_dir):  # data_dir: the tiny preset takes bert-base-uncased's vocab.txt
    write_jsonl(tmp_path / "train.jsonl", 48, 0)
    write_jsonl(tmp_path / "dev.jsonl", 20, 1)
    return tmp_path


def test_finetune_evaluate_predict_end_to_end(run_dir, capsys):
    out = run_dir / "out"
    code = cli.main(["finetune", "--task", "sst2", "--model", "tiny", "--epochs", "2",
                     "--batch-size", "8", "--max-seq-length", "16", "--lr", "1e-3",
                     "--train-file", str(run_dir / "train.jsonl"),
                     "--dev-file", str(run_dir / "dev.jsonl"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert '"best"' in printed  # the run's summary is printed as JSON
    records = [json.loads(line) for line in open(out / "log.jsonl")]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [0, 1, 2]          # before training, then every epoch
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in evals)
    steps = [r for r in records if r["kind"] == "train"]
    assert len(steps) == 2 * 6                                # 48 examples / batch 8, 2 epochs
    assert all(np.isfinite(r["loss"]) for r in steps)
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        assert (out / "best" / name).is_file()
    assert (out / "curves.png").stat().st_size > 0
    best = max(r["accuracy"] for r in evals[1:])

    assert cli.main(["evaluate", "--model", str(out / "best"), "--task", "sst2",
                     "--file", str(run_dir / "dev.jsonl"), "--max-seq-length", "16"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(best)  # the kept checkpoint is the best epoch's

    assert cli.main(["predict", "--model", str(out / "best"), "a wonderful film",
                     "a dull mess"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, ["a wonderful film", "a dull mess"]):
        label, prob, shown = line.split("\t")
        assert label in ("negative", "positive") and 0.5 <= float(prob) <= 1.0 and shown == text
    saved = json.loads((out / "best" / "config.json").read_text())
    assert saved["id2label"] == {"0": "negative", "1": "positive"}  # SST-2's names, from its task
    assert saved["label2id"] == {"negative": 0, "positive": 1}


def test_a_model_that_predicts_one_class_for_every_example_is_flagged(run_dir, capsys, data_dir):
    """A classifier whose head ignores its input (weight 0, bias favouring class 1) gives every
    dev example "positive": `evaluate` reports it beside the metrics, and a fine-tuning run that
    cannot move it (lr 1e-12) says so in each epoch's log line and eval record."""
    cfg = bert_np.BertConfig.preset("tiny", vocab_size=30522, num_labels=2,
                                    id2label={0: "negative", 1: "positive"})
    clf = bert_np.BertForSequenceClassification(cfg, seed=0)
    clf.params["classifier.weight"][:] = 0.0
    clf.params["classifier.bias"][:] = [0.0, 5.0]
    model = run_dir / "constant"
    clf.save_pretrained(model)
    BertTokenizer.from_vocab(data_dir / "vocab" / "bert-base-uncased" / "vocab.txt").save(model)
    dev = [json.loads(line) for line in open(run_dir / "dev.jsonl")]
    assert cli.main(["evaluate", "--model", str(model), "--task", "sst2",
                     "--file", str(run_dir / "dev.jsonl"), "--max-seq-length", "16"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["constant_prediction"] == "positive"
    assert metrics["accuracy"] == pytest.approx(np.mean([r["label"] == 1 for r in dev]))
    out = run_dir / "out"
    assert cli.main(["finetune", "--task", "sst2", "--model", str(model), "--epochs", "1",
                     "--batch-size", "8", "--max-seq-length", "16", "--lr", "1e-12",
                     "--train-file", str(run_dir / "train.jsonl"),
                     "--dev-file", str(run_dir / "dev.jsonl"), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "epoch 1: dev accuracy" in printed.err + printed.out
    assert "(every example predicted 'positive')" in printed.err + printed.out
    evals = [json.loads(line) for line in open(out / "log.jsonl") if '"eval"' in line]
    assert [r.get("constant_prediction") for r in evals] == ["positive", "positive"]


def test_finetune_reports_bad_input_files_clearly(run_dir, capsys):
    (run_dir / "bad.jsonl").write_text('{"text_a": "fine", "label": 0}\n{"text_a": 5, "label": 1}\n')
    code = cli.main(["finetune", "--task", "sst2", "--model", "tiny", "--epochs", "1",
                     "--train-file", str(run_dir / "bad.jsonl"),
                     "--dev-file", str(run_dir / "dev.jsonl"), "--out", str(run_dir / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "text_a" in err  # file:line and the field


def test_a_mistyped_model_path_is_reported_as_a_missing_directory(run_dir, capsys):
    code = cli.main(["finetune", "--task", "sst2", "--model", str(run_dir / "no_such_model"),
                     "--train-file", str(run_dir / "train.jsonl"),
                     "--dev-file", str(run_dir / "dev.jsonl"), "--out", str(run_dir / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"no such model directory: {run_dir / 'no_such_model'}" in err
    assert "(and not a preset: tiny, mini, small, medium, base, large)" in err
    assert cli.main(["finetune", "--task", "sst2", "--model", "tinyy", "--out", "o"]) == 2
    assert "no such model directory: tinyy (and not a preset: tiny," in capsys.readouterr().err


def test_classifier_configs_carry_the_task_label_names():
    from bert_np.data.tasks import get_task
    from bert_np.train.finetune import label_map, load_classifier
    tnews = load_classifier("tiny", 15, vocab_size=100, seed=0, dtype=np.float32,
                            max_seq_length=16, id2label=label_map(get_task("tnews")))
    assert tnews.config.to_dict()["id2label"]["3"] == "news_sports"
    stsb = load_classifier("tiny", 1, vocab_size=100, seed=0, dtype=np.float32,
                           max_seq_length=16, id2label=label_map(get_task("stsb")))
    assert stsb.config.to_dict()["id2label"] == {"0": "LABEL_0"}  # a task without names


def test_sequence_classifier_takes_num_labels_like_from_pretrained():
    cfg = bert_np.BertConfig.preset("tiny", vocab_size=50, num_labels=2,
                                    id2label={0: "negative", 1: "positive"})
    model = bert_np.BertForSequenceClassification(cfg, num_labels=3)
    assert model.config.num_labels == 3 and model.config.id2label is None
    assert model.params["classifier.weight"].shape == (3, 128)
    assert model.forward([[2, 5, 3]])["logits"].shape == (1, 3)
    same = bert_np.BertForSequenceClassification(cfg, num_labels=2)
    assert same.config.id2label == {0: "negative", 1: "positive"}  # names kept when they fit


def test_bucketed_batches_cover_every_example_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(3, 120, 1000))
    batches = bucketed_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    random_order = np.random.default_rng(2).permutation(1000)
    padded_random = sum(32 * max(lengths[i] for i in random_order[s:s + 32])
                        for s in range(0, 1000, 32))
    assert padded < 0.7 * padded_random  # bucketing pads far less than random batches
    again = bucketed_batches(lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))  # same seed, same batches


# ---- --truncation head_tail: long texts are read as their first and last tokens ---------------

def long_and_kept_texts(data_dir, n, max_seq_length, seed):
    """n texts of 40 whole-word tokens of bert-base-uncased (each word one token), and the same
    texts cut by hand to what head_tail keeps at max_seq_length: of max_seq_length - 2 tokens,
    the first round((max_seq_length - 2) * 128 / 510) and the rest from the end."""
    vocab = (data_dir / "vocab" / "bert-base-uncased" / "vocab.txt").read_text().split("\n")
    words = [w for w in vocab[2000:2400] if w.isalpha()]
    rng = np.random.default_rng(seed)
    budget = max_seq_length - 2
    head = round(budget * 128 / 510)
    long, kept = [], []
    for _ in range(n):
        text = list(rng.choice(words, 40, replace=False))
        long.append(" ".join(text))
        kept.append(" ".join(text[:head] + text[40 - (budget - head):]))
    return long, kept


def write_texts(path, texts, labels):
    with open(path, "w", encoding="utf-8") as f:
        for text, label in zip(texts, labels):
            f.write(json.dumps({"text_a": text, "label": int(label)}) + "\n")


def test_head_tail_truncation_reaches_finetune_evaluate_and_predict(tmp_path, data_dir, capsys):
    # training and evaluating on 40-token texts with --truncation head_tail at max_seq_length 16
    # must give exactly the numbers of the same runs on the 14 tokens head_tail keeps (4 + 10),
    # which fit untruncated; with the default (head) the long texts give other numbers
    long, kept = long_and_kept_texts(data_dir, 24, 16, seed=0)
    labels = np.random.default_rng(1).integers(0, 2, 24)
    for name, texts in (("long", long), ("kept", kept)):
        write_texts(tmp_path / f"{name}_train.jsonl", texts[:16], labels[:16])
        write_texts(tmp_path / f"{name}_dev.jsonl", texts[16:], labels[16:])

    def finetune(name, *truncation):
        out = tmp_path / f"out_{name}_{'_'.join(truncation) or 'default'}"
        assert cli.main(["finetune", "--task", "sst2", "--model", "tiny", "--epochs", "1",
                         "--batch-size", "8", "--max-seq-length", "16", "--lr", "1e-3",
                         "--train-file", str(tmp_path / f"{name}_train.jsonl"),
                         "--dev-file", str(tmp_path / f"{name}_dev.jsonl"), "--out", str(out),
                         *truncation]) == 0
        capsys.readouterr()
        records = [json.loads(line) for line in open(out / "log.jsonl")]
        return out / "best", [(r["kind"], r.get("loss"), r.get("accuracy")) for r in records]

    model, by_head_tail = finetune("long", "--truncation", "head_tail")
    _, on_kept_tokens = finetune("kept")
    _, by_head = finetune("long")
    assert by_head_tail == on_kept_tokens
    assert by_head != on_kept_tokens

    def printed(*args):
        assert cli.main(list(args)) == 0
        return capsys.readouterr().out

    evaluate = ["evaluate", "--model", str(model), "--task", "sst2", "--max-seq-length", "16"]
    assert printed(*evaluate, "--file", str(tmp_path / "long_dev.jsonl"),
                   "--truncation", "head_tail") == \
        printed(*evaluate, "--file", str(tmp_path / "kept_dev.jsonl"))
    predict = ["predict", "--model", str(model), "--max-seq-length", "16"]
    by_head_tail = printed(*predict, "--truncation", "head_tail", long[0]).split("\t")
    on_kept_tokens = printed(*predict, kept[0]).split("\t")
    assert by_head_tail[:2] == on_kept_tokens[:2]        # label and probability; then the text
    assert printed(*predict, long[0]).split("\t")[:2] != on_kept_tokens[:2]


def test_truncation_other_than_head_or_head_tail_is_refused_naming_the_option():
    from bert_np.train.finetune import FinetuneSettings
    with pytest.raises(ValueError, match=r"truncation \(--truncation\) must be one of head, "
                                         r"head_tail, got 'tail'"):
        FinetuneSettings(task="sst2", model="tiny", out="o", truncation="tail")


def test_on_eval_sees_the_model_before_training_and_after_every_epoch(run_dir):
    # finetune(on_eval=...) is called with (epoch, model, dev metrics): epoch 0 before the first
    # step (bench/finetune_compare.py copies the initial head there), then after each epoch with
    # the metrics finetune logs and returns
    from bert_np.train.finetune import FinetuneSettings, finetune
    seen = []
    settings = FinetuneSettings(task="sst2", model="tiny", out=str(run_dir / "out"), epochs=2,
                                batch_size=8, max_seq_length=16, lr=1e-3,
                                train_file=str(run_dir / "train.jsonl"),
                                dev_file=str(run_dir / "dev.jsonl"))
    result = finetune(settings, progress=False, log=lambda message: None,
                      on_eval=lambda epoch, model, metrics: seen.append(
                          (epoch, dict(metrics), model.params["classifier.weight"].copy())))
    assert [epoch for epoch, _, _ in seen] == [0, 1, 2]
    assert [metrics for _, metrics, _ in seen] == [result["before"], *result["epochs"]]
    assert not np.array_equal(seen[0][2], seen[1][2])     # the head trained in between
    assert np.isfinite(result["eval_seconds"]) and result["eval_seconds"] >= 0  # recorded, not timed


# ---- --resume: a stopped run continues bit for bit -----------------------------------------------

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)


@pytest.fixture(scope="module")
def resume_files(tmp_path_factory, data_dir):
    """A one-layer BERT (hidden 32) with dropout 0.1 and bert-base-uncased's vocab.txt, and the
    48 training / 20 dev sentences of `run_dir`: 6 steps of 8 examples per epoch."""
    from bert_np.tokenization import BertTokenizer
    root = tmp_path_factory.mktemp("finetune_resume")
    tokenizer = BertTokenizer.from_vocab(data_dir / "vocab" / "bert-base-uncased" / "vocab.txt")
    cfg = bert_np.BertConfig(vocab_size=tokenizer.vocab_size, initializer_range=0.2,
                             hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **TINY)
    bert_np.BertModel(cfg, seed=1).save_pretrained(root / "model")
    tokenizer.save(root / "model")
    write_jsonl(root / "train.jsonl", 48, 0)
    write_jsonl(root / "dev.jsonl", 20, 1)
    return root


def resume_settings(root, out, **changes):
    from bert_np.train.finetune import FinetuneSettings
    fields = dict(task="sst2", model=str(root / "model"), out=str(root / out), epochs=3,
                  batch_size=8, max_seq_length=16, lr=1e-3, checkpoint_every=4,
                  train_file=str(root / "train.jsonl"), dev_file=str(root / "dev.jsonl"))
    fields.update(changes)
    return FinetuneSettings(**fields)


def run_finetune(settings, resume=False, **kwargs):
    """finetune() quietly; also returns every parameter as of the last evaluation (the end of the
    last epoch: the final weights; finetune writes none but best/ and checkpoints)."""
    from bert_np.train.finetune import finetune
    seen = {}

    def keep_last(epoch, model, metrics):
        seen["params"] = {k: v.copy() for k, v in model.params.items()}
    result = finetune(settings, resume=resume, progress=False, log=lambda message: None,
                      on_eval=keep_last, **kwargs)
    return result, seen.get("params")


def log_records(out):
    """log.jsonl without the one field that measures time (tokens/s)."""
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
            for line in open(out / "log.jsonl", encoding="utf-8")]


@pytest.fixture(scope="module")
def uninterrupted(resume_files):
    """The run every resumed one must equal: 3 epochs of 6 steps, a checkpoint every 4 steps."""
    return run_finetune(resume_settings(resume_files, "whole"))


@pytest.mark.parametrize("stop, checkpoint", [
    ("max-steps 9", "step-9"),           # --max-steps saves a checkpoint where it stops
    ("crash at step 11", "step-8"),      # mid-epoch 2, after epoch 1's dev evaluation
    ("crash at step 14", "step-12"),     # step 12 ends epoch 2: the checkpoint precedes its eval
    ("max-minutes", "step-1"),           # out of time after the first step
])
def test_finetune_resume_is_bit_exact(resume_files, uninterrupted, monkeypatch, crash_at_step,
                                      stop, checkpoint):
    """A fine-tuning run stopped early and continued with resume=True (--resume) equals an
    uninterrupted one exactly (==, no tolerance; the model has dropout): the same log record for
    record (every step's loss, learning rate, gradient norm and accuracy, every dev evaluation
    once, one start record), the same returned metrics (before, per epoch, best), the same final
    weights, best/ weights and step-16 checkpoint (model and AdamW moments, byte for byte)."""
    from bert_np.train.checkpoints import latest_checkpoint
    root, out = resume_files, resume_files / stop.replace(" ", "_")
    if stop == "max-steps 9":
        stopped, _ = run_finetune(resume_settings(root, out.name, max_steps=9))
        assert stopped["step"] == 9 and not stopped["out_of_time"]
    elif stop == "max-minutes":
        stopped, _ = run_finetune(resume_settings(root, out.name, max_minutes=1e-9))
        assert stopped["step"] == 1 and stopped["out_of_time"]
    else:
        crash_at_step(int(stop.split()[-1]))
        with pytest.raises(KeyboardInterrupt):
            run_finetune(resume_settings(root, out.name))
        monkeypatch.undo()
    assert latest_checkpoint(out).name == checkpoint
    resumed, final = run_finetune(resume_settings(root, out.name), resume=True)

    expected, expected_final = uninterrupted
    whole = root / "whole"
    records = log_records(out)
    assert [r for r in records if r["kind"] != "start"] == \
        [r for r in log_records(whole) if r["kind"] != "start"]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 19))
    assert [r["kind"] for r in records].count("start") == 1
    assert (resumed["before"], resumed["epochs"], resumed["best"], resumed["step"]) == \
        (expected["before"], expected["epochs"], expected["best"], expected["step"])
    assert final.keys() == expected_final.keys()
    assert all(np.array_equal(final[k], expected_final[k]) for k in final)
    best = bert_np.BertForSequenceClassification.from_pretrained(out / "best").params
    best_whole = bert_np.BertForSequenceClassification.from_pretrained(whole / "best").params
    assert all(np.array_equal(best[k], best_whole[k]) for k in best)
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert (out / "step-16" / name).read_bytes() == (whole / "step-16" / name).read_bytes()


def finetune_cli(root, capsys, out, *extra, **options):
    """`bert-np finetune` on the resume files; returns (exit code, stderr)."""
    from bert_np import cli
    args = dict(task="sst2", model=root / "model", train_file=root / "train.jsonl",
                dev_file=root / "dev.jsonl", out=root / out, epochs=1, batch_size=8,
                max_seq_length=16, checkpoint_every=4)
    args.update(options)
    argv = ["finetune"] + [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    code = cli.main(argv + list(extra))
    return code, capsys.readouterr().err.strip()


def test_finetune_resume_refuses_another_run_a_missing_checkpoint_and_overwrite(resume_files,
                                                                               capsys):
    """--resume continues only the run its checkpoint belongs to: a changed setting (the learning
    rate, the truncation, the task), another model, a training file with other content, or other
    examples given through the Python API are each refused with one line naming what changed,
    and leave the run as it was. Without a checkpoint, and with --overwrite, --resume is refused
    too."""
    from bert_np.data.tasks import load_jsonl
    root = resume_files
    code, err = finetune_cli(root, capsys, "empty", "--resume")
    assert code == 2 and err == f"bert-np finetune: error: --resume: no checkpoint in {root / 'empty'}"

    assert finetune_cli(root, capsys, "run")[0] == 0              # 6 steps: step-4 saved
    log = (root / "run" / "log.jsonl").read_bytes()
    code, err = finetune_cli(root, capsys, "run", "--resume", "--overwrite")
    assert code == 2 and len(err.splitlines()) == 1 and "--resume" in err and "--overwrite" in err

    (root / "train_changed.jsonl").write_text((root / "train.jsonl").read_text().replace(
        '"label": 0', '"label": 1', 1))
    for options, named in [(dict(lr=1e-3), "'lr'"), (dict(truncation="head_tail"), "'truncation'"),
                           (dict(task="imdb"), "'task'"), (dict(model="tiny"), "'model'"),
                           (dict(train_file=root / "train_changed.jsonl"), "'train_file'")]:
        code, err = finetune_cli(root, capsys, "run", "--resume", **options)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith("bert-np finetune: error: resume with settings that differ from "
                              f"{root / 'run' / 'step-4'}") and named in err, err
        assert (root / "run" / "log.jsonl").read_bytes() == log

    examples = load_jsonl(root / "train.jsonl", 2, False)
    settings = resume_settings(root, "api", epochs=1, train_file=None)
    run_finetune(settings, train_examples=examples)
    with pytest.raises(ValueError, match=r"differ .*\['examples'\]"):
        run_finetune(settings, resume=True, train_examples=examples[::-1])
    assert run_finetune(settings, resume=True, train_examples=examples)[0]["step"] == 6


def test_checkpoint_every_none_saves_no_checkpoint(resume_files, capsys):
    """--checkpoint-every none (bench/finetune_compare.py times training without saves): no
    step-N/ and no `latest` in --out, so --resume has nothing to continue from."""
    assert finetune_cli(resume_files, capsys, "unsaved", "--max-steps", "3",
                        checkpoint_every="none")[0] == 0
    assert sorted(p.name for p in (resume_files / "unsaved").iterdir()) == ["curves.png",
                                                                            "log.jsonl"]
    code, err = finetune_cli(resume_files, capsys, "unsaved", "--resume", checkpoint_every="none")
    assert code == 2 and "--resume: no checkpoint in" in err


@pytest.mark.parametrize("field, value, flag", [
    ("checkpoint_every", 0, "--checkpoint-every"), ("max_minutes", 0, "--max-minutes"),
    ("max_minutes", float("nan"), "--max-minutes")])
def test_checkpoint_and_time_settings_are_checked(field, value, flag):
    from bert_np.train.finetune import FinetuneSettings
    with pytest.raises(ValueError, match=flag):
        FinetuneSettings(task="sst2", model="tiny", out="o", **{field: value})
