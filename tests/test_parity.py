"""Every model class against transformers on the same weights (eager attention, dropout off).

Compared: every output tensor, the loss, and every parameter gradient.
Tolerances, and why:
  float64 outputs and loss  <= 1e-10 relative: both sides compute the same formulas in double
      precision; only the order of floating-point sums differs, which costs ~1e-15 per operation.
  float64 gradients         <= 1e-9 relative (a backward pass is twice as deep as the forward).
      attention.self.key.bias has a true gradient of exactly zero (softmax ignores a shift), so
      both sides hold rounding noise there: it is compared absolutely, <= 1e-12.
  float32 outputs           <= 1e-5 absolute: single precision carries ~6e-8 relative per
      operation; through a few layers of O(1) activations that stays well below 1e-5.
The worst figures are printed in the test summary (see conftest.py).
"""
import numpy as np
import pytest

import bert_np
from reference import (abs_error, compare_gradients, perturb_params, rel_error, to_transformers,
                       torch_inputs)

torch = pytest.importorskip("torch")

CONFIGS = {
    # a standard small shape
    "small": dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=128, max_position_embeddings=24),
    # odd: hidden size not a multiple of 64, 3 heads, intermediate not 4H, 3 token types
    "odd": dict(vocab_size=53, hidden_size=30, num_hidden_layers=2, num_attention_heads=3,
                intermediate_size=47, type_vocab_size=3, max_position_embeddings=20),
    # deeper, tanh-approximated GELU
    "deep": dict(vocab_size=71, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                 intermediate_size=100, max_position_embeddings=16, hidden_act="gelu_new"),
}
CLASSES = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
           "BertForSequenceClassification-regression"]
OUTPUTS = ("last_hidden_state", "pooler_output", "prediction_logits", "seq_relationship_logits",
           "logits")


def reference_output(hf_out, name):
    """transformers' task outputs hold no last_hidden_state field: take the last of hidden_states.
    They hold no pooler_output either (None here); BertModel's test compares it, and every task
    test compares what is computed from it (NSP and classifier logits, the pooler gradients)."""
    if name == "last_hidden_state" and not hasattr(hf_out, name):
        return hf_out.hidden_states[-1].detach().numpy()
    value = getattr(hf_out, name, None)
    return None if value is None else value.detach().numpy()


def make_batch(cfg, B, T, seed):
    """Random ids with padded rows (row 1 half padding, row 2 all but one token padding)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, cfg.vocab_size, (B, T))
    types = rng.integers(0, cfg.type_vocab_size, (B, T))
    mask = np.ones((B, T), dtype=np.int64)
    if B > 1:
        mask[1, T // 2:] = 0
    if B > 2:
        mask[2, 1:] = 0
    ids[mask == 0] = cfg.pad_token_id
    mlm = np.where(rng.random((B, T)) < 0.3, rng.integers(0, cfg.vocab_size, (B, T)), -100)
    mlm[0, 0] = 5  # at least one labelled position
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask), mlm, rng


def build(class_name, config_name, dtype, seed=0):
    fields = dict(CONFIGS[config_name])
    if class_name.endswith("-regression"):
        class_name, fields["num_labels"] = "BertForSequenceClassification", 1
    elif class_name == "BertForSequenceClassification":
        fields["num_labels"] = 3
    fields.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = getattr(bert_np, class_name)(bert_np.BertConfig(**fields), seed=seed, dtype=dtype)
    perturb_params(model, seed + 1)
    return model


def labels_for(model, B, mlm, rng):
    name = type(model).__name__
    if name == "BertForPreTraining":
        return dict(labels=mlm, next_sentence_label=rng.integers(0, 2, B))
    if name == "BertForMaskedLM":
        return dict(labels=mlm)
    if model.config.num_labels == 1:
        return dict(labels=rng.normal(size=B))
    return dict(labels=rng.integers(0, model.config.num_labels, B))


@pytest.mark.parametrize("B,T", [(3, 7), (2, 1)], ids=["padded", "T=1"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("class_name", CLASSES)
def test_float64_outputs_loss_and_gradients(class_name, config_name, B, T, parity_report):
    model = build(class_name, config_name, np.float64)
    hf_model = to_transformers(model)
    inputs, mlm, rng = make_batch(model.config, B, T, seed=42)
    ours = model.forward(**inputs)
    theirs = hf_model(**torch_inputs(**inputs), output_hidden_states=True)
    tag = f"{class_name} {config_name} B={B} T={T}"
    worst = 0.0
    for name in OUTPUTS:
        if name in ours and reference_output(theirs, name) is not None:
            err = rel_error(ours[name], reference_output(theirs, name))
            worst = max(worst, err)
            assert err <= 1e-10, f"{tag} {name}: relative error {err:.2e}"
    parity_report.append(("float64 outputs (rel)", tag, worst))
    if class_name == "BertModel":
        return
    labels = labels_for(model, B, mlm, rng)
    loss, grads = model.loss_and_grads(**inputs, **labels)
    hf_labels = {k: torch.tensor(v) for k, v in labels.items()}
    hf_out = hf_model(**torch_inputs(**inputs), **hf_labels)
    hf_out.loss.backward()
    loss_err = abs(loss - hf_out.loss.item()) / abs(hf_out.loss.item())
    assert loss_err <= 1e-10, f"{tag} loss: {loss:.17g} vs {hf_out.loss.item():.17g}"
    parity_report.append(("float64 loss (rel)", tag, loss_err))
    assert set(grads) == set(model.params)
    worst_grad, worst_key_bias = compare_gradients(grads, hf_model, tag)
    parity_report.append(("float64 gradients (rel)", tag, worst_grad))
    parity_report.append(("float64 key.bias gradient (abs)", tag, worst_key_bias))


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("class_name", CLASSES)
def test_float32_outputs(class_name, config_name, parity_report):
    model = build(class_name, config_name, np.float32)
    hf_model = to_transformers(model)
    inputs, _, _ = make_batch(model.config, 3, 9, seed=7)
    ours = model.forward(**inputs)
    theirs = hf_model(**torch_inputs(**inputs), output_hidden_states=True)
    worst = 0.0
    for name in OUTPUTS:
        if name in ours and reference_output(theirs, name) is not None:
            assert ours[name].dtype == np.float32
            err = abs_error(ours[name], reference_output(theirs, name))
            worst = max(worst, err)
            assert err <= 1e-5, f"{class_name} {config_name} {name}: absolute error {err:.2e}"
    parity_report.append(("float32 outputs (abs)", f"{class_name} {config_name}", worst))


def test_fully_padded_row_matches_transformers_and_is_finite(parity_report):
    """A row whose attention mask is all zero: transformers gives it uniform attention over the
    padding (every score equals the dtype minimum); so do we, with no NaN."""
    model = build("BertModel", "small", np.float64)
    inputs, _, _ = make_batch(model.config, 2, 6, seed=3)
    inputs["attention_mask"][0] = 0
    ours = model.forward(**inputs)
    theirs = to_transformers(model)(**torch_inputs(**inputs))
    assert np.isfinite(ours["last_hidden_state"]).all()
    err = rel_error(ours["last_hidden_state"], theirs.last_hidden_state.detach().numpy())
    parity_report.append(("float64 fully padded row (rel)", "BertModel small", err))
    assert err <= 1e-10
