"""Pretraining with MLM + NSP from raw text: `bert-np pretrain`.

text files -> tokenizer -> PretrainingDataset (pairs, fresh masks each epoch) -> BertForPreTraining
-> the training loop (loop.py: loss_and_grads -> clip -> AdamW with warmup + linear decay). Every
`checkpoint_every` steps the model, AdamW, the dropout generator and the data position are saved
(checkpoints.py), so `resume=True` continues exactly where the run stopped: the same batches, the
same dropout masks, the same losses, bit for bit.
Under `mpirun -n N` every rank trains on its shard of each batch (parallel.py) and rank 0 alone
writes checkpoints, the log and the plots; a checkpoint resumes on any N and any
--gradient-accumulation-steps, since the batch is the global batch either way.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import PRESETS, BertConfig
from ..hf import CONFIG_NAME, checkpoint_files, file_sha256
from ..data.pretraining import PretrainingDataset
from ..models import BertForPreTraining
from ..optim import AdamW, linear_warmup_decay
from ..tokenization import BertTokenizer
from .checkpoints import (JsonlLog, latest_checkpoint, latest_state, load_training_checkpoint,
                          prepare_output_dir, save_model_directory, save_training_checkpoint)
from .loop import Callbacks, LoopSettings, LoopState, run_loop
from .parallel import NullLog, is_main_process
from .plots import plot_training_curves
from .settings import check_dropout, check_number, check_positive, setting


@dataclass
class PretrainSettings:
    corpus: list[str] = setting(help="training text files: one sentence per line and blank lines "
                                     "between documents, or WikiText")
    out: str = setting(help="output directory: step-N/ checkpoints, final/, log.jsonl, curves.png")
    vocab: str | None = setting(None, help="the tokenizer's vocab.txt; unset: --init's vocab.txt "
                                           "(needed without --init)")
    config: str | None = setting(None, help=f"a preset ({' '.join(PRESETS)}) or a config.json "
                                            "path; unset: tiny, or --init's config")
    init: str | None = setting(None, help="a saved model directory (config.json and weights) to "
                                          "start from instead of random weights: continued "
                                          "pretraining, on other text or with another objective; "
                                          "its config replaces --config; unset: random weights")
    eval_corpus: list[str] = setting(default_factory=list, help="held-out text files")
    steps: int = setting(1000, help="optimizer steps in all")
    batch_size: int = setting(32, help="sequence pairs per optimizer step: the global batch, "
                                       "split between the MPI ranks and the micro-batches")
    gradient_accumulation_steps: int = setting(1, help="micro-batches per step (and rank): the "
                                               "same update as one batch, in less memory")
    max_seq_length: int = setting(128, help="tokens per pair, [CLS] and [SEP] included")
    max_predictions_per_seq: int = setting(20, flag="--max-predictions",
                                           help="max masked tokens per sequence")
    whole_word_masking: bool = setting(False, help="mask all pieces of a word together")
    new_pairs_each_epoch: bool = setting(False, help="draw new NSP segment pairs every epoch (else "
                                         "built once; masks are always fresh), so a small corpus "
                                         "is not memorised; with --no-nsp: pack the documents "
                                         "in a new order every epoch")
    nsp: bool = setting(True, flag="--no-nsp",
                        help="MLM only, no next-sentence prediction: the documents, each followed "
                             "by [SEP], packed into sequences of the full length (for corpora "
                             "of short documents such as headlines or reviews)")
    lr: float = setting(1e-4, help="peak learning rate of AdamW")
    warmup_steps: int = setting(100, help="steps of linear warm-up to --lr, then linear decay to 0")
    weight_decay: float = setting(0.01, help="AdamW's decoupled weight decay (not on biases and "
                                             "LayerNorm)")
    max_grad_norm: float | None = setting(1.0, help="clip the global gradient norm to this "
                                                    "(> 0; none: no clipping)")
    lowercase: bool = setting(True, flag="--cased",
                              help="do not lower-case the text (for a cased vocabulary)")
    seed: int = setting(0, help="seed of the initial weights, the data order, masks and dropout "
                                "(continuing with --init on the same corpus, take another seed "
                                "than the first run's, or its masks and pairs come again in the "
                                "same order)")
    dtype: str = setting("float32", choices=("float32", "float64"),
                         help="float32 for speed, float64 for checks")
    dropout: float | None = setting(None, help="hidden and attention dropout probability instead "
                                               "of the config's (0: off, for exact comparisons)")
    max_steps: int | None = setting(None, help="stop after this many steps (the schedule still "
                                               "spans --steps); unset: --steps")
    checkpoint_every: int = setting(200, help="save a resumable checkpoint every this many steps "
                                              "(and after the last)")
    eval_every: int = setting(200, help="evaluate on --eval-corpus every this many steps (and "
                                        "after the last)")
    eval_batches: int = setting(20, help="held-out batches per evaluation")
    log_every: int = setting(1, help="write a train record to log.jsonl every this many steps")
    max_minutes: float | None = setting(None, help="stop, with a checkpoint, after this many "
                                                   "minutes; unset: no time limit")
    overwrite: bool = setting(False, help="clear a non-empty --out first (without it or "
                                          "--resume, a non-empty --out is refused)")

    def __post_init__(self):
        check_positive(self, ("steps", "batch_size", "max_predictions_per_seq",
                              "checkpoint_every", "eval_every", "eval_batches", "log_every",
                              "gradient_accumulation_steps"))
        check_dropout(self.dropout)
        check_number(self, "max_seq_length", integer=True, minimum=5)  # [CLS] a [SEP] b [SEP]
        check_number(self, "lr", above=0)
        check_number(self, "warmup_steps", integer=True, minimum=0)
        check_number(self, "weight_decay", minimum=0)
        check_number(self, "max_grad_norm", above=0, optional=True, none_means="clips nothing")
        check_number(self, "seed", integer=True, minimum=0)
        check_number(self, "max_minutes", above=0, optional=True, none_means="has no time limit")
        if not self.corpus:
            raise ValueError("at least one corpus file is needed")
        if self.init is None and self.config is None:
            self.config = "tiny"
        if self.init is not None:
            if not (Path(self.init) / CONFIG_NAME).is_file():
                raise FileNotFoundError(f"--init {self.init}: not a model directory (no "
                                        f"{CONFIG_NAME})")
            if self.config is not None:
                raise ValueError(f"--init {self.init} and --config {self.config}: the model's "
                                 "config comes from --init; drop --config")
        if self.vocab is None:
            if self.init is None:
                raise ValueError("--vocab is needed (a vocab.txt) when there is no --init model")
            self.vocab = str(Path(self.init) / "vocab.txt")
            if not Path(self.vocab).is_file():
                raise FileNotFoundError(f"--init {self.init} has no vocab.txt; give --vocab")
        for path in list(self.corpus) + list(self.eval_corpus) + [self.vocab]:
            if not Path(path).exists():
                raise FileNotFoundError(f"no such file: {path}")
            if not Path(path).is_file():
                raise ValueError(f"{path} is not a regular file (a device, pipe or directory)")


def build_config(spec: str, vocab_size: int, max_seq_length: int,
                 dropout: float | None = None) -> BertConfig:
    """A preset name or a config.json path, with the tokenizer's vocabulary size (and `dropout`
    as its hidden and attention dropout when given)."""
    if Path(spec).is_file():
        cfg = BertConfig.from_json_file(spec)
    elif spec in PRESETS:
        cfg = BertConfig.preset(spec, vocab_size=vocab_size)
    else:
        raise FileNotFoundError(f"no such config file: {spec} (and not a preset: "
                                f"{', '.join(PRESETS)})")
    check_config(cfg, vocab_size, max_seq_length, spec)
    if dropout is not None:
        cfg = dataclasses.replace(cfg, hidden_dropout_prob=dropout,
                                  attention_probs_dropout_prob=dropout)
    return cfg


def check_config(cfg: BertConfig, vocab_size: int, max_seq_length: int, source: str,
                 owner: str = "the model's") -> None:
    """The run's vocabulary (--vocab) and sequence length fit the config read from `source`."""
    if cfg.vocab_size != vocab_size:
        raise ValueError(f"{source} has vocab_size {cfg.vocab_size}, --vocab has {vocab_size}")
    if max_seq_length > cfg.max_position_embeddings:
        raise ValueError(f"max_seq_length {max_seq_length} exceeds {owner} "
                         f"max_position_embeddings {cfg.max_position_embeddings}")


