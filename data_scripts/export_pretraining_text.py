"""Write the unlabelled text of a task's split (by default train) as a pretraining corpus.

    python data_scripts/export_pretraining_text.py --task tnews --out tnews_corpus.txt
    python data_scripts/export_pretraining_text.py --task tnews --split dev --out tnews_dev.txt

Each example becomes one document: the sentences of its text_a (and then of its text_b, for pair
tasks), one per line, documents separated by a blank line: the format `bert-np pretrain` reads.
Chinese text is split after 。！？!? (`split_chinese_sentences`), English text at ". ", "! " or
"? " before a capital (`split_sentences`). Labels are not written. Pretrain on the training split
only (the default), so the dev and test texts stay unseen; the dev text serves as
`bert-np pretrain --eval-corpus`, for held-out MLM accuracy.
"""
import argparse
import sys
from pathlib import Path

from bert_np.data.pretraining import split_chinese_sentences, split_sentences
from bert_np.data.tasks import get_task, load_split
from bert_np.files import atomic_write_text


def document_sentences(example, language: str) -> list[str]:
    """The sentences of one example's text_a and text_b, in order."""
    split = split_chinese_sentences if language == "zh" else split_sentences
    texts = [example.text_a] + ([example.text_b] if example.text_b else [])
    return [sentence for text in texts for sentence in split(text.replace("\n", " "))]


def corpus_text(documents: list[list[str]]) -> str:
    """One sentence per line, a blank line after each document (documents without a sentence are
    left out)."""
    return "".join("\n".join(sentences) + "\n\n" for sentences in documents if sentences)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--split", default="train", choices=("train", "dev", "test"))
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    task = get_task(args.task)
    documents = [document_sentences(e, task.language) for e in load_split(task, args.split)]
    documents = [sentences for sentences in documents if sentences]
    atomic_write_text(Path(args.out), corpus_text(documents))
    print(f"wrote {len(documents)} documents of {args.task} {args.split} to {args.out}: "
          f"{sum(map(len, documents))} sentences, "
          f"{sum(len(d) == 1 for d in documents)} documents of one sentence")
    return 0


if __name__ == "__main__":
    sys.exit(main())
