"""AdamW, the warmup/decay schedule and global-norm clipping against torch.optim.AdamW,
transformers.get_linear_schedule_with_warmup and torch.nn.utils.clip_grad_norm_.

Twenty steps of BertForPreTraining in float64 on the same weights and batches; every parameter must
stay within 1e-9 relative of torch's (Adam divides by sqrt(v): where a gradient is tiny the update
is sensitive to its last bits, which is why the bound is 1e-9 and not 1e-12).
"""
import numpy as np
import pytest

import bert_np
from bert_np.optim import AdamW, clip_grad_norm, decays, linear_warmup_decay
from reference import perturb_params, rel_error, to_transformers, torch_inputs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_schedule_by_hand():
    # warmup 4 of 10 steps: 0, 1/4, 2/4, 3/4, then (10-k)/6 for k = 4..10
    got = [linear_warmup_decay(k, 4, 10) for k in range(11)]
    expected = [0, .25, .5, .75, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


def test_clipping_by_hand():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}  # global norm 5
    assert clip_grad_norm(grads, 10.0) == 5.0 and grads["a"][0] == 3.0  # under the limit: untouched
    clip_grad_norm(grads, 1.0)
    np.testing.assert_allclose([grads["a"][0], grads["b"][0, 0]], [3 / (5 + 1e-6), 4 / (5 + 1e-6)])


def test_twenty_steps_match_torch_adamw_with_schedule_and_clipping():
    cfg = bert_np.BertConfig(vocab_size=70, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=40, max_position_embeddings=16,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = bert_np.BertForPreTraining(cfg, seed=0, dtype=np.float64)
    perturb_params(model, 1)
    hf_model = to_transformers(model)
    total, warmup, lr, max_norm = 20, 5, 1e-2, 1.0
    opt = AdamW(model.params, lr=lr, weight_decay=0.01,
                schedule=lambda k: linear_warmup_decay(k, warmup, total))
    named = dict(hf_model.named_parameters())
    groups = [{"params": [p for n, p in named.items() if decays(n)], "weight_decay": 0.01},
              {"params": [p for n, p in named.items() if not decays(n)], "weight_decay": 0.0}]
    torch_opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)
    sched = transformers.get_linear_schedule_with_warmup(torch_opt, warmup, total)
    rng = np.random.default_rng(3)
    clipped_steps = 0
    for step in range(total):
        ids = rng.integers(1, 70, (3, 10))
        labels = np.where(rng.random(ids.shape) < 0.3, ids, -100)
        labels[:, 2] = ids[:, 2]
        nsp = rng.integers(0, 2, 3)
        _, grads = model.loss_and_grads(ids, labels=labels, next_sentence_label=nsp)
        norm = clip_grad_norm(grads, max_norm)
        opt.step(grads)
        torch_opt.zero_grad()
        out = hf_model(**torch_inputs(input_ids=ids), labels=torch.tensor(labels),
                       next_sentence_label=torch.tensor(nsp))
        out.loss.backward()
        torch_norm = torch.nn.utils.clip_grad_norm_(hf_model.parameters(), max_norm)
        torch_opt.step()
        sched.step()
        assert abs(norm - torch_norm.item()) <= 1e-9 * torch_norm.item()
        clipped_steps += norm > max_norm
    assert clipped_steps > 0  # clipping was exercised
    worst = max(rel_error(model.params[k], named[k].detach().numpy()) for k in model.params)
    print(f"worst parameter relative difference after {total} steps: {worst:.2e}")
    assert worst <= 1e-9


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(6)]
    a = AdamW({k: v.copy() for k, v in params.items()}, lr=0.1)
    for g in grads:
        a.step(g)
    b = AdamW({k: v.copy() for k, v in params.items()}, lr=0.1)
    for g in grads[:3]:
        b.step(g)
    c = AdamW({k: v.copy() for k, v in b.params.items()}, lr=0.1)
    c.load_state_dict(b.state_dict())
    for g in grads[3:]:
        c.step(g)
    for k in params:
        np.testing.assert_array_equal(a.params[k], c.params[k])