def initial_model(directory: str, vocab_size: int, max_seq_length: int, dropout: float | None,
                  seed: int, dtype: np.dtype) -> BertForPreTraining:
    """The model saved in `directory` (any BERT checkpoint: heads it lacks, such as an NSP head
    never trained, start from the usual initialisation), checked against the run's vocabulary
    and sequence length, with `dropout` as its dropout when given."""
    check_config(BertConfig.from_json_file(Path(directory) / CONFIG_NAME), vocab_size,
                 max_seq_length, f"--init {directory}", owner=f"--init {directory}'s")
    overrides = ({} if dropout is None else
                 {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout})
    return BertForPreTraining.from_pretrained(directory, dtype=dtype, seed=seed, **overrides)


def accuracies(counts: dict) -> dict:
    """mlm_acc and nsp_acc from the correct and total counts of the objectives present (no
    nsp_acc for batches without NSP labels, --no-nsp)."""
    return {f"{term}_acc": counts[f"{term}_correct"] / max(1, counts[f"{term}_total"])
            for term in ("mlm", "nsp") if f"{term}_total" in counts}


def evaluate_pretraining(model: BertForPreTraining, batches) -> dict:
    """Mean loss, MLM accuracy and NSP accuracy (if NSP is trained) over held-out batches."""
    losses, totals = [], {}
    for batch in batches:
        loss, stats = model.pretraining_stats(**batch)
        losses.append(loss)
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
    return {"loss": float(np.mean(losses)), **accuracies(totals)}


