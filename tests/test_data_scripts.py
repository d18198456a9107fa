"""The dataset converters (bert_np.data.prepare) on the real files and on small malformed ones,
and the command-line scripts in data_scripts/ that wrap them."""
import functools
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from bert_np.data import prepare
from bert_np.data.prepare import (DataFormatError, convert_task, make_sst2_demo, random_split,
                                  write_jsonl)
from bert_np.data.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "data_scripts"
DEMO_DIR = REPO / "bert_np" / "demo_data" / "sst2"

# (train, dev, test) rows written for each task from the shared data
EXPECTED_ROWS = {
    "sst2": (67349, 872, 1821),
    "mrpc": (3668, 408, 1725),
    "cola": (8551, 1043, 1063),
    "stsb": (5749, 1500, 1379),
    "rte": (2490, 277, 3000),
    "imdb": (22500, 2500, 25000),
    "tnews": (10231, 1137, 10000),
    "zh_sentiment": (50179, 6272, 6272),
}


@pytest.fixture(scope="session")
def converted(data_dir):
    """convert_task(name, data_dir), each task converted at most once per test session."""
    return functools.cache(lambda name: convert_task(name, data_dir))


# ----------------------------------------------------------------------------- real files


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_converter_writes_the_known_number_of_rows(converted, name):
    splits = converted(name).splits
    assert tuple(len(splits[split]) for split in ("train", "dev", "test")) == EXPECTED_ROWS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_rows_have_the_fields_of_their_task(converted, name):
    task = TASKS[name]
    for split, rows in converted(name).splits.items():
        labelled = split != "test" or task.test_has_labels
        for row in rows:
            assert isinstance(row["text_a"], str) and row["text_a"] == row["text_a"].strip()
            assert row["text_a"]
            assert ("text_b" in row) == task.is_pair
            assert ("label" in row) == labelled


@pytest.mark.parametrize("name", sorted(name for name in EXPECTED_ROWS if name != "stsb"))
def test_every_class_occurs_in_every_labelled_split(converted, name):
    task = TASKS[name]
    for split, rows in converted(name).splits.items():
        if split != "test" or task.test_has_labels:
            assert {row["label"] for row in rows} == set(range(task.num_labels)), split


def test_stsb_labels_are_scores_from_0_to_5(converted):
    splits = converted("stsb").splits
    scores = [row["label"] for split in ("train", "dev") for row in splits[split]]
    assert all(isinstance(score, float) for score in scores)
    assert (min(scores), max(scores)) == (0.0, 5.0)


def test_glue_quotes_are_kept_as_text(converted):
    # MRPC's first dev pair has an unbalanced quote; a quote-aware reader would merge lines
    first = converted("mrpc").splits["dev"][0]
    assert first["text_b"] == ('" The foodservice pie business does not fit our long-term growth '
                               'strategy .')


def test_imdb_test_is_balanced_and_free_of_html_breaks(converted):
    splits = converted("imdb").splits
    assert sum(row["label"] for row in splits["test"]) == 12500
    assert not any("<br />" in row["text_a"] for rows in splits.values() for row in rows)


def split_texts(converted, name):
    """The set of texts of each split."""
    splits = converted(name).splits
    return {split: {row["text_a"] for row in rows} for split, rows in splits.items()}


@pytest.mark.parametrize("name", ["tnews", "zh_sentiment"])
def test_deduplicated_random_splits_do_not_share_texts(converted, name):
    texts = split_texts(converted, name)
    assert not texts["train"] & texts["dev"]
    assert not texts["dev"] & texts["test"]
    assert not texts["train"] & texts["test"]


def test_imdb_keeps_the_official_reviews_including_their_repeats(converted):
    # IMDB is not deduplicated: the official train set repeats 97 reviews and shares 123 with
    # the official test set, so a few texts occur in two of our splits
    texts = split_texts(converted, "imdb")
    assert len(texts["train"] & texts["dev"]) == 14
    assert len(texts["dev"] & texts["test"]) == 15
    assert len(texts["train"] & texts["test"]) == 108


