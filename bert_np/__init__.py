"""bert_np: BERT written from scratch in NumPy, every forward and backward pass by hand."""
from . import optim, paths
from .allocator import keep_freed_memory
from .config import BertConfig
from .hf import CheckpointError
from .kernels import get_backend, set_backend
from .openblas import let_idle_threads_sleep
from .models import (BertForMaskedLM, BertForPreTraining, BertForSequenceClassification,
                       BertModel)
from .optim import AdamW, clip_grad_norm, linear_warmup_decay

__version__ = "0.1.0"

keep_freed_memory()       # reuse freed activation memory between steps (see allocator.py)
let_idle_threads_sleep()  # OpenBLAS's workers sleep between products, not spin (openblas.py)

__all__ = ["BertConfig", "BertModel", "BertForPreTraining", "BertForMaskedLM",
           "BertForSequenceClassification", "CheckpointError", "set_backend", "get_backend",
           "AdamW", "clip_grad_norm", "linear_warmup_decay"]
