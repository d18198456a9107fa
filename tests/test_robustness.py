"""What bert_np does with bad input, damaged files and failures mid-run: every case here must end
in a clear error that names the argument (or file, key, step) and the problem, or in a documented,
reported behaviour, never in a NaN, a silent wrong result, a half-written file or executed code.

Sections: 1 model inputs and labels, configs; 2 checkpoints (key checks, damaged files, pickles,
atomic saves); 3 training (non-finite losses, resume); 4 data and tokenizer.
Comparisons with transformers use the tolerances of test_parity.py (float64 1e-10 relative for
outputs, 1e-9 for gradients; float32 1e-5 absolute) for the same reasons given there.
"""
import json
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import bert_np
from bert_np import hf
from bert_np.train import checkpoints, loop
from bert_np.data.prepare import DataFormatError, convert_task
from bert_np.data.pretraining import PretrainingDataset, read_documents, tokenize_documents
from bert_np.data.tasks import load_jsonl
from bert_np.tokenization import SPECIAL_TOKENS, BertTokenizer
from reference import abs_error, perturb_params, rel_error, to_transformers, torch_inputs
import toy_data
from toy_data import tiny_examples


def small_config(**kw):
    fields = dict(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=40, max_position_embeddings=16, num_labels=3,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    fields.update(kw)
    return bert_np.BertConfig(**fields)


@pytest.fixture(scope="module")
def model():
    return bert_np.BertForPreTraining(small_config(), seed=0, dtype=np.float64)


def good_inputs():
    ids = np.arange(10, dtype=np.int64).reshape(2, 5) + 5
    return dict(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=np.ones_like(ids))


# ================================================================ 1. model inputs and labels

def with_(**changes):
    inputs = good_inputs()
    inputs.update(changes)
    return inputs


BAD_INPUTS = {
    # what is wrong: (inputs, the error message must match)
    "id >= vocab_size": (with_(input_ids=[[5, 60, 6, 7, 8], [1, 2, 3, 4, 5]]),
                         r"input_ids holds 60 \(not below vocab_size=60\)"),
    "negative id": (with_(input_ids=[[5, -1, 6, 7, 8], [1, 2, 3, 4, 5]]),
                    r"input_ids holds -1 \(negative\)"),
    "non-integer id": (with_(input_ids=np.full((2, 5), 1.5)),
                       r"input_ids must hold integers.*non-integer value 1.5"),
    "NaN id": (with_(input_ids=np.full((2, 5), np.nan)), r"input_ids must hold integers.*nan"),
    "string ids": (with_(input_ids=[["a"] * 5] * 2), r"input_ids must hold integers, got dtype <U1"),
    "bool ids": (with_(input_ids=np.ones((2, 5), bool)), r"input_ids must hold integers, got dtype bool"),
    "1-D ids": (dict(input_ids=[5, 6, 7]), r"input_ids must be 2-D.*got shape \(3,\).*\[None, :\]"),
    "3-D ids": (dict(input_ids=np.ones((2, 5, 1), int)), r"input_ids must be 2-D.*\(2, 5, 1\)"),
    "ragged list": (dict(input_ids=[[5, 6, 7], [8, 9]]), r"input_ids must be a rectangular array"),
    "empty batch (0, 5)": (dict(input_ids=np.zeros((0, 5), int)), r"input_ids is an empty batch"),
    "empty list": (dict(input_ids=[]), r"input_ids is an empty batch"),
    "empty rows": (dict(input_ids=[[], []]), r"input_ids is an empty batch"),
    "too long": (dict(input_ids=np.ones((1, 17), int)),
                 r"input_ids has sequence length 17, longer than max_position_embeddings \(16\)"),
    "token type >= type_vocab_size": (with_(token_type_ids=np.full((2, 5), 2)),
                                      r"token_type_ids holds 2 \(not below type_vocab_size=2\)"),
    "negative token type": (with_(token_type_ids=np.full((2, 5), -1)), r"token_type_ids holds -1"),
    "token types of another shape": (with_(token_type_ids=np.zeros((2, 4), int)),
                                     r"token_type_ids has shape \(2, 4\), expected \(2, 5\)"),
    "mask of another shape": (with_(attention_mask=np.ones((5, 2), int)),
                              r"attention_mask has shape \(5, 2\), expected \(2, 5\)"),
    "mask value 2": (with_(attention_mask=np.full((2, 5), 2)),
                     r"attention_mask must hold only 0 \(padding\) and 1 \(token\), found 2"),
    "ragged mask": (with_(attention_mask=[[1, 1, 1, 1, 1], [1]]),
                    r"attention_mask must be a rectangular array"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_model_input_is_a_value_error_naming_argument_and_problem(model, case):
    inputs, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        model.forward(**inputs)
    with pytest.raises(ValueError, match=message):  # the training entry point checks the same
        model.loss_and_grads(**inputs, next_sentence_label=[0] * len(inputs["input_ids"]))


@pytest.mark.parametrize("class_name", ["BertModel", "BertForMaskedLM",
                                        "BertForSequenceClassification"])
def test_every_model_class_checks_its_inputs(class_name):
    m = getattr(bert_np, class_name)(small_config(), dtype=np.float32)
    with pytest.raises(ValueError, match="input_ids holds 99"):
        m.forward(np.array([[1, 99]]))


def test_equivalent_spellings_of_valid_input_give_identical_outputs(model):
    """A bool mask (as transformers accepts), whole-number floats, int32 and nested lists are the
    same input as int64 arrays: outputs are compared for exact equality."""
    inputs = good_inputs()
    inputs["attention_mask"][1, 3:] = 0
    reference = model.forward(**inputs)["prediction_logits"]
    variants = [dict(inputs, attention_mask=inputs["attention_mask"].astype(bool)),
                dict(inputs, input_ids=inputs["input_ids"].astype(np.float64)),
                {k: v.astype(np.int32) for k, v in inputs.items()},
                {k: v.tolist() for k, v in inputs.items()}]
    for variant in variants:
        np.testing.assert_array_equal(model.forward(**variant)["prediction_logits"], reference)


BAD_LABELS = {
    "MLM label >= vocab_size": ("BertForMaskedLM", dict(labels=np.full((2, 5), 60)),
                                r"labels holds 60, outside \[0, 60\) and not the ignore index -100"),
    "MLM label -1": ("BertForMaskedLM", dict(labels=np.full((2, 5), -1)), r"labels holds -1"),
    "MLM labels of another shape": ("BertForMaskedLM", dict(labels=np.zeros((2, 4), int)),
                                    r"labels has shape \(2, 4\), expected \(2, 5\)"),
    "NSP label 2": ("BertForPreTraining", dict(next_sentence_label=[0, 2]),
                    r"next_sentence_label holds 2, outside \[0, 2\)"),
    "class 3 of 3": ("BertForSequenceClassification", dict(labels=[0, 3]),
                     r"labels holds 3, outside \[0, 3\)"),
    "float class 0.5": ("BertForSequenceClassification", dict(labels=[0.5, 1.0]),
                        r"labels must hold integers.*non-integer value 0.5"),
    "NaN class": ("BertForSequenceClassification", dict(labels=[np.nan, 1.0]),
                  r"labels must hold integers.*nan"),
    "class labels (B, 1)": ("BertForSequenceClassification", dict(labels=[[0], [1]]),
                            r"labels has shape \(2, 1\), expected \(2,\)"),
    "ragged labels": ("BertForSequenceClassification", dict(labels=[[0], [1, 2]]),
                      r"labels must be a rectangular array"),
    "regression NaN": ("regression", dict(labels=[0.5, np.nan]),
                       r"labels holds nan at row 1; regression labels must be finite"),
    "regression inf": ("regression", dict(labels=[np.inf, 0.5]),
                       r"labels holds inf at row 0; regression labels must be finite"),
    "regression strings": ("regression", dict(labels=["high", "low"]),
                           r"labels must hold real numbers for regression"),
    "regression (3,) for B=2": ("regression", dict(labels=[0.1, 0.2, 0.3]),
                                r"labels must have shape \(2,\) for regression, got \(3,\)"),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_labels_are_a_value_error_naming_them(case):
    class_name, labels, message = BAD_LABELS[case]
    cfg = small_config(num_labels=1) if class_name == "regression" else small_config()
    m = getattr(bert_np, "BertForSequenceClassification" if class_name == "regression"
                else class_name)(cfg, dtype=np.float64)
    with pytest.raises(ValueError, match=message):
        m.loss_and_grads(**good_inputs(), **labels)


def test_whole_number_float_class_labels_are_the_class_ids():
    m = bert_np.BertForSequenceClassification(small_config(), dtype=np.float64)
    loss_int, _ = m.loss_and_grads(**good_inputs(), labels=[0, 2])
    loss_float, _ = m.loss_and_grads(**good_inputs(), labels=np.array([0.0, 2.0]))
    assert loss_int == loss_float


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-10)])
def test_fully_masked_row_behaves_as_transformers_and_is_finite(dtype, tol):
    """Row 0's attention mask is all zero. transformers (eager) fills every masked score with the
    dtype's minimum, so that row attends uniformly to its (padding) keys; we must give the same
    numbers, not NaN, and the other row must be unaffected. Compared: logits and the loss
    (float32: abs 1e-5; float64: rel 1e-10), and in float64 every parameter gradient (rel 1e-9,
    key.bias abs 1e-12 as in test_parity)."""
    torch = pytest.importorskip("torch")
    m = bert_np.BertForSequenceClassification(small_config(), seed=1, dtype=dtype)
    perturb_params(m, 2)
    inputs = good_inputs()
    inputs["attention_mask"][0] = 0
    inputs["attention_mask"][1, 3:] = 0
    labels = np.array([1, 2])
    hf_model = to_transformers(m)
    out = hf_model(**torch_inputs(**inputs), labels=torch.tensor(labels))
    ours = m.forward(**inputs)["logits"]
    assert np.isfinite(ours).all()
    err = abs_error if dtype == np.float32 else rel_error
    assert err(ours, out.logits.detach().numpy()) <= tol
    loss, grads = m.loss_and_grads(**inputs, labels=labels)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    assert abs(loss - out.loss.item()) <= tol * max(1.0, abs(out.loss.item()))
    # the real row does not see row 0: its logits equal those of a batch without row 0
    alone = m.forward(**{k: v[1:] for k, v in inputs.items()})["logits"]
    np.testing.assert_allclose(ours[1:], alone, rtol=0, atol=1e-5 if dtype == np.float32 else 1e-12)
    if dtype == np.float64:
        out.loss.backward()
        for name, p in hf_model.named_parameters():
            if name.endswith("attention.self.key.bias"):
                assert abs_error(grads[name], p.grad.numpy()) <= 1e-12, name
            else:
                assert rel_error(grads[name], p.grad.numpy()) <= 1e-9, name


BAD_CONFIGS = {
    "hidden not divisible by heads": (dict(hidden_size=10, num_attention_heads=3),
                                      r"hidden_size \(10\) must be divisible by num_attention_heads \(3\)"),
    "zero layers": (dict(num_hidden_layers=0), r"num_hidden_layers must be a positive integer, got 0"),
    "negative vocab": (dict(vocab_size=-5), r"vocab_size must be a positive integer, got -5"),
    "float hidden size": (dict(hidden_size=64.0), r"hidden_size must be a positive integer, got 64.0"),
    "zero max positions": (dict(max_position_embeddings=0), r"max_position_embeddings must be a positive"),
    "unknown activation": (dict(hidden_act="swish"), r"hidden_act 'swish' is not supported"),
    "dropout 1.0": (dict(hidden_dropout_prob=1.0), r"hidden_dropout_prob must be in \[0, 1\)"),
    "eps 0": (dict(layer_norm_eps=0.0), r"layer_norm_eps must be positive"),
    "pad id outside vocab": (dict(vocab_size=10, pad_token_id=10), r"pad_token_id \(10\)"),
    "negative init range": (dict(initializer_range=-0.02), r"initializer_range must be a finite number"),
    "id2label of 2, num_labels 3": (dict(num_labels=3, id2label={0: "a", 1: "b"}),
                                    r"id2label has 2 labels but num_labels is 3"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_invalid_config_is_rejected_when_made(case):
    fields, message = BAD_CONFIGS[case]
    with pytest.raises(ValueError, match=message):
        bert_np.BertConfig(**fields)


def test_config_json_with_an_unsupported_variant_is_rejected(tmp_path):
    """A relative-position BERT would load and compute something else: refused by name."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert", "position_embedding_type": "relative_key"}))
    with pytest.raises(ValueError, match="position_embedding_type='relative_key' is not supported"):
        bert_np.BertConfig.from_json_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="a config must be a JSON object, got list"):
        bert_np.BertConfig.from_json_file(path)
    path.write_text('{"hidden_size": 12')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        bert_np.BertConfig.from_json_file(path)
    path.write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="describes a 'gpt2' model, not a BERT"):
        bert_np.BertConfig.from_json_file(path)


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(tmp_path):
    """A model whose embedding table is smaller than the tokenizer's vocabulary: loading it for
    fine-tuning names both sizes; feeding it an id it lacks names the id and vocab_size."""
    from bert_np.train.finetune import load_classifier
    bert_np.BertModel(small_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="the tokenizer has 100 tokens, the model only 60"):
        load_classifier(str(tmp_path), 2, vocab_size=100, seed=0, dtype=np.float32,
                        max_seq_length=16)
    with pytest.raises(ValueError, match="max_seq_length 32 exceeds the model's max_position_embeddings 16"):
        load_classifier(str(tmp_path), 2, vocab_size=60, seed=0, dtype=np.float32, max_seq_length=32)
    with pytest.raises(ValueError, match=r"input_ids holds 80 \(not below vocab_size=60\)"):
        bert_np.BertModel(small_config()).forward([[2, 80, 3]])


# ================================================================ 2. checkpoints

def saved(tmp_path, cls=bert_np.BertForPreTraining, seed=0, **cfg):
    m = cls(small_config(**cfg), seed=seed, dtype=np.float32)
    perturb_params(m, seed + 1)
    m.save_pretrained(tmp_path)
    return m


def rewrite_weights(directory, change):
    from safetensors.numpy import save_file
    state = hf.read_state_dict(directory)
    change(state)
    save_file(state, str(Path(directory) / hf.SAFETENSORS_NAME))


def test_mismatched_keys_are_listed_each_by_kind(tmp_path):
    """One missing, one unexpected and one wrongly shaped encoder key: the error lists each under
    its heading, with both shapes for the wrong one, and nothing is loaded."""
    saved(tmp_path)

    def damage(state):
        del state["bert.encoder.layer.1.output.dense.bias"]
        state["bert.encoder.layer.9.extra.weight"] = np.zeros(3, np.float32)
        state["bert.embeddings.word_embeddings.weight"] = np.zeros((61, 24), np.float32)
    rewrite_weights(tmp_path, damage)
    for strict in (True, False):  # the encoder must match even in non-strict mode
        with pytest.raises(hf.CheckpointError) as info:
            bert_np.BertForPreTraining.from_pretrained(tmp_path, strict=strict)
        message = str(info.value)
        assert "missing keys (1):\n    bert.encoder.layer.1.output.dense.bias" in message
        assert "unexpected keys (1):\n    bert.encoder.layer.9.extra.weight" in message
        assert ("wrongly shaped keys (1):\n    bert.embeddings.word_embeddings.weight: "
                "checkpoint (61, 24) vs model (60, 24)") in message


def test_non_strict_loading_initialises_a_new_head_and_says_so(tmp_path, caplog):
    pretrained = saved(tmp_path)  # a pretraining checkpoint: MLM + NSP heads, no classifier
    clf = bert_np.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    assert clf.loading_info["initialised"] == ["classifier.bias", "classifier.weight"]
    assert "cls.seq_relationship.weight" in clf.loading_info["ignored"]
    assert "initialised: classifier.bias, classifier.weight" in caplog.text
    key = "bert.encoder.layer.0.attention.self.query.weight"
    np.testing.assert_array_equal(clf.params[key], pretrained.params[key])
    with pytest.raises(hf.CheckpointError, match=r"missing keys \(2\):\n    classifier.bias"):
        bert_np.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=4, strict=True)


def test_non_finite_weights_in_a_checkpoint_are_refused(tmp_path):
    saved(tmp_path)
    rewrite_weights(tmp_path, lambda s: s["bert.pooler.dense.bias"].__setitem__(3, np.nan))
    with pytest.raises(hf.CheckpointError, match=r"NaN or infinite values in 1 tensor\(s\): "
                                                 r"bert.pooler.dense.bias"):
        bert_np.BertForPreTraining.from_pretrained(tmp_path)


def _damage(kind, raw):
    header = int.from_bytes(raw[:8], "little") + 8
    return {"empty file": b"",
            "cut in the header": raw[:20],
            "cut in the data": raw[:len(raw) // 2],
            "last byte missing": raw[:-1],
            "random bytes": np.random.default_rng(0).bytes(len(raw)),
            "header length absurd": (10 ** 15).to_bytes(8, "little") + raw[8:],
            "header not JSON": raw[:8] + b"!" + raw[9:],
            "data bytes overwritten": raw[:header + 40] + b"\x00" * 64 + raw[header + 104:],
            }[kind]


@pytest.mark.parametrize("kind", ["empty file", "cut in the header", "cut in the data",
                                  "last byte missing", "random bytes", "header length absurd",
                                  "header not JSON", "data bytes overwritten"])
def test_truncated_or_corrupted_safetensors_is_a_clear_error(tmp_path, kind):
    """A damaged header is caught by the safetensors format itself; damaged tensor data (same
    length, so the format cannot see it) by the checksum bert_np stores in the metadata."""
    saved(tmp_path)
    path = tmp_path / hf.SAFETENSORS_NAME
    path.write_bytes(_damage(kind, path.read_bytes()))
    message = ("is corrupted: its tensor data does not match the checksum"
               if kind == "data bytes overwritten" else "is truncated or corrupted and cannot be read")
    with pytest.raises(hf.CheckpointError, match=message):
        bert_np.BertForPreTraining.from_pretrained(tmp_path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(hf.CheckpointError, match="has no config.json"):
        bert_np.BertModel.from_pretrained(tmp_path)
    small_config().to_json_file(tmp_path / "config.json")
    with pytest.raises(hf.CheckpointError, match="holds neither model.safetensors nor pytorch_model.bin"):
        bert_np.BertModel.from_pretrained(tmp_path)


# ---- pytorch_model.bin: a restricted unpickler

class _Payload:
    """Unpickling this runs `func(*args)`: the classic pickle exploit."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(sentinel):
    import builtins
    import subprocess
    return {"os.system": _Payload(os.system, f"touch {sentinel}"),
            "builtins.exec": _Payload(builtins.exec, f"open({str(sentinel)!r}, 'w').close()"),
            "subprocess.call": _Payload(subprocess.call, ["touch", str(sentinel)]),
            "builtins.open": _Payload(builtins.open, str(sentinel), "w")}


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "subprocess.call", "builtins.open"])
@pytest.mark.parametrize("wrapper", ["bare pickle", "inside a real torch.save archive"])
def test_malicious_pytorch_bin_is_refused_and_nothing_runs(tmp_path, payload, wrapper):
    """The payload would create `sentinel` when unpickled (checked at the end with plain pickle).
    Loaded through bert_np it must be refused by name and the sentinel must not exist."""
    sentinel = tmp_path / "EXPLOITED"
    evil = _payloads(sentinel)[payload]
    path = tmp_path / "pytorch_model.bin"
    if wrapper == "bare pickle":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", pickle.dumps({"x": evil}))
    else:
        torch = pytest.importorskip("torch")
        torch.save({"embeddings.LayerNorm.weight": torch.ones(24), "evil": evil}, path)
    small_config().to_json_file(tmp_path / "config.json")
    with pytest.raises(hf.CheckpointError, match=r"refusing to load \S+ from a checkpoint pickle"):
        bert_np.BertModel.from_pretrained(tmp_path)
    assert not sentinel.exists()
    pickle.loads(pickle.dumps(evil))  # the payload is real: an unrestricted unpickler runs it
    assert sentinel.exists()


def _crafted_tensor_archive(path, size, stride, offset=0, storage_elements=4):
    """A torch.save-style archive whose one tensor claims `size`/`stride` over a storage of
    `storage_elements` floats (a real torch.save never writes a view beyond its storage)."""
    torch = pytest.importorskip("torch")

    class Storage:
        pass

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (Storage(), offset, size, stride, False, OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", storage_elements)
            return None

    import io
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": Tensor()})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buffer.getvalue())
        zf.writestr("archive/data/0", np.arange(storage_elements, dtype=np.float32).tobytes())


def test_crafted_tensor_views_cannot_read_outside_their_storage(tmp_path):
    """as_strided does no bounds checks: without ours, a crafted size/stride would read (or
    crash on) arbitrary memory. A view inside the storage still loads."""
    path = tmp_path / "pytorch_model.bin"
    _crafted_tensor_archive(path, (2, 2), (1, 2))
    np.testing.assert_array_equal(hf.read_pytorch_bin(path)["w"], [[0, 2], [1, 3]])
    for size, stride, offset in [((1000,), (1,), 0), ((2,), (10 ** 9,), 0), ((4,), (1,), 1),
                                 ((2,), (-1,), 0), ((2, 2), (1,), 0)]:
        _crafted_tensor_archive(path, size, stride, offset)
        with pytest.raises(hf.CheckpointError, match="malformed tensor"):
            hf.read_pytorch_bin(path)


def test_damaged_pytorch_bin_is_a_clear_error(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(3)}, path)
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(hf.CheckpointError, match="is not a readable torch zip archive"):
        hf.read_pytorch_bin(path)
    path.write_bytes(b"\x80\x02}q\x00.")  # a legacy (pre-zip) torch pickle
    with pytest.raises(hf.CheckpointError, match="is not a readable torch zip archive"):
        hf.read_pytorch_bin(path)


# ---- atomic saving

def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())}


