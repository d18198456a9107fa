"""CPU inference engines on the same BERT weights, float32 and int8, in one run.

Engines (BertForSequenceClassification, forward only, B=32 T=128 by default, random token ids):
  bert_np        float32                         bert_np's forward
  bert_np-int8   bert_np.quantize_dynamic(model) int8 encoder Linears (kernels/int8.py)
  torch          transformers + PyTorch eager float32 (its default attention)
  torch-int8     torch.ao.quantization.quantize_dynamic on every nn.Linear (qint8)
  ort            ONNX Runtime float32: the transformers twin (eager attention) exported with
                 torch.onnx.export(dynamo=False, opset_version=17), then
                 onnxruntime.transformers.optimizer.optimize_model(model_type="bert")
  ort-int8       onnxruntime.quantization.quantize_dynamic on that optimized graph (QInt8 weights,
                 extra_options DefaultTensorType FLOAT)
Same weights: for a preset the parent saves one bert_np model (seed 0, perturbed so that LayerNorm
and biases are not trivial) with save_pretrained; with --models each directory (a float
BertForSequenceClassification as `bert-np finetune` writes it, every weight present) is used as it
is, its ONNX graphs written to a temporary directory. Every engine starts from that directory.
Each int8 engine loads its model as someone serving int8 would: ONNX Runtime opens the quantized
.onnx file, and bert_np-int8 loads the checkpoint `bert_np.quantize_dynamic(model).save_pretrained`
wrote (int8 weights and their scales, read straight into the model, as `bert-np quantize` writes
them), both files made by the parent; PyTorch has no int8 file format of its own for
transformers' models, so torch-int8 loads the float model and quantizes it. The float32 model
is then never built in the bert_np-int8 and ort-int8 processes, whose peak memory is the
serving process's: its imports, the weights, the forward's activations. The child of an ONNX
Runtime or PyTorch engine reads the config with json and does not import bert_np.
Measurement: each engine in a subprocess of its own, `--threads` threads each (NumPy/OpenBLAS,
Numba, torch.set_num_threads, ORT intra_op_num_threads), all engines of a preset (with --models:
all engines of all the models) alive at once and taking turns of ~--turn-seconds in rotation (the
design of compare_torch.py: a shared VM's drift hits every engine alike), until each has --steps
steps and --min-seconds. Reported: tokens/s from the median step, the ratio to PyTorch eager
float32, peak memory (max RSS) of each process, and each int8 engine's logit drift against its own
float32 engine and against bert_np float32 on the same inputs: max |logits_int8 - logits_float| /
max |logits_float|; with --models also each model's tokens/s over those of --relative-to (the
first model by default), engine by engine.
Not a test and not timed in CI. The CPU (lscpu model name and its avx2 / avx512 / vnni / amx
flags) is printed with the table.

    python bench/compare_engines.py                          # presets tiny mini small base
    python bench/compare_engines.py --presets tiny --steps 2 --min-seconds 1   # smoke run
    python bench/compare_engines.py --models runs/teacher-sst2/best runs/tiny_d/best \
        --engines bert_np bert_np-int8 torch ort --seq-len 64          # student beside teacher
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from turns import Child, serve, take_turns, warm_caches

_HERE = os.path.dirname(os.path.abspath(__file__))

ENGINES = ("bert_np", "bert_np-int8", "torch", "torch-int8", "ort", "ort-int8")
FLOAT_OF = {"bert_np-int8": "bert_np", "torch-int8": "torch", "ort-int8": "ort"}
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def make_inputs(vocab_size, B, T, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000 % vocab_size, vocab_size, (B, T))
    return dict(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=np.ones_like(ids))


def cpu_description() -> str:
    """lscpu's model name and the SIMD flags that matter for int8 and float32 GEMMs."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    return (f"{fields.get('Model name', '?').strip()}; flags: "
            f"{' '.join(f for f in wanted if f in flags) or 'none of avx2/avx512/vnni/amx'}")


# ---- preparing the weights and the ONNX graphs (parent, once per preset or model) ------------

def prepare(preset, directory, opset=17):
    """Save the bert_np model, export and optimize the ONNX twin, quantize it. Returns paths."""
    import bert_np
    cfg = bert_np.BertConfig.preset(preset)
    model = bert_np.BertForSequenceClassification(cfg, seed=0)
    rng = np.random.default_rng(1)
    for k, v in model.params.items():
        model.params[k] = (v + rng.normal(0.0, 0.02, v.shape)).astype(v.dtype)
    model.save_pretrained(directory)
    return dict(directory=directory, int8=save_int8(model, directory),
                **export_onnx(directory, directory, opset))


