"""`bert-np distill` end to end on tiny models: the teacher-logit cache, the run's outputs, exact
resume and one-line errors for bad input.

The teacher is a random one-layer BERT (hidden 32) with large initial weights, so its logits differ
clearly between sentences (a target worth learning); the student is a
BertForPreTraining checkpoint of the same size, as `bert-np pretrain` writes it, which receives a
new classification head. These tests check the plumbing, not accuracy.
"""
import json
from pathlib import Path

import numpy as np
import pytest

import bert_np
from bert_np import cli
from bert_np.hf import checkpoint_files
from bert_np.tokenization import BertTokenizer
from bert_np.train import distill as distill_module
from bert_np.train.checkpoints import latest_checkpoint
from bert_np.train.distill import DistillSettings, distill
from bert_np.train.finetune import encode_examples, load_for_inference, predict_logits
from bert_np.data.tasks import load_jsonl

WORDS = ("a wonderful moving film great acting clever script loved it dull lifeless mess worst "
         "year boring far too long funny sad story plot actors music").split()
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)


def sentences(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(n)]


def write_jsonl(path, texts, labels=None):
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            row = {"text_a": text} if labels is None else {"text_a": text, "label": labels[i]}
            f.write(json.dumps(row) + "\n")
    return str(path)


def save_teacher(directory, vocab, num_labels=2, seed=0):
    """A random tiny classifier with its vocab.txt. Initialised with std 0.5 instead of 0.02, its
    logits differ between sentences (std of the logit difference ~1.6 on the transfer set, half
    of the sentences on either side); with 0.02 they are all the same to 1e-3."""
    tokenizer = BertTokenizer.from_vocab(vocab)
    cfg = bert_np.BertConfig(vocab_size=tokenizer.vocab_size, num_labels=num_labels,
                             initializer_range=0.5, **TINY)
    teacher = bert_np.BertForSequenceClassification(cfg, seed=seed)
    teacher.save_pretrained(directory)
    tokenizer.save(directory)
    return teacher


def save_student(directory, vocab, dropout=0.1):
    """A tiny BertForPreTraining checkpoint with vocab.txt, as `bert-np pretrain` leaves it.
    Initialised with std 0.2: with 0.02 its [CLS] output hardly depends on the sentence at first
    and the loss stays flat for the few dozen steps a test can afford."""
    tokenizer = BertTokenizer.from_vocab(vocab)
    cfg = bert_np.BertConfig(vocab_size=tokenizer.vocab_size, initializer_range=0.2,
                             hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                             **TINY)
    bert_np.BertForPreTraining(cfg, seed=1).save_pretrained(directory)
    tokenizer.save(directory)


@pytest.fixture
def files(tmp_path, data_dir):
    vocab = data_dir / "vocab" / "bert-base-uncased" / "vocab.txt"
    save_teacher(tmp_path / "teacher", vocab)
    save_student(tmp_path / "student", vocab)      # with dropout: resume must replay its masks
    write_jsonl(tmp_path / "transfer.jsonl", sentences(24, 0))
    dev = sentences(12, 1)
    write_jsonl(tmp_path / "dev.jsonl", dev, [i % 2 for i in range(len(dev))])
    return tmp_path


def settings(files, out="out", **changes):
    fields = dict(teacher=str(files / "teacher"), student=str(files / "student"), task="sst2",
                  transfer=str(files / "transfer.jsonl"), out=str(files / out),
                  dev_file=str(files / "dev.jsonl"), epochs=3, batch_size=4, max_seq_length=16,
                  lr=1e-3, warmup_ratio=0.1, checkpoint_every=4, eval_batch_size=8)
    fields.update(changes)
    return DistillSettings(**fields)


def records(out, kind):
    return [r for r in map(json.loads, open(Path(out) / "log.jsonl")) if r["kind"] == kind]


@pytest.fixture
def teacher_calls(monkeypatch):
    """Counts the teacher's passes over the transfer set (predict_logits as distill calls it)."""
    calls = []
    real = distill_module.predict_logits

    def counted(model, split, *args, **kwargs):
        calls.append(len(split.ids))
        return real(model, split, *args, **kwargs)
    monkeypatch.setattr(distill_module, "predict_logits", counted)
    return calls


