"""Property-based tests (hypothesis): invariants that must hold for every shape, mask and text,
not only for the hand-picked cases of the other tests. Example counts are kept small (the whole
file runs in a few seconds); hypothesis still explores odd sizes, T=1, fully padded rows, empty
texts and exotic Unicode.

Tolerances: float64 throughout, so "unchanged" means within 1e-12 relative (only the order of a
few floating-point sums may differ); softmax rows sum to 1 within 1e-12; LayerNorm's normalised
rows have mean 0 within 1e-12 and variance var / (var + eps), the exact value of the formula.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bert_np
from bert_np.data.pretraining import (IGNORE_INDEX, MaskingSpec, PretrainingDataset, collate,
                                      mask_instance, tokenize_documents)
from bert_np.layers import padding_mask_bias
from bert_np.layers.attention import attention_softmax_forward
from bert_np.layers.layernorm import layernorm_forward
from bert_np.inputs import check_inputs
from bert_np.tokenization import train_wordpiece
from reference import rel_error

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
_CACHE = {}  # objects that are slow to build, shared by the examples of one test


@st.composite
def masks(draw, max_b=4, max_t=9):
    """(B, T) attention masks of 0/1, any pattern, fully padded rows included."""
    B = draw(st.integers(1, max_b))
    T = draw(st.integers(1, max_t))
    bits = draw(st.lists(st.integers(0, 1), min_size=B * T, max_size=B * T))
    return np.array(bits, dtype=np.int64).reshape(B, T)


# ---- layers --------------------------------------------------------------------------------------

@FAST
@given(mask=masks(), heads=st.integers(1, 3), seed=st.integers(0, 2 ** 16),
       scale=st.floats(0.01, 100.0))
def test_attention_softmax_rows_sum_to_one_and_ignore_masked_keys(mask, heads, seed, scale):
    """Every row of P is a probability distribution (finite, >= 0, sum 1), a masked key gets
    exactly 0 weight when its row has a real key, and a row whose keys are all masked is uniform
    (transformers' behaviour, see test_robustness)."""
    B, T = mask.shape
    scores = np.random.default_rng(seed).normal(0, 10, (B, heads, T, T))
    probs = attention_softmax_forward(scores.copy(), padding_mask_bias(mask, np.float64), scale)
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=0, atol=1e-12)
    for b in range(B):
        if mask[b].any():
            assert (probs[b][..., mask[b] == 0] == 0).all()
        else:
            np.testing.assert_allclose(probs[b], 1.0 / T, rtol=1e-12)


@FAST
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(2, 40)),
       seed=st.integers(0, 2 ** 16), spread=st.floats(1e-3, 1e3), shift=st.floats(-1e3, 1e3))
def test_layernorm_normalises_every_row_before_the_affine(shape, seed, spread, shift):
    """xhat (what the affine w * xhat + b receives) has mean 0 and variance var/(var + eps) in
    every row, for any scale and offset of the input, and the output is finite."""
    rng = np.random.default_rng(seed)
    x = shift + spread * rng.normal(size=shape)
    H = shape[-1]
    eps = 1e-12
    y, (xhat, rstd, _) = layernorm_forward(x, rng.normal(size=H), rng.normal(size=H), eps)
    assert np.isfinite(y).all()
    var = x.var(axis=-1, keepdims=True)
    np.testing.assert_allclose(xhat.mean(-1), 0.0, atol=1e-12 * max(1.0, abs(shift) / spread))
    np.testing.assert_allclose(xhat.var(-1, keepdims=True), var / (var + eps), rtol=1e-9)


# ---- the model -----------------------------------------------------------------------------------

CFG = bert_np.BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                         intermediate_size=20, max_position_embeddings=24, type_vocab_size=3,
                         num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def classifier():
    from reference import perturb_params
    m = bert_np.BertForSequenceClassification(CFG, seed=0, dtype=np.float64)
    perturb_params(m, 1, scale=0.1)
    return m


@st.composite
def padded_batches(draw):
    """A batch of rows of random lengths >= 1, padded to the longest, plus extra padding of
    random ids / token types, so we can test that padding has no influence."""
    B = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, 8), min_size=B, max_size=B))
    extra = draw(st.integers(0, 8))
    seed = draw(st.integers(0, 2 ** 16))
    return lengths, extra, seed


