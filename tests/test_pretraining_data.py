"""Pretraining data: corpus reading, NSP instances, MLM masking, batching, reproducibility.

Statistical tests draw many masks or pairs with a fixed seed (so they are deterministic) and accept
a deviation from the specified rate p of at most 5 binomial standard deviations,
sqrt(p (1 - p) / n) for n independent draws: a correct implementation lands outside with
probability about 6e-7 per comparison, while a wrong rate (say 0.75 instead of 0.8) is off by far
more than the tolerance at these sample sizes.
"""
import numpy as np
import pytest

from bert_np.data.pretraining import (IGNORE_INDEX, IS_NEXT, RANDOM_NEXT, MaskingSpec,
                                      PretrainingDataset, build_instance, collate,
                                      create_instances, group_words, mask_instance,
                                      num_to_predict, read_documents, split_sentences,
                                      tokenize_documents)
from bert_np.tokenization import BertTokenizer

FIVE_SIGMA = 5.0


def binomial_tolerance(p, n):
    """5 standard deviations of the fraction of successes in n draws of probability p."""
    return FIVE_SIGMA * np.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    return BertTokenizer.from_vocab(data_dir / "vocab" / "bert-base-uncased" / "vocab.txt")


@pytest.fixture(scope="module")
def wikitext_path(data_dir):
    return data_dir / "pretrain_corpus" / "wikitext-2" / "valid.txt"


@pytest.fixture(scope="module")
def wikitext_documents(wikitext_path, tokenizer):
    return tokenize_documents(read_documents([wikitext_path]), tokenizer)


@pytest.fixture(scope="module")
def spec(tokenizer):
    return MaskingSpec.from_tokenizer(tokenizer, max_predictions_per_seq=20)


def synthetic_documents(num_documents=40, sentences_per_document=20, seed=0):
    """Documents whose token ids count up from 500 * (document index + 2), so every token names its
    document (id // 500) and its place in it (each document has fewer than 500 tokens)."""
    rng = np.random.default_rng(seed)
    documents = []
    for d in range(num_documents):
        lengths = rng.integers(3, 16, sentences_per_document)
        starts = 500 * (d + 2) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        documents.append([list(range(s, s + n)) for s, n in zip(starts, lengths)])
    return documents


def segments(instance, sep_id):
    """Segment A and B ids of `[CLS] A [SEP] B [SEP]`."""
    ids = list(instance.input_ids)
    first_sep = ids.index(sep_id)
    return ids[1:first_sep], ids[first_sep + 1:-1]


def all_maskable_instance(tokenizer, length=128, seed=0):
    """`[CLS] A [SEP] B [SEP]` of `length` tokens, all but [CLS] and the two [SEP] maskable."""
    words = np.random.default_rng(seed).integers(1000, 29000, length - 3).tolist()
    return build_instance(words[:60], words[60:], IS_NEXT, tokenizer.cls_id, tokenizer.sep_id)


# ---- corpus reading -------------------------------------------------------------------------

def test_sentence_per_line_documents_split_at_blank_lines(data_dir):
    documents = read_documents([data_dir / "pretrain_corpus" / "sample_text.txt"])
    assert [len(d) for d in documents] == [3, 13, 15]
    assert documents[1][0].startswith("The rain had only ceased")


def test_wikitext_articles_are_documents_without_headings(wikitext_path):
    documents = read_documents([wikitext_path])
    titles = [line for line in wikitext_path.read_text(encoding="utf-8").splitlines()
              if line.startswith(" = ") and not line.startswith(" = = ")]
    assert len(documents) == len(titles) == 60
    sentences = [s for d in documents for s in d]
    assert not [s for s in sentences if s.startswith("= ")]
    assert not [s for s in sentences if "@-@" in s or "<unk>" in s]
    assert documents[0][1] == "It is closely related to the American lobster , H. americanus ."


def test_simple_sentence_split_needs_an_upper_case_letter_after_the_stop():
    assert split_sentences("It rained . Then it stopped ! H. gammarus lives in 3.1 m of water .") \
        == ["It rained .", "Then it stopped !", "H. gammarus lives in 3.1 m of water ."]


# ---- instances: segments and next-sentence labels ---------------------------------------------

def test_instances_are_cls_a_sep_b_sep_within_max_length(wikitext_documents, tokenizer):
    instances = create_instances(wikitext_documents, np.random.default_rng(0), tokenizer.cls_id,
                                 tokenizer.sep_id, max_seq_length=64)
    assert len(instances) > 500
    for x in instances:
        a, b = segments(x, tokenizer.sep_id)
        assert len(x.input_ids) <= 64 and len(a) >= 1 and len(b) >= 1
        assert x.input_ids[0] == tokenizer.cls_id and x.input_ids[-1] == tokenizer.sep_id
        assert tokenizer.sep_id not in a + b and tokenizer.cls_id not in a + b
        # segment ids: 0 for [CLS] A [SEP], 1 for B [SEP]
        np.testing.assert_array_equal(x.token_type_ids, [0] * (len(a) + 2) + [1] * (len(b) + 1))
        assert x.next_sentence_label in (IS_NEXT, RANDOM_NEXT)