def official_imdb_reviews(archive):
    """{split: Counter of (text, label)} of the official labelled IMDB reviews, read straight from
    the tarball: aclImdb/{train,test}/{neg,pos}/*.txt, `<br />` as a space, outer spaces stripped
    (the project's cleaning of a review)."""
    from collections import Counter
    found = {"train": Counter(), "test": Counter()}
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] in found \
                    and parts[2] in ("neg", "pos"):
                text = tar.extractfile(member).read().decode("utf-8")
                found[parts[1]][(text.replace("<br />", " ").strip(), int(parts[2] == "pos"))] += 1
    return found


def test_imdb_full_size_uses_every_official_review_and_carves_dev_out_of_train(converted,
                                                                               data_dir):
    # the reported split is the official test set, all 25,000 labelled reviews; the official
    # 25,000 training reviews are split, each review going to exactly one of train (22,500) and
    # dev (2,500, for model selection); compared as multisets of (text, label), since the
    # official train set itself repeats 97 reviews
    from collections import Counter
    official = official_imdb_reviews(data_dir / "imdb" / "aclImdb_v1_labeled.tar.gz")
    assert sum(official["train"].values()) == sum(official["test"].values()) == 25000
    splits = {split: Counter((row["text_a"], row["label"]) for row in rows)
              for split, rows in converted("imdb").splits.items()}
    assert sum(splits["train"].values()) == 22500 and sum(splits["dev"].values()) == 2500
    assert splits["train"] + splits["dev"] == official["train"]
    assert splits["test"] == official["test"]
    # the seeded draw (prepare.SPLIT_SEED): 1,268 positive and 1,232 negative dev reviews
    assert sum(label * n for (_, label), n in splits["dev"].items()) == 1268


def test_imdb_test_split_is_labelled_and_evaluate_scores_all_of_it(data_dir, tmp_path,
                                                                   monkeypatch):
    # `bert-np evaluate --task imdb --split test` scores the 25,000 official test reviews (a
    # random tiny model at 16 tokens: the plumbing, not the accuracy)
    import numpy as np
    import bert_np
    from bert_np.data.tasks import load_split
    from bert_np.tokenization import BertTokenizer
    from bert_np.train.finetune import evaluate_saved_model
    monkeypatch.setenv("BERT_NP_CACHE", str(tmp_path / "cache"))
    test = load_split("imdb", "test")
    assert len(test) == 25000 and sorted({e.label for e in test}) == [0, 1]
    assert sum(e.label for e in test) == 12500
    tokenizer = BertTokenizer.from_vocab(data_dir / "vocab" / "bert-base-uncased" / "vocab.txt")
    cfg = bert_np.BertConfig.preset("tiny", vocab_size=tokenizer.vocab_size, num_labels=2)
    bert_np.BertForSequenceClassification(cfg, seed=0, dtype=np.float32).save_pretrained(
        tmp_path / "model")
    tokenizer.save(tmp_path / "model")
    metrics = evaluate_saved_model(str(tmp_path / "model"), "imdb", "test", max_seq_length=16,
                                   progress=False, truncation="head_tail")
    assert set(metrics) - {"constant_prediction"} == {"accuracy"}
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert (metrics["accuracy"] * 25000) % 1 == 0      # a fraction of the 25,000 reviews
    if "constant_prediction" in metrics:               # one class for all: half of a balanced split
        assert metrics["accuracy"] == 0.5


def test_tnews_drops_and_counts_train_rows_seen_in_the_test_split(converted):
    assert dict(converted("tnews").dropped) == {
        "train row whose sentence is in CLUE dev (our test)": 490,
        "repeated sentence within train": 141}
    # 11,999 partial train rows - 490 - 141 = 11,368 = 10,231 train + 1,137 dev


def test_zh_sentiment_drops_and_counts_empty_and_repeated_reviews(converted):
    assert dict(converted("zh_sentiment").dropped) == {
        "empty review": 1, "repeated review (first occurrence kept)": 50}
    # 62,774 reviews - 1 - 50 = 62,723 = 50,179 + 6,272 + 6,272


def test_conversion_is_deterministic(converted, data_dir):
    assert convert_task("zh_sentiment", data_dir).splits == converted("zh_sentiment").splits


def test_shipped_demo_is_reproduced_byte_for_byte(data_dir, tmp_path):
    make_sst2_demo(data_dir, tmp_path)
    for name in ("train.jsonl", "dev.jsonl"):
        assert (tmp_path / name).read_bytes() == (DEMO_DIR / name).read_bytes(), name


