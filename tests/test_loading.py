"""Loading a checkpoint: sizes checked before anything is allocated, and the checks of config
fields and key names.

Part 1, resources. A config.json or a pytorch_model.bin can claim sizes its checkpoint does not
back (a vocabulary of 2e7 rows, a million layers, a stride-0 view repeating one number 4e8 times,
a zip entry that inflates a few MB into GB). Each must be refused from the sizes it declares,
before they are believed: the config's sizes against the shapes in the safetensors header or the
pickle's storage records, a view's element count against its storage, an archive entry's size
against its storage record and against the tensors it backs. Each crafted case is loaded in a
child process whose address space is capped at what it had after `import bert_np` plus CAP_MB,
with a time limit: loading it the old way ran into the cap (MemoryError) because bert_np
allocated what the file claimed. The child reports the exception, the seconds the load took and
its peak resident memory above the start.

Then a good load: its peak memory (tracemalloc, which sees every NumPy buffer) is compared with
the size of the file, because the weights are read straight into the model's arrays, without a
throwaway random initialisation or a copy of the whole file; a new head is still initialised to
the values the full initialisation gives it (same seed, same numbers).

Part 2, fields and names: id2label forms, unknown override names, keys that collide after
renaming, fields that would make transformers run code, shards without their index, a DDP
`module.` prefix.
"""
import io
import json
import os
import pickle
import subprocess
import sys
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import bert_np
from bert_np import hf
from reference import perturb_params

CAP_MB = 256          # address space the child may add after importing bert_np


def small_config(**kw):
    fields = dict(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=40, max_position_embeddings=16, num_labels=3)
    fields.update(kw)
    return bert_np.BertConfig(**fields)


def saved(directory, cls=bert_np.BertModel, **cfg):
    model = cls(small_config(**cfg), seed=0)
    perturb_params(model, 1)
    model.save_pretrained(directory)
    return model


def edit_config(directory, **changes):
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


_CHILD = r"""
import json, resource, sys, time
import bert_np
def kib(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])
start_rss = kib("VmRSS")
cap = kib("VmSize") * 1024 + int(sys.argv[3]) * 2 ** 20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
start = time.perf_counter()
try:
    getattr(bert_np, sys.argv[1]).from_pretrained(sys.argv[2])
    result = {"error": None, "message": ""}
except BaseException as e:
    result = {"error": type(e).__name__, "message": str(e)}
result["seconds"] = time.perf_counter() - start
result["peak_mb"] = (kib("VmHWM") - start_rss) / 1024
print(json.dumps(result))
"""


