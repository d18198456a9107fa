"""Ten steps of plain SGD on BertForPreTraining, bert_np against transformers + torch.optim.SGD on
the same weights and the same ten batches. The loss sequences must agree within 1e-9 relative in
float64: each step's update moves both models by the same gradient (equal to ~1e-15, see
test_parity.py), so the trajectories stay together far below that bound unless a gradient is wrong.
"""
import numpy as np
import pytest

import bert_np
from reference import perturb_params, to_transformers, torch_inputs

torch = pytest.importorskip("torch")


def test_ten_sgd_steps_follow_torch():
    cfg = bert_np.BertConfig(vocab_size=80, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=16,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = bert_np.BertForPreTraining(cfg, seed=0, dtype=np.float64)
    perturb_params(model, 1)
    hf_model = to_transformers(model)
    optimizer = torch.optim.SGD(hf_model.parameters(), lr=0.5)
    rng = np.random.default_rng(2)
    batches = []
    for b in range(2):  # two batches, alternated, so the loss on each should fall
        ids = rng.integers(1, 80, (4, 12))
        mask = np.ones_like(ids)
        mask[b, 8:] = 0
        labels = np.where(rng.random(ids.shape) < 0.2, rng.integers(0, 80, ids.shape), -100)
        labels[:, 1] = ids[:, 1]
        batches.append((ids, mask, labels, rng.integers(0, 2, 4)))
    ours, theirs = [], []
    for step in range(10):
        ids, mask, labels, nsp = batches[step % 2]
        loss, grads = model.loss_and_grads(ids, attention_mask=mask, labels=labels,
                                           next_sentence_label=nsp)
        for k in model.params:
            model.params[k] -= 0.5 * grads[k]
        ours.append(loss)
        optimizer.zero_grad()
        out = hf_model(**torch_inputs(input_ids=ids, attention_mask=mask),
                       labels=torch.tensor(labels), next_sentence_label=torch.tensor(nsp))
        out.loss.backward()
        optimizer.step()
        theirs.append(out.loss.item())
    ours, theirs = np.array(ours), np.array(theirs)
    print("bert_np:", ours, "\ntorch:  ", theirs)
    assert ours[-2] < ours[0] and ours[-1] < ours[1]  # the steps did train
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=0)