def test_teacher_logits_are_computed_once_reused_and_invalidated(files, teacher_calls):
    """The teacher's pass over the transfer set runs once per (teacher, transfer file, vocab,
    max_seq_length): counted by wrapping predict_logits. A second run in the same --out and a run
    in another --out sharing --teacher-cache reuse it; changing one teacher weight or appending a
    line to the transfer file invalidates it. The cached logits are compared with a fresh
    predict_logits of the teacher exactly (array_equal): they are the same computation on the
    same batches, and a cache must return what it stored, bit for bit."""
    shared = str(files / "shared")
    run = dict(epochs=1, teacher_cache=shared)
    assert distill(settings(files, "a", **run), progress=False)["teacher_logits"] == "computed"
    again = dict(run, overwrite=True)            # --overwrite keeps the cache beside the run
    assert distill(settings(files, "a", **again), progress=False)["teacher_logits"] == "run"
    assert distill(settings(files, "b", **run), progress=False)["teacher_logits"] == "shared"
    assert teacher_calls == [24]
    assert (files / "b" / "teacher_logits.npy").is_file()       # copied beside the run

    teacher, tokenizer = load_for_inference(files / "teacher")
    examples = load_jsonl(files / "transfer.jsonl", 2, False, require_label=False)
    fresh = predict_logits(teacher, encode_examples(examples, tokenizer, 16), tokenizer.pad_id, 8)
    cached = np.load(files / "a" / "teacher_logits.npy")
    assert cached.dtype == fresh.dtype and np.array_equal(cached, fresh)
    assert np.ptp(fresh[:, 1] - fresh[:, 0]) > 1.0                 # a target worth learning

    teacher.params["classifier.bias"][0] += 0.5                    # the teacher changes
    teacher.save_pretrained(files / "teacher")
    assert distill(settings(files, "a", **again), progress=False)["teacher_logits"] == "computed"
    assert not np.array_equal(np.load(files / "a" / "teacher_logits.npy"), cached)
    with open(files / "transfer.jsonl", "a", encoding="utf-8") as f:  # the transfer set changes
        f.write(json.dumps({"text_a": "one more sentence"}) + "\n")
    assert distill(settings(files, "b", **again), progress=False)["teacher_logits"] == "computed"
    assert teacher_calls == [24, 24, 25]
    assert len(list(Path(shared).glob("teacher_logits-*.npy"))) == 3  # one per key


def test_truncation_keys_the_teacher_cache(files, teacher_calls, data_dir):
    """--truncation is part of the teacher-logit key: on transfer texts longer than
    --max-seq-length, a head_tail run does not reuse the logits of a head run (and the other way
    round); each is computed once and then found in the shared cache, and each equals the
    teacher's logits on the transfer set encoded with that truncation (array_equal). The key of
    a head run has no truncation entry: the key it had before the option, so caches and
    checkpoints written then stay valid."""
    from test_finetune import long_and_kept_texts
    long, _ = long_and_kept_texts(data_dir, 24, 16, seed=0)          # 40 tokens each
    write_jsonl(files / "long.jsonl", long)
    shared = str(files / "shared")
    run = dict(epochs=1, teacher_cache=shared, transfer=str(files / "long.jsonl"))
    sources = [distill(settings(files, out, truncation=truncation, **run),
                       progress=False)["teacher_logits"]
               for out, truncation in (("h", "head"), ("ht", "head_tail"), ("h2", "head"),
                                       ("ht2", "head_tail"))]
    assert sources == ["computed", "computed", "shared", "shared"]
    assert teacher_calls == [24, 24]

    teacher, tokenizer = load_for_inference(files / "teacher")
    examples = load_jsonl(files / "long.jsonl", 2, False, require_label=False)
    for out, truncation in (("h", "head"), ("ht", "head_tail")):
        split = encode_examples(examples, tokenizer, 16, truncation)
        fresh = predict_logits(teacher, split, tokenizer.pad_id, 8)
        assert np.array_equal(np.load(files / out / "teacher_logits.npy"), fresh)
    assert not np.array_equal(np.load(files / "h" / "teacher_logits.npy"),
                              np.load(files / "ht" / "teacher_logits.npy"))

    def key(truncation):
        return distill_module.teacher_cache_key(files / "teacher", files / "long.jsonl",
                                                tokenizer, 16, "float32", None, truncation)
    assert "truncation" not in key("head") and key("head_tail")["truncation"] == "head_tail"


