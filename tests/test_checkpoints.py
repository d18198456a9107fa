"""Real pretrained weights and Hugging Face directories in and out.

Reference: transformers on the same directory. Tolerances:
  MiniLM float32 <= 1e-4 absolute: 6 layers of H=384 in single precision on real activations
      (hidden states of magnitude up to ~10) accumulate ~1e-6..1e-5 of rounding on either side.
  MiniLM float64 <= 1e-9 absolute: the same computation in double precision.
  round trips: the saved file holds the same numbers, so outputs agree to float64 rounding,
      <= 1e-12 relative.
"""
import json
import pickle
import zipfile

import numpy as np
import pytest

import bert_np
from bert_np import hf
from reference import abs_error, perturb_params, rel_error, torch_inputs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SENTENCES = [
    "The cat sat on the mat.",
    "A stirring, funny and finally transporting re-imagining of Beauty and the Beast.",
    "it 's a charming and often affecting journey .",
    "Unflinchingly bleak and desperate.",
    "BERT learns deep bidirectional representations from unlabeled text by jointly conditioning on "
    "both left and right context in all layers.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "Hello!",
    "The quick brown fox jumps over the lazy dog while the lazy dog sleeps under the old oak tree "
    "near the river bank on a warm summer afternoon.",
    "Numbers like 3.14159 and 2,718 are tokenized into several word pieces.",
]


def tokenize(vocab_file, sentences):
    tok = transformers.BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    enc = tok(sentences, padding=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "token_type_ids", "attention_mask")}


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-9)])
def test_minilm_matches_transformers_on_real_sentences(minilm_dir, dtype, tol, parity_report):
    inputs = tokenize(minilm_dir / "vocab.txt", SENTENCES)
    assert len(set(inputs["attention_mask"].sum(1))) >= 8  # sentences of different lengths
    model = bert_np.BertModel.from_pretrained(minilm_dir, dtype=dtype)
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    hf_model = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager",
                                                      dtype=torch_dtype).eval()
    ours = model.forward(**inputs)
    with torch.no_grad():
        theirs = hf_model(**torch_inputs(**inputs))
    for name in ("last_hidden_state", "pooler_output"):
        err = abs_error(ours[name], getattr(theirs, name).numpy())
        parity_report.append((f"MiniLM {np.dtype(dtype).name} {name} (abs)", "9 sentences", err))
        assert err <= tol, f"{name}: {err:.2e}"


def test_minilm_into_a_task_model_initialises_and_reports_the_head(minilm_dir, caplog):
    model = bert_np.BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)
    assert model.loading_info["initialised"] == ["classifier.bias", "classifier.weight"]
    assert "classifier.weight" in caplog.text
    plain = bert_np.BertModel.from_pretrained(minilm_dir)
    key = "encoder.layer.3.output.dense.weight"
    np.testing.assert_array_equal(model.params["bert." + key], plain.params[key])
    with pytest.raises(hf.CheckpointError, match="missing keys"):
        bert_np.BertForSequenceClassification.from_pretrained(minilm_dir, strict=True)


def small_config(**kw):
    fields = dict(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=40, max_position_embeddings=16, num_labels=3)
    fields.update(kw)
    return bert_np.BertConfig(**fields)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((3, 8), dtype=np.int64)
    mask[1, 5:] = 0
    return dict(input_ids=rng.integers(1, 60, (3, 8)), token_type_ids=rng.integers(0, 2, (3, 8)),
                attention_mask=mask)


@pytest.mark.parametrize("class_name,output", [("BertForSequenceClassification", "logits"),
                                               ("BertForPreTraining", "prediction_logits")])
def test_save_pretrained_loads_in_transformers(tmp_path, class_name, output):
    model = getattr(bert_np, class_name)(small_config(), seed=3, dtype=np.float64)
    perturb_params(model, 4)
    model.save_pretrained(tmp_path)
    hf_model = getattr(transformers, class_name).from_pretrained(
        tmp_path, attn_implementation="eager", dtype=torch.float64).eval()
    inputs = batch()
    with torch.no_grad():
        theirs = getattr(hf_model(**torch_inputs(**inputs)), output).numpy()
    assert rel_error(model.forward(**inputs)[output], theirs) <= 1e-12


def test_transformers_directory_loads_in_bert_np(tmp_path):
    torch.manual_seed(0)
    cfg = small_config()
    fields = {k: v for k, v in cfg.to_dict().items() if k != "model_type"}
    hf_model = transformers.BertForPreTraining(transformers.BertConfig(**fields)).double().eval()
    hf_model.save_pretrained(tmp_path)
    model = bert_np.BertForPreTraining.from_pretrained(tmp_path, dtype=np.float64, strict=True)
    inputs = batch(1)
    with torch.no_grad():
        theirs = hf_model(**torch_inputs(**inputs))
    ours = model.forward(**inputs)
    assert rel_error(ours["prediction_logits"], theirs.prediction_logits.numpy()) <= 1e-12
    assert rel_error(ours["seq_relationship_logits"], theirs.seq_relationship_logits.numpy()) <= 1e-12


def test_old_names_gamma_beta_and_decoder_bias_load(tmp_path):
    """TF-era checkpoints: LayerNorm.gamma/beta and only cls.predictions.decoder.bias."""
    from safetensors.numpy import save_file
    model = bert_np.BertForPreTraining(small_config(), seed=5, dtype=np.float64)
    perturb_params(model, 6)
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in model.params.items()}
    old["cls.predictions.decoder.bias"] = old.pop("cls.predictions.bias")
    save_file(old, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    loaded = bert_np.BertForPreTraining.from_pretrained(tmp_path, dtype=np.float64, strict=True)
    for k, v in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], v)


def test_pytorch_bin_loads_without_torch(tmp_path):
    model = bert_np.BertForSequenceClassification(small_config(), seed=1, dtype=np.float32)
    perturb_params(model, 2)
    torch.save({k: torch.tensor(v) for k, v in model.params.items()}, tmp_path / "pytorch_model.bin")
    model.config.to_json_file(tmp_path / "config.json")
    loaded = bert_np.BertForSequenceClassification.from_pretrained(tmp_path, strict=True)
    for k, v in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], v)


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch EXPLOITED",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"x": _Exploit()}))
    small_config().to_json_file(tmp_path / "config.json")
    with pytest.raises(hf.CheckpointError, match="refusing to load posix.system|refusing to load os.system"):
        bert_np.BertModel.from_pretrained(tmp_path)
    assert not (tmp_path / "EXPLOITED").exists()
    pickle.loads(pickle.dumps(_Exploit()))  # the payload is real: unrestricted unpickling runs it
    assert (tmp_path / "EXPLOITED").exists()