def test_demo_stays_small():
    assert sum(path.stat().st_size for path in DEMO_DIR.iterdir()) < 500_000


# ----------------------------------------------------------------------------- malformed input


def make_glue_dir(root, folder, files):
    """A data directory holding glue/<folder>/<name> for each name -> text in files."""
    target = root / "glue" / folder
    target.mkdir(parents=True)
    for name, text in files.items():
        (target / name).write_text(text, encoding="utf-8")
    return root


SST2_OK = "sentence\tlabel\ngood film\t1\nbad film\t0\n"


def test_glue_row_with_a_wrong_field_count_names_file_and_line(tmp_path):
    make_glue_dir(tmp_path, "SST-2", {"train.tsv": "sentence\tlabel\ngood\t1\nno label here\n",
                                      "dev.tsv": SST2_OK, "test.tsv": "index\tsentence\n"})
    with pytest.raises(DataFormatError, match=r"SST-2/train.tsv:3: expected 2 tab-separated "
                                              r"fields, found 1"):
        convert_task("sst2", tmp_path)


@pytest.mark.parametrize("folder, name, text, message", [
    ("SST-2", "sst2", "sentence\tlabel\ngood\t1\nbad\t2\n",
     r"train.tsv:3: label '2' is not one of 0, 1"),
    ("SST-2", "sst2", "sentence\tlabel\ngood\t1\n \t0\n", r"train.tsv:3: empty text"),
    ("RTE", "rte", "index\ts1\ts2\tlabel\n0\ta\tb\tneutral\n",
     r"train.tsv:2: label 'neutral' is not one of entailment, not_entailment"),
    ("STS-B", "stsb", "h\th\th\th\th\th\th\th\th\th\n0\tg\tf\ty\t0\tn\tn\ta\tb\t5.2\n",
     r"train.tsv:2: score 5.2 is outside \[0, 5\]"),
])
def test_glue_bad_labels_and_empty_texts_name_file_and_line(tmp_path, folder, name, text, message):
    make_glue_dir(tmp_path, folder, {"train.tsv": text})
    with pytest.raises(DataFormatError, match=message):
        convert_task(name, tmp_path)


def test_glue_split_of_the_wrong_size_is_an_error(tmp_path):
    make_glue_dir(tmp_path, "SST-2", {"train.tsv": SST2_OK})
    with pytest.raises(DataFormatError, match="train.tsv: 2 rows, expected 67349"):
        convert_task("sst2", tmp_path)


def add_tar_member(tar, name, text):
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_imdb_rating_that_contradicts_its_folder_names_the_member(tmp_path):
    (tmp_path / "imdb").mkdir()
    with tarfile.open(tmp_path / "imdb" / "aclImdb_v1.tar.gz", "w:gz") as tar:
        add_tar_member(tar, "aclImdb/train/pos/0_9.txt", "Great.<br />Loved it.")
        add_tar_member(tar, "aclImdb/train/pos/1_2.txt", "Awful.")
    with pytest.raises(DataFormatError, match="aclImdb/train/pos/1_2.txt: rating 2 contradicts"):
        convert_task("imdb", tmp_path)


def test_imdb_with_missing_reviews_is_an_error(tmp_path):
    (tmp_path / "imdb").mkdir()
    with tarfile.open(tmp_path / "imdb" / "aclImdb_v1.tar.gz", "w:gz") as tar:
        add_tar_member(tar, "aclImdb/train/pos/0_9.txt", "Great.")
    with pytest.raises(DataFormatError, match="aclImdb/train/neg: 0 rows, expected 12500"):
        convert_task("imdb", tmp_path)


def make_tnews_dir(root, dev_lines):
    folder = root / "tnews"
    folder.mkdir()
    (folder / "labels.json").write_text(
        '[{"label": "100", "label_desc": "news_story"}, {"label": "101", "label_desc": "x"}]')
    (folder / "dev.json").write_text("\n".join(dev_lines) + "\n", encoding="utf-8")
    (folder / "train_processed.json").write_text('[{"label": "101", "sentence": "t"}]')
    return root


