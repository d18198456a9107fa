"""`bert-np quantize`: a saved float model directory -> its int8 copy (bert_np.quantize_dynamic).

The class is the one config.json's "architectures" names (BertModel when it names none), loaded
strictly (every weight present, none left over), so nothing is dropped or initialised on the way.
The output directory holds the quantized model as save_pretrained writes it (int8 weights, their
`_scale` tensors, the "quantization" entry in config.json) and the tokenizer files of --model,
so `bert-np predict` and `bert-np evaluate` take it as they take the float model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import models
from ..hf import CONFIG_NAME
from ..layers.quantized_linear import Int8Weight
from ..quantize import quantization_of, quantize_dynamic
from ..tokenization import VOCAB_NAME, BertTokenizer
from .checkpoints import prepare_output_dir, save_model_directory
from .finetune import FinetuneSettings
from .settings import setting, setting_like

WEIGHT_FILES = ("*.safetensors", "*.bin")


@dataclass
class QuantizeSettings:
    model: str = setting(help="a saved float model directory (config.json and weights; its "
                              "vocab.txt, if any, goes along)")
    out: str = setting(help="output directory for the int8 model, loadable by from_pretrained, "
                            "`bert-np predict` and `bert-np evaluate`")
    overwrite: bool = setting_like(FinetuneSettings, "overwrite", help="clear a non-empty --out "
                                   "first (without it, a non-empty --out is refused)")

    def __post_init__(self):
        model = Path(self.model)
        if not model.is_dir():
            raise FileNotFoundError(f"--model {model}: no such model directory")
        if not (model / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"--model {model} holds no {CONFIG_NAME}: not a saved model")
        if Path(self.out).resolve() == model.resolve():
            raise ValueError(f"--out {self.out} is --model: the int8 copy needs a directory of "
                             "its own (the float model stays as it is)")


def model_class(model_dir: Path):
    """The bert_np class config.json's "architectures" names; BertModel when it names none."""
    try:
        config = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"--model {model_dir}: {CONFIG_NAME} is not valid JSON ({e})") from None
    names = (config.get("architectures") if isinstance(config, dict) else None) or ["BertModel"]
    known = {name: value for name, value in vars(models).items() if isinstance(value, type)
             and issubclass(value, models.BertPreTrainedModel)
             and value is not models.BertPreTrainedModel}
    cls = known.get(names[0])
    if cls is None:
        raise ValueError(f"--model {model_dir}: architecture {names[0]!r} in {CONFIG_NAME} is not "
                         f"a bert_np class ({', '.join(sorted(known))})")
    return cls


def weights_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for pattern in WEIGHT_FILES for p in directory.glob(pattern))


def quantize_saved_model(settings: QuantizeSettings) -> dict:
    """Load --model, quantize it, write --out; returns a summary (class, counts, sizes)."""
    model_dir = Path(settings.model)
    cls = model_class(model_dir)
    model = cls.from_pretrained(model_dir, strict=True)
    if quantization_of(model.config) is not None:
        raise ValueError(f"--model {model_dir} is already quantized "
                         f"({quantization_of(model.config)['method']}): give the float model")
    tokenizer = (BertTokenizer.from_pretrained(model_dir)
                 if (model_dir / VOCAB_NAME).is_file() else None)
    q = quantize_dynamic(model)
    out = prepare_output_dir(settings.out, overwrite=settings.overwrite, can_resume=False)
    save_model_directory(out, q, tokenizer)
    int8 = [p for p in q.params.values() if isinstance(p, Int8Weight)]
    return {"model": str(model_dir), "out": str(out), "class": cls.__name__,
            "int8_weights": len(int8), "int8_parameters": sum(p.size for p in int8),
            "float_parameters": sum(p.size for p in q.params.values()
                                    if not isinstance(p, Int8Weight)),
            "weights_mb": {"float": round(weights_bytes(model_dir) / 2**20, 2),
                           "int8": round(weights_bytes(out) / 2**20, 2)},
            "tokenizer": tokenizer is not None}
