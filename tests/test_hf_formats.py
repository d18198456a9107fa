"""Checkpoint formats met in the wild: bf16 and fp16 safetensors, sharded checkpoints (safetensors
and pytorch_model.bin index), bert_np's own sharded save.

Reference: the transformers model holding the same weights. A bf16 (fp16) checkpoint holds
rounded weights; bert_np widens them exactly to float32, so the reference is the transformers
model whose weights were rounded to bf16 (fp16) and converted back to float32: the two then hold
identical numbers (checked bit for bit) and their float32 outputs agree within 1e-4 absolute (the
float32 tolerance of test_checkpoints.py; the measured figures are ~1e-6). Sharded checkpoints
hold the unrounded weights and must give the outputs of the model that wrote them, float32
<= 1e-4 absolute, float64 <= 1e-12 relative (the same numbers, only summation order differs).
"""
import json

import numpy as np
import pytest

import bert_np
from bert_np import hf
from reference import abs_error, rel_error, torch_inputs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FIELDS = dict(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=40, max_position_embeddings=16, type_vocab_size=2)


def hf_model(class_name="BertForPreTraining", seed=0, **fields):
    """A random transformers model with every parameter perturbed (LayerNorm weights not all one,
    biases not all zero), eager attention, eval mode."""
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(**{**FIELDS, **fields}, attn_implementation="eager")
    model = getattr(transformers, class_name)(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def batch(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((3, 9), dtype=np.int64)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return dict(input_ids=rng.integers(1, FIELDS["vocab_size"], (3, 9)),
                token_type_ids=rng.integers(0, 2, (3, 9)), attention_mask=mask)


def outputs_of(model):
    with torch.no_grad():
        out = model(**torch_inputs(**batch()))
    return {"prediction_logits": out.prediction_logits.float().numpy(),
            "seq_relationship_logits": out.seq_relationship_logits.float().numpy()}


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_half_precision_safetensors_load_as_the_rounded_weights(tmp_path, half, parity_report):
    """model.to(bf16/fp16).save_pretrained: bert_np loads the file (safetensors.numpy cannot
    read bf16; bert_np parses it) and holds exactly the rounded weights, widened; its float32
    outputs match transformers' on those weights, and loading into float64 works too."""
    torch_half = getattr(torch, half)
    model = hf_model()
    model.to(torch_half).save_pretrained(tmp_path)
    header = json.loads((tmp_path / "model.safetensors").read_bytes()[8:8 + int.from_bytes(
        (tmp_path / "model.safetensors").read_bytes()[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == \
        {"BF16" if half == "bfloat16" else "F16"}
    reference = model.float()                       # the rounded weights, in float32
    ours = bert_np.BertForPreTraining.from_pretrained(tmp_path, dtype=np.float32, strict=True)
    state = dict(reference.state_dict())
    for key, value in ours.params.items():
        assert value.dtype == np.float32
        ref = state[key] if key in state else state[key.replace("cls.predictions.bias",
                                                                "cls.predictions.decoder.bias")]
        np.testing.assert_array_equal(value, ref.numpy(), err_msg=key)
    out = ours.forward(**batch())
    theirs = outputs_of(reference)
    for name, ref in theirs.items():
        err = abs_error(out[name], ref)
        parity_report.append((f"{half} checkpoint float32 (abs)", name, err))
        assert err <= 1e-4, f"{name}: {err:.2e}"
    ours64 = bert_np.BertForPreTraining.from_pretrained(tmp_path, dtype=np.float64)
    assert all(v.dtype == np.float64 for v in ours64.params.values())
    key = "bert.encoder.layer.1.output.dense.weight"
    np.testing.assert_array_equal(ours64.params[key], ours.params[key].astype(np.float64))


def test_bf16_widening_is_exact():
    """uint16 -> uint32 << 16 -> float32 reproduces torch's bf16 -> float32 conversion bit for
    bit, including signed zero, infinities, subnormals and the extremes."""
    values = torch.tensor([0.0, -0.0, 1.0, -2.5, 3.140625, 1e-40, -1e38, float("inf"),
                           float("-inf"), 65504.0, 1.1754944e-38], dtype=torch.bfloat16)
    raw = values.view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(hf.bf16_to_float32(raw).view(np.uint32),
                                  values.float().numpy().view(np.uint32))


def test_sharded_safetensors_from_transformers_load(tmp_path, parity_report):
    """save_pretrained(max_shard_size="50KB"): several shards + model.safetensors.index.json;
    bert_np loads them with the usual key and shape checks (strict: nothing missing or extra)."""
    model = hf_model()
    model.save_pretrained(tmp_path, max_shard_size="50KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (tmp_path / "model.safetensors").exists()
    ours = bert_np.BertForPreTraining.from_pretrained(tmp_path, dtype=np.float32, strict=True)
    out = ours.forward(**batch())
    for name, ref in outputs_of(model).items():
        err = abs_error(out[name], ref)
        parity_report.append(("sharded checkpoint float32 (abs)", name, err))
        assert err <= 1e-4, f"{name}: {err:.2e}"


def test_sharded_pytorch_bin_loads(tmp_path):
    """pytorch_model.bin.index.json with torch.save shards (transformers 4's layout, bf16
    included), read without torch's unpickler."""
    model = hf_model("BertForSequenceClassification", num_labels=3).to(torch.bfloat16)
    state = model.state_dict()
    keys = list(state)
    groups = [keys[:len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, group in enumerate(groups):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: state[k].contiguous() for k in group}, tmp_path / name)
        weight_map.update({k: name for k in group})
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model.config.to_json_file(tmp_path / "config.json")
    ours = bert_np.BertForSequenceClassification.from_pretrained(tmp_path, strict=True)
    for k, v in ours.params.items():
        np.testing.assert_array_equal(v, state[k].float().numpy(), err_msg=k)


def test_bert_np_sharded_save_loads_in_transformers_and_back(tmp_path):
    """bert_np save_pretrained(max_shard_size="50KB") writes shards + index that transformers
    loads (same outputs); bert_np reads them back identically; a later single-file save into the
    same directory removes the shards and index."""
    model = bert_np.BertForPreTraining(bert_np.BertConfig(**FIELDS), seed=1, dtype=np.float64)
    model.save_pretrained(tmp_path, max_shard_size="50KB")
    index = json.loads((tmp_path / hf.SAFETENSORS_INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and set(index["weight_map"]) == set(model.params)
    assert sorted(p.name for p in tmp_path.glob("model-*.safetensors")) == shards
    for shard in shards:
        assert (tmp_path / shard).stat().st_size <= 50_000 + 4096 or \
            len([k for k, v in index["weight_map"].items() if v == shard]) == 1
    hf_loaded = transformers.BertForPreTraining.from_pretrained(
        tmp_path, attn_implementation="eager", dtype=torch.float64).eval()
    with torch.no_grad():
        theirs = hf_loaded(**torch_inputs(**batch()))
    ours = model.forward(**batch())
    assert rel_error(ours["prediction_logits"], theirs.prediction_logits.numpy()) <= 1e-12
    back = bert_np.BertForPreTraining.from_pretrained(tmp_path, dtype=np.float64, strict=True)
    for k, v in model.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    model.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("model-*.safetensors"))
    assert not (tmp_path / hf.SAFETENSORS_INDEX_NAME).exists()


def test_parse_size_follows_transformers_units():
    assert hf.parse_size("50KB") == 50_000 and hf.parse_size("5GiB") == 5 * 2 ** 30
    assert hf.parse_size(1234) == 1234 and hf.parse_size("2.5MB") == 2_500_000
    with pytest.raises(ValueError, match="max_shard_size must be"):
        hf.parse_size("lots")


def _sharded(tmp_path):
    model = bert_np.BertForPreTraining(bert_np.BertConfig(**FIELDS), seed=1)
    model.save_pretrained(tmp_path, max_shard_size="50KB")
    return json.loads((tmp_path / hf.SAFETENSORS_INDEX_NAME).read_text())


def test_a_missing_shard_is_named(tmp_path):
    index = _sharded(tmp_path)
    shard = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / shard).unlink()
    with pytest.raises(hf.CheckpointError, match=f"names the shard {shard}, which is missing"):
        bert_np.BertForPreTraining.from_pretrained(tmp_path)


def test_a_shard_that_disagrees_with_the_index_is_refused(tmp_path):
    """The index moves a key to another shard: the first shard read that disagrees (the one the
    index now names lacks the key; the one holding it holds a key placed elsewhere) is refused,
    and the key named."""
    index = _sharded(tmp_path)
    key, shard = next(iter(index["weight_map"].items()))
    other = next(s for s in index["weight_map"].values() if s != shard)
    index["weight_map"][key] = other
    (tmp_path / hf.SAFETENSORS_INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(hf.CheckpointError, match=f"does not match {hf.SAFETENSORS_INDEX_NAME}: "
                                                 f"(holds keys the index places elsewhere or not "
                                                 f"at all|lacks keys the index places in it): {key}"):
        bert_np.BertForPreTraining.from_pretrained(tmp_path)


def test_a_damaged_shard_fails_its_checksum(tmp_path):
    index = _sharded(tmp_path)
    shard = tmp_path / sorted(set(index["weight_map"].values()))[0]
    raw = bytearray(shard.read_bytes())
    raw[-40:-8] = bytes(32)
    shard.write_bytes(bytes(raw))
    with pytest.raises(hf.CheckpointError, match="does not match the checksum"):
        bert_np.BertForPreTraining.from_pretrained(tmp_path)


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", ""])
def test_an_index_pointing_outside_the_directory_is_refused(tmp_path, shard):
    index = _sharded(tmp_path)
    index["weight_map"][next(iter(index["weight_map"]))] = shard
    (tmp_path / hf.SAFETENSORS_INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(hf.CheckpointError, match="is not a file name in the checkpoint directory"):
        bert_np.BertForPreTraining.from_pretrained(tmp_path)