def save_int8(model, out_dir):
    """bert_np.quantize_dynamic of the float model, saved to out_dir/int8 (what bert_np-int8
    loads). Returns the directory."""
    import bert_np
    int8_dir = os.path.join(out_dir, "int8")
    bert_np.quantize_dynamic(model).save_pretrained(int8_dir)
    return int8_dir


def prepare_model(model_dir, out_dir, opset=17):
    """A saved classifier as it is: its ONNX graphs go to `out_dir`. Returns paths, config and
    parameter count."""
    model = check_model(model_dir)
    n_params = sum(v.size for v in model.params.values())
    paths = dict(directory=model_dir, int8=save_int8(model, out_dir),
                 **export_onnx(model_dir, out_dir, opset))
    return paths, model.config, n_params


def check_model(model_dir):
    """The saved float BertForSequenceClassification, with every weight present (nothing may be
    initialised: every engine runs the directory's weights)."""
    import bert_np
    from bert_np.quantize import quantization_of
    try:
        model = bert_np.BertForSequenceClassification.from_pretrained(model_dir, strict=True)
    except ValueError as e:
        sys.exit(f"--models {model_dir}: not a complete BertForSequenceClassification: {e}")
    if quantization_of(model.config) is not None:
        sys.exit(f"--models {model_dir} is quantized: give the float model (the int8 engines "
                 "run its quantized copies)")
    return model


def model_labels(directories):
    """Short names: the directory's name, or its parent's for `best`/`final` (runs/tiny_d/best ->
    tiny_d); the path as given where two directories would share a name; a #k suffix for a
    directory given again."""
    paths = {os.path.normpath(d): os.path.abspath(d).split(os.sep) for d in directories}
    short = {d: p[-2] if p[-1] in ("best", "final") else p[-1] for d, p in paths.items()}
    names = [short[d] if list(short.values()).count(short[d]) == 1 else d
             for d in map(os.path.normpath, directories)]
    return [name if name not in names[:i] else f"{name}#{names[:i].count(name) + 1}"
            for i, name in enumerate(names)]