def test_head_tail_distillation_trains_on_the_kept_tokens(files, data_dir):
    """Distilling on 40-token texts with --truncation head_tail at --max-seq-length 16 gives
    exactly the run on the 14 tokens head_tail keeps (4 + 10, which fit untruncated): the same
    teacher logits, the same losses and agreements at every step, the same dev accuracy (the
    dev texts are cut the same way). With head, the long texts give another run."""
    from test_finetune import long_and_kept_texts
    long, kept = long_and_kept_texts(data_dir, 32, 16, seed=0)
    labels = [i % 2 for i in range(8)]
    for name, texts in (("long", long), ("kept", kept)):
        write_jsonl(files / f"{name}_transfer.jsonl", texts[:24])
        write_jsonl(files / f"{name}_dev.jsonl", texts[24:], labels)

    def trace(name, truncation):
        out = f"{name}_{truncation}"
        distill(settings(files, out, epochs=1, truncation=truncation,
                         transfer=str(files / f"{name}_transfer.jsonl"),
                         dev_file=str(files / f"{name}_dev.jsonl")), progress=False)
        return ([(r["loss"], r["agreement"]) for r in records(files / out, "train")],
                [r["accuracy"] for r in records(files / out, "eval")],
                np.load(files / out / "teacher_logits.npy"))
    by_head_tail, on_kept, by_head = (trace("long", "head_tail"), trace("kept", "head"),
                                      trace("long", "head"))
    assert by_head_tail[:2] == on_kept[:2]
    assert np.array_equal(by_head_tail[2], on_kept[2])
    assert by_head[0] != on_kept[0] and not np.array_equal(by_head[2], on_kept[2])


