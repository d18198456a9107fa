"""What a save leaves on disk (issue 18, items 4, 7, 9, 10): the tokenizer transformers loads from
a saved directory, the weights/config pair after a real SIGKILL between its two renames, the
temporary files of killed saves, file modes under the user's umask, and saves and loads running
in concurrent processes.

Faults are real: child processes are SIGKILLed at a chosen point of a save, writers and readers
run as separate processes, and every child is bounded in time. Models are tiny (hidden 32, two
layers) so that a save takes milliseconds.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bert_np
from bert_np import hf
from bert_np.optim import AdamW
from bert_np.tokenization import BertTokenizer
from bert_np.train import checkpoints

REPO = Path(__file__).parents[1]
CHILD_ENV = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
                 OPENBLAS_NUM_THREADS="1")
CHILD_TIMEOUT = 120  # seconds; a save of these models takes milliseconds


def config_fields(hidden_act="gelu"):
    """A tiny BERT. Models A (gelu, seed 0) and B (relu, seed 1) have the same shapes and differ in
    their config and weights, so only a pair check (not the shape check) can tell them apart."""
    return dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=16, hidden_act=hidden_act)


def model_a():
    return bert_np.BertModel(bert_np.BertConfig(**config_fields("gelu")), seed=0)


def model_b():
    return bert_np.BertModel(bert_np.BertConfig(**config_fields("relu")), seed=1)


def run_child(script, *args, timeout=CHILD_TIMEOUT):
    """Run `script` in a fresh Python process; returns the CompletedProcess (bounded in time)."""
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], env=CHILD_ENV,
                          capture_output=True, text=True, timeout=timeout)


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "Cat", "##s", "on",
         "mat", "."]
SHARD_SIZE = 20_000  # bytes: the tiny model in 5 shards


# ================================================================ item 4: stale tokenizer files

OTHER_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "x", "y", "The", "Cat", "cat", "mat",
               "sat", "on"]
TEXTS = ["The Cats sat on the mat.", "Cat cat CAT", "newword <special> [MASK] mat", "Öñ the mat"]


def other_tokenizer_directory(directory, tmp_path):
    """A Hugging Face directory holding another tokenizer: transformers' own save_pretrained of a
    cased BertTokenizerFast on OTHER_VOCAB with an added token (tokenizer.json,
    tokenizer_config.json), plus the files older releases and the Hub also ship (vocab.txt,
    special_tokens_map.json, added_tokens.json). Each of these alone changes what transformers
    reads from a directory."""
    import transformers
    (tmp_path / "other_vocab.txt").write_text("".join(t + "\n" for t in OTHER_VOCAB))
    other = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "other_vocab.txt"),
                                           do_lower_case=False)
    other.add_tokens(["newword"])
    other.save_pretrained(directory)
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in OTHER_VOCAB))
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"unk_token": "cat", "additional_special_tokens": ["<special>"]}))
    (directory / "added_tokens.json").write_text(json.dumps({"newword": 12}))
    assert (directory / "tokenizer.json").exists()


def save_tokenizer_with(how, directory, tokenizer):
    """Save `tokenizer` (with a model where the way of saving includes one) into `directory`."""
    model = bert_np.BertModel(bert_np.BertConfig(**dict(config_fields(), vocab_size=len(VOCAB))))
    if how == "tokenizer.save":
        tokenizer.save(directory)
    elif how == "save_pretrained, then tokenizer.save":
        model.save_pretrained(directory)
        tokenizer.save(directory)
    elif how == "best/ (save_model_directory)":
        checkpoints.save_model_directory(directory, model, tokenizer)
    elif how == "training checkpoint":
        checkpoints.save_training_checkpoint(directory.parent, directory.name, model,
                                             AdamW(model.params), {"step": 1}, tokenizer)


@pytest.mark.parametrize("how", ["tokenizer.save", "save_pretrained, then tokenizer.save",
                                 "best/ (save_model_directory)", "training checkpoint"])
@pytest.mark.parametrize("lowercase", [True, False])
def test_transformers_loads_the_tokenizer_bert_np_saved_over_another_one(tmp_path, how, lowercase):
    """A bert_np tokenizer saved into a directory holding another tokenizer's files (a different,
    cased vocabulary, an added token, other special tokens): transformers.AutoTokenizer must load
    bert_np's tokenizer from it, so its ids for texts with cased words, accents, the other
    tokenizer's added and special tokens and [MASK] equal bert_np's own, and its vocabulary is
    bert_np's. Stale files would make transformers tokenise with the old vocabulary."""
    import transformers
    directory = tmp_path / "model"
    other_tokenizer_directory(directory, tmp_path)
    tokenizer = BertTokenizer({t: i for i, t in enumerate(VOCAB)}, lowercase=lowercase)
    save_tokenizer_with(how, directory, tokenizer)
    loaded = transformers.AutoTokenizer.from_pretrained(directory)
    assert loaded.get_vocab() == tokenizer.vocab
    for text in TEXTS:
        assert loaded(text)["input_ids"] == tokenizer.encode(text).input_ids, text
    assert BertTokenizer.from_pretrained(directory).vocab == tokenizer.vocab