def make_batch(lengths, T, seed):
    rng = np.random.default_rng(seed)
    B = len(lengths)
    ids = rng.integers(0, CFG.vocab_size, (B, T))      # padding holds random ids too: it must
    types = rng.integers(0, CFG.type_vocab_size, (B, T))  # not matter what sits there
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return ids, types, mask


@settings(FAST, max_examples=12)
@given(batch=padded_batches())
def test_padding_does_not_change_the_real_tokens_outputs_or_the_gradients(classifier, batch):
    """The same real tokens padded to T and to T + extra (with arbitrary ids and token types in
    the padding): hidden states at real positions, pooled output, logits, loss and every
    parameter gradient agree (1e-12 relative; only sum order differs)."""
    lengths, extra, seed = batch
    T = max(lengths)
    ids, types, mask = make_batch(lengths, T + extra, seed)
    short = dict(input_ids=ids[:, :T], token_type_ids=types[:, :T], attention_mask=mask[:, :T])
    long = dict(input_ids=ids, token_type_ids=types, attention_mask=mask)
    a, b = classifier.forward(**short), classifier.forward(**long)
    real = mask[:, :T].astype(bool)
    assert np.isfinite(b["last_hidden_state"]).all()
    assert rel_error(b["last_hidden_state"][:, :T][real], a["last_hidden_state"][real]) <= 1e-12
    assert rel_error(b["logits"], a["logits"]) <= 1e-12
    labels = np.random.default_rng(seed).integers(0, CFG.num_labels, len(lengths))
    loss_a, grads_a = classifier.loss_and_grads(**short, labels=labels)
    loss_b, grads_b = classifier.loss_and_grads(**long, labels=labels)
    assert abs(loss_a - loss_b) <= 1e-12 * abs(loss_a)
    for k in grads_a:
        if k.endswith("attention.self.key.bias"):  # exactly zero in exact arithmetic
            assert np.abs(grads_b[k] - grads_a[k]).max() <= 1e-12
        else:
            assert rel_error(grads_b[k], grads_a[k]) <= 1e-12, k


@FAST
@given(batch=padded_batches())
def test_each_row_is_independent_of_the_other_rows(classifier, batch):
    """Row i's logits in a batch equal its logits alone (to 1e-12): rows never mix."""
    lengths, extra, seed = batch
    ids, types, mask = make_batch(lengths, max(lengths) + extra, seed)
    together = classifier.forward(ids, types, mask)["logits"]
    for i in range(len(lengths)):
        alone = classifier.forward(ids[i:i + 1], types[i:i + 1], mask[i:i + 1])["logits"]
        assert rel_error(together[i:i + 1], alone) <= 1e-12