class InjectedFailure(Exception):
    pass


def fail_when(monkeypatch, target, should_fail):
    """Replace `target` (a "module.attr" string) by a version that raises InjectedFailure when
    should_fail(*args) is true, and otherwise does what the original does."""
    import importlib
    module_name, attr = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    original = getattr(module, attr)

    def flaky(*args, **kwargs):
        if should_fail(*args, **kwargs):
            raise InjectedFailure(f"{target} failed on purpose")
        return original(*args, **kwargs)
    monkeypatch.setattr(module, attr, flaky)


def half_written_safetensors(path, tensors, metadata=None):
    Path(path).write_bytes(b"\x10\x00\x00\x00")  # a few bytes of a file, then the crash
    raise InjectedFailure("write_safetensors failed half-way")


@pytest.mark.parametrize("failure", ["weights write", "config write", "weights rename",
                                     "config rename", "interrupt in config rename"])
def test_a_failure_mid_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, failure):
    """Save model A, then fail while saving model B (different weights and a different config)
    into the same directory: the directory must hold A's two files byte for byte, load as A, and
    keep no temporary files. The second rename is the dangerous one: the new weights are already
    in place, so the old ones must be put back, or B's weights would sit beside A's config."""
    a = saved(tmp_path, bert_np.BertForSequenceClassification, seed=0)
    before = snapshot(tmp_path)
    b = bert_np.BertForSequenceClassification(small_config(num_labels=3, hidden_act="relu"), seed=5)
    error = KeyboardInterrupt if failure.startswith("interrupt") else InjectedFailure
    if failure == "weights write":
        monkeypatch.setattr(hf, "write_safetensors", half_written_safetensors)
    elif failure == "config write":
        def failing_write_text(self, *args, **kwargs):
            raise InjectedFailure("write_text failed")
        monkeypatch.setattr(Path, "write_text", failing_write_text)
    else:
        target = hf.SAFETENSORS_NAME if failure == "weights rename" else hf.CONFIG_NAME

        def should_fail(src, dst):
            if Path(dst).name == target and Path(src).name.endswith(".tmp"):
                if error is KeyboardInterrupt:
                    raise KeyboardInterrupt
                return True
            return False
        fail_when(monkeypatch, "os.replace", should_fail)
    with pytest.raises(error):
        b.save_pretrained(tmp_path)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before  # same file names (no leftovers), same bytes
    loaded = bert_np.BertForSequenceClassification.from_pretrained(tmp_path, strict=True)
    assert loaded.config.hidden_act == "gelu"
    assert all(np.array_equal(loaded.params[k], a.params[k]) for k in a.params)
    b.save_pretrained(tmp_path)  # and the next save goes through
    assert bert_np.BertForSequenceClassification.from_pretrained(tmp_path).config.hidden_act == "relu"