def load_bounded(directory, cls="BertModel"):
    """from_pretrained in a child with its address space capped (CAP_MB above its size after the
    import) and a time limit; returns its report (error type, message, seconds, peak_mb)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(bert_np.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    try:
        run = subprocess.run([sys.executable, "-c", _CHILD, cls, str(directory), str(CAP_MB)],
                             capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {directory} did not finish in 120 s")
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def assert_refused_before_allocating(report, *needles):
    assert report["error"] == "CheckpointError", report
    for needle in needles:
        assert needle in report["message"], (needle, report["message"])
    assert report["peak_mb"] < 64, report


# ================================================================ 1. sizes before allocation

def test_a_config_vocabulary_the_checkpoint_lacks_is_refused_before_allocating(tmp_path):
    """vocab_size 2e7 beside a 60-row embedding table: refused from the header's shapes; the
    first line names the field, its value and the checkpoint's (the old code first built a random
    2e7 x 24 table)."""
    saved(tmp_path)
    edit_config(tmp_path, vocab_size=20_000_000)
    report = load_bounded(tmp_path)
    assert_refused_before_allocating(report, "config.json vocab_size=20000000, the checkpoint 60 "
                                   "(embeddings.word_embeddings.weight)")
    assert report["message"].splitlines()[0].startswith(f"checkpoint {tmp_path} does not match")


def test_a_config_with_a_million_layers_is_refused_before_allocating(tmp_path):
    """num_hidden_layers 1e6 beside a 2-layer checkpoint: refused from the key names, before the
    16 million parameter names of such a model are made."""
    saved(tmp_path)
    edit_config(tmp_path, num_hidden_layers=1_000_000)
    assert_refused_before_allocating(load_bounded(tmp_path),
                           f"{tmp_path / 'config.json'}: num_hidden_layers=1000000 but",
                           "holds 2 layers (encoder.layer.0 to encoder.layer.1)")


def _pickled_state(tensors):
    """A state_dict pickle as torch.save writes it: tensors is name -> (storage key, dtype name,
    storage elements, offset, size, stride)."""
    torch = pytest.importorskip("torch")

    class Storage:
        def __init__(self, key, dtype, elements):
            self.key, self.dtype, self.elements = key, dtype, elements

    class Tensor:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride, False, OrderedDict())

        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", getattr(torch, obj.dtype), obj.key, "cpu", obj.elements)
            return None

    state = OrderedDict((name, Tensor(Storage(key, dtype, n), offset, size, stride))
                        for name, (key, dtype, n, offset, size, stride) in tensors.items())
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(state)
    return buffer.getvalue()


def write_archive(path, pickled, storages, compress=zipfile.ZIP_STORED):
    """A torch.save-style zip: archive/data.pkl and archive/data/<key> (bytes, or a number of
    zero bytes written in chunks, compressed as asked)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        for key, content in storages.items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = compress
            with zf.open(info, "w", force_zip64=True) as f:
                if isinstance(content, bytes):
                    f.write(content)
                else:
                    chunk = bytes(2 ** 24)
                    for start in range(0, content, len(chunk)):
                        f.write(chunk[:min(len(chunk), content - start)])


def test_a_stride_zero_view_is_refused_not_expanded(tmp_path):
    """A 1.7 KB pytorch_model.bin whose tensor repeats one float 4e8 times (stride 0): a view
    must be backed by its storage, so it is refused naming file and key (the old code built the
    1.6 GB array)."""
    small_config().to_json_file(tmp_path / "config.json")
    pickled = _pickled_state({"w": ("0", "FloatStorage", 1, 0, (400_000_000,), (0,))})
    write_archive(tmp_path / "pytorch_model.bin", pickled, {"0": np.ones(1, np.float32).tobytes()})
    assert (tmp_path / "pytorch_model.bin").stat().st_size < 2000
    assert_refused_before_allocating(load_bounded(tmp_path), f"{tmp_path / 'pytorch_model.bin'}: tensor 'w'",
                           "400000000 elements over a storage of 1")


def test_a_view_with_more_elements_than_its_storage_is_refused_even_when_small(tmp_path):
    """The same rule for a view shaped as the model wants (60 x 24 from one number): a real
    torch.save never writes a view with more elements than its storage."""
    path = tmp_path / "pytorch_model.bin"
    pickled = _pickled_state({"embeddings.word_embeddings.weight":
                              ("0", "FloatStorage", 1, 0, (60, 24), (0, 0))})
    write_archive(path, pickled, {"0": np.ones(1, np.float32).tobytes()})
    with pytest.raises(hf.CheckpointError, match="tensor 'embeddings.word_embeddings.weight': "
                                                 "a view of 1440 elements over a storage of 1"):
        hf.read_pytorch_bin(path)


BOMB = 384 * 2 ** 20      # bytes a crafted zip entry inflates to (about 0.4 MB compressed)


def test_an_archive_entry_larger_than_its_storage_record_is_refused_unread(tmp_path):
    """A zip bomb: the pickle declares a storage of 24 floats, its deflated zip entry inflates to
    384 MB; refused from the two declared sizes, without inflating it."""
    small_config().to_json_file(tmp_path / "config.json")
    pickled = _pickled_state({"embeddings.LayerNorm.weight": ("0", "FloatStorage", 24, 0, (24,), (1,))})
    write_archive(tmp_path / "pytorch_model.bin", pickled, {"0": BOMB}, zipfile.ZIP_DEFLATED)
    assert (tmp_path / "pytorch_model.bin").stat().st_size < 3 * 2 ** 20
    assert_refused_before_allocating(load_bounded(tmp_path), f"{tmp_path / 'pytorch_model.bin'}: storage 0",
                           "declares 24 float32 elements (96 bytes) but its archive entry "
                           f"archive/data/0 holds {BOMB} bytes")


