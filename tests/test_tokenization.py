"""BertTokenizer against transformers.BertTokenizerFast on the same vocabulary.

The reference is built the way a user builds it, `BertTokenizerFast.from_pretrained(folder)`, with
a folder holding only vocab.txt (+ tokenizer_config.json for bert-base-chinese, which says
do_lower_case false). Ids, segment ids, tokens and decoded text must be identical, exactly: a
tokenizer has no tolerance.
"""
import re
import shutil
import warnings

import numpy as np
import pytest

from bert_np.data.batching import pad_sequences
from bert_np.tokenization import (SPECIAL_TOKENS, BertTokenizer, head_tail_lengths, read_vocab,
                                  train_wordpiece)

transformers = pytest.importorskip("transformers")

ENGLISH = [
    "Hello, World!",
    "The quick brown fox doesn't jump over the lazy dog... e.g. U.S.A. $3.50 @home #tag",
    "unaffable antidisestablishmentarianism",
    "Héllo wörld: Ångström, naïve café, Ελληνικά, русский",  # accents stripped when uncased
    "",                                                        # empty string -> [CLS] [SEP]
    "   \t\n ",                                                # whitespace only
    "[MASK] stays one token, [mask] does not; [CLS] too",      # special tokens in the text
    "odd: \u2028 \u200b zero\u00a0nbsp \x00ctrl \ufffd 😀 ﬁ ℌ Ⅻ",  # separators, controls
    "ＡＢＣ１２３ ｶﾀｶﾅ full-width and half-width forms",
    "a" * 120 + " is longer than 100 characters, so it becomes [UNK]",
]
CHINESE = [
    "我爱北京天安门。今天天气很好！",
    "BERT 模型 uses WordPiece 分词，2024年发布。",
    "这家店的东西质量不错，物流也很快，下次还会再来买。",
    "日本語のテキストと한국어 mixed with English",
]
SECOND_TEXTS = [None, "A second segment.", "第二句话。"]


def reference_folder(tmp_path_factory, data_dir, name):
    """A model folder with the vocab (and tokenizer_config.json, if the model ships one)."""
    folder = tmp_path_factory.mktemp(name)
    source = data_dir / "vocab" / name
    shutil.copy(source / "vocab.txt", folder)
    if (source / "tokenizer_config.json").is_file():
        shutil.copy(source / "tokenizer_config.json", folder)
    return folder


@pytest.fixture(scope="module", params=["bert-base-uncased", "bert-base-chinese"])
def tokenizer_pair(request, tmp_path_factory, data_dir):
    """(ours, reference) for one vocabulary, both loaded from the same folder."""
    folder = reference_folder(tmp_path_factory, data_dir, request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.BertTokenizerFast.from_pretrained(folder)
    return BertTokenizer.from_pretrained(folder), reference


@pytest.fixture(scope="module")
def uncased(data_dir):
    return BertTokenizer.from_vocab(data_dir / "vocab" / "bert-base-uncased" / "vocab.txt")


def test_settings_follow_the_model_folder(tokenizer_pair):
    ours, reference = tokenizer_pair
    assert ours.lowercase == reference.do_lower_case
    assert ours.vocab_size == len(reference)
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
        reference.pad_token_id, reference.unk_token_id, reference.cls_token_id,
        reference.sep_token_id, reference.mask_token_id)


@pytest.mark.parametrize("text_b", SECOND_TEXTS)
@pytest.mark.parametrize("text_a", ENGLISH + CHINESE)
def test_ids_and_segments_equal_transformers(tokenizer_pair, text_a, text_b):
    ours, reference = tokenizer_pair
    expected = reference(text_a, text_b)
    encoding = ours.encode(text_a, text_b)
    assert encoding.input_ids == expected["input_ids"]
    assert encoding.token_type_ids == expected["token_type_ids"]
    assert ours.tokenize(text_a) == reference.tokenize(text_a)


@pytest.mark.parametrize("max_length", [3, 4, 7, 12])
@pytest.mark.parametrize("text_b", SECOND_TEXTS[:2])
def test_truncation_equals_transformers_longest_first(tokenizer_pair, max_length, text_b):
    ours, reference = tokenizer_pair
    text_a = ENGLISH[1] + " " + CHINESE[0]
    expected = reference(text_a, text_b, max_length=max_length, truncation=True)
    encoding = ours.encode(text_a, text_b, max_length=max_length)
    assert encoding.input_ids == expected["input_ids"]
    assert encoding.token_type_ids == expected["token_type_ids"]
    assert len(encoding.input_ids) <= max_length


# ---- head + tail truncation ("head_tail"): the first and the last tokens of a long text -------

