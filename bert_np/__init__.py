"""bert_np: BERT written from scratch in NumPy, every forward and backward pass by hand.

Importing it changes nothing outside the package: no malloc or thread settings, no environment
variables. `tune_process()` applies the process tuning that `bert-np` and the benchmarks use.
"""
from . import optim, paths
from .config import BertConfig
from .hf import CheckpointError
from .kernels import get_backend, set_backend
from .kernels.process import tune_process
from .models import (BertForMaskedLM, BertForMultipleChoice, BertForNextSentencePrediction,
                     BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                     BertForTokenClassification, BertModel)
from .quantize import quantize_dynamic
from .optim import AdamW, clip_grad_norm, linear_warmup_decay

__version__ = "0.1.0"

__all__ = ["BertConfig", "BertModel", "BertForPreTraining", "BertForMaskedLM",
           "BertForSequenceClassification", "BertForTokenClassification",
           "BertForQuestionAnswering", "BertForMultipleChoice", "BertForNextSentencePrediction",
           "CheckpointError", "set_backend", "get_backend", "tune_process", "quantize_dynamic",
           "AdamW", "clip_grad_norm", "linear_warmup_decay"]
