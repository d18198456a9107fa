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
Same weights: the parent saves one bert_np model (preset, seed 0, perturbed so that LayerNorm and
biases are not trivial) with save_pretrained; every engine starts from that directory.
Measurement: each engine in a subprocess of its own, `--threads` threads each (NumPy/OpenBLAS,
Numba, torch.set_num_threads, ORT intra_op_num_threads), all engines of a preset alive at once
and taking turns of ~--turn-seconds in rotation (the design of compare_torch.py: a shared VM's
drift hits every engine alike), until each has --steps steps and --min-seconds. Reported:
tokens/s from the median step, the ratio to PyTorch eager float32, peak memory (max RSS) of each
process, and each int8 engine's logit drift against its own float32 engine and against bert_np
float32 on the same inputs: max |logits_int8 - logits_float| / max |logits_float|.
Not a test and not timed in CI. The CPU (lscpu model name and its avx2 / avx512 / vnni / amx
flags) is printed with the table.

    python bench/compare_engines.py                          # presets tiny mini small base
    python bench/compare_engines.py --presets tiny --steps 2 --min-seconds 1   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

# bench/ holds a kernels.py, which would shadow the `kernels` package transformers may import
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [d for d in sys.path if os.path.abspath(d or ".") != _HERE]

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


# ---- preparing the weights and the ONNX graphs (parent, once per preset) ---------------------

def prepare(preset, directory, opset=17):
    """Save the bert_np model, export and optimize the ONNX twin, quantize it. Returns paths."""
    import bert_np
    cfg = bert_np.BertConfig.preset(preset)
    model = bert_np.BertForSequenceClassification(cfg, seed=0)
    rng = np.random.default_rng(1)
    for k, v in model.params.items():
        model.params[k] = (v + rng.normal(0.0, 0.02, v.shape)).astype(v.dtype)
    model.save_pretrained(directory)
    return dict(directory=directory, **export_onnx(directory, directory, opset))


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

def engine_forward(engine, preset, paths, B, T, threads):
    """(forward(), logits()) for one engine; forward runs one batch, logits returns its logits."""
    import bert_np
    cfg = bert_np.BertConfig.preset(preset)
    inputs = make_inputs(cfg.vocab_size, B, T)
    if engine.startswith("bert_np"):
        model = bert_np.BertForSequenceClassification.from_pretrained(paths["directory"])
        if engine == "bert_np-int8":
            model = bert_np.quantize_dynamic(model)
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


def serve(args):
    """Protocol as in compare_torch.py: "ready" once warm; "run S" -> step times (JSON);
    "logits" -> the logits of the batch (JSON); "quit" -> {"peak_mb": ...}."""
    if args.engine.startswith("bert_np"):
        from bert_np.kernels.process import tune_process
        tune_process()
    paths = json.loads(args.paths)
    step, logits = engine_forward(args.engine, args.preset, paths, args.batch_size, args.seq_len,
                                  args.threads)
    for _ in range(args.warmup):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            break
        if command[0] == "logits":
            print(json.dumps(np.asarray(logits(), np.float64).tolist()), flush=True)
            continue
        times, deadline = [], time.perf_counter() + float(command[1])
        while not times or time.perf_counter() < deadline:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        print(json.dumps(times), flush=True)
    print(json.dumps({"peak_mb": peak_mb()}), flush=True)


def peak_mb():
    """This process's peak resident memory: VmHWM, which starts afresh at exec (ru_maxrss keeps
    the high-water mark of the parent, which has loaded torch and exported the graphs)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Child:
    def __init__(self, engine, preset, paths, args):
        cmd = [sys.executable, __file__, "--child", "--engine", engine, "--preset", preset,
               "--paths", json.dumps(paths), "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--warmup", str(args.warmup),
               "--threads", str(args.threads)]
        env = dict(os.environ, NUMBA_NUM_THREADS=str(args.threads),
                   OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
                   BENCH_THREADS=str(args.threads))
        self.name = engine
        self.process = subprocess.Popen(cmd, env=env, text=True, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.times = []
        self._answer()

    def _answer(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} failed:\n{self.process.stderr.read()[-3000:]}")
        return line

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self._answer())

    def turn(self, seconds):
        self.times += self.ask(f"run {seconds}")

    def finish(self):
        peak_mb = self.ask("quit")["peak_mb"]
        self.process.wait()
        return dict(seconds=float(np.median(self.times)), steps=len(self.times), peak_mb=peak_mb)


def drift(a, b):
    """max |a - b| / max |b|."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())


def measure_preset(preset, args):
    with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as directory:
        paths = prepare(preset, directory)
        fused = paths.pop("fused")
        children = [Child(engine, preset, paths, args) for engine in args.engines]
        logits = {c.name: np.array(c.ask("logits")) for c in children}
        turn = 0
        while any(len(c.times) < args.steps or sum(c.times) < args.min_seconds for c in children):
            k = turn % len(children)                                 # rotate who goes first
            for child in children[k:] + children[:k]:
                time.sleep(args.pause)
                child.turn(args.turn_seconds)
            turn += 1
        results = {c.name: c.finish() for c in children}
    return results, logits, fused


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "mini", "small", "base"])
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
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return serve(args)
    import onnxruntime
    import torch
    tokens = args.batch_size * args.seq_len
    print(f"CPU: {cpu_description()}")
    print(f"B={args.batch_size} T={args.seq_len}, {args.threads} threads per engine, engines take "
          f"turns of ~{args.turn_seconds:g} s, each >= {args.steps} steps and >= "
          f"{args.min_seconds:g} s (median step); torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}")
    header = (f"{'preset':7s} {'engine':13s} {'tokens/s':>9s} {'vs torch':>8s} {'peak MB':>8s} "
              f"{'drift vs own fp32':>17s} {'drift vs bert_np fp32':>21s}")
    rows = []
    for preset in args.presets:
        results, logits, fused = measure_preset(preset, args)
        print(f"\n{preset}: ONNX Runtime fused operators {fused}")
        print(header)
        print("-" * len(header))
        torch_tps = tokens / results["torch"]["seconds"] if "torch" in results else None
        for engine, r in results.items():
            tps = tokens / r["seconds"]
            row = dict(preset=preset, engine=engine, tokens_per_s=tps, steps=r["steps"],
                       peak_mb=r["peak_mb"], ratio_to_torch=tps / torch_tps if torch_tps else None)
            own, ref = FLOAT_OF.get(engine), "bert_np"
            row["drift_own"] = drift(logits[engine], logits[own]) if own in logits else None
            row["drift_bert_np"] = (drift(logits[engine], logits[ref])
                                    if ref in logits and engine != ref else None)
            rows.append(row)
            fmt = lambda v: "-" if v is None else f"{v:.2e}"                  # noqa: E731
            ratio = "-" if row["ratio_to_torch"] is None else f"{row['ratio_to_torch']:.2f}"
            print(f"{preset:7s} {engine:13s} {tps:9.0f} {ratio:>8s} {r['peak_mb']:8.0f} "
                  f"{fmt(row['drift_own']):>17s} {fmt(row['drift_bert_np']):>21s}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_description(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