def export_onnx(model_dir, out_dir, opset=17):
    """The transformers twin of the saved float classifier in `model_dir` (eager attention),
    exported with the TorchScript exporter, optimized by onnxruntime.transformers (model_type
    "bert") and dynamically quantized, the files written into `out_dir`. Returns
    dict(ort=optimized float32 graph, ort_int8=its int8 version, fused={operator: count})."""
    import bert_np
    import onnx
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    cfg = bert_np.BertConfig.from_json_file(os.path.join(model_dir, "config.json"))
    onnx_path = os.path.join(out_dir, "model.onnx")
    opt_path = os.path.join(out_dir, "model.opt.onnx")
    int8_path = os.path.join(out_dir, "model.opt.int8.onnx")
    hf = transformers.BertForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager").eval()
    dummy = {k: torch.tensor(v) for k, v in make_inputs(cfg.vocab_size, 2, 16).items()}
    axes = {k: {0: "batch", 1: "sequence"} for k in INPUTS}
    with torch.no_grad():
        torch.onnx.export(hf, (dummy["input_ids"], dummy["attention_mask"], dummy["token_type_ids"]),
                          onnx_path, input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["logits"], dynamic_axes=dict(axes, logits={0: "batch"}),
                          opset_version=opset, dynamo=False)
    optimized = optimize_model(onnx_path, model_type="bert", num_heads=cfg.num_attention_heads,
                               hidden_size=cfg.hidden_size)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(opt_path)
    quantize_dynamic(opt_path, int8_path, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return dict(ort=opt_path, ort_int8=int8_path, fused=fused)


def torch_model(model_dir, int8=False):
    """transformers' twin of the saved classifier (default attention), in eval mode; with int8,
    PyTorch dynamic quantization of every nn.Linear (qint8 weights, activations per tensor)."""
    import torch
    import transformers
    model = transformers.BertForSequenceClassification.from_pretrained(model_dir).eval()
    if int8:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def ort_session(path, threads):
    """An ONNX Runtime CPU session on `threads` intra-op threads, and the names of its inputs."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session, {i.name for i in session.get_inputs()}


# ---- the child process: one engine ---------------------------------------------------------

def engine_forward(engine, paths, B, T, threads):
    """(forward(), logits()) for one engine; forward runs one batch, logits returns its logits."""
    with open(os.path.join(paths["directory"], "config.json")) as f:
        inputs = make_inputs(json.load(f)["vocab_size"], B, T)
    if engine.startswith("bert_np"):
        import bert_np
        directory = paths["int8"] if engine == "bert_np-int8" else paths["directory"]
        model = bert_np.BertForSequenceClassification.from_pretrained(directory)
        run = lambda: model.forward(**inputs)["logits"]                       # noqa: E731
        return run, run
    if engine.startswith("torch"):
        import torch
        torch.set_num_threads(threads)
        model = torch_model(paths["directory"], int8=engine == "torch-int8")
        t_inputs = {k: torch.tensor(v) for k, v in inputs.items()}

        def run():
            with torch.inference_mode():
                return model(**t_inputs).logits.numpy()
        return run, run
    session, names = ort_session(paths["ort_int8" if engine == "ort-int8" else "ort"], threads)
    feeds = {k: v.astype(np.int64) for k, v in inputs.items() if k in names}
    run = lambda: session.run(["logits"], feeds)[0]                           # noqa: E731
    return run, run


def serve_child(args):
    """The child process: one engine's forward pass served in turns (turns.py), and its logits
    on request ("logits")."""
    if args.engine.startswith("bert_np"):
        from bert_np.kernels.process import tune_process
        tune_process()
    paths = json.loads(args.paths)
    step, logits = engine_forward(args.engine, paths, args.batch_size, args.seq_len, args.threads)
    serve(step, args.warmup,
          {"logits": lambda: np.asarray(logits(), np.float64).tolist()})


def start_child(label, engine, paths, args):
    cmd = [sys.executable, __file__, "--child", "--engine", engine,
           "--paths", json.dumps(paths), "--batch-size", str(args.batch_size),
           "--seq-len", str(args.seq_len), "--warmup", str(args.warmup),
           "--threads", str(args.threads)]
    env = dict(os.environ, NUMBA_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               BENCH_THREADS=str(args.threads))
    child = Child(cmd, env, f"{label} {engine}")
    child.label, child.engine = label, engine
    return child


def drift(a, b):
    """max |a - b| / max |b|."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())


def measure(subjects, args):
    """Every engine of every subject ({label: paths}) alive at once, taking turns. Returns
    {label: {engine: result}} and {label: {engine: logits}}."""
    warm_caches(start_child(label, engine, paths, args)
                for label, paths in subjects.items() for engine in args.engines
                if engine.startswith("bert_np"))
    children = [start_child(label, engine, paths, args)
                for label, paths in subjects.items() for engine in args.engines]
    results, logits = {label: {} for label in subjects}, {label: {} for label in subjects}
    for c in children:
        logits[c.label][c.engine] = np.array(c.ask("logits"))
    finished = take_turns(children, args.steps, args.min_seconds, args.turn_seconds, args.pause)
    for c, result in zip(children, finished):
        results[c.label][c.engine] = result
    return results, logits


def measure_preset(preset, args):
    with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as directory:
        paths = prepare(preset, directory)
        fused = paths.pop("fused")
        results, logits = measure({preset: paths}, args)
    return results[preset], logits[preset], fused


def measure_models(directories, labels, args):
    """All engines of all the saved models in one rotation. Returns results, logits, fused
    operators, configs and parameter counts, each {label: ...}."""
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        subjects, fused, configs, sizes = {}, {}, {}, {}
        for i, (label, directory) in enumerate(zip(labels, directories)):
            os.makedirs(out := os.path.join(tmp, str(i)))
            subjects[label], configs[label], sizes[label] = prepare_model(directory, out)
            fused[label] = subjects[label].pop("fused")
            if args.seq_len > configs[label].max_position_embeddings:
                sys.exit(f"--seq-len {args.seq_len} exceeds {directory}'s "
                         f"max_position_embeddings {configs[label].max_position_embeddings}")
        results, logits = measure(subjects, args)
    return results, logits, fused, configs, sizes


def table_rows(name, results, logits, tokens, width):
    """Print one table's rows (the first column `name`) and return them as dicts."""
    torch_tps = tokens / results["torch"]["seconds"] if "torch" in results else None
    rows = []
    for engine, r in results.items():
        tps = tokens / r["seconds"]
        row = dict(engine=engine, tokens_per_s=tps, steps=r["steps"],
                   peak_mb=r["peak_mb"], ratio_to_torch=tps / torch_tps if torch_tps else None)
        own, ref = FLOAT_OF.get(engine), "bert_np"
        row["drift_own"] = drift(logits[engine], logits[own]) if own in logits else None
        row["drift_bert_np"] = (drift(logits[engine], logits[ref])
                                if ref in logits and engine != ref else None)
        rows.append(row)
        fmt = lambda v: "-" if v is None else f"{v:.2e}"                      # noqa: E731
        ratio = "-" if row["ratio_to_torch"] is None else f"{row['ratio_to_torch']:.2f}"
        print(f"{name:{width}s} {engine:13s} {tps:9.0f} {ratio:>8s} {r['peak_mb']:8.0f} "
              f"{fmt(row['drift_own']):>17s} {fmt(row['drift_bert_np']):>21s}", flush=True)
    return rows


def header(first, width):
    line = (f"{first:{width}s} {'engine':13s} {'tokens/s':>9s} {'vs torch':>8s} {'peak MB':>8s} "
            f"{'drift vs own fp32':>17s} {'drift vs bert_np fp32':>21s}")
    return f"{line}\n{'-' * len(line)}"


def report_models(args, tokens):
    """Per model the table of the presets, then engine by engine the tokens/s of every model and
    their ratio to those of --relative-to. Returns the record (reference and rows)."""
    labels = model_labels(args.models)
    reference = args.relative_to or labels[0]
    results, logits, fused, configs, n_params = measure_models(args.models, labels, args)
    width = max(7, *(len(label) for label in labels))
    rows = []
    for label, directory in zip(labels, args.models):
        c = configs[label]
        print(f"\n{label}: {directory}, {c.num_hidden_layers} layers, H {c.hidden_size}, "
              f"{c.num_attention_heads} heads, {n_params[label] / 1e6:.1f}M parameters; ONNX "
              f"Runtime fused operators {fused[label]}")
        print(header("model", width))
        for row in table_rows(label, results[label], logits[label], tokens, width):
            rows.append(dict(model=label, directory=directory, layers=c.num_hidden_layers,
                             hidden_size=c.hidden_size, **row))
    others = [label for label in labels if label != reference]
    columns = ([f"{label} (L{configs[label].num_hidden_layers} H{configs[label].hidden_size})"
                for label in labels] + [f"{label} / {reference}" for label in others])
    widths = [max(9, len(column)) for column in columns]
    print(f"\ntokens/s of each model, and over those of {reference}, in the same rotation")
    line = f"{'engine':13s} " + " ".join(f"{c:>{w}s}" for c, w in zip(columns, widths))
    print(f"{line}\n{'-' * len(line)}")
    for engine in args.engines:
        tps = {label: tokens / results[label][engine]["seconds"] for label in labels}
        cells = ([f"{tps[label]:.0f}" for label in labels]
                 + [f"{tps[label] / tps[reference]:.2f}" for label in others])
        print(f"{engine:13s} " + " ".join(f"{c:>{w}s}" for c, w in zip(cells, widths)))
        for row in rows:
            if row["engine"] == engine:
                row["ratio_to_reference"] = tps[row["model"]] / tps[reference]
    return dict(reference=reference, rows=rows)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--presets", nargs="+", default=["tiny", "mini", "small", "base"])
    which.add_argument("--models", nargs="+", metavar="DIR",
                       help="saved BertForSequenceClassification directories (bert-np finetune's "
                       "best/, final/) measured in one rotation instead of presets")
    p.add_argument("--relative-to", metavar="NAME",
                   help="with --models: the model whose tokens/s the others are divided by, by its "
                   "short name (runs/tiny_d/best -> tiny_d; default: the first)")
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=6.0)
    p.add_argument("--turn-seconds", type=float, default=1.0)
    p.add_argument("--pause", type=float, default=0.3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return serve_child(args)
    if args.relative_to and not args.models:
        p.error("--relative-to goes with --models")
    if args.models and args.relative_to not in (None, *model_labels(args.models)):
        p.error(f"--relative-to {args.relative_to}: not one of the models' names "
                f"{', '.join(model_labels(args.models))}")
    import onnxruntime
    import torch
    code = measured_code()                # before anything is written, the record included
    tokens = args.batch_size * args.seq_len
    print(f"CPU: {cpu_description()}")
    print(f"B={args.batch_size} T={args.seq_len}, {args.threads} threads per engine, engines take "
          f"turns of ~{args.turn_seconds:g} s, each >= {args.steps} steps and >= "
          f"{args.min_seconds:g} s (median step); torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}")
    if args.models:
        record = report_models(args, tokens)
    else:
        record = dict(rows=[])
        for preset in args.presets:
            results, logits, fused = measure_preset(preset, args)
            print(f"\n{preset}: ONNX Runtime fused operators {fused}")
            print(header("preset", 7))
            record["rows"] += [dict(preset=preset, **row)
                               for row in table_rows(preset, results, logits, tokens, 7)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_description(), **code, "argv": sys.argv[1:],
                       **record}, f, indent=1)


def measured_code() -> dict:
    """The commit of the code measured, and whether tracked files differed from it (taken at the
    start: the JSON record written at the end is itself often a tracked file)."""
    repo = os.path.dirname(_HERE)
    status = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True)
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"commit": commit or None,
            "uncommitted_changes": bool(status.stdout.strip()) if commit else None}


if __name__ == "__main__":
    main()
