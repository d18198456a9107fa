"""bert_np.data.tasks: the task registry, the JSONL loader with its error messages, the cached
loading of built-in tasks, and the shipped SST-2 demo sample."""
import json

import pytest

from bert_np.data import tasks
from bert_np.data.tasks import (TASKS, DataFormatError, Example, get_task, load_demo_split,
                                load_jsonl, load_split, task_cache_dir)
from bert_np.train.metrics import METRICS

# ----------------------------------------------------------------------------- registry


def test_registry_holds_the_eight_tasks():
    assert set(TASKS) == {"sst2", "mrpc", "cola", "stsb", "rte", "imdb", "tnews", "zh_sentiment"}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_is_consistent(name):
    task = TASKS[name]
    assert task.main_metric in task.metrics
    assert set(task.metrics) <= set(METRICS)
    assert task.language in ("en", "zh")
    if task.is_regression:
        assert task.label_names == ()
    else:
        assert task.num_labels == len(task.label_names) >= 2


def test_task_properties():
    assert {name for name, task in TASKS.items() if task.is_pair} == {"mrpc", "stsb", "rte"}
    assert {name for name, task in TASKS.items() if task.language == "zh"} == {"tnews",
                                                                              "zh_sentiment"}
    assert get_task("stsb").num_labels == 1 and get_task("stsb").is_regression
    assert get_task("tnews").num_labels == 15
    assert get_task("cola").main_metric == "mcc"
    assert get_task("mrpc").main_metric == "f1"
    assert get_task("rte").label_names == ("entailment", "not_entailment")


def test_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown task 'sst5'.*sst2"):
        get_task("sst5")


def test_tnews_label_names_follow_labels_json(data_dir):
    entries = json.loads((data_dir / "tnews" / "labels.json").read_text(encoding="utf-8"))
    assert TASKS["tnews"].label_names == tuple(entry["label_desc"] for entry in entries)


# ----------------------------------------------------------------------------- load_jsonl


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_jsonl_reads_single_and_pair_rows(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", [
        '{"text_a": "good film", "label": 1}',
        '',
        '{"text_a": "a", "text_b": "b", "label": 0}',
    ])
    assert load_jsonl(path, num_labels=2) == [Example("good film", None, 1), Example("a", "b", 0)]


def test_load_jsonl_reads_regression_labels_as_floats(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", ['{"text_a": "a", "text_b": "b", "label": 4}'])
    [example] = load_jsonl(path, num_labels=1, is_pair=True)
    assert example.label == 4.0 and isinstance(example.label, float)


def test_load_jsonl_accepts_unlabelled_rows_when_asked(tmp_path):
    path = write_lines(tmp_path / "test.jsonl", ['{"text_a": "a"}'])
    assert load_jsonl(path, num_labels=2, require_label=False) == [Example("a", None, None)]


@pytest.mark.parametrize("bad_line, kwargs, message", [
    ('{"text_a": "a", "label": 1', {}, "invalid JSON"),
    ('["a", 1]', {}, "expected a JSON object, found list"),
    ('{"label": 1}', {}, "missing field 'text_a'"),
    ('{"text_a": "a"}', {}, "missing field 'label'"),
    ('{"text_a": 7, "label": 1}', {}, "field 'text_a' is not a string"),
    ('{"text_a": "a", "label": 2}', {}, r"label 2 is out of range \[0, 2\)"),
    ('{"text_a": "a", "label": -1}', {}, "label -1 is out of range"),
    ('{"text_a": "a", "label": "1"}', {}, "label '1' is not an integer class id"),
    ('{"text_a": "a", "label": 1.0}', {}, "label 1.0 is not an integer class id"),
    ('{"text_a": "a", "label": true}', {}, "label True is not an integer class id"),
    ('{"text_a": "a", "label": 1}', {"is_pair": True}, "missing field 'text_b'"),
    ('{"text_a": "a", "text_b": "b", "label": 1}', {"is_pair": False},
     "unexpected field 'text_b'"),
    ('{"text_a": "a", "text_b": "b", "label": "high"}', {"num_labels": 1},
     "label 'high' is not a finite number"),
    ('{"text_a": "a", "text_b": "b", "label": NaN}', {"num_labels": 1},
     "label nan is not a finite number"),
])
def test_load_jsonl_names_file_and_line_of_a_bad_row(tmp_path, bad_line, kwargs, message):
    good_line = ('{"text_a": "fine", "label": 0}' if kwargs.get("is_pair") is False
                 else '{"text_a": "fine", "text_b": "ok", "label": 0}')
    path = write_lines(tmp_path / "bad.jsonl", [good_line, bad_line])
    kwargs = {"num_labels": 2, **kwargs}
    with pytest.raises(DataFormatError, match=f"bad.jsonl:2: {message}"):
        load_jsonl(path, **kwargs)


# ----------------------------------------------------------------------------- load_split


def test_load_split_converts_once_into_the_cache_then_reads_the_cache(tmp_path, data_dir):
    dev = load_split("rte", "dev", cache_dir=tmp_path, data_dir=data_dir)
    assert len(dev) == 277
    assert dev[0] == Example(
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
        "according to the Christopher Reeve Foundation.", "Christopher Reeve had an accident.", 1)
    folder = task_cache_dir("rte", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["dev.jsonl", "test.jsonl", "train.jsonl"]
    # a second call reads the cached file instead of converting again
    write_lines(folder / "dev.jsonl", ['{"text_a": "cached", "text_b": "row", "label": 0}'])
    assert load_split("rte", "dev", cache_dir=tmp_path, data_dir=data_dir) == [
        Example("cached", "row", 0)]


def test_unlabelled_test_splits_load_without_labels(tmp_path, data_dir):
    test = load_split("sst2", "test", cache_dir=tmp_path, data_dir=data_dir)
    assert len(test) == 1821
    assert {example.label for example in test} == {None}


def test_the_cache_defaults_to_bert_np_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(tasks.CACHE_ENV, str(tmp_path))
    assert task_cache_dir("cola") == tmp_path / "tasks" / tasks.CACHE_VERSION / "cola"
    monkeypatch.delenv(tasks.CACHE_ENV)
    assert task_cache_dir("cola").parts[-5:-2] == (".cache", "bert_np", "tasks")


def test_load_split_rejects_an_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_split("sst2", "validation", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- demo sample


def test_demo_sample_loads_without_a_data_directory(monkeypatch):
    monkeypatch.delenv("BERT_NP_DATA", raising=False)
    train, dev = load_demo_split("train"), load_demo_split("dev")
    assert (len(train), len(dev)) == (3000, 872)
    assert {example.label for example in train + dev} == {0, 1}
    assert all(example.text_b is None and example.text_a for example in train + dev)


def test_demo_has_no_test_split():
    with pytest.raises(ValueError, match="train, dev"):
        load_demo_split("test")