@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """A tokenizer whose vocabulary is the specials (ids 0-4: [PAD] [UNK] [CLS] [SEP] [MASK]) and
    the words w0 .. w599 (word wi has id 5 + i), so kept tokens can be read off their ids."""
    path = tmp_path_factory.mktemp("numbered") / "vocab.txt"
    path.write_text("".join(t + "\n" for t in SPECIAL_TOKENS)
                    + "".join(f"w{i}\n" for i in range(600)), encoding="utf-8")
    return BertTokenizer.from_vocab(path)


def words(first, stop):
    return " ".join(f"w{i}" for i in range(first, stop))


def test_head_tail_keeps_the_first_and_last_tokens_worked_by_hand(numbered):
    # 20 words, max_length 12: 10 tokens besides [CLS] [SEP]; head round(10 * 128 / 510) = 3
    # (w0 w1 w2, ids 5 6 7) and tail 10 - 3 = 7 (w13 .. w19, ids 18 .. 24)
    encoding = numbered.encode(words(0, 20), max_length=12, truncation="head_tail")
    assert encoding.input_ids == [2, 5, 6, 7, 18, 19, 20, 21, 22, 23, 24, 3]
    assert encoding.token_type_ids == [0] * 12
    # "head" (and True) keep the first 10: w0 .. w9
    assert numbered.encode(words(0, 20), max_length=12, truncation="head").input_ids == \
        [2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3]


def test_head_tail_keeps_128_plus_382_at_512_and_64_plus_190_at_256(numbered):
    text = words(0, 600)                                   # 600 tokens, ids 5 .. 604
    at_512 = numbered.encode(text, max_length=512, truncation="head_tail").input_ids
    assert at_512 == [2] + list(range(5, 5 + 128)) + list(range(5 + 600 - 382, 5 + 600)) + [3]
    at_256 = numbered.encode(text, max_length=256, truncation="head_tail").input_ids
    assert at_256 == [2] + list(range(5, 5 + 64)) + list(range(5 + 600 - 190, 5 + 600)) + [3]
    assert head_tail_lengths(510) == (128, 382) and head_tail_lengths(254) == (64, 190)


def test_head_tail_of_a_pair_cuts_each_text_to_its_longest_first_share(numbered):
    # a: 20 tokens, b: 6; max_length 15 leaves 12: longest_first gives b all 6 and a the other 6,
    # of which a keeps head round(6 * 128 / 510) = 2 (w0 w1) and tail 4 (w16 .. w19)
    encoding = numbered.encode(words(0, 20), words(100, 106), max_length=15,
                               truncation="head_tail")
    assert encoding.input_ids == [2, 5, 6, 21, 22, 23, 24, 3, 105, 106, 107, 108, 109, 110, 3]
    assert encoding.token_type_ids == [0] * 8 + [1] * 7


def test_head_tail_leaves_a_text_that_fits_unchanged(numbered):
    for max_length in (22, 30):                            # 20 tokens + [CLS] [SEP] fit
        assert numbered.encode(words(0, 20), max_length=max_length, truncation="head_tail") == \
            numbered.encode(words(0, 20))


@pytest.mark.parametrize("max_length", [512, 256, 64])
def test_head_tail_equals_transformers_head_and_tail_pieces(tokenizer_pair, max_length):
    # the reference: transformers truncating the text on the right to its first `head` tokens
    # and, with truncation_side="left", to its last `tail` tokens; then [CLS] head tail [SEP]
    ours, reference = tokenizer_pair
    text = " ".join(ENGLISH[:4] + CHINESE + ENGLISH[5:]) * 8   # ~1,000 tokens of mixed text
    head, tail = head_tail_lengths(max_length - 2)
    piece = dict(add_special_tokens=False, truncation=True)
    head_ids = reference(text, max_length=head, **piece)["input_ids"]
    reference.truncation_side = "left"
    try:
        tail_ids = reference(text, max_length=tail, **piece)["input_ids"]
    finally:
        reference.truncation_side = "right"
    assert len(reference(text, add_special_tokens=False)["input_ids"]) > max_length
    expected = [reference.cls_token_id] + head_ids + tail_ids + [reference.sep_token_id]
    assert ours.encode(text, max_length=max_length, truncation="head_tail").input_ids == expected


def test_padded_batch_equals_transformers(tokenizer_pair):
    ours, reference = tokenizer_pair
    texts_a, texts_b = ENGLISH[:4] + CHINESE[:2], CHINESE[:3] + ENGLISH[:3]
    expected = reference(texts_a, texts_b, padding=True, return_tensors="np")
    batch = ours.encode_batch(texts_a, texts_b)
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert batch[name].dtype == np.int64
        np.testing.assert_array_equal(batch[name], expected[name], err_msg=name)