def test_distill_end_to_end(files, capsys, data_dir):
    """`bert-np distill` with a pretraining checkpoint as student: best/ holds a classifier with
    SST-2's label names and the teacher's vocab.txt, log.jsonl has a train record per step and a
    dev evaluation per epoch, curves.png is drawn, and the distillation loss falls: the mean of
    the last epoch's losses is below half the first epoch's (measured: 0.21 -> 0.015 with these
    settings; the student without dropout, so the per-step losses are not masked by its noise),
    and the student agrees with the teacher's argmax more often in the last epoch than the first."""
    save_student(files / "student_nodrop", data_dir / "vocab" / "bert-base-uncased" / "vocab.txt",
                 dropout=0.0)
    out = files / "e2e"
    code = cli.main(["distill", "--teacher", str(files / "teacher"), "--student",
                     str(files / "student_nodrop"), "--task", "sst2", "--transfer",
                     str(files / "transfer.jsonl"), "--dev-file", str(files / "dev.jsonl"),
                     "--out", str(out), "--epochs", "6", "--batch-size", "4", "--lr", "3e-3",
                     "--max-seq-length", "16"])
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{\n"):])           # the summary, printed last
    assert result["best"]["epoch"] in range(1, 7)
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        assert (out / "best" / name).is_file() and (out / "final" / name).is_file()
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["architectures"] == ["BertForSequenceClassification"]
    teacher_vocab = (files / "teacher" / "vocab.txt").read_bytes()
    assert (out / "best" / "vocab.txt").read_bytes() == teacher_vocab
    assert (out / "curves.png").stat().st_size > 0
    train = records(out, "train")
    assert [r["step"] for r in train] == list(range(1, 37))       # 24 / 4 = 6 steps, 6 epochs
    assert all(0.0 <= r["agreement"] <= 1.0 for r in train)
    assert [r["epoch"] for r in records(out, "eval")] == [0, 1, 2, 3, 4, 5, 6]
    first, last = ([r for r in train if r["epoch"] == e] for e in (1, 6))
    assert np.mean([r["loss"] for r in last]) < 0.5 * np.mean([r["loss"] for r in first])
    assert np.mean([r["agreement"] for r in last]) > np.mean([r["agreement"] for r in first])
    start = records(out, "start")[0]
    assert start["transfer_examples"] == 24 and start["teacher_logits"] == "computed"
    assert 0.0 <= start["teacher_dev"]["accuracy"] <= 1.0
    clf = bert_np.BertForSequenceClassification.from_pretrained(out / "best", strict=True)
    assert clf.config.num_labels == 2


@pytest.mark.parametrize("stop, checkpoint", [
    ("crash at step 11", "step-8"),      # mid-epoch 2, after epoch 1's dev evaluation
    ("crash at step 14", "step-12"),     # step 12 ends epoch 2: the checkpoint precedes its eval
    ("max-minutes", "step-1"),           # out of time after the first step
])
def test_resume_is_bit_exact(files, monkeypatch, crash_at_step, stop, checkpoint):
    """A run stopped early (3 epochs of 6 steps, a checkpoint every 4 steps) and resumed with
    --resume equals an uninterrupted one: the same (step, epoch, loss) sequence, the same dev
    evaluations (none repeated or lost), the same best epoch, and final/ weights equal with ==
    (no tolerance): the resumed run sees the same batches, dropout masks (the student has
    dropout), optimizer state and teacher logits, so every float is the same."""
    uninterrupted = distill(settings(files, "a"), progress=False)
    if stop == "max-minutes":
        distill(settings(files, "b", max_minutes=1e-9), progress=False)
        assert not (files / "b" / "final").exists()
    else:
        crash_at_step(int(stop.split()[-1]))
        with pytest.raises(KeyboardInterrupt):
            distill(settings(files, "b"), progress=False)
        monkeypatch.undo()
    assert latest_checkpoint(files / "b").name == checkpoint
    resumed = distill(settings(files, "b"), resume=True, progress=False)
    assert resumed["teacher_logits"] == "run"

    def trace(out):
        return ([(r["step"], r["epoch"], r["loss"]) for r in records(out, "train")],
                [(r["step"], r["epoch"], r["accuracy"]) for r in records(out, "eval")])
    assert trace(files / "b") == trace(files / "a")
    assert [s for s, _, _ in trace(files / "b")[0]] == list(range(1, 19))
    assert len(records(files / "b", "start")) == 1
    assert resumed["best"] == uninterrupted["best"]
    assert resumed["epochs"] == uninterrupted["epochs"]
    pa = bert_np.BertForSequenceClassification.from_pretrained(files / "a" / "final").params
    pb = bert_np.BertForSequenceClassification.from_pretrained(files / "b" / "final").params
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    ba = bert_np.BertForSequenceClassification.from_pretrained(files / "a" / "best").params
    bb = bert_np.BertForSequenceClassification.from_pretrained(files / "b" / "best").params
    assert all(np.array_equal(ba[k], bb[k]) for k in ba)


def test_resume_refuses_changed_settings_and_a_missing_checkpoint(files):
    """--resume continues only the run its checkpoint belongs to (same settings, same teacher
    logits), and needs one."""
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        distill(settings(files, "r"), resume=True, progress=False)
    distill(settings(files, "r", epochs=1), progress=False)
    with pytest.raises(ValueError, match="temperature"):
        distill(settings(files, "r", epochs=1, temperature=2.0), resume=True, progress=False)
    cached = (files / "r" / "teacher_logits.npy").read_bytes()
    with open(files / "transfer.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"text_a": "one more sentence"}) + "\n")
    with pytest.raises(ValueError, match="--resume: the teacher, the transfer file"):
        distill(settings(files, "r", epochs=1), resume=True, progress=False)
    assert (files / "r" / "teacher_logits.npy").read_bytes() == cached   # refused before
    with pytest.raises(ValueError, match="--truncation"):     # other logits, though the same ids
        distill(settings(files, "r", epochs=1, truncation="head_tail"), resume=True,
                progress=False)
    assert (files / "r" / "teacher_logits.npy").read_bytes() == cached


def run_cli(files, capsys, *extra, **options):
    args = dict(teacher=files / "teacher", student=files / "student", task="sst2",
                transfer=files / "transfer.jsonl", dev_file=files / "dev.jsonl",
                out=files / "bad", epochs=1, max_seq_length=16)
    args.update(options)
    argv = ["distill"] + [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    code = cli.main(argv + list(extra))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("case, option", [
    ("teacher with 3 labels", "--teacher"),
    ("teacher fine-tuned for another task", "--teacher"),
    ("transfer row without text_a", "--transfer"),
    ("student with another vocabulary", "--student"),
    ("missing transfer file", "--transfer"),
    ("alpha < 1 without labels", "--alpha"),
])
def test_bad_input_is_one_line_naming_the_argument(files, capsys, data_dir, case, option):
    """Each mistake ends the command with exit code 2 and one line on stderr that names the
    option to fix (before any training)."""
    options = {}
    if case == "teacher with 3 labels":
        save_teacher(files / "teacher3", data_dir / "vocab" / "bert-base-uncased" / "vocab.txt",
                     num_labels=3)
        options["teacher"] = files / "teacher3"
    elif case == "teacher fine-tuned for another task":      # an MRPC model as an SST-2 teacher
        teacher = save_teacher(files / "teacher_mrpc",
                               data_dir / "vocab" / "bert-base-uncased" / "vocab.txt")
        teacher.config.id2label = {0: "not_equivalent", 1: "equivalent"}
        teacher.save_pretrained(files / "teacher_mrpc")
        options["teacher"] = files / "teacher_mrpc"
    elif case == "student with another vocabulary":
        chinese = data_dir / "vocab" / "bert-base-chinese" / "vocab.txt"
        tokenizer = BertTokenizer.from_vocab(chinese, lowercase=False)
        cfg = bert_np.BertConfig(vocab_size=tokenizer.vocab_size, **TINY)
        bert_np.BertForPreTraining(cfg).save_pretrained(files / "student_zh")
        tokenizer.save(files / "student_zh")
        options["student"] = files / "student_zh"
    elif case == "transfer row without text_a":
        (files / "broken.jsonl").write_text('{"text_a": "fine"}\n{"text": "typo"}\n')
        options["transfer"] = files / "broken.jsonl"
    elif case == "missing transfer file":
        options["transfer"] = files / "no_such.jsonl"
    else:
        options["alpha"] = 0.5
    code, err = run_cli(files, capsys, **options)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("bert-np distill: error: ") and option in err, err
    assert not (files / "bad" / "log.jsonl").exists()


def test_alpha_below_one_trains_with_labelled_transfer(files):
    """With labels on every transfer row, alpha < 1 is accepted and adds the label loss: the
    first step's loss differs from the teacher-only run's (same batches, same initial weights)."""
    texts = sentences(24, 0)
    write_jsonl(files / "labelled.jsonl", texts, [i % 2 for i in range(24)])
    a = distill(settings(files, "t", epochs=1, transfer=str(files / "labelled.jsonl")),
                progress=False)
    b = distill(settings(files, "h", epochs=1, alpha=0.5,
                         transfer=str(files / "labelled.jsonl")), progress=False)
    assert a["step"] == b["step"] == 6
    la, lb = records(files / "t", "train")[0]["loss"], records(files / "h", "train")[0]["loss"]
    assert np.isfinite(lb) and la != lb


def test_sentence_pair_regression_task(files, data_dir):
    """STS-B (pairs, one real-valued output): a transfer set of {"text_a", "text_b"} rows, the
    teacher's single score as the target (squared error), dev metrics per epoch; the loss is
    finite at every step and the student's config has num_labels 1."""
    save_teacher(files / "teacher_stsb", data_dir / "vocab" / "bert-base-uncased" / "vocab.txt",
                 num_labels=1)
    a, b = sentences(16, 2), sentences(16, 3)
    with open(files / "pairs.jsonl", "w", encoding="utf-8") as f:
        for x, y in zip(a, b):
            f.write(json.dumps({"text_a": x, "text_b": y}) + "\n")
    with open(files / "pairs_dev.jsonl", "w", encoding="utf-8") as f:
        for i, (x, y) in enumerate(zip(b[:8], a[:8])):
            f.write(json.dumps({"text_a": x, "text_b": y, "label": i * 0.5}) + "\n")
    result = distill(settings(files, "stsb", task="stsb", teacher=str(files / "teacher_stsb"),
                              transfer=str(files / "pairs.jsonl"),
                              dev_file=str(files / "pairs_dev.jsonl"), epochs=2), progress=False)
    assert result["step"] == 8 and len(result["epochs"]) == 2
    assert set(result["best"]) == {"pearson", "spearman", "epoch"}
    assert all(np.isfinite(r["loss"]) for r in records(files / "stsb", "train"))
    best = bert_np.BertForSequenceClassification.from_pretrained(files / "stsb" / "best",
                                                                 strict=True)
    assert best.config.num_labels == 1


def test_cache_key_covers_sharded_teachers(files):
    """A teacher saved in shards (save_pretrained(max_shard_size=...)) keys the cache by its index
    and every shard: a change in one shard changes the key."""
    teacher, _ = load_for_inference(files / "teacher")
    sharded = files / "teacher_sharded"
    teacher.save_pretrained(sharded, max_shard_size=200_000)
    BertTokenizer.from_pretrained(files / "teacher").save(sharded)
    names = checkpoint_files(sharded)
    shards = [n for n in names if n.startswith("model-")]
    assert "model.safetensors.index.json" in names and len(shards) > 1
    tokenizer = BertTokenizer.from_pretrained(sharded)

    def key():
        return distill_module.teacher_cache_key(sharded, files / "transfer.jsonl", tokenizer, 16,
                                                "float32")
    before = key()
    teacher.params["classifier.bias"][0] += 1.0
    teacher.save_pretrained(sharded, max_shard_size=200_000)
    assert key()["teacher"] != before["teacher"]


def test_a_used_out_is_refused_and_overwrite_keeps_the_teacher_cache(files, capsys):
    """A second run into a non-empty --out stops with one line naming --resume and --overwrite
    (before the teacher runs); --overwrite clears the old run's files but keeps the teacher-logit
    cache, which it reuses only after checking its key."""
    distill(settings(files, "used", epochs=1), progress=False)
    (files / "used" / "stale.txt").write_text("from the old run")
    code, err = run_cli(files, capsys, out=files / "used")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--out" in err and "--resume" in err and "--overwrite" in err, err
    result = distill(settings(files, "used", epochs=1, overwrite=True), progress=False)
    assert result["teacher_logits"] == "run"
    assert not (files / "used" / "stale.txt").exists()
    assert len(records(files / "used", "start")) == 1


@pytest.mark.parametrize("field, value, flag", [
    ("temperature", float("inf"), "--temperature"), ("temperature", 0.0, "--temperature"),
    ("alpha", 1.5, "--alpha"), ("alpha", float("nan"), "--alpha"), ("lr", 0.0, "--lr"),
    ("warmup_ratio", 1.0, "--warmup-ratio"), ("max_steps", 0, "--max-steps"),
    ("gradient_accumulation_steps", 0, "--gradient-accumulation-steps"),
    ("max_transfer_examples", 0, "--max-transfer-examples"), ("dropout", 1.0, "dropout"),
    ("truncation", "tail", "--truncation"), ("checkpoint_every", 0, "--checkpoint-every")])
def test_numeric_settings_are_checked(files, field, value, flag):
    """Each bad number (or truncation) is refused when the settings are made, naming the
    option."""
    with pytest.raises(ValueError, match=flag):
        settings(files, **{field: value})


def test_dev_overlap_uses_the_transfer_scripts_normaliser():
    """A raw transfer sentence counts as a dev sentence when they differ only by GLUE's
    tokenisation (case, PTB contractions, spaced punctuation): corpora.normalize."""
    from bert_np.data.tasks import Example
    dev = [Example("it 's a charming , funny journey . ", None, 1)]
    transfer = [Example("It's a charming, funny journey.", None, None),
                Example("A charming journey.", None, None)]
    assert distill_module.dev_overlap(transfer, dev) == 1
