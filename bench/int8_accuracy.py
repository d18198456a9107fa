"""What dynamic int8 costs in accuracy: a fine-tuned classifier on a task's dev set, float32
against int8, in bert_np, PyTorch and ONNX Runtime, on the same inputs in one run.

Engines (each started from the same saved float model directory, --model):
  bert_np       float32 forward                     | bert_np int8: bert_np.quantize_dynamic
  torch         transformers + PyTorch float32      | torch int8: torch.ao.quantization.
                                                    |   quantize_dynamic on every nn.Linear
  ort           ONNX Runtime float32 on the graph   | ort int8: onnxruntime.quantization.
                exported with the TorchScript       |   quantize_dynamic of that optimized
                exporter (dynamo=False), optimized  |   graph (QInt8 weights, DefaultTensorType
                by optimize_model(model_type="bert")|   FLOAT)
The export, the optimizer and the quantizer are bench/compare_engines.py's. Every engine gets the
same padded batches (the dev examples tokenized by the model directory's vocab.txt, cut at
--max-seq-length, sorted by length, --batch-size rows).
Reported per engine: the task's main metric on the split (accuracy for SST-2, in points); for
each int8 engine, the change of that metric from its own float32 engine, its logit drift against its own float32 engine on every example, max and mean of
|logits_int8 - logits_float32|, and the number of examples whose predicted class changes; for
each float32 engine, max |logits - bert_np float32 logits| (the engines agree before
quantization: ~1e-5). The CPU (lscpu model name, avx2 / avx512 / vnni flags) heads the table.
NumPy and Numba take --threads threads unless OPENBLAS_NUM_THREADS / NUMBA_NUM_THREADS /
OMP_NUM_THREADS are set; torch and ONNX Runtime take --threads. Not a test; accuracy does not
depend on the machine beyond float rounding.

    python bench/int8_accuracy.py --model runs/sst2/best --task sst2
    python bench/int8_accuracy.py --model DIR --task sst2 --max-examples 64   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

FLOAT_OF = {"bert_np int8": "bert_np", "torch int8": "torch", "ort int8": "ort"}
ENGINES = ("bert_np", "bert_np int8", "torch", "torch int8", "ort", "ort int8")


def padded_batches(args, task, tokenizer):
    """(the padded input batches, the labels in batch order): the split's examples (a seeded
    subset with --max-examples), tokenized, sorted by length, padded per batch."""
    import numpy as np
    from bert_np.data.batching import length_sorted_batches, pad_batch
    from bert_np.data.tasks import load_split
    from bert_np.train.finetune import encode_examples, subset
    examples = subset(load_split(task, args.split), args.max_examples, seed=0)
    split = encode_examples(examples, tokenizer, args.max_seq_length)
    batches, labels = [], []
    for rows in length_sorted_batches([len(x) for x in split.ids], args.batch_size):
        batch = pad_batch(split, rows, tokenizer.pad_id, np.float32, regression=True)
        labels.append(batch.pop("labels"))
        batches.append(batch)
    return batches, np.concatenate(labels)


def all_logits(args, model, batches, engines, onnx_dir):
    """({engine: logits (N, C) float64} over the batches in batch order, ONNX Runtime's fused
    operators); `model` is bert_np's float model, `engines` bench/compare_engines.py."""
    import numpy as np
    import torch
    import bert_np
    quantized = bert_np.quantize_dynamic(model)
    torch.set_num_threads(args.threads)
    torch_float, torch_int8 = (engines.torch_model(args.model, int8) for int8 in (False, True))
    exported = engines.export_onnx(args.model, onnx_dir)
    sessions = {name: engines.ort_session(exported[key], args.threads)
                for name, key in (("ort", "ort"), ("ort int8", "ort_int8"))}

    def run(engine, batch):
        if engine.startswith("bert_np"):
            return (quantized if engine.endswith("int8") else model).forward(**batch)["logits"]
        if engine.startswith("torch"):
            with torch.inference_mode():
                t_model = torch_int8 if engine.endswith("int8") else torch_float
                return t_model(**{k: torch.tensor(v) for k, v in batch.items()}).logits.numpy()
        session, names = sessions[engine]
        return session.run(["logits"], {k: v.astype(np.int64) for k, v in batch.items()
                                        if k in names})[0]
    return {engine: np.concatenate([np.asarray(run(engine, b), np.float64) for b in batches])
            for engine in ENGINES}, exported["fused"]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a fine-tuned float classifier directory")
    p.add_argument("--task", default="sst2", help="the task the model was fine-tuned on (a name "
                   "bert-np finetune knows)")
    p.add_argument("--split", default="dev")
    p.add_argument("--max-examples", type=int, default=None,
                   help="a seeded random subset of this many examples (default: all)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    import numpy as np
    import onnxruntime
    import torch
    from bert_np.data.tasks import get_task
    from bert_np.quantize import quantization_of
    from bert_np.train.finetune import check_labels_match, load_for_inference
    from bert_np.train.metrics import compute_metrics
    import compare_engines as engines

    task = get_task(args.task)
    model, tokenizer = load_for_inference(args.model)
    if quantization_of(model.config) is not None:
        sys.exit(f"--model {args.model} is quantized: give the float model (the engines quantize "
                 "it themselves)")
    check_labels_match(model, task, args.model)
    batches, labels = padded_batches(args, task, tokenizer)
    with tempfile.TemporaryDirectory(prefix="int8-accuracy-") as onnx_dir:
        logits, fused = all_logits(args, model, batches, engines, onnx_dir)

    cfg = model.config
    print(f"CPU: {engines.cpu_description()}")
    print(f"model {args.model}: {cfg.num_hidden_layers} layers, H {cfg.hidden_size}, "
          f"{task.name} {args.split}, {len(labels)} examples, max_seq_length "
          f"{args.max_seq_length}; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; ONNX Runtime fused operators {fused}")
    metric = task.main_metric
    header = (f"{'engine':13s} {metric:>9s} {'change':>7s} {'max |dlogit|':>13s} "
              f"{'mean |dlogit|':>14s} {'class changed':>13s}   against")
    print(header)
    print("-" * len(header))
    rows, values = [], {}
    for engine in ENGINES:
        value = values[engine] = compute_metrics(task, logits[engine], labels)[metric]
        own = FLOAT_OF.get(engine, "bert_np")
        row = dict(engine=engine, metric=metric, value=value, against=own,
                   change=value - values[own])
        if engine != "bert_np":
            diff = np.abs(logits[engine] - logits[own])
            row.update(max_abs=float(diff.max()), mean_abs=float(diff.mean()))
            if not task.is_regression:
                row["changed"] = int((logits[engine].argmax(1) != logits[own].argmax(1)).sum())
        rows.append(row)
        cells = (f"{row['max_abs']:13.2e} {row['mean_abs']:14.2e} "
                 f"{row.get('changed', '-')!s:>13s}   {own} float32" if "max_abs" in row
                 else f"{'-':>13s} {'-':>14s} {'-':>13s}")
        change = f"{100 * row['change']:+7.2f}" if engine in FLOAT_OF else f"{'':7s}"
        print(f"{engine:13s} {100 * value:9.2f} {change} {cells}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": engines.cpu_description(), "model": args.model, "task": task.name,
                       "split": args.split, "examples": len(labels), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
