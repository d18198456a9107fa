"""bert_np: BERT written from scratch in NumPy, every forward and backward pass by hand."""
from . import optim, paths
from .config import BertConfig
from .hf import CheckpointError
from .kernels import get_backend, set_backend
from .modeling import (BertForMaskedLM, BertForPreTraining, BertForSequenceClassification,
                       BertModel)
from .optim import AdamW, clip_grad_norm, linear_warmup_decay

__version__ = "0.1.0"

__all__ = ["BertConfig", "BertModel", "BertForPreTraining", "BertForMaskedLM",
           "BertForSequenceClassification", "CheckpointError", "set_backend", "get_backend",
           "AdamW", "clip_grad_norm", "linear_warmup_decay"]