# ================================================================ item 7: the weights/config pair

KILL_BETWEEN_RENAMES = r"""
import os, signal, sys, json
import bert_np
directory, shard_size, after = sys.argv[1], sys.argv[2], sys.argv[3]
fields = json.loads(sys.argv[4])
real_replace = os.replace

def replace(src, dst):
    real_replace(src, dst)
    if os.path.basename(dst).startswith(after):  # in place: die before the next rename
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
model = bert_np.BertModel(bert_np.BertConfig(**fields), seed=1)
model.save_pretrained(directory, max_shard_size=None if shard_size == "none" else int(shard_size))
"""


def kill_a_save_of_b(directory, shard_size, after):
    """Save model B into `directory` in a child process SIGKILLed right after the rename that puts
    the file whose name starts with `after` into place."""
    child = run_child(KILL_BETWEEN_RENAMES, directory, shard_size, after,
                      json.dumps(config_fields("relu")))
    assert child.returncode == -signal.SIGKILL, child.stderr


def leftovers(directory, keep):
    return sorted(p.name for p in Path(directory).iterdir() if p.name not in keep)


@pytest.mark.parametrize("layout, shard_size, after", [
    ("single file", "none", hf.SAFETENSORS_NAME),
    ("sharded, killed after the first shard", SHARD_SIZE, "model-00001-of-"),
    ("sharded, killed after the index", SHARD_SIZE, hf.SAFETENSORS_INDEX_NAME)])
def test_a_save_killed_between_its_renames_is_refused_by_name_and_cleaned_up(tmp_path, layout,
                                                                             shard_size, after):
    """Model A is saved; a save of model B (same shapes, other weights, other hidden_act) is
    SIGKILLed after its weights are in place and before its config is: the directory holds B's
    weights beside A's config (or some of B's shards beside A's, or B's index beside A's config).
    Loading must refuse this with one line naming the directory and the two files that do not
    belong together, instead of running A's config on B's weights. The next
    save must remove the temporary files the killed save left and give a loadable directory."""
    max_shard = None if shard_size == "none" else shard_size
    model_a().save_pretrained(tmp_path, max_shard_size=max_shard)
    expected = set(p.name for p in tmp_path.iterdir())
    kill_a_save_of_b(tmp_path, shard_size, after)
    with pytest.raises(hf.CheckpointError) as error:
        bert_np.BertModel.from_pretrained(tmp_path)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "not from the same save" in message
    assert leftovers(tmp_path, expected), "the kill was expected to leave temporary files"
    b = model_b()
    b.save_pretrained(tmp_path, max_shard_size=max_shard)
    assert leftovers(tmp_path, expected) == []
    loaded = bert_np.BertModel.from_pretrained(tmp_path, strict=True)
    assert loaded.config.hidden_act == "relu"
    assert all(np.array_equal(loaded.params[k], b.params[k]) for k in b.params)


def test_temporary_files_of_killed_saves_do_not_accumulate(tmp_path):
    """A save SIGKILLed between its renames leaves its temporary files (a complete config and a
    backup of the previous weights); left to accumulate, ten killed BERT-base saves held 2.2 GB.
    Each save removes those of the saves killed before it: after each of five killed saves only
    its own two remain, and after a save that completes the directory holds config.json and
    model.safetensors only."""
    model_a().save_pretrained(tmp_path)
    for _ in range(5):
        kill_a_save_of_b(tmp_path, "none", hf.SAFETENSORS_NAME)
        assert len(leftovers(tmp_path, {hf.CONFIG_NAME, hf.SAFETENSORS_NAME})) == 2
    model_a().save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [hf.CONFIG_NAME, hf.SAFETENSORS_NAME]
    assert bert_np.BertModel.from_pretrained(tmp_path).config.hidden_act == "gelu"