def test_a_compressed_storage_larger_than_the_tensors_it_backs_is_refused_unread(tmp_path):
    """The same bomb with a consistent storage record (1e8 floats) behind a 24-element tensor:
    a compressed archive may expand to no more than its tensors use, so it is refused naming the
    tensor."""
    small_config().to_json_file(tmp_path / "config.json")
    pickled = _pickled_state({"embeddings.LayerNorm.weight":
                              ("0", "FloatStorage", BOMB // 4, 0, (24,), (1,))})
    write_archive(tmp_path / "pytorch_model.bin", pickled, {"0": BOMB}, zipfile.ZIP_DEFLATED)
    assert_refused_before_allocating(load_bounded(tmp_path), f"{tmp_path / 'pytorch_model.bin'}: storage 0",
                           f"inflates to {BOMB // 4} elements but its tensors "
                           "(embeddings.LayerNorm.weight) use 24")


def test_a_slice_saved_by_torch_reads_only_what_it_reaches(tmp_path):
    """torch.save of a slice keeps its whole (uncompressed) storage: it loads, equal to the
    slice, and only the storage's first elements up to the slice's end are read."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.arange(10.0)[2:5], "m": torch.arange(12.0).reshape(3, 4)[:, 1]}, path)
    state = hf.read_pytorch_bin(path)
    np.testing.assert_array_equal(state["w"], [2, 3, 4])
    np.testing.assert_array_equal(state["m"], [1, 5, 9])
    assert state["w"].flags.writeable and state["m"].flags.c_contiguous


def test_an_oversized_pickle_is_refused_unread(tmp_path):
    """data.pkl itself inflating to 384 MB (one bytes object, opcode BINBYTES8): a state_dict's
    pickle holds names and tensor records, so one above hf.MAX_HEADER_BYTES is refused unread."""
    small_config().to_json_file(tmp_path / "config.json")
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data.pkl", "w", force_zip64=True) as f:
            f.write(b"\x80\x04\x8e" + BOMB.to_bytes(8, "little"))
            for _ in range(BOMB // 2 ** 24):
                f.write(bytes(2 ** 24))
            f.write(b".")
    assert_refused_before_allocating(load_bounded(tmp_path), f"{path}: archive/data.pkl holds {BOMB + 12} "
                           "bytes, more than a state_dict pickle needs")


@pytest.fixture(scope="module")
def minilm_bin(minilm_dir, tmp_path_factory):
    """all-MiniLM-L6-v2 as a torch.save pytorch_model.bin (what transformers 4 wrote)."""
    torch = pytest.importorskip("torch")
    directory = tmp_path_factory.mktemp("minilm_bin")
    state = hf.read_state_dict(minilm_dir)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, directory / hf.PYTORCH_NAME)
    (directory / "config.json").write_bytes((Path(minilm_dir) / "config.json").read_bytes())
    return directory


@pytest.mark.parametrize("form", ["model.safetensors", "pytorch_model.bin"])
def test_loading_reads_the_weights_once_into_the_model(form, minilm_dir, minilm_bin, monkeypatch):
    """Peak traced memory of BertModel.from_pretrained(all-MiniLM-L6-v2) against the size of its
    weights file (90.9 MB): at most 1.1x in float32 (the model's arrays are 1.0x; the old path
    held the file, a copy, a random initialisation and the converted weights: 3.0x), at most
    2.1x in float64 (whose arrays alone are 2x). And nothing is drawn at random: every parameter
    comes from the file."""
    drawn = []
    original = bert_np.models.init_param
    monkeypatch.setattr(bert_np.models, "init_param",
                        lambda name, *a, **k: drawn.append(name) or original(name, *a, **k))
    directory = minilm_dir if form == "model.safetensors" else minilm_bin
    size = (Path(directory) / form).stat().st_size
    for dtype, bound in ((np.float32, 1.1), (np.float64, 2.1)):
        tracemalloc.start()
        try:
            model = bert_np.BertModel.from_pretrained(directory, dtype=dtype)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= bound * size, f"{dtype.__name__}: peak {peak / size:.2f}x the file"
        del model
    assert drawn == []


def test_a_new_head_gets_the_values_a_full_initialisation_gives_it(tmp_path):
    """Only the head missing from the checkpoint is initialised, and to the numbers a model built
    from scratch with the same seed holds (the draws of the loaded parameters are skipped, not
    left out), so a fine-tuning run started from a checkpoint is as before."""
    saved(tmp_path, bert_np.BertForPreTraining)
    for dtype in (np.float32, np.float64):
        loaded = bert_np.BertForSequenceClassification.from_pretrained(tmp_path, seed=7,
                                                                       dtype=dtype)
        fresh = bert_np.BertForSequenceClassification(small_config(), seed=7, dtype=dtype)
        for key in ("classifier.weight", "classifier.bias"):
            np.testing.assert_array_equal(loaded.params[key], fresh.params[key])
        assert loaded.params["classifier.weight"].dtype == dtype


def test_every_loaded_parameter_is_its_own_writable_array(tmp_path):
    """An untied decoder stored with one bias under both names still gives two arrays (training
    updates them in place); every array is writable, C-contiguous and in the model's dtype."""
    saved(tmp_path, bert_np.BertForMaskedLM, tie_word_embeddings=False)
    model = bert_np.BertForMaskedLM.from_pretrained(tmp_path, strict=True)
    ids = {id(p) for p in model.params.values()}
    assert len(ids) == len(model.params)
    for key, p in model.params.items():
        assert p.flags.writeable and p.flags.c_contiguous and p.dtype == np.float32, key


# ================================================================ 2. fields and names

def test_id2label_as_a_list_or_with_integer_keys_is_normalised(tmp_path):
    """A list of names and {"0": ...} string keys (as JSON writes them) both become {0: name};
    the model saves, and transformers reads the same names back."""
    saved(tmp_path, bert_np.BertForSequenceClassification, num_labels=2)
    for id2label in (["neg", "pos"], {"0": "neg", "1": "pos"}, {0: "neg", 1: "pos"}):
        edit_config(tmp_path, id2label=id2label)
        model = bert_np.BertForSequenceClassification.from_pretrained(tmp_path)
        assert model.config.id2label == {0: "neg", 1: "pos"}
        model.save_pretrained(tmp_path / "again")
        again = json.loads((tmp_path / "again" / "config.json").read_text())
        assert again["id2label"] == {"0": "neg", "1": "pos"}
        assert again["label2id"] == {"neg": 0, "pos": 1}
    transformers = pytest.importorskip("transformers")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "again").id2label == {0: "neg",
                                                                                   1: "pos"}


@pytest.mark.parametrize("id2label, message", [
    ({"a": "neg", "b": "pos"}, "BertConfig.id2label keys must be the class ids 0 to 1, got 'a'"),
    ({"1": "neg", "2": "pos"}, "BertConfig.id2label keys must be the class ids 0 to 1, got 2"),
    ({"0": "neg", "1": 7}, "BertConfig.id2label names must be strings, got 7"),
])
def test_id2label_that_cannot_be_saved_is_refused_at_load(tmp_path, id2label, message):
    saved(tmp_path, bert_np.BertForSequenceClassification, num_labels=2)
    edit_config(tmp_path, id2label=id2label)
    with pytest.raises(ValueError, match=f"{tmp_path / 'config.json'}: {message}"):
        bert_np.BertForSequenceClassification.from_pretrained(tmp_path)


def test_an_unknown_override_is_refused_with_the_close_match(tmp_path):
    """from_pretrained(d, num_label=3): a typo would be kept as an unused field and the model
    would silently have the checkpoint's labels."""
    saved(tmp_path)
    with pytest.raises(ValueError, match=r"from_pretrained: unknown config field 'num_label' "
                                         r"\(did you mean 'num_labels'\?\)"):
        bert_np.BertForSequenceClassification.from_pretrained(tmp_path, num_label=3)
    with pytest.raises(ValueError, match=r"unknown config field 'colour'; the fields are "):
        bert_np.BertForSequenceClassification.from_pretrained(tmp_path, colour=3)


def rewrite_keys(directory, rename):
    """Rewrite model.safetensors with the keys `rename(state)` returns (a new dict)."""
    from safetensors.numpy import save_file
    state = hf.read_state_dict(directory)
    save_file(rename(state), str(Path(directory) / hf.SAFETENSORS_NAME))


@pytest.mark.parametrize("first, second", [
    ("bert.embeddings.LayerNorm.weight", "embeddings.LayerNorm.weight"),
    ("bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.gamma"),
])
def test_keys_that_become_one_name_are_refused_naming_both(tmp_path, first, second):
    """Two tensors renamed to one parameter (a prefixed and a bare key, a TF-era gamma beside
    weight): whichever came last would win silently, even with strict=True; both are named (in
    sorted order)."""
    saved(tmp_path, bert_np.BertForPreTraining)
    rewrite_keys(tmp_path, lambda s: {**s, second: s[first] + 1})
    a, b = sorted((first, second))
    for strict in (True, False):
        with pytest.raises(hf.CheckpointError, match=f"checkpoint {tmp_path}: the keys {a} "
                                                     f"and {b} both name "
                                                     "bert.embeddings.LayerNorm.weight"):
            bert_np.BertForPreTraining.from_pretrained(tmp_path, strict=strict)


def test_fields_that_run_code_in_transformers_are_not_saved_again(tmp_path):
    """auto_map / trust_remote_code make transformers import code named by the config; a model
    saved by bert_np is plain BERT, so they are not written back (other unknown fields are)."""
    saved(tmp_path)
    edit_config(tmp_path, auto_map={"AutoModel": "x.Y"}, trust_remote_code=True, note="kept")
    bert_np.BertModel.from_pretrained(tmp_path).save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert "auto_map" not in again and "trust_remote_code" not in again
    assert again["note"] == "kept"


def test_shards_without_their_index_are_named_as_such(tmp_path):
    """Sharded checkpoints load; shards whose index is missing get an error that says so."""
    model = bert_np.BertModel(small_config(), seed=0)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    (tmp_path / hf.SAFETENSORS_INDEX_NAME).unlink()
    with pytest.raises(hf.CheckpointError, match=r"holds the shards model-00001-of-0000\d"
                                                 r"\.safetensors, .* but not their index "
                                                 r"model\.safetensors\.index\.json"):
        bert_np.BertModel.from_pretrained(tmp_path)


def test_a_ddp_module_prefix_on_every_key_is_removed(tmp_path):
    """torch DistributedDataParallel saves `module.`-prefixed keys; when every key has it, it
    is dropped (strict loading gives the original parameters); a partial prefix is not."""
    model = saved(tmp_path, bert_np.BertForPreTraining)
    rewrite_keys(tmp_path, lambda s: {"module." + k: v for k, v in s.items()})
    loaded = bert_np.BertForPreTraining.from_pretrained(tmp_path, strict=True)
    for key, value in model.params.items():
        np.testing.assert_array_equal(loaded.params[key], value)
    rewrite_keys(tmp_path, lambda s: {**s, "bert.pooler.dense.bias": s["module.bert.pooler.dense.bias"]})
    with pytest.raises(hf.CheckpointError, match="unexpected keys"):
        bert_np.BertForPreTraining.from_pretrained(tmp_path, strict=True)