@pytest.mark.parametrize("chunk", [1, 3, 10_000])
def test_backend_ids_equal_transformers_in_any_chunk_size(tokenizer_pair, chunk):
    """Every encoding runs the backend on `chunk` texts per call (to bound memory: a corpus or a
    transfer set has 300k sentences); the ids must be transformers' `add_special_tokens=False`
    ids whatever the chunk boundaries (1: every text alone; 3: boundaries inside the list;
    10,000: one call)."""
    ours, reference = tokenizer_pair
    texts = ENGLISH + CHINESE
    expected = reference(texts, add_special_tokens=False)["input_ids"]
    assert ours._backend_ids(texts, chunk=chunk) == expected
    assert ours.encode_plain(texts) == expected


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode_equals_transformers(tokenizer_pair, skip_special_tokens):
    ours, reference = tokenizer_pair
    for text in ENGLISH[:4] + CHINESE:
        ids = reference(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens) == reference.decode(
            ids, skip_special_tokens=skip_special_tokens)
        assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)


def test_uncased_lowercases_and_strips_accents(uncased):
    assert uncased.tokenize("Héllo CAFÉ Ångström") == ["hello", "cafe", "ang", "##strom"]


def test_chinese_keeps_case_so_capitalised_words_are_unknown(data_dir):
    # bert-base-chinese has lower-case English word pieces only and do_lower_case false
    chinese = BertTokenizer.from_pretrained(data_dir / "vocab" / "bert-base-chinese")
    assert not chinese.lowercase
    assert chinese.tokenize("Hello 你好 hello") == ["[UNK]", "你", "好", "hello"]


def test_batch_padding_rounds_up_to_a_multiple(uncased):
    batch = uncased.encode_batch(["one", "two words here"], pad_to_multiple_of=8)
    assert batch["input_ids"].shape == (2, 8)
    np.testing.assert_array_equal(batch["attention_mask"].sum(axis=1), [3, 5])
    assert (batch["input_ids"][batch["attention_mask"] == 0] == uncased.pad_id).all()


def test_save_and_reload_round_trips(uncased, tmp_path):
    reloaded = BertTokenizer.from_pretrained(uncased.save(tmp_path))
    assert reloaded.vocab == uncased.vocab and reloaded.lowercase == uncased.lowercase
    assert reloaded.encode(ENGLISH[1]) == uncased.encode(ENGLISH[1])


def test_trained_vocabulary_starts_with_specials_and_matches_transformers(data_dir, tmp_path):
    corpus = data_dir / "pretrain_corpus" / "sample_text.txt"
    trained = train_wordpiece([corpus], vocab_size=400, out_dir=tmp_path, min_frequency=2)
    vocab = read_vocab(tmp_path / "vocab.txt")
    assert list(vocab)[:5] == list(SPECIAL_TOKENS) and len(vocab) <= 400
    assert trained.vocab == vocab
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    for line in corpus.read_text(encoding="utf-8").splitlines()[:8]:
        assert trained.encode(line).input_ids == reference(line)["input_ids"]


def test_pad_sequences_fills_the_tail():
    np.testing.assert_array_equal(pad_sequences([[1, 2, 3], [4]], pad_value=-1),
                                  [[1, 2, 3], [4, -1, -1]])


# ---- bad input: a ValueError that names the problem --------------------------------------------

def test_missing_vocab_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="vocabulary file not found"):
        BertTokenizer.from_vocab(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="holds no vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("missing", SPECIAL_TOKENS)
def test_vocab_without_a_special_token_is_a_clear_error(tmp_path, missing):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in SPECIAL_TOKENS if t != missing) + "hello\n",
                    encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"lacks the special token(s) ['{missing}']")):
        BertTokenizer.from_vocab(path)


def test_other_bad_input_is_a_clear_error(uncased, tmp_path):
    with pytest.raises(ValueError, match="more than max_length=4, and truncation=False"):
        uncased.encode("a b c d e", max_length=4, truncation=False)
    with pytest.raises(ValueError, match="truncation must be True, False or one of head, "
                                         "head_tail, got 'tail'"):
        uncased.encode("a b c", max_length=4, truncation="tail")
    with pytest.raises(ValueError, match="no room for the 3 special tokens"):
        uncased.encode("a", "b", max_length=2)
    with pytest.raises(ValueError, match="2 first texts but 1 second texts"):
        uncased.encode_batch(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        uncased.decode([101, 10 ** 6])
    with pytest.raises(ValueError, match="expected a text string"):
        uncased.encode(None)
    with pytest.raises(ValueError, match="training files not found"):
        train_wordpiece([tmp_path / "missing.txt"], vocab_size=100, out_dir=tmp_path)