KILL_A_TRAINING_CHECKPOINT = r"""
import os, signal, sys, json
import bert_np
from bert_np.optim import AdamW
from bert_np.train import checkpoints
out, name, after = sys.argv[1], sys.argv[2], sys.argv[3]
real_replace = os.replace

def replace(src, dst):
    real_replace(src, dst)
    if os.path.basename(dst) == after:
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
model = bert_np.BertModel(bert_np.BertConfig(**json.loads(sys.argv[4])), seed=1)
checkpoints.save_training_checkpoint(out, name, model, AdamW(model.params), {"step": 9})
"""


def test_a_training_run_s_next_checkpoint_cleans_up_after_killed_ones(tmp_path):
    """Training checkpoints are directories written under a temporary name and renamed into place
    (a step saved again on resume first moves the old one aside). Two saves SIGKILLed midway: one
    while writing step-2 (leaving .step-2.tmp), then one after moving step-1 aside to save it
    again (leaving .step-1.old and a complete .step-1.tmp, and no step-1), which removes what the
    first left. The next checkpoint must put step-1 back as it was, remove the temporary
    directories, and point `latest` at itself."""
    a = model_a()
    checkpoints.save_training_checkpoint(tmp_path, "step-1", a, AdamW(a.params), {"step": 1})
    fields = json.dumps(config_fields("relu"))
    left = []
    for name, after in (("step-2", hf.SAFETENSORS_NAME), ("step-1", ".step-1.old")):
        child = run_child(KILL_A_TRAINING_CHECKPOINT, tmp_path, name, after, fields)
        assert child.returncode == -signal.SIGKILL, child.stderr
        left.append(sorted(p.name for p in tmp_path.iterdir()))
    assert left == [[".step-2.tmp", "latest", "step-1"], [".step-1.old", ".step-1.tmp", "latest"]]
    checkpoints.save_training_checkpoint(tmp_path, "step-3", a, AdamW(a.params), {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-1", "step-3"]
    assert checkpoints.latest_checkpoint(tmp_path) == tmp_path / "step-3"
    restored = bert_np.BertModel.from_pretrained(tmp_path / "step-1", strict=True)
    assert all(np.array_equal(restored.params[k], a.params[k]) for k in a.params)


def test_a_config_without_the_weights_record_still_loads(tmp_path):
    """The pair check applies only when config.json records the weights it was saved with (bert_np
    writes the record): a config without it (written by hand or by transformers) loads with
    bert_np's weights, and a directory that transformers re-saved (its config keeps the record,
    its weights carry no bert_np checksum) loads too, with transformers' weights."""
    import transformers
    a = model_a()
    a.save_pretrained(tmp_path / "bert_np")
    config = json.loads((tmp_path / "bert_np" / hf.CONFIG_NAME).read_text())
    assert hf.WEIGHTS_RECORD in config
    del config[hf.WEIGHTS_RECORD]
    (tmp_path / "bert_np" / hf.CONFIG_NAME).write_text(json.dumps(config))
    loaded = bert_np.BertModel.from_pretrained(tmp_path / "bert_np", strict=True)
    assert all(np.array_equal(loaded.params[k], a.params[k]) for k in a.params)

    a.save_pretrained(tmp_path / "bert_np")
    theirs = transformers.BertModel.from_pretrained(tmp_path / "bert_np")
    with __import__("torch").no_grad():
        theirs.embeddings.word_embeddings.weight.mul_(2.0)
    theirs.save_pretrained(tmp_path / "resaved")
    loaded = bert_np.BertModel.from_pretrained(tmp_path / "resaved", strict=True)
    np.testing.assert_array_equal(loaded.params["embeddings.word_embeddings.weight"],
                                  2 * a.params["embeddings.word_embeddings.weight"])


# ================================================================ item 9: file modes

@pytest.fixture
def umask():
    """Set the process umask for one test and put the previous one back."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=["umask 022", "umask 077"])
def test_every_file_a_save_writes_gets_the_mode_the_umask_gives(tmp_path, umask, mask):
    """Under umask 022 every file a save writes is 0644 and every directory 0755; under 077,
    0600 and 0700: the modes open() and mkdir() give, so other users can read a shared model
    exactly when the user's umask says so. Covers save_pretrained (one file and sharded),
    tokenizer.save, a training checkpoint (weights, optimizer state, trainer state, vocabulary,
    `latest`) and finetune's best/."""
    umask(mask)
    model = model_a()
    tokenizer = BertTokenizer({t: i for i, t in enumerate(VOCAB)})
    model.save_pretrained(tmp_path / "single")
    tokenizer.save(tmp_path / "single")
    model.save_pretrained(tmp_path / "sharded", max_shard_size=SHARD_SIZE)
    checkpoints.save_training_checkpoint(tmp_path / "run", "step-1", model, AdamW(model.params),
                                         {"step": 1}, tokenizer)
    checkpoints.save_model_directory(tmp_path / "run" / "best", model, tokenizer)
    written = [p for p in tmp_path.rglob("*")]
    assert {"optimizer.safetensors", "latest", "model-00001-of-00005.safetensors",
            "trainer_state.json", "vocab.txt"} <= {p.name for p in written}
    wrong = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in written
             if p.stat().st_mode & 0o777 != (0o777 if p.is_dir() else 0o666) & ~mask}
    assert wrong == {}


def test_write_safetensors_writes_what_safetensors_and_bert_np_read(tmp_path):
    """bert_np writes safetensors itself (so the file gets the umask's mode and no temporary file
    of the library is left by a kill). Every dtype it may write, a big-endian array, a scalar and
    an empty tensor must read back exactly, by the safetensors library and by bert_np's reader,
    with the metadata kept."""
    from safetensors import safe_open
    from safetensors.numpy import load_file
    rng = np.random.default_rng(0)
    tensors = {f"t_{np.dtype(d).name}": rng.normal(size=(3, 5)).astype(d)
               for d in ("<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "i1", "u1", "?")}
    tensors.update({"big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
                    "scalar": np.float32(2.5), "empty": np.zeros((0, 4), np.float32),
                    "strided": np.arange(20.0)[::3]})
    hf.write_safetensors(tmp_path / "t.safetensors", tensors, {"format": "pt", "note": "x"})
    for read in (load_file, hf.read_safetensors):
        back = read(str(tmp_path / "t.safetensors"))
        assert sorted(back) == sorted(tensors)
        for name, t in tensors.items():
            assert back[name].dtype == np.asarray(t).dtype.newbyteorder("<"), name
            np.testing.assert_array_equal(back[name], t)
    with safe_open(str(tmp_path / "t.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt", "note": "x"}


# ================================================================ item 10: concurrent saves, loads

WRITER = r"""
import json, sys, time
import bert_np
directory, seconds, shard_size = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
models = [bert_np.BertModel(bert_np.BertConfig(**fields), seed=seed)
          for seed, fields in json.loads(sys.argv[4])]
saves = refused = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        models[saves % len(models)].save_pretrained(directory, max_shard_size=shard_size)
        saves += 1
    except OSError as e:                      # another writer holds the directory
        assert "another process is saving into" in str(e) and directory in str(e), e
        refused += 1
        time.sleep(0.002)
print(json.dumps({"saves": saves, "refused": refused}))
"""
A_SPEC, B_SPEC = (0, config_fields("gelu")), (1, config_fields("relu"))


def load_while_saving(directory, writers, shard_size=None, seconds=4.0):
    """Start one writer process per entry of `writers` (a list of the (seed, config fields) it
    saves in turn into `directory`, for `seconds`), and load from `directory` meanwhile. Every
    load must return model A's config with A's weights or B's with B's. Returns (loads, saves)."""
    a, b = model_a(), model_b()
    a.save_pretrained(directory, max_shard_size=shard_size)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(seconds),
                               json.dumps(shard_size), json.dumps(specs)],
                              env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for specs in writers]
    loads, deadline = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            loaded = bert_np.BertModel.from_pretrained(directory)
            expected = a if loaded.config.hidden_act == "gelu" else b
            assert all(np.array_equal(loaded.params[k], expected.params[k]) for k in a.params), \
                f"config of {'A' if expected is a else 'B'} beside the other model's weights"
            loads += 1
    finally:
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=CHILD_TIMEOUT)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    return loads, sum(r["saves"] for r in results)


def test_loads_during_concurrent_saves_always_see_one_whole_pair(tmp_path):
    """Two processes save models A and B into one directory over and over for a few seconds while
    this process loads from it: every load must succeed (no false checksum error from reading a
    file while it is replaced, no refused pair) and return one model's config with the same
    model's weights. The writers themselves never interleave: one of two concurrent saves is
    refused (see test_a_second_concurrent_writer_is_refused_naming_the_directory) and its writer
    tries again."""
    loads, saves = load_while_saving(tmp_path, [[A_SPEC], [B_SPEC]])
    assert loads >= 10 and saves >= 10, (loads, saves)


def test_loads_during_repeated_sharded_saves_see_one_whole_checkpoint(tmp_path):
    """Sharded saves rename every shard, then the index, then the config: a load running meanwhile
    can meet a new shard beside the old index. One process saves A and B in shards in turn while
    this one loads: every load must succeed and return one model's config with its weights."""
    loads, saves = load_while_saving(tmp_path, [[A_SPEC, B_SPEC]], shard_size=SHARD_SIZE)
    assert loads >= 10 and saves >= 10, (loads, saves)


def test_a_save_between_reading_the_config_and_the_weights_is_read_again(tmp_path, monkeypatch):
    """The race behind the concurrent tests, made certain: a save of B completes after loading has
    read A's config and before it reads the weights, so it reads B's weights beside A's config.
    That is no torn directory, only a moving one: the pair is read again and B is returned."""
    a, b = model_a(), model_b()
    a.save_pretrained(tmp_path)
    real_open_checkpoint, calls = hf.open_checkpoint, []

    def open_checkpoint(directory):
        calls.append(directory)
        if len(calls) == 1:
            b.save_pretrained(tmp_path)
        return real_open_checkpoint(directory)
    monkeypatch.setattr(hf, "open_checkpoint", open_checkpoint)
    loaded = bert_np.BertModel.from_pretrained(tmp_path)
    assert len(calls) == 2 and loaded.config.hidden_act == "relu"
    assert all(np.array_equal(loaded.params[k], b.params[k]) for k in b.params)


HOLD_THE_DIRECTORY = r"""
import json, os, sys, time
import bert_np
directory, ready, done, fields = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
real_replace = os.replace

def replace(src, dst):                        # mid-save, holding the directory: wait for the test
    if not os.path.exists(ready):
        open(ready, "w").close()
        end = time.monotonic() + 60
        while not os.path.exists(done) and time.monotonic() < end:
            time.sleep(0.01)
    real_replace(src, dst)

os.replace = replace
bert_np.BertModel(bert_np.BertConfig(**fields)).save_pretrained(directory)
"""


def test_a_second_concurrent_writer_is_refused_naming_the_directory(tmp_path):
    """While one process is in the middle of a save into a directory, a save of a model or a
    tokenizer into the same directory from another process is refused with one line naming the
    directory, and the directory is left to the first writer; once that save is done, saving
    works again."""
    directory, ready, done = tmp_path / "model", tmp_path / "ready", tmp_path / "done"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_DIRECTORY, str(directory), str(ready),
                               str(done), json.dumps(config_fields("gelu"))],
                              env=CHILD_ENV, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder never started"
            time.sleep(0.01)
        for save in (lambda: model_b().save_pretrained(directory),
                     lambda: BertTokenizer({t: i for i, t in enumerate(VOCAB)}).save(directory)):
            with pytest.raises(OSError) as error:
                save()
            message = str(error.value)
            assert "\n" not in message and f"another process is saving into {directory}" in message
    finally:
        done.touch()
        assert holder.wait(timeout=CHILD_TIMEOUT) == 0, holder.stderr.read()
    assert bert_np.BertModel.from_pretrained(directory).config.hidden_act == "gelu"
    model_b().save_pretrained(directory)
    assert bert_np.BertModel.from_pretrained(directory).config.hidden_act == "relu"