def test_true_pairs_continue_the_document_and_random_pairs_come_from_another(tokenizer):
    instances = create_instances(synthetic_documents(), np.random.default_rng(0),
                                 tokenizer.cls_id, tokenizer.sep_id, max_seq_length=48)
    for x in instances:
        a, b = segments(x, tokenizer.sep_id)
        # each segment is a run of consecutive sentences of one document
        assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)
        if x.next_sentence_label == IS_NEXT:
            assert a[-1] // 500 == b[0] // 500 and b[0] > a[-1]  # same document, B after A
        else:
            assert a[0] // 500 != b[0] // 500


def test_next_sentence_labels_are_half_random(tokenizer):
    instances = create_instances(synthetic_documents(), np.random.default_rng(1),
                                 tokenizer.cls_id, tokenizer.sep_id, max_seq_length=16,
                                 dupe_factor=60)
    n = len(instances)
    random_fraction = np.mean([x.next_sentence_label == RANDOM_NEXT for x in instances])
    assert n > 30000  # tolerance 0.014: a rate of 0.47 or 0.53 fails
    assert abs(random_fraction - 0.5) <= binomial_tolerance(0.5, n), (random_fraction, n)


def test_short_seq_prob_makes_shorter_instances(tokenizer):
    def mean_length(short_seq_prob):
        instances = create_instances(synthetic_documents(), np.random.default_rng(0),
                                     tokenizer.cls_id, tokenizer.sep_id, max_seq_length=128,
                                     short_seq_prob=short_seq_prob)
        return np.mean([len(x.input_ids) for x in instances])
    assert mean_length(1.0) < 0.75 * mean_length(0.0)


# ---- masking --------------------------------------------------------------------------------

def test_15_percent_of_maskable_tokens_are_predicted(wikitext_documents, tokenizer, spec):
    rng = np.random.default_rng(0)
    instances = create_instances(wikitext_documents, rng, tokenizer.cls_id, tokenizer.sep_id,
                                 max_seq_length=64)
    predicted, maskable = 0, 0
    for x in instances:
        n = len(x.input_ids) - 3  # all but [CLS] and two [SEP]
        masked = mask_instance(x, spec, rng)
        count = int((masked.labels != IGNORE_INDEX).sum())
        # exactly round(0.15 n), at least 1, at most max_predictions_per_seq
        assert count == min(20, max(1, round(0.15 * n)))
        predicted, maskable = predicted + count, maskable + n
    # rounding and "at least 1" move each sequence by less than one token
    assert abs(predicted / maskable - 0.15) <= len(instances) / maskable


def test_predictions_are_capped_at_max_predictions_per_seq(tokenizer):
    capped = MaskingSpec.from_tokenizer(tokenizer, max_predictions_per_seq=5)
    masked = mask_instance(all_maskable_instance(tokenizer), capped, np.random.default_rng(0))
    assert (masked.labels != IGNORE_INDEX).sum() == 5 == num_to_predict(125, 0.15, 5)


def test_every_maskable_position_is_equally_likely(tokenizer, spec):
    instance = all_maskable_instance(tokenizer)
    rng, draws = np.random.default_rng(0), 2000
    chosen = np.zeros(len(instance.input_ids))
    for _ in range(draws):
        chosen += mask_instance(instance, spec, rng).labels != IGNORE_INDEX
    maskable = np.ones(len(instance.input_ids), bool)
    maskable[np.isin(instance.input_ids, [tokenizer.cls_id, tokenizer.sep_id])] = False
    p = num_to_predict(maskable.sum(), 0.15, 20) / maskable.sum()  # 19 / 125 per draw
    assert (chosen[~maskable] == 0).all()
    np.testing.assert_allclose(chosen[maskable] / draws, p, atol=binomial_tolerance(p, draws))


