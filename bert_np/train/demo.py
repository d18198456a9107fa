"""`bert-np demo`: fine-tune a real pretrained BERT (all-MiniLM-L6-v2) on the SST-2 sample that ships
with the package, show dev accuracy before and after, save the curves, predict a few sentences."""
from __future__ import annotations

from pathlib import Path

from .. import paths
from ..data.tasks import load_demo_split
from .finetune import FinetuneSettings, finetune, load_for_inference, predict_texts

DEMO_OUTPUTS = {"best", "log.jsonl", "curves.png", "latest"}  # and checkpoints step-N
SENTENCES = [
    "a gorgeous, witty and deeply moving film.",
    "the plot is thin and the jokes fall flat.",
    "I expected little and was pleasantly surprised.",
    "two hours of my life I will never get back.",
]


def run_demo(out: str = "runs/demo", epochs: int = 2, lr: float = 1e-4, batch_size: int = 32,
             max_seq_length: int = 64, progress: bool = True, overwrite: bool = False) -> dict:
    previous = Path(out)
    if previous.is_dir() and all(p.name in DEMO_OUTPUTS or p.name.startswith("step-")
                                 for p in previous.iterdir()):
        overwrite = True  # only a previous demo's files: running the demo again replaces them
    model_dir = paths.minilm_dir()
    train, dev = load_demo_split("train"), load_demo_split("dev")
    print(f"bert_np demo: fine-tuning all-MiniLM-L6-v2 ({model_dir})\n"
          f"  on {len(train)} SST-2 training sentences, evaluating on the {len(dev)} dev sentences")
    settings = FinetuneSettings(task="sst2", model=str(model_dir), out=out, epochs=epochs, lr=lr,
                                batch_size=batch_size, max_seq_length=max_seq_length,
                                overwrite=overwrite)
    result = finetune(settings, progress=progress, train_examples=train, dev_examples=dev)
    model, tokenizer = load_for_inference(str(Path(out) / "best"))
    probs = predict_texts(model, tokenizer, SENTENCES)
    print(f"\ndev accuracy: {result['before']['accuracy']:.4f} before -> "
          f"{result['best']['accuracy']:.4f} after ({result['train_seconds']:.0f} s of training, "
          f"{result['tokens_per_s']:.0f} tokens/s)")
    print("predictions of the best checkpoint:")
    for text, p in zip(SENTENCES, probs):
        label = "positive" if p[1] > p[0] else "negative"
        print(f"  {label:8s} {max(p):.3f}  {text}")
    print(f"\nsaved: {out}/best (Hugging Face format), {out}/curves.png, {out}/log.jsonl")
    return result