class PretrainCallbacks(Callbacks):
    """Per-step MLM/NSP accuracy, held-out evaluation and resumable checkpoints."""

    def __init__(self, settings: PretrainSettings, model, optimizer, tokenizer, eval_batches,
                 log: JsonlLog, inputs: dict | None = None):
        self.settings, self.model, self.optimizer = settings, model, optimizer
        self.tokenizer, self.eval_batches, self.log = tokenizer, eval_batches, log
        self.inputs = input_digests(settings) if inputs is None else inputs

    def batch_metrics(self, batch, stats):
        return accuracies(stats)

    def evaluate(self, state):
        if self.eval_batches and is_main_process():          # the other ranks need no numbers
            self.log.write({"kind": "eval", "step": state.step,
                            **evaluate_pretraining(self.model, self.eval_batches)})

    def save_checkpoint(self, state):
        if not is_main_process():
            return
        saved = dict(asdict(state), settings=asdict(self.settings), inputs=self.inputs)
        save_training_checkpoint(self.settings.out, f"step-{state.step}", self.model,
                                 self.optimizer, saved, self.tokenizer)

    def last_good_checkpoint(self):
        last = latest_checkpoint(self.settings.out)
        return f"the last good checkpoint is {last or 'none (no checkpoint was saved yet)'}"


INPUT_FILES = ("corpus", "eval_corpus", "vocab", "config", "init")  # compared by content on resume


def input_digests(settings, input_files: tuple[str, ...] = INPUT_FILES) -> dict:
    """sha256 of every input file, by setting (a preset name stands for itself): a resumed run
    must read the same bytes, whatever path (./corpus.txt, corpus.txt, a moved copy) names them.
    `input_files` names the settings that hold input files (a path or a list of paths; another
    run passes its own, e.g. distill.INPUT_FILES); a model directory stands for its config.json
    (a run that resumes replaces its weights by the checkpoint's), except --init's, whose weights
    the run starts from: config.json and the weight files; an unset one (None) for itself."""
    def digest(path, weights):
        if path is not None and (Path(path) / CONFIG_NAME).is_file():
            if weights:
                return [file_sha256(Path(path) / name) for name in checkpoint_files(path)]
            path = Path(path) / CONFIG_NAME
        if path is None or not Path(path).is_file():
            return path
        return file_sha256(path)
    return {name: [digest(p, name == "init") for p in _paths(value)]
            for name, value in ((n, getattr(settings, n)) for n in input_files)}


def _paths(value) -> list:
    """The paths of an input-file setting: one path, a list of them, or unset (None)."""
    return [value] if value is None or isinstance(value, (str, Path)) else list(value)


def resume_state(settings, model, optimizer, inputs: dict | None = None,
                 input_files: tuple[str, ...] = INPUT_FILES) -> LoopState | None:
    """The loop state of the latest checkpoint in settings.out, with model and AdamW restored;
    refuses a checkpoint written with other settings (max_minutes may change, and --out may have
    moved) or other inputs: the files of the settings named by `input_files` (pretraining's by
    default; compared by content, by resolved path for a checkpoint saved without their
    digests), and any further entry of `inputs` (a digest a run adds, e.g. finetune's of the
    encoded examples); checked before a weight is loaded (another model would not fit)."""
    checkpoint, saved = latest_state(settings.out)
    now = json.loads(json.dumps(asdict(settings)))  # as JSON stores it (tuples become lists)
    # a setting added after the checkpoint was written took its default in that run
    defaults = {f.name: f.default for f in dataclasses.fields(settings)
                if f.default is not dataclasses.MISSING}
    was = {**json.loads(json.dumps(defaults)), **saved["settings"]}
    may_change = ("max_minutes", "max_steps", "gradient_accumulation_steps", "overwrite",
                  "out") + tuple(input_files)
    changed = [k for k in now if k not in may_change and was.get(k) != now[k]]
    if "inputs" in saved:
        inputs = input_digests(settings, input_files) if inputs is None else inputs
        # an input setting added after the checkpoint was written was unset in that run
        changed += [k for k in inputs if saved["inputs"].get(k, [None]) != inputs[k]]
    else:
        def resolved(value):
            return [p if p is None else str(Path(p).resolve()) for p in _paths(value)]
        changed += [k for k in input_files
                    if resolved(saved["settings"].get(k)) != resolved(now[k])]
    if changed:
        raise ValueError(f"resume with settings that differ from {checkpoint} (input files are "
                         f"compared by content): {sorted(changed)}")
    load_training_checkpoint(checkpoint, model, optimizer)
    return LoopState(saved["step"], saved["epoch"], saved["batch_in_epoch"])