def test_predicted_tokens_are_80_mask_10_random_10_unchanged(tokenizer, spec):
    instance = all_maskable_instance(tokenizer)
    rng = np.random.default_rng(0)
    outcomes = {"mask": 0, "random": 0, "unchanged": 0}
    for _ in range(2000):
        masked = mask_instance(instance, spec, rng)
        predicted = masked.labels != IGNORE_INDEX
        shown = masked.input_ids[predicted]
        outcomes["mask"] += (shown == tokenizer.mask_id).sum()
        outcomes["unchanged"] += (shown == instance.input_ids[predicted]).sum()
        outcomes["random"] += ((shown != tokenizer.mask_id)
                               & (shown != instance.input_ids[predicted])).sum()
    n = sum(outcomes.values())
    # a random token equals the original with probability 1/30517, far below the tolerance
    for outcome, p in {"mask": 0.8, "random": 0.1, "unchanged": 0.1}.items():
        assert abs(outcomes[outcome] / n - p) <= binomial_tolerance(p, n), (outcome, outcomes)


def test_masking_invariants(wikitext_documents, tokenizer, spec):
    """Specials never predicted, labels = original token where predicted and -100 elsewhere,
    unpredicted tokens unchanged, random replacements never special tokens."""
    rng = np.random.default_rng(3)
    instances = create_instances(wikitext_documents[:20], rng, tokenizer.cls_id,
                                 tokenizer.sep_id, max_seq_length=128)
    for x in instances:
        masked = mask_instance(x, spec, rng)
        predicted = masked.labels != IGNORE_INDEX
        special = np.isin(x.input_ids, [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id])
        assert not (predicted & special).any()
        np.testing.assert_array_equal(masked.labels[predicted], x.input_ids[predicted])
        np.testing.assert_array_equal(masked.input_ids[~predicted], x.input_ids[~predicted])
        replaced = masked.input_ids[predicted & (masked.input_ids != x.input_ids)]
        other_specials = [i for i in tokenizer.special_ids if i != tokenizer.mask_id]
        assert not np.isin(replaced, other_specials).any()
        np.testing.assert_array_equal(masked.token_type_ids, x.token_type_ids)


def test_whole_word_masking_keeps_words_whole(wikitext_documents, tokenizer):
    wwm = MaskingSpec.from_tokenizer(tokenizer, whole_word_masking=True)
    rng = np.random.default_rng(0)
    instances = create_instances(wikitext_documents, rng, tokenizer.cls_id, tokenizer.sep_id,
                                 max_seq_length=64)
    multi_piece_words_masked = 0
    for x in instances:
        masked = mask_instance(x, wwm, rng)
        predicted = masked.labels != IGNORE_INDEX
        maskable = np.flatnonzero(~wwm.never_masked[x.input_ids])
        word_lengths = np.array([len(w) for w in group_words(maskable, x.input_ids,
                                                              wwm.is_continuation)])
        word_starts = np.cumsum(word_lengths) - word_lengths
        predicted_per_word = np.add.reduceat(predicted[maskable], word_starts)
        assert np.all((predicted_per_word == 0) | (predicted_per_word == word_lengths))
        multi_piece_words_masked += np.sum((word_lengths > 1) & (predicted_per_word > 0))
        assert 1 <= predicted.sum() <= 20
    assert multi_piece_words_masked > 100  # the test did see words of several pieces


def test_words_are_a_token_and_its_following_continuation_pieces(tokenizer):
    ids = np.array(tokenizer.convert_tokens_to_ids(
        ["[CLS]", "the", "una", "##ffa", "##ble", "dog", "[SEP]", "##ing", "starts", "b", "[SEP]"]))
    spec = MaskingSpec.from_tokenizer(tokenizer)
    maskable = np.flatnonzero(~spec.never_masked[ids])
    words = [tokenizer.convert_ids_to_tokens(ids[w]) for w in group_words(
        maskable, ids, spec.is_continuation)]
    # a "##" piece right after [SEP] starts a word of its own
    assert words == [["the"], ["una", "##ffa", "##ble"], ["dog"], ["##ing"], ["starts"], ["b"]]


# ---- batching -------------------------------------------------------------------------------

