"""The models, inputs and labels the head tests share (test_heads.py, test_dropout_parity.py).

Every case is one transformers class on the awkward config ODD: hidden size 30 (not a multiple of
64), 3 heads of size 10, intermediate 47, 3 token types; the batch has a half-padded row and a row
with one real token (in multiple choice, such a choice in every example).
"""
import numpy as np

import bert_np
from reference import abs_error, perturb_params, rel_error

ODD = dict(vocab_size=53, hidden_size=30, num_hidden_layers=2, num_attention_heads=3,
           intermediate_size=47, type_vocab_size=3, max_position_embeddings=20)
B, T, CHOICES = 3, 7, 3

# case -> (class name, config fields)
CASES = {
    "BertModel": ("BertModel", {}),
    "TokenClassification": ("BertForTokenClassification", dict(num_labels=5)),
    "QuestionAnswering": ("BertForQuestionAnswering", {}),
    "MultipleChoice": ("BertForMultipleChoice", {}),
    "NextSentencePrediction": ("BertForNextSentencePrediction", {}),
    "SequenceClassification-multi-label": ("BertForSequenceClassification", dict(num_labels=4)),
    "SequenceClassification-multi-label-explicit": (
        "BertForSequenceClassification",
        dict(num_labels=4, problem_type="multi_label_classification")),
    "SequenceClassification-regression-3": (
        "BertForSequenceClassification", dict(num_labels=3, problem_type="regression")),
    "SequenceClassification-single-label-explicit": (
        "BertForSequenceClassification", dict(num_labels=3, problem_type="single_label_classification")),
    "MaskedLM-untied": ("BertForMaskedLM", dict(tie_word_embeddings=False)),
    "PreTraining-untied": ("BertForPreTraining", dict(tie_word_embeddings=False)),
}
OUTPUTS = ("logits", "start_logits", "end_logits", "seq_relationship_logits", "prediction_logits",
           "last_hidden_state", "pooler_output")


def build(case, dtype, seed=0, **dropout):
    """The case's model on ODD, parameters perturbed; dropout off unless `dropout` gives rates."""
    class_name, fields = CASES[case]
    rates = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **dropout}
    cfg = bert_np.BertConfig(**ODD, **fields, **rates)
    model = getattr(bert_np, class_name)(cfg, seed=seed, dtype=dtype)
    perturb_params(model, seed + 1)
    return model


def make_inputs(model, seed):
    """Random ids with padding: (B, T), or (B, CHOICES, T) for multiple choice, where every
    example has a half-padded choice and a choice with a single real token."""
    rng = np.random.default_rng(seed)
    cfg = model.config
    shape = (B, CHOICES, T) if isinstance(model, bert_np.BertForMultipleChoice) else (B, T)
    ids = rng.integers(1, cfg.vocab_size, shape)
    types = rng.integers(0, cfg.type_vocab_size, shape)
    mask = np.ones(shape, dtype=np.int64)
    if len(shape) == 2:
        mask[1, T // 2:] = 0
        mask[2, 1:] = 0
    else:
        mask[:, 1, T // 2:] = 0
        mask[:, 2, 1:] = 0
    ids[mask == 0] = cfg.pad_token_id
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask), rng


def make_labels(model, inputs, rng):
    """Labels for loss_and_grads (the same names as transformers' forward arguments)."""
    cfg = model.config
    name = type(model).__name__
    if name == "BertForTokenClassification":
        labels = rng.integers(0, cfg.num_labels, (B, T))
        labels[inputs["attention_mask"] == 0] = -100         # padding carries no label
        labels[0, 3] = -100
        return dict(labels=labels)
    if name == "BertForQuestionAnswering":
        # row 1: end beyond the input (clamped to T, ignored); row 2: negative start (clamped to 0)
        return dict(start_positions=np.array([2, 1, -4]), end_positions=np.array([5, T + 9, 0]))
    if name == "BertForMultipleChoice":
        return dict(labels=rng.integers(0, CHOICES, B))
    if name == "BertForNextSentencePrediction":
        return dict(labels=np.array([0, 1, 1]))
    if name == "BertForMaskedLM":
        return dict(labels=np.where(rng.random((B, T)) < 0.4, rng.integers(0, cfg.vocab_size, (B, T)), -100))
    if name == "BertForPreTraining":
        mlm = np.where(rng.random((B, T)) < 0.4, rng.integers(0, cfg.vocab_size, (B, T)), -100)
        mlm[0, 0] = 7
        return dict(labels=mlm, next_sentence_label=np.array([1, 0, 1]))
    problem = cfg.problem_type
    if problem in (None, "multi_label_classification"):
        return dict(labels=(rng.random((B, cfg.num_labels)) < 0.5).astype(np.float64))
    if problem == "regression":
        return dict(labels=rng.normal(size=(B, cfg.num_labels)))
    return dict(labels=rng.integers(0, cfg.num_labels, B))


def exactly_zero(model):
    """The parameters besides the key biases whose exact gradient is 0 in this head's loss."""
    name = type(model).__name__
    if name == "BertForQuestionAnswering":   # each shifts every position's start (end) logit
        last = model.config.num_hidden_layers - 1
        return {"qa_outputs.bias", f"bert.encoder.layer.{last}.output.LayerNorm.bias"}
    if name == "BertForMultipleChoice":      # shifts every choice's logit
        return {"classifier.bias"}
    return set()


def compare_outputs(ours, theirs, tol, measure, tag, report, relative=True, main=True):
    """Every output transformers returns that bert_np returns too (with main=True at least one
    task output), then the hidden states and attentions one by one; returns the worst error.
    BertForNextSentencePrediction's logits are called `logits` in transformers; bert_np returns
    them as seq_relationship_logits and, the same array, as logits."""
    err_of = rel_error if relative else abs_error
    worst = 0.0
    compared = []
    for name in OUTPUTS:
        ref = getattr(theirs, name, None)
        if name in ours and ref is not None:
            compared.append(name)
            err = err_of(ours[name], ref.detach().numpy())
            worst = max(worst, err)
            assert err <= tol, f"{tag} {name}: error {err:.2e}"
    for name in ("hidden_states", "attentions"):
        refs = getattr(theirs, name)
        assert len(ours[name]) == len(refs), f"{tag} {name}: {len(ours[name])} vs {len(refs)}"
        for i, (a, ref) in enumerate(zip(ours[name], refs)):
            assert a.shape == tuple(ref.shape), f"{tag} {name}[{i}] shape {a.shape}"
            err = err_of(a, ref.detach().numpy())
            report.append((f"{measure} {name}", tag, err))
            assert err <= tol, f"{tag} {name}[{i}]: error {err:.2e}"
    assert compared or not main, f"{tag}: no task output compared"
    if main:
        report.append((measure, tag, worst))
    return worst
