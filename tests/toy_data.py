"""A toy corpus and toy classification examples over a 26-word vocabulary, for the tests of runs
and of the command line (test_robustness*.py): enough text to train a WordPiece vocabulary of 80
and to run every verb in seconds."""
import numpy as np

from bert_np.data.tasks import Example
from bert_np.tokenization import train_wordpiece

WORDS = ("the cat dog bird sat ran flew over under a mat tree river quick slow red blue green "
         "house garden morning evening happy sad big small").split()


def write_corpus(path, documents=12, sentences=6, seed=0):
    """`documents` documents of `sentences` random sentences (4-11 words), blank-line separated."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(documents):
        for _ in range(sentences):
            lines.append(" ".join(rng.choice(WORDS, rng.integers(4, 12))) + ".")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def corpus_and_vocab(root):
    """(corpus path, vocab.txt path, tokenizer): the corpus above and a vocabulary trained on it."""
    corpus = write_corpus(root / "corpus.txt")
    tokenizer = train_wordpiece([corpus], vocab_size=80, out_dir=root / "vocab", min_frequency=1)
    return corpus, root / "vocab" / "vocab.txt", tokenizer


def tiny_examples(n, seed):
    """n single-text examples of six random words with random binary labels."""
    rng = np.random.default_rng(seed)
    return [Example(" ".join(rng.choice(WORDS, 6)), None, int(rng.integers(2))) for _ in range(n)]
