"""Pretraining on corpora of short documents (Chinese headlines and reviews, issue 16): sentences
split after 。！？!?, the task text exported one sentence per line, MLM-only packed sequences
(`--no-nsp`), and Chinese text lower-cased for bert-base-chinese's vocabulary."""
import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import bert_np
from bert_np.cli import add_settings_options, settings_from_args
from bert_np.data.pretraining import (PretrainingDataset, create_packed_instances,
                                      split_chinese_sentences)
from bert_np.data.tasks import Example
from bert_np.tokenization import BertTokenizer
from bert_np.train.finetune import load_tokenizer
from bert_np.train.pretrain import PretrainSettings, pretrain

REPO = Path(__file__).resolve().parents[1]
CLS, SEP = 101, 102

HEADLINES = ["苹果发布新款手机", "国足客场战平叙利亚", "这家餐厅的菜好吃吗？", "股市今天大涨",
             "电影票房突破十亿！", "新能源汽车销量创新高", "高考作文题目公布了", "明天北京有雨"]
REVIEWS = ["物流很快。包装也好！还会再来买吗？会的。", "屏幕不错，电池一般。", "他说：“好！”然后走了。"]


def export_script():
    spec = importlib.util.spec_from_file_location(
        "export_pretraining_text", REPO / "data_scripts" / "export_pretraining_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numbered_documents(lengths):
    """Documents of one sentence each; document d holds the ids 1000 d, 1000 d + 1, ..."""
    return [[list(range(1000 * d, 1000 * d + n))] for d, n in enumerate(lengths, start=1)]


# ---- sentences and the exported corpus ----------------------------------------------------------

@pytest.mark.parametrize("text, sentences", [
    ("物流很快。包装也好！还会再来买吗？会的。", ["物流很快。", "包装也好！", "还会再来买吗？", "会的。"]),
    ("他说：“好！”然后走了。", ["他说：“好！”", "然后走了。"]),   # the closing quote stays
    ("太差了！！！不会再买", ["太差了！！！", "不会再买"]),           # a run of stops is one end
    ("Wow!! 不错", ["Wow!!", "不错"]),
    ("版本3.5，价格99.9元，没有句号", ["版本3.5，价格99.9元，没有句号"]),  # "." is no Chinese stop
    ("   ", []),
])
def test_chinese_sentences_end_after_stops(text, sentences):
    assert split_chinese_sentences(text) == sentences
    assert "".join(split_chinese_sentences(text)) == text.replace(" ", "")


def test_export_writes_one_sentence_per_line_and_a_blank_line_after_each_document():
    script = export_script()
    zh = [Example(REVIEWS[0], None, 1), Example("短标题", None, 0), Example("", None, 0)]
    documents = [script.document_sentences(e, "zh") for e in zh]
    assert documents == [["物流很快。", "包装也好！", "还会再来买吗？", "会的。"], ["短标题"], []]
    assert script.corpus_text(documents) == ("物流很快。\n包装也好！\n还会再来买吗？\n会的。\n\n"
                                             "短标题\n\n")
    pair = Example("It rained. We stayed in.", "A line\nbroken.", 1)
    assert script.document_sentences(pair, "en") == ["It rained.", "We stayed in.", "A line broken."]


def test_export_of_tnews_train_and_dev(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BERT_NP_DATA", str(data_dir))
    monkeypatch.setenv("BERT_NP_CACHE", str(tmp_path / "cache"))
    script = export_script()
    for split, documents in (("train", 10231), ("dev", 1137)):
        assert script.main(["--task", "tnews", "--split", split,
                            "--out", str(tmp_path / f"{split}.txt")]) == 0
        assert f"wrote {documents} documents of tnews {split}" in capsys.readouterr().out
    train = (tmp_path / "train.txt").read_text(encoding="utf-8").split("\n\n")[:-1]
    dev = (tmp_path / "dev.txt").read_text(encoding="utf-8").split("\n\n")[:-1]
    assert len(train) == 10231 and len(dev) == 1137 and not set(train) & set(dev)


# ---- packed MLM-only instances -----------------------------------------------------------------

def test_packing_keeps_every_token_once_in_full_blocks():
    lengths = [5, 1, 12, 3, 7, 2, 9]
    documents = numbered_documents(lengths)
    instances = create_packed_instances(documents, np.random.default_rng(0), CLS, SEP,
                                        max_seq_length=10)
    for x in instances:
        assert x.input_ids[0] == CLS and x.input_ids[-1] == SEP
        assert not x.token_type_ids.any() and x.next_sentence_label is None
    assert all(len(x.input_ids) == 10 for x in instances[:-1])   # only the last block is short
    stream = [t for x in instances for t in x.input_ids[1:-1]]
    assert len(instances) == -(-(sum(lengths) + len(lengths)) // 8)
    assert stream.count(SEP) == len(documents)                  # one [SEP] after each document
    packed, current = [], []                                     # the stream cut at each [SEP]
    for token in stream:
        if token == SEP:
            packed.append(current)
            current = []
        else:
            current.append(int(token))
    order = np.random.default_rng(0).permutation(len(documents))  # the order drawn from the rng
    assert packed == [documents[d][0] for d in order] and current == []


def test_packed_batches_carry_no_next_sentence_labels_and_repack_each_epoch():
    tokenizer = BertTokenizer({t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *map(str, range(9000))])})
    documents = numbered_documents([3, 4, 5, 6, 2, 8, 1, 4])
    options = dict(max_seq_length=8, batch_size=4, nsp=False)
    static = PretrainingDataset(documents, tokenizer, **options)
    batch = next(static.batches(0))
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert (batch["labels"] != -100).any(axis=1).all()           # every sequence predicts tokens
    ids = [list(x.input_ids) for x in static.instances(0)]
    assert [list(x.input_ids) for x in static.instances(1)] == ids
    repacked = PretrainingDataset(documents, tokenizer, new_pairs_each_epoch=True, **options)
    assert [list(x.input_ids) for x in repacked.instances(1)] != ids
    with_nsp = PretrainingDataset(documents, tokenizer, max_seq_length=8, batch_size=4)
    assert next(with_nsp.batches(0))["next_sentence_label"].shape == (4,)


def test_mlm_only_pretraining_end_to_end(data_dir, tmp_path):
    corpus = tmp_path / "headlines.txt"
    corpus.write_text("".join(h + "\n\n" for h in HEADLINES), encoding="utf-8")
    vocab = data_dir / "vocab" / "bert-base-chinese" / "vocab.txt"
    config = bert_np.BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=32)
    config.to_json_file(tmp_path / "config.json")
    parser = argparse.ArgumentParser()
    add_settings_options(parser, PretrainSettings)
    args = parser.parse_args(["--corpus", str(corpus), "--eval-corpus", str(corpus), "--vocab",
                              str(vocab), "--config", str(tmp_path / "config.json"), "--out",
                              str(tmp_path / "run"), "--no-nsp", "--steps", "3", "--batch-size",
                              "2", "--max-seq-length", "16", "--eval-every", "3",
                              "--eval-batches", "1"])
    settings = settings_from_args(PretrainSettings, args)
    assert settings.nsp is False
    result = pretrain(settings, progress=False)
    assert result["step"] == 3 and "nsp_acc" not in result["last_eval"]
    records = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 3 and all("mlm_acc" in r and "nsp_acc" not in r for r in train)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    assert bert_np.BertForPreTraining.from_pretrained(tmp_path / "run" / "final").config \
        .hidden_size == 32


# ---- Chinese text is lower-cased for bert-base-chinese's vocabulary ----------------------------

def test_chinese_vocabulary_has_no_capitals_so_a_preset_lower_cases(data_dir, monkeypatch):
    monkeypatch.setenv("BERT_NP_DATA", str(data_dir))
    vocab = (data_dir / "vocab" / "bert-base-chinese" / "vocab.txt").read_text(encoding="utf-8")
    with_capitals = [t for t in vocab.split("\n") if any("A" <= c <= "Z" for c in t)]
    assert with_capitals == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<S>", "<T>"]
    tokenizer = load_tokenizer("mini", "zh")
    assert tokenizer.lowercase
    assert tokenizer.unk_id not in tokenizer.encode_plain(["NBA球星买了iPhone和SUV"])[0]
