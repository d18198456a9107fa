"""What a save leaves on disk (issue 18): file modes under the user's umask.

Models are tiny (hidden 32, two layers) so that a save takes milliseconds.
"""
import os
import subprocess
import sys
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