@FAST
@given(mask=masks(max_t=CFG.max_position_embeddings), seed=st.integers(0, 2 ** 16))
def test_any_valid_input_is_accepted_and_gives_finite_outputs(classifier, mask, seed):
    """Any in-range ids and types with any 0/1 mask (bool or int), fully padded rows included."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, CFG.vocab_size, mask.shape)
    types = rng.integers(0, CFG.type_vocab_size, mask.shape)
    checked = check_inputs(CFG, ids.tolist(), types.astype(np.int32), mask.astype(bool))
    assert all(x.dtype == np.int64 for x in checked)
    out = classifier.forward(ids, types, mask.astype(bool))
    assert all(np.isfinite(v).all() for v in out.values())


# ---- tokenizer and batcher -----------------------------------------------------------------------

WORDS = ("the cat dog sat ran on a mat tree red blue quick happy morning garden 中 文 é naïve "
         "don't well-known 3.14").split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    rng = np.random.default_rng(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS, 8)) for _ in range(300)),
                      encoding="utf-8")
    return train_wordpiece([corpus], vocab_size=120, out_dir=root, min_frequency=1)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text_a=st.text(max_size=300), text_b=st.one_of(st.none(), st.text(max_size=300)),
       max_length=st.one_of(st.none(), st.integers(3, 40)))
def test_tokenizer_encodes_any_unicode_text(tokenizer, text_a, text_b, max_length):
    """Arbitrary Unicode (hypothesis' text() excludes lone surrogates, which are a ValueError, see
    test_robustness): [CLS] first, [SEP] closing each segment, ids inside the vocabulary, segment
    ids 0 then 1, and max_length respected."""
    enc = tokenizer.encode(text_a, text_b, max_length=max_length)
    ids, types = enc.input_ids, enc.token_type_ids
    assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert len(ids) == len(types) and types == sorted(types) and set(types) <= {0, 1}
    assert ids.count(tokenizer.sep_id) >= (1 if text_b is None else 2)
    if max_length is not None:
        assert len(ids) <= max_length


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_a=st.integers(1, 60), n_b=st.integers(1, 60), max_length=st.integers(3, 50))
def test_pair_truncation_equals_transformers(tokenizer, tmp_path_factory, n_a, n_b, max_length):
    """Our longest_first pair truncation against transformers' BertTokenizerFast on the same
    vocabulary, for every combination of lengths: identical ids and segment ids. (Texts are
    non-empty: transformers' Python layer treats an empty second text as no second text.)"""
    transformers = pytest.importorskip("transformers")
    if "reference" not in _CACHE:
        root = tmp_path_factory.getbasetemp() / "hf_vocab"
        tokenizer.save(root)
        _CACHE["reference"] = transformers.BertTokenizerFast.from_pretrained(root)
    reference = _CACHE["reference"]
    text_a = " ".join(WORDS[i % len(WORDS)] for i in range(n_a))
    text_b = " ".join(WORDS[(3 * i) % len(WORDS)] for i in range(n_b))
    expected = reference(text_a, text_b, max_length=max_length, truncation=True)
    ours = tokenizer.encode(text_a, text_b, max_length=max_length)
    assert ours.input_ids == expected["input_ids"]
    assert ours.token_type_ids == expected["token_type_ids"]


sentences = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
documents = st.lists(st.lists(sentences, min_size=1, max_size=6), min_size=2, max_size=6)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(docs=documents, max_seq_length=st.integers(5, 40), batch_size=st.integers(1, 5),
       wwm=st.booleans(), seed=st.integers(0, 1000))
def test_pretraining_batches_keep_their_invariants(tokenizer, docs, max_seq_length, batch_size,
                                                   wwm, seed):
    """For any corpus: every batch is rectangular; attention_mask is 1 exactly on the non-[PAD]
    prefix; labels are -100 wherever nothing is predicted (padding included); no [CLS], [SEP] or
    [PAD] is ever a prediction target; at least 1 and at most max_predictions_per_seq positions
    per row; segment ids are 0...0 1...1 within the real tokens; NSP labels are 0 or 1."""
    tokenized = tokenize_documents(docs, tokenizer)
    assume(len(tokenized) >= 2)
    data = PretrainingDataset(tokenized, tokenizer, max_seq_length=max_seq_length,
                              batch_size=batch_size, max_predictions_per_seq=5,
                              whole_word_masking=wwm, seed=seed)
    never = {tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id}
    for batch in data.batches(0):
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        B, T = ids.shape
        assert T <= max_seq_length and B <= batch_size
        assert mask.shape == labels.shape == batch["token_type_ids"].shape == (B, T)
        lengths = mask.sum(1)
        assert (mask == (np.arange(T)[None, :] < lengths[:, None])).all()  # a prefix of ones
        assert (ids[mask == 0] == tokenizer.pad_id).all() and (labels[mask == 0] == IGNORE_INDEX).all()
        predicted = labels != IGNORE_INDEX
        assert not any(int(t) in never for t in labels[predicted])
        assert ((1 <= predicted.sum(1)) & (predicted.sum(1) <= 5)).all()
        for row in range(B):
            types = batch["token_type_ids"][row, :lengths[row]]
            assert (np.diff(types) >= 0).all() and set(types.tolist()) <= {0, 1}
        assert set(batch["next_sentence_label"].tolist()) <= {0, 1}


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draws=st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=30), seed=st.integers(0, 1000))
def test_masking_labels_hold_the_original_tokens(tokenizer, draws, seed):
    """labels[p] is the original token at every predicted position p, and every position that
    is not predicted keeps its original token in input_ids."""
    from bert_np.data.pretraining import build_instance
    tokens = [5 + d % (tokenizer.vocab_size - 5) for d in draws]  # any non-special token
    instance = build_instance(tokens, [], 0, tokenizer.cls_id, tokenizer.sep_id)
    spec = MaskingSpec.from_tokenizer(tokenizer, max_predictions_per_seq=6)
    masked = mask_instance(instance, spec, np.random.default_rng(seed))
    predicted = masked.labels != IGNORE_INDEX
    assert (masked.labels[predicted] == instance.input_ids[predicted]).all()
    assert (masked.input_ids[~predicted] == instance.input_ids[~predicted]).all()
    batch = collate([masked], tokenizer.pad_id, pad_to_multiple_of=8)
    assert batch["input_ids"].shape[1] % 8 == 0