def test_a_failure_mid_save_of_a_first_checkpoint_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    fail_when(monkeypatch, "os.replace", lambda src, dst: Path(dst).name == hf.CONFIG_NAME)
    with pytest.raises(InjectedFailure):
        bert_np.BertModel(small_config()).save_pretrained(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ================================================================ 3. training

@pytest.fixture(scope="module")
def corpus_and_vocab(tmp_path_factory):
    return toy_data.corpus_and_vocab(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def pretrain_settings(corpus_and_vocab, tmp_path):
    from bert_np.train.pretrain import PretrainSettings
    corpus, vocab, tokenizer = corpus_and_vocab
    cfg = small_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=32,
                       hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    cfg.to_json_file(tmp_path / "config.json")

    def make(out):
        return PretrainSettings(corpus=[str(corpus)], vocab=str(vocab), out=str(tmp_path / out),
                                config=str(tmp_path / "config.json"), steps=8, batch_size=4,
                                max_seq_length=32, max_predictions_per_seq=5, warmup_steps=2,
                                lr=1e-3, checkpoint_every=3, eval_every=100)
    return make


def poison_loss(monkeypatch, cls, at_call, value):
    """The model's loss becomes `value` (NaN or inf) at the `at_call`-th training step; the rest
    of the machinery (train_step's guard, pretrain's handling) is the real one."""
    original = cls.loss_and_grads
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        loss, grads = original(self, *args, **kwargs)
        return (value, grads) if calls["n"] == at_call else (loss, grads)
    monkeypatch.setattr(cls, "loss_and_grads", poisoned)


def logged_losses(out):
    records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_pretraining_stops_on_a_non_finite_loss_and_resumes_bit_exactly(pretrain_settings,
                                                                        monkeypatch, bad):
    """Step 5's loss is NaN/inf: the run stops with a message naming step 5 and the last good
    checkpoint (step-3), which still loads and still equals the state after step 3. Resuming from
    it then reproduces an uninterrupted run exactly (== on every logged loss and parameter)."""
    from bert_np.train.pretrain import pretrain
    reference = pretrain_settings("reference")
    pretrain(reference, progress=False)
    s = pretrain_settings("poisoned")
    poison_loss(monkeypatch, bert_np.BertForPreTraining, 5, bad)
    with pytest.raises(loop.NonFiniteLossError,
                       match=rf"step 5: loss {bad}.*last good checkpoint is \S*step-3"):
        pretrain(s, progress=False)
    monkeypatch.undo()
    good = checkpoints.latest_checkpoint(s.out)
    assert good.name == "step-3"
    assert not (Path(s.out) / "step-6").exists()
    bert_np.BertForPreTraining.from_pretrained(good, strict=True)
    pretrain(s, resume=True, progress=False)
    assert logged_losses(s.out) == logged_losses(reference.out)
    assert [step for step, _ in logged_losses(s.out)] == list(range(1, 9))
    final_a = bert_np.BertForPreTraining.from_pretrained(Path(reference.out) / "final").params
    final_b = bert_np.BertForPreTraining.from_pretrained(Path(s.out) / "final").params
    assert all(np.array_equal(final_a[k], final_b[k]) for k in final_a)


# clipping multiplies the inf gradient by 0 before the guard looks (harmless: no update follows)
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
def test_an_infinite_gradient_with_a_finite_loss_also_stops_before_the_update():
    m = bert_np.BertForSequenceClassification(small_config(), seed=0)
    before = {k: v.copy() for k, v in m.params.items()}
    opt = bert_np.optim.AdamW(m.params, lr=0.1)
    original = m.loss_and_grads

    def inf_grad(**kw):
        loss, grads = original(**kw)
        grads["classifier.bias"][0] = np.inf
        return loss, grads
    m.loss_and_grads = inf_grad
    with pytest.raises(loop.NonFiniteLossError, match=r"step 12: loss [0-9.]+, gradient norm inf"):
        loop.train_step(m, opt, dict(good_inputs(), labels=[0, 1]), 1.0, step=12)
    assert all(np.array_equal(before[k], m.params[k]) for k in before)


def finetune_settings(tmp_path, vocab, tokenizer, epochs):
    from bert_np.train.finetune import FinetuneSettings
    model_dir = tmp_path / "init"
    if not model_dir.exists():
        bert_np.BertModel(small_config(vocab_size=tokenizer.vocab_size), seed=0).save_pretrained(model_dir)
    return FinetuneSettings(task="sst2", model=str(model_dir), out=str(tmp_path / "out"),
                            epochs=epochs, batch_size=8, max_seq_length=16, vocab=str(vocab),
                            lr=1e-3)


def test_finetuning_stops_on_a_nan_loss_naming_the_step_and_keeps_best(corpus_and_vocab, tmp_path,
                                                                       monkeypatch):
    """3 batches per epoch; the loss of step 5 (epoch 2) is NaN. The run stops naming step 5, and
    best/ (written after epoch 1) still loads with its tokenizer."""
    from bert_np.train.finetune import finetune, load_for_inference
    _, vocab, tokenizer = corpus_and_vocab
    s = finetune_settings(tmp_path, vocab, tokenizer, epochs=2)
    poison_loss(monkeypatch, bert_np.BertForSequenceClassification, 5, float("nan"))
    with pytest.raises(loop.NonFiniteLossError, match=r"step 5: loss nan"):
        finetune(s, progress=False, train_examples=tiny_examples(24, 0),
                 dev_examples=tiny_examples(8, 1), log=lambda *_: None)
    model, tok = load_for_inference(str(tmp_path / "out" / "best"))
    assert tok.vocab_size == tokenizer.vocab_size and model.config.num_labels == 2


def test_a_failed_save_of_best_keeps_the_previous_best(corpus_and_vocab, tmp_path, monkeypatch):
    """Epoch 2 improves on epoch 1 (the dev metric is forced to rise), and its save of best/
    fails at the last rename: best/ must still hold epoch 1's files, byte for byte, loadable."""
    from bert_np.train import finetune as ft
    _, vocab, tokenizer = corpus_and_vocab
    s = finetune_settings(tmp_path, vocab, tokenizer, epochs=2)
    scores = iter([0.1, 0.5, 0.9])
    monkeypatch.setattr(ft, "evaluate_classifier", lambda *a, **k: {"accuracy": next(scores)})
    best = tmp_path / "out" / "best"
    saves = {"n": 0, "epoch1": None}
    original_save = bert_np.BertForSequenceClassification.save_pretrained

    def save(self, directory):
        saves["n"] += 1
        if saves["n"] == 2:
            saves["epoch1"] = snapshot(best)
            fail_when(monkeypatch, "os.replace", lambda src, dst: Path(dst).name == hf.CONFIG_NAME)
        original_save(self, directory)
    monkeypatch.setattr(bert_np.BertForSequenceClassification, "save_pretrained", save)
    with pytest.raises(InjectedFailure):
        ft.finetune(s, progress=False, train_examples=tiny_examples(24, 0),
                    dev_examples=tiny_examples(8, 1), log=lambda *_: None)
    monkeypatch.undo()
    assert snapshot(best) == saves["epoch1"]
    ft.load_for_inference(str(best))


# ================================================================ 4. data and tokenizer

@pytest.fixture(scope="module")
def tokenizer(corpus_and_vocab):
    return corpus_and_vocab[2]


NASTY_TEXTS = ["", " ", "\n\t\r", "\x00\x01\x7f", "\u200b\u200d\ufeff", "e\u0301\u0301\u0301",
               "שלום עולם", "مرحبا", "👩‍👩‍👧‍👦 🏳️‍🌈", "中文字符测试", "\u2028\u2029", "\U0010ffff",
               "[MASK] [CLS] [SEP]", "a" * 5000, "the " * 3000, "\ud7ff\ue000"]


@pytest.mark.parametrize("text", NASTY_TEXTS, ids=range(len(NASTY_TEXTS)))
def test_tokenizer_survives_arbitrary_unicode(tokenizer, text):
    """Every valid Unicode string encodes to [CLS] ... [SEP] with ids inside the vocabulary, and
    max_length is respected however long the text."""
    enc = tokenizer.encode(text, text, max_length=64)
    assert enc.input_ids[0] == tokenizer.cls_id and enc.input_ids[-1] == tokenizer.sep_id
    assert len(enc.input_ids) == len(enc.token_type_ids) <= 64
    assert all(0 <= i < tokenizer.vocab_size for i in enc.input_ids)
    tokenizer.decode(enc.input_ids)


def test_lone_surrogates_are_a_clear_error(tokenizer):
    bad = b"caf\xe9 ok".decode("utf-8", errors="surrogateescape")
    with pytest.raises(ValueError, match=r"lone surrogate U\+DCE9 at index 3"):
        tokenizer.encode(bad)
    with pytest.raises(ValueError, match="lone surrogate"):
        tokenizer.encode_plain(["fine", "\ud800"])


def test_very_long_words_become_unk_and_long_documents_truncate(tokenizer):
    assert tokenizer.tokenize("x" * 101) == ["[UNK]"]  # BERT's max_input_chars_per_word = 100
    long_text = "the quick red bird " * 50_000  # 1 MB
    enc = tokenizer.encode(long_text, max_length=128)
    assert len(enc.input_ids) == 128
    with pytest.raises(ValueError, match="more than max_length=128, and truncation=False"):
        tokenizer.encode(long_text, max_length=128, truncation=False)


def test_corpus_reader_survives_empty_lines_unicode_and_long_documents(tokenizer, tmp_path):
    """Blank and whitespace-only lines only separate documents; exotic characters tokenize; a
    document of 3,000 sentences is cut into instances no longer than max_seq_length."""
    path = tmp_path / "corpus.txt"
    long_doc = "\n".join(f"the cat sat on the mat {i}." for i in range(3000))
    path.write_text(f"\n\n  \n\t\nhappy bird 👩‍👩‍👧.\n\u200b\n\n\n{long_doc}\n\n   \n"
                    "שלום the dog.\r\nred house.\r\n", encoding="utf-8")
    documents = read_documents([path])
    assert [len(d) for d in documents] == [2, 3000, 2]
    data = PretrainingDataset(tokenize_documents(documents, tokenizer), tokenizer,
                              max_seq_length=32, batch_size=16)
    assert len(data.instances(0)) > 100
    for batch in data.batches(0):
        assert batch["input_ids"].shape[1] <= 32
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs at least 2 documents, got 0"):
        PretrainingDataset.from_files([empty], tokenizer)


def test_non_utf8_files_name_the_file(tmp_path, tokenizer):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"corpus file \S*latin1.txt is not UTF-8 text"):
        read_documents([bad])
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(b'{"text_a": "ok", "label": 1}\n{"text_a": "caf\xe9", "label": 0}\n')
    with pytest.raises(DataFormatError, match=r"rows.jsonl:2: not UTF-8 text"):
        load_jsonl(jsonl, 2)
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    (glue / "train.tsv").write_bytes(b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\n")
    with pytest.raises(DataFormatError, match=r"train.tsv: not UTF-8 text .* at line 3"):
        convert_task("sst2", tmp_path)


@pytest.mark.parametrize("row, message", [
    ('{"text": "wrong column name", "label": 1}', r"rows.jsonl:3: missing field 'text_a'"),
    ('{"text_a": "x", "text_b": "y", "label": 1}', r"rows.jsonl:3: unexpected field 'text_b'"),
    ('{"text_a": 5, "label": 1}', r"rows.jsonl:3: field 'text_a' is not a string"),
    ('{"text_a": "x", "label": "positive"}', r"rows.jsonl:3: label 'positive' is not an integer"),
    ('{"text_a": "x", "label": 1.0}', r"rows.jsonl:3: label 1.0 is not an integer"),
    ('["x", 1]', r"rows.jsonl:3: expected a JSON object, found list"),
    ('{"text_a": "x", "label": 1', r"rows.jsonl:3: invalid JSON"),
])
def test_jsonl_with_wrong_columns_names_file_line_and_field(tmp_path, row, message):
    """Line 2 is blank (skipped); line 3 is the bad one."""
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text_a": "héllo 👋 שלום", "label": 0}\n\n' + row + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=message):
        load_jsonl(path, 2, is_pair=False)


def test_zh_csv_with_a_wrong_column_count_names_the_line(tmp_path):
    (tmp_path / "zh_sentiment").mkdir()
    with zipfile.ZipFile(tmp_path / "zh_sentiment" / "online_shopping_10_cats.zip", "w") as zf:
        zf.writestr("online_shopping_10_cats.csv", "cat,label,review\n书籍,1,好\n书籍,1\n")
    with pytest.raises(DataFormatError, match=r"online_shopping_10_cats.csv:3: expected 3 fields "
                                              r"\(cat,label,review\), found 2"):
        convert_task("zh_sentiment", tmp_path)


def test_vocab_written_by_the_tokenizer_is_atomic(tokenizer, tmp_path, monkeypatch):
    """tokenizer.save rewrites vocab.txt inside checkpoints (best/ every improving epoch): a
    failure mid-write must leave the previous vocabulary whole."""
    tokenizer.save(tmp_path)
    before = snapshot(tmp_path)
    fail_when(monkeypatch, "os.replace", lambda src, dst: True)
    with pytest.raises(InjectedFailure):
        tokenizer.save(tmp_path)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert BertTokenizer.from_pretrained(tmp_path).vocab == tokenizer.vocab
    assert set(SPECIAL_TOKENS) <= set(tokenizer.vocab)
