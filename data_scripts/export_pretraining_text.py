"""Write the unlabelled text of a task's training split as a pretraining corpus.

    python data_scripts/export_pretraining_text.py --task tnews --out tnews_corpus.txt

Each example becomes one document (its text_a, and text_b on a second line for pair tasks),
documents separated by a blank line: the format `bert-np pretrain` reads. Only the training split
is used, so the dev and test texts stay unseen by pretraining. Labels are not written.
"""
import argparse
import sys
from pathlib import Path

from bert_np.data.tasks import load_split
from bert_np.files import atomic_write_text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    examples = load_split(args.task, "train")
    lines = []
    for e in examples:
        lines.append(e.text_a.replace("\n", " "))
        if e.text_b:
            lines.append(e.text_b.replace("\n", " "))
        lines.append("")
    text = "\n".join(lines) + "\n"
    atomic_write_text(Path(args.out), text)
    print(f"wrote {len(examples)} documents of {args.task} train to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
