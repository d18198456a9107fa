"""Training with dropout on, against transformers: bert_np's dropout masks replayed in the twin.

The parity tests elsewhere turn dropout off, and test_dropout.py checks the masks themselves; so a
dropout applied at the wrong place of the model (after the residual sum instead of before it, on
the logits instead of the pooled output, twice, or with the attention rate on a hidden state) would
pass them all, and every fine-tuning run would train a slightly different network from
transformers'. Here both frameworks run one training pass with the same masks:

  1. bert_np's forward and backward on the NumPy reference path, every dropout_forward call
     recorded (its rate p and the mask m / (1 - p) it drew);
  2. the transformers model of the same class and weights, in train mode, with
     torch.nn.functional.dropout replaced by "the next recorded mask": each call must ask for the
     same rate and the same shape as bert_np's call of that position in the sequence, and every
     mask must be used.

The rates differ by site (hidden 0.2, attention probabilities 0.3, classifier 0.4 where the class
has one; two cases leave classifier_dropout unset, as MiniLM's config does, and their head takes
the hidden rate), so a site given another's rate fails step 2. The number of calls is stated by
hand from the architecture (embeddings 1, each layer 3, the classification heads 1). Then, as in
test_heads.py and for the same reasons (float64, the two sides differ only in the order of
additions): the loss, every hidden state and every attention map (the probabilities after
dropout, as transformers returns them) <= 1e-10 relative, every parameter gradient <= 1e-9
relative, those whose exact gradient is 0 <= 1e-12 absolute (the key bias, and head_cases.py's
exactly_zero: in question answering two biases, in multiple choice the classifier bias, which
adds the same number to every choice's logit, a shift the softmax over choices ignores). The
loss must also differ from the loss with dropout off, so that a pass which dropped nothing on both
sides cannot pass.
"""
import numpy as np
import pytest

import bert_np.kernels as kernels
from bert_np.layers.dropout import dropout_forward
from reference import compare_gradients, to_transformers, torch_inputs
from head_cases import CASES, ODD, compare_outputs, exactly_zero, make_inputs, make_labels
from head_cases import build as heads_build

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

HIDDEN_P, ATTENTION_P, CLASSIFIER_P = 0.2, 0.3, 0.4
# dropout calls of one pass of ODD's 2 layers: embeddings 1, per layer attention probabilities,
# attention output and feed-forward output; plus the head's dropout in these classes
HEAD_DROPOUT = {"BertForSequenceClassification": 1, "BertForTokenClassification": 1,
                "BertForMultipleChoice": 1}
RUN = ["TokenClassification", "QuestionAnswering", "MultipleChoice", "NextSentencePrediction",
       "SequenceClassification-single-label-explicit", "SequenceClassification-regression-3",
       "SequenceClassification-multi-label", "MaskedLM-untied", "PreTraining-untied"]
UNSET_CLASSIFIER_DROPOUT = {"SequenceClassification-regression-3", "MultipleChoice"}


def build(case, classifier_dropout):
    return heads_build(case, np.float64, hidden_dropout_prob=HIDDEN_P,
                       attention_probs_dropout_prob=ATTENTION_P,
                       classifier_dropout=classifier_dropout)


def record_dropout(monkeypatch):
    """Every kernel off (the NumPy references run), and each dropout_forward call appended to the
    returned list as (p, mask / (1 - p), or None when the call dropped nothing)."""
    calls = []

    def recording(x, p, rng):
        y, cache = dropout_forward.reference(x, p, rng)
        calls.append((p, cache))
        return y, cache

    monkeypatch.setattr(kernels, "kernel_for",
                        lambda op: recording if op == "dropout_forward" else None)
    return calls


def replay_dropout(monkeypatch, calls):
    """torch.nn.functional.dropout that returns input * the next of bert_np's masks."""
    queue = [(p, mask) for p, mask in calls if mask is not None]
    used = []

    def replayed(input, p=0.5, training=True, inplace=False):
        if not training or p == 0.0:
            return input
        n = len(used)
        assert n < len(queue), f"transformers calls dropout more often than bert_np (call {n})"
        ours_p, mask = queue[n]
        assert p == ours_p, f"dropout call {n}: transformers' rate {p}, bert_np's {ours_p}"
        assert tuple(input.shape) == mask.shape, \
            f"dropout call {n}: transformers' shape {tuple(input.shape)}, bert_np's {mask.shape}"
        used.append(n)
        return input * torch.from_numpy(mask)

    monkeypatch.setattr(torch.nn.functional, "dropout", replayed)
    return queue, used


@pytest.mark.parametrize("case", RUN)
def test_training_pass_with_the_same_masks_equals_transformers(case, monkeypatch, parity_report):
    class_name = CASES[case][0]
    # classifier_dropout None (MiniLM's config): the head falls back to the hidden rate
    classifier_dropout = CLASSIFIER_P if case not in UNSET_CLASSIFIER_DROPOUT else None
    head_p = HIDDEN_P if classifier_dropout is None else CLASSIFIER_P
    model = build(case, classifier_dropout)
    hf_model = to_transformers(model, keep_dropout=True).train()
    inputs, rng = make_inputs(model, seed=11)
    labels = make_labels(model, inputs, rng)
    loss_off = model.loss_and_grads(**inputs, **labels, training=False)[0]
    tag = f"{case} odd, dropout on"

    calls = record_dropout(monkeypatch)
    stats = {}
    loss, grads = model.loss_and_grads(**inputs, **labels, training=True, stats=stats,
                                       output_hidden_states=True, output_attentions=True)
    expected = 1 + 3 * ODD["num_hidden_layers"] + HEAD_DROPOUT.get(class_name, 0)
    assert len(calls) == expected, f"{tag}: {len(calls)} dropout calls, not {expected}"
    rates = sorted(p for p, _ in calls)
    assert rates == sorted([HIDDEN_P] * (1 + 2 * ODD["num_hidden_layers"])
                           + [ATTENTION_P] * ODD["num_hidden_layers"]
                           + [head_p] * HEAD_DROPOUT.get(class_name, 0)), f"{tag}: {rates}"
    assert abs(loss - loss_off) > 1e-6 * abs(loss_off), f"{tag}: dropout changed nothing"

    queue, used = replay_dropout(monkeypatch, calls)
    hf_out = hf_model(**torch_inputs(**inputs, **labels), output_hidden_states=True,
                      output_attentions=True)
    assert len(used) == len(queue), f"{tag}: transformers used {len(used)} of {len(queue)} masks"
    hf_out.loss.backward()

    loss_err = abs(loss - hf_out.loss.item()) / abs(hf_out.loss.item())
    parity_report.append(("dropout-on float64 loss (rel)", tag, loss_err))
    assert loss_err <= 1e-10, f"{tag} loss: {loss:.17g} vs {hf_out.loss.item():.17g}"
    compare_outputs({k: stats[k] for k in ("hidden_states", "attentions")}, hf_out, 1e-10,
                    "dropout-on float64 hidden states, attentions (rel)", tag, parity_report,
                    main=False)
    assert set(grads) == set(model.params)
    worst, _ = compare_gradients(grads, hf_model, tag, exactly_zero(model))
    parity_report.append(("dropout-on float64 gradients (rel)", tag, worst))