def pretrain(settings: PretrainSettings, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) pretraining; returns the last held-out evaluation and throughput."""
    out = (prepare_output_dir(settings.out, resume, settings.overwrite)
           if is_main_process() else Path(settings.out))      # only rank 0 writes
    tokenizer = BertTokenizer.from_vocab(settings.vocab, lowercase=settings.lowercase)
    data_options = dict(max_seq_length=settings.max_seq_length, batch_size=settings.batch_size,
                        max_predictions_per_seq=settings.max_predictions_per_seq,
                        whole_word_masking=settings.whole_word_masking, nsp=settings.nsp)
    train_data = PretrainingDataset.from_files(settings.corpus, tokenizer, seed=settings.seed,
                                               new_pairs_each_epoch=settings.new_pairs_each_epoch,
                                               **data_options)
    eval_data = (PretrainingDataset.from_files(settings.eval_corpus, tokenizer,
                                               seed=settings.seed + 1, **data_options)
                 if settings.eval_corpus else None)
    eval_batches = ([] if eval_data is None else
                    [b for _, b in zip(range(settings.eval_batches), eval_data.batches(0))])
    if settings.init is None:
        cfg = build_config(settings.config, tokenizer.vocab_size, settings.max_seq_length,
                           settings.dropout)
        model = BertForPreTraining(cfg, seed=settings.seed, dtype=np.dtype(settings.dtype))
    else:
        model = initial_model(settings.init, tokenizer.vocab_size, settings.max_seq_length,
                              settings.dropout, settings.seed, np.dtype(settings.dtype))
        cfg = model.config
    optimizer = AdamW(model.params, lr=settings.lr, weight_decay=settings.weight_decay,
                      schedule=lambda k: linear_warmup_decay(k, settings.warmup_steps,
                                                             settings.steps))
    inputs = input_digests(settings)
    state = resume_state(settings, model, optimizer, inputs) if resume else None
    main = is_main_process()
    log = (JsonlLog(out / "log.jsonl", truncate_after_step=state.step if state else None) if main
           else NullLog())
    callbacks = PretrainCallbacks(settings, model, optimizer, tokenizer, eval_batches, log, inputs)
    if state is None:
        log.write({"kind": "start", "step": 0, "config": cfg.to_dict(),
                   "parameters": model.num_parameters(), "settings": asdict(settings)})
        callbacks.evaluate(LoopState())
    max_steps = settings.steps if settings.max_steps is None else min(settings.max_steps,
                                                                       settings.steps)
    loop_settings = LoopSettings(max_grad_norm=settings.max_grad_norm, max_steps=max_steps,
                                 gradient_accumulation_steps=settings.gradient_accumulation_steps,
                                 eval_every=settings.eval_every,
                                 checkpoint_every=settings.checkpoint_every,
                                 log_every=settings.log_every, max_minutes=settings.max_minutes)
    result = run_loop(model, optimizer, train_data.batches, loop_settings, log, state, callbacks,
                      progress, desc="pretrain")
    if not main:
        return {"step": result.state.step, "tokens_per_s": result.tokens_per_s}
    save_model_directory(out / "final", model, tokenizer)
    return summarize(log.records(), out, settings.config or settings.init, result, settings.nsp)


def summarize(records: list[dict], out: Path, config: str, result, nsp: bool = True) -> dict:
    """Plot the curves; return the first and last evaluation, the step reached and tokens/s."""
    keys = ("loss", "mlm_acc", "nsp_acc") if nsp else ("loss", "mlm_acc")
    plot_training_curves(records, out / "curves.png", f"pretraining {config}",
                         train_keys=keys, eval_keys=keys)
    evals = [r for r in records if r["kind"] == "eval"]
    return {"step": result.state.step, "first_eval": evals[0] if evals else None,
            "last_eval": evals[-1] if evals else None, "tokens_per_s": result.tokens_per_s}