@pytest.mark.parametrize("bad_line, message", [
    ('{"label": "100", "sentence": ', "dev.json:2: invalid JSON"),
    ('{"label": "105", "sentence": "s"}', "dev.json:2: unknown label '105'"),
    ('{"label": "100"}', "dev.json:2: expected an object with 'sentence' and 'label'"),
])
def test_tnews_bad_rows_name_file_and_line(tmp_path, bad_line, message):
    make_tnews_dir(tmp_path, ['{"label": "101", "sentence": "ok"}', bad_line])
    with pytest.raises(DataFormatError, match=message):
        convert_task("tnews", tmp_path)


def test_tnews_maps_label_ids_in_the_order_of_labels_json(tmp_path):
    make_tnews_dir(tmp_path, ['{"label": "101", "sentence": "a"}',
                              '{"label": "100", "sentence": "b"}'])
    assert convert_task("tnews", tmp_path).splits["test"] == [{"text_a": "a", "label": 1},
                                                              {"text_a": "b", "label": 0}]


def make_zh_zip(root, csv_text):
    (root / "zh_sentiment").mkdir()
    with zipfile.ZipFile(root / "zh_sentiment" / "online_shopping_10_cats.zip", "w") as archive:
        archive.writestr("online_shopping_10_cats.csv", csv_text)
    return root


def test_zh_sentiment_counts_empty_and_repeated_reviews(tmp_path):
    rows = ["cat,label,review"] + [f"书籍,{i % 2},评论{i}" for i in range(18)]
    rows += ["书籍,1,", "书籍,0,评论3", "书籍,1,\ufeff评论4"]
    converted = convert_task("zh_sentiment", make_zh_zip(tmp_path, "\n".join(rows) + "\n"))
    assert dict(converted.dropped) == {"empty review": 1,
                                       "repeated review (first occurrence kept)": 2}
    assert [len(rows) for rows in converted.splits.values()] == [14, 2, 2]


def test_zh_sentiment_bad_label_names_the_line(tmp_path):
    make_zh_zip(tmp_path, "cat,label,review\n书籍,1,好\n书籍,positive,好书\n")
    with pytest.raises(DataFormatError, match="online_shopping_10_cats.csv:3: label 'positive'"):
        convert_task("zh_sentiment", tmp_path)


# ----------------------------------------------------------------------------- helpers


def test_random_split_is_a_seeded_partition_that_keeps_the_order():
    rows = list(range(100))
    train, dev, test = random_split(rows, [80, 10, 10], seed=0)
    assert sorted(train + dev + test) == rows
    assert all(part == sorted(part) for part in (train, dev, test))
    assert random_split(rows, [80, 10, 10], seed=0) == [train, dev, test]
    assert random_split(rows, [80, 10, 10], seed=1) != [train, dev, test]
    with pytest.raises(ValueError, match="do not add up"):
        random_split(rows, [80, 10], seed=0)


def test_write_jsonl_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "out" / "train.jsonl"
    write_jsonl(path, [{"text_a": "旧", "label": 0}])
    assert path.read_text(encoding="utf-8") == '{"text_a": "旧", "label": 0}\n'
    # a failure half-way leaves the previous file intact and no temporary file behind
    with pytest.raises(TypeError):
        write_jsonl(path, [{"text_a": "new", "label": 1}, {"text_a": object()}])
    assert path.read_text(encoding="utf-8") == '{"text_a": "旧", "label": 0}\n'
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]


# ----------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_each_task_has_a_script_documenting_its_official_download(name):
    script = SCRIPTS / f"prepare_{name}.py"
    text = script.read_text(encoding="utf-8")
    assert "https://" in text.split('"""')[1]
    assert f'main(task="{name}"' in text


def test_script_converts_into_the_output_directory(data_dir, tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPTS / "prepare_rte.py"),
                             "--src", str(data_dir), "--out", str(tmp_path)],
                            capture_output=True, text=True, check=True)
    assert "train: 2490 rows" in result.stdout
    lines = (tmp_path / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 277 and set(json.loads(lines[0])) == {"text_a", "text_b", "label"}


def test_script_without_a_data_directory_explains_what_to_do(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "BERT_NP_DATA"}
    result = subprocess.run([sys.executable, str(SCRIPTS / "prepare_sst2.py"),
                             "--out", str(tmp_path)], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "pass --src or set $BERT_NP_DATA" in result.stderr


def test_prepare_module_lists_every_task_as_a_choice():
    assert set(prepare.CONVERTERS) == set(TASKS)
