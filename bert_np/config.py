"""BertConfig: the hyper-parameters of a BERT model, with Hugging Face's `config.json` field names.

A config is validated when it is made, so an impossible model (hidden size not divisible by the
number of heads, a negative size, an unknown activation) fails here with a message that names the
field, not later inside a matrix product.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
# config.json fields that make transformers import and run code named by the config; a model saved
# by bert_np is plain BERT, so they are not written again
NOT_SAVED = ("auto_map", "trust_remote_code")
# written by save_pretrained into config.json: the checksum of the weights saved with it, which
# loading checks (hf.open_pair); a record of the file, not a setting of the model
WEIGHTS_RECORD = "bert_np_weights_sha256"

# name -> (num_hidden_layers, hidden_size, num_attention_heads); intermediate size is 4 * hidden.
# tiny..medium are the compact BERTs of Turc et al. (2019); base and large are Devlin et al. (2019).
PRESETS = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    num_labels: int = 2
    classifier_dropout: float | None = None
    id2label: dict | None = None
    # the loss of BertForSequenceClassification: None decides as transformers does (regression
    # for num_labels == 1, else single-label for integer labels)
    problem_type: str | None = None
    # False: the MLM decoder has its own weight cls.predictions.decoder.weight (and bias)
    tie_word_embeddings: bool = True
    # fields of a config.json that bert_np does not use, kept so that a round trip loses nothing
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        # a config.json may hold null or "0.1" where a number belongs: name the field here rather
        # than fail in a comparison or a matrix product later
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                     "layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"BertConfig.{name} must be a finite number, got {value!r}")
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int):
            raise ValueError(f"BertConfig.pad_token_id must be an integer token id, got "
                             f"{self.pad_token_id!r}")
        if not isinstance(self.hidden_act, str):
            raise ValueError(f"BertConfig.hidden_act must be a string, got {self.hidden_act!r}")
        if self.id2label is not None:
            self.id2label = _label_names(self.id2label)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act {self.hidden_act!r} is not supported; "
                             f"choose one of {ACTIVATIONS}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"BertConfig.layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig.pad_token_id ({self.pad_token_id}) must be in [0, vocab_size)")
        if not (isinstance(self.initializer_range, (int, float)) and 0 <= self.initializer_range < math.inf):
            raise ValueError(f"BertConfig.initializer_range must be a finite number >= 0, "
                             f"got {self.initializer_range!r}")
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"BertConfig.problem_type must be one of {PROBLEM_TYPES}, "
                             f"got {self.problem_type!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"BertConfig.tie_word_embeddings must be true or false, "
                             f"got {self.tie_word_embeddings!r}")
        if self.id2label is not None and len(self.id2label) != self.num_labels:
            raise ValueError(f"BertConfig.id2label has {len(self.id2label)} labels but num_labels "
                             f"is {self.num_labels}")
        # config.json fields that change the computation but that bert_np does not implement:
        # refusing them is better than silently computing a different model
        unsupported = {"position_embedding_type": "absolute", "is_decoder": False,
                       "add_cross_attention": False}
        for name, supported in unsupported.items():
            if self.extra.get(name, supported) != supported:
                raise ValueError(f"config field {name}={self.extra[name]!r} is not supported by "
                                 f"bert_np (only {supported!r})")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def preset(cls, name: str, **overrides) -> "BertConfig":
        """A standard size by name (tiny mini small medium base large); fields can be overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        fields = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      intermediate_size=4 * hidden)
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a JSON object, got {type(d).__name__}")
        kwargs = {k: v for k, v in d.items() if k in known}
        sized = isinstance(kwargs.get("id2label"), (dict, list))  # others: refused when made
        if sized and "num_labels" not in d:
            kwargs["num_labels"] = len(kwargs["id2label"])
        elif sized and len(kwargs["id2label"]) != kwargs["num_labels"]:
            # as transformers: an explicit num_labels wins over a label map of another length
            logging.getLogger("bert_np").warning(
                "config num_labels=%s disagrees with its id2label of %d labels; using num_labels",
                kwargs["num_labels"], len(kwargs["id2label"]))
            kwargs["id2label"] = None
        extra = {k: v for k, v in d.items() if k not in known and k != "label2id"}
        return cls(**kwargs, extra=extra)

    def overridden(self, overrides: dict, where: str = "from_pretrained") -> "BertConfig":
        """This config with some fields replaced, each name checked (a typo such as num_label
        would otherwise be kept as an unused field); a new num_labels without new label names
        drops the old names."""
        known = sorted(f.name for f in dataclasses.fields(self) if f.name != "extra")
        unknown = [name for name in overrides if name not in known]
        if unknown:
            close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
            named = ", ".join(f"{name!r}" + "".join(f" (did you mean {m!r}?)" for m in close[name])
                              for name in unknown)
            hint = "" if any(close.values()) else f"; the fields are {', '.join(known)}"
            raise ValueError(f"{where}: unknown config field {named}{hint}")
        fields = self.to_dict()
        fields.update(overrides)
        if "num_labels" in overrides and "id2label" not in overrides:
            fields.pop("id2label", None)
        return BertConfig.from_dict(fields)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, text: str | None = None) -> "BertConfig":
        """The config in the file `path`; `text` is its content when the caller has read it."""
        if text is None:
            text = Path(path).read_text(encoding="utf-8")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a config must be a JSON object, got {type(d).__name__}")
        d.pop(WEIGHTS_RECORD, None)
        if d.get("model_type", "bert") != "bert":
            raise ValueError(f"{path} describes a {d['model_type']!r} model, not a BERT")
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        d["model_type"] = "bert"
        for name in NOT_SAVED:
            d.pop(name, None)
        # transformers reads the number of labels from id2label, so it is always written
        id2label = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        d["id2label"] = {str(k): v for k, v in id2label.items()}
        d["label2id"] = {v: int(k) for k, v in id2label.items()}
        return d

    def to_json_file(self, path: str | os.PathLike, architecture: str | None = None) -> None:
        d = self.to_dict()
        if architecture is not None:
            d["architectures"] = [architecture]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(d, f, indent=2, sort_keys=True)
            f.write("\n")


def _label_names(id2label) -> dict[int, str]:
    """id2label as {class id: name}: a list of names, or keys that are integers or integer
    strings (JSON writes "0"), covering 0..n-1; names are strings (label2id is built from them)."""
    if isinstance(id2label, (list, tuple)):
        id2label = dict(enumerate(id2label))
    if not isinstance(id2label, dict):
        raise ValueError(f"BertConfig.id2label must map class ids to names (or list the names), "
                         f"got {id2label!r}")
    out = {}
    for key, name in id2label.items():
        if isinstance(key, str) and re.fullmatch(r"\d+", key):
            key = int(key)
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < len(id2label):
            raise ValueError(f"BertConfig.id2label keys must be the class ids 0 to "
                             f"{len(id2label) - 1}, got {key!r}")
        if not isinstance(name, str):
            raise ValueError(f"BertConfig.id2label names must be strings, got {name!r}")
        out[key] = name
    return dict(sorted(out.items()))
