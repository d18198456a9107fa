"""The distillation loss of BertForSequenceClassification.loss_and_grads.

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, labels)

Compared, in float64:
  - the loss layer (soft_cross_entropy) against torch: kl_div(log_softmax(s / T), softmax(t / T),
    reduction="batchmean") * T^2, and its gradient against torch autograd: 1e-12 relative (the
    same formula, summed in another order); and against float64 central finite differences of
    the layer itself: 1e-7 relative, as every layer in tests/test_layers.py.
  - the whole model: loss and every parameter gradient of a bert_np classifier against the
    transformers twin (same weights, dropout off) whose logits go through the torch formula above
    plus cross_entropy: loss 1e-10 relative, every gradient 1e-9 relative (key bias 1e-12
    absolute: its true gradient is 0), the bounds of tests/test_parity.py.
  - regression (num_labels == 1): the teacher's term is the squared error to the teacher's score.
  - bad input: a one-line ValueError naming the argument.
"""
import numpy as np
import pytest

import bert_np
from bert_np.layers import soft_cross_entropy_backward, soft_cross_entropy_forward
from reference import numerical_gradient, rel_error

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
F = torch.nn.functional

CFG = dict(vocab_size=53, hidden_size=30, num_hidden_layers=2, num_attention_heads=3,
           intermediate_size=47, max_position_embeddings=32, type_vocab_size=2,
           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def torch_distillation(s, t, labels, T, alpha):
    soft = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
    if alpha == 1.0:
        return alpha * soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(s, labels)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.5])
def test_soft_cross_entropy_against_torch_and_finite_differences(T):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 3)) * 3, rng.normal(size=(5, 3)) * 3
    t[0] = [40.0, -40.0, 0.0]                          # a confident teacher: p underflows to 0
    loss, cache = soft_cross_entropy_forward(s, t, T)
    ds = soft_cross_entropy_backward(1.0, cache)
    s_t = torch.tensor(s, requires_grad=True)
    ref = torch_distillation(s_t, torch.tensor(t), None, T, 1.0)
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-12 * abs(ref.item())
    assert rel_error(ds, s_t.grad.numpy()) <= 1e-12
    numeric = numerical_gradient(lambda: soft_cross_entropy_forward(s, t, T)[0], s)
    assert rel_error(ds, numeric) <= 1e-7


def twins(num_labels):
    cfg = bert_np.BertConfig(**CFG, num_labels=num_labels)
    ours = bert_np.BertForSequenceClassification(cfg, seed=3, dtype=np.float64)
    theirs = transformers.BertForSequenceClassification(
        transformers.BertConfig(**CFG, num_labels=num_labels, attn_implementation="eager")).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.params.items()}, strict=False)
    theirs.eval()
    return ours, theirs


def batch(rng, B=4, T=9):
    ids = rng.integers(1, 53, (B, T))
    mask = np.ones((B, T), dtype=np.int64)
    mask[1, 6:] = 0                                          # a padded row
    return ids, mask


@pytest.mark.parametrize("T, alpha", [(1.0, 1.0), (2.0, 0.5), (3.0, 0.0)])
def test_classifier_distillation_loss_and_gradients_match_torch(T, alpha):
    rng = np.random.default_rng(1)
    ours, theirs = twins(3)
    ids, mask = batch(rng)
    teacher = rng.normal(size=(4, 3)) * 2
    labels = rng.integers(0, 3, 4)
    loss, grads = ours.loss_and_grads(ids, attention_mask=mask, labels=None if alpha == 1 else labels,
                                      teacher_logits=teacher, temperature=T, alpha=alpha)
    logits = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    ref = torch_distillation(logits, torch.tensor(teacher), torch.tensor(labels), T, alpha)
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-10 * abs(ref.item())
    named = dict(theirs.named_parameters())
    for name, g in grads.items():
        expected = named[name].grad.numpy()
        if name.endswith("attention.self.key.bias"):
            assert np.abs(g - expected).max() <= 1e-12, name
        else:
            assert rel_error(g, expected) <= 1e-9, name


def test_regression_distillation_is_the_squared_error_to_the_teacher():
    rng = np.random.default_rng(2)
    ours, theirs = twins(1)
    ids, mask = batch(rng)
    teacher, labels = rng.normal(size=(4, 1)), rng.normal(size=4)
    loss, grads = ours.loss_and_grads(ids, attention_mask=mask, labels=labels,
                                      teacher_logits=teacher, alpha=0.3)
    score = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits[:, 0]
    ref = 0.3 * F.mse_loss(score, torch.tensor(teacher[:, 0])) + 0.7 * F.mse_loss(
        score, torch.tensor(labels))
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-10 * abs(ref.item())
    w = "classifier.weight"
    assert rel_error(grads[w], dict(theirs.named_parameters())[w].grad.numpy()) <= 1e-9


def test_without_a_teacher_the_loss_is_the_label_loss_unchanged():
    rng = np.random.default_rng(3)
    ours, _ = twins(3)
    ids, mask = batch(rng)
    labels = rng.integers(0, 3, 4)
    plain = ours.loss_and_grads(ids, attention_mask=mask, labels=labels)
    mixed = ours.loss_and_grads(ids, attention_mask=mask, labels=labels,
                                teacher_logits=np.zeros((4, 3)), alpha=0.0)
    assert plain[0] == mixed[0]
    for k in plain[1]:
        np.testing.assert_array_equal(plain[1][k], mixed[1][k])


@pytest.mark.parametrize("kwargs, message", [
    (dict(teacher_logits=np.zeros((4, 2))), r"teacher_logits has shape \(4, 2\)"),
    (dict(teacher_logits=np.full((4, 3), np.nan)), "teacher_logits holds a non-finite value in row 0"),
    (dict(teacher_logits=np.zeros((4, 3)), temperature=0.0), "temperature must be a finite number > 0"),
    (dict(teacher_logits=np.zeros((4, 3)), temperature=-1), "temperature must be a finite number > 0"),
    (dict(teacher_logits=np.zeros((4, 3)), alpha=1.5), r"alpha must be in \[0, 1\]"),
    (dict(teacher_logits=np.zeros((4, 3)), alpha=0.5), "labels are needed when alpha < 1"),
    (dict(), "needs labels"),
])
def test_bad_distillation_arguments_are_refused_by_name(kwargs, message):
    ours, _ = twins(3)
    ids, mask = batch(np.random.default_rng(4))
    with pytest.raises(ValueError, match=message):
        ours.loss_and_grads(ids, attention_mask=mask, **kwargs)