def test_collate_pads_to_the_longest_and_to_a_multiple_of_8(wikitext_documents, tokenizer, spec):
    rng = np.random.default_rng(0)
    instances = create_instances(wikitext_documents[:3], rng, tokenizer.cls_id,
                                 tokenizer.sep_id, max_seq_length=50, short_seq_prob=0.5)[:6]
    masked = [mask_instance(x, spec, rng) for x in instances]
    lengths = np.array([len(x.input_ids) for x in instances])
    for multiple, width in [(None, lengths.max()), (8, -(-lengths.max() // 8) * 8)]:
        batch = collate(masked, tokenizer.pad_id, pad_to_multiple_of=multiple)
        assert {k: v.shape for k, v in batch.items()} == {
            "input_ids": (6, width), "token_type_ids": (6, width), "attention_mask": (6, width),
            "labels": (6, width), "next_sentence_label": (6,)}
        assert all(v.dtype == np.int64 for v in batch.values())
        np.testing.assert_array_equal(batch["attention_mask"].sum(axis=1), lengths)
        padding = batch["attention_mask"] == 0
        assert (batch["input_ids"][padding] == tokenizer.pad_id).all()
        assert (batch["labels"][padding] == IGNORE_INDEX).all()
        assert (batch["token_type_ids"][padding] == 0).all()
        for row, x in enumerate(masked):
            np.testing.assert_array_equal(batch["labels"][row, :lengths[row]], x.labels)
        np.testing.assert_array_equal(batch["next_sentence_label"],
                                      [x.next_sentence_label for x in instances])


# ---- the dataset: epochs, shuffling, reproducibility ------------------------------------------

@pytest.fixture(scope="module")
def dataset_options():
    return dict(max_seq_length=64, batch_size=16, pad_to_multiple_of=8, seed=7)


def make_dataset(wikitext_documents, tokenizer, **options):
    return PretrainingDataset(wikitext_documents[:10], tokenizer, **options)


def assert_same_batches(batches, other):
    assert len(batches) == len(other)
    for batch, expected in zip(batches, other):
        for name in expected:
            np.testing.assert_array_equal(batch[name], expected[name], err_msg=name)


def test_same_seed_same_batches_and_resume_mid_epoch(wikitext_documents, tokenizer,
                                                     dataset_options):
    first = make_dataset(wikitext_documents, tokenizer, **dataset_options)
    second = make_dataset(wikitext_documents, tokenizer, **dataset_options)
    epoch_1 = list(first.batches(1))
    assert_same_batches(list(second.batches(1)), epoch_1)
    assert_same_batches(list(second.batches(1, start_batch=3)), epoch_1[3:])


def test_each_epoch_reshuffles_and_remasks_every_instance(wikitext_documents, tokenizer,
                                                          dataset_options):
    dataset = make_dataset(wikitext_documents, tokenizer, **dataset_options)
    epochs = [list(dataset.batches(epoch)) for epoch in (0, 1)]
    n = len(dataset.instances(0))
    for batches in epochs:
        assert len(batches) == dataset.num_batches(0) == -(-n // 16)
        assert sum(len(b["next_sentence_label"]) for b in batches) == n
    assert not np.array_equal(epochs[0][0]["labels"], epochs[1][0]["labels"])
    # unmasked, an epoch holds the same multiset of sequences
    def originals(batches):
        rows = [np.where(b["labels"] != IGNORE_INDEX, b["labels"], b["input_ids"])[r]
                [:b["attention_mask"][r].sum()] for b in batches for r in range(len(b["labels"]))]
        return sorted(tuple(row) for row in rows)
    assert originals(epochs[0]) == originals(epochs[1])


def test_new_pairs_each_epoch_and_other_seeds_change_the_instances(wikitext_documents, tokenizer,
                                                                   dataset_options):
    dynamic = make_dataset(wikitext_documents, tokenizer, new_pairs_each_epoch=True,
                           **dataset_options)
    static = make_dataset(wikitext_documents, tokenizer, **dataset_options)
    other_seed = make_dataset(wikitext_documents, tokenizer, **{**dataset_options, "seed": 8})

    def ids(instances):
        return [tuple(x.input_ids) for x in instances]
    assert ids(static.instances(0)) == ids(static.instances(1))
    assert ids(dynamic.instances(0)) != ids(dynamic.instances(1))
    assert ids(dynamic.instances(1)) == ids(make_dataset(
        wikitext_documents, tokenizer, new_pairs_each_epoch=True, **dataset_options).instances(1))
    assert ids(other_seed.instances(0)) != ids(static.instances(0))


def test_from_files_reads_and_tokenizes_a_corpus(data_dir, tokenizer):
    dataset = PretrainingDataset.from_files([data_dir / "pretrain_corpus" / "sample_text.txt"],
                                            tokenizer, max_seq_length=32, batch_size=4,
                                            dupe_factor=3)
    assert len(dataset.documents) == 3
    batch = next(dataset.batches(0))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 32


# ---- bad input: a ValueError that names the problem --------------------------------------------

def test_bad_input_is_a_clear_error(data_dir, tokenizer, tmp_path):
    documents = synthetic_documents(3, 4)
    with pytest.raises(ValueError, match="at least 2 documents"):
        PretrainingDataset(documents[:1], tokenizer)
    with pytest.raises(ValueError, match="max_seq_length=4 is too short"):
        PretrainingDataset(documents, tokenizer, max_seq_length=4)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        PretrainingDataset(documents, tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="mlm_probability must be in"):
        PretrainingDataset(documents, tokenizer, mlm_probability=1.5)
    with pytest.raises(ValueError, match="corpus file not found"):
        read_documents([tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match="corpus_format must be one of"):
        read_documents([data_dir / "pretrain_corpus" / "sample_text.txt"], corpus_format="xml")
