"""bench/probe_features.py, the linear probes behind the Chinese [CLS] evidence in docs/results.md:
the ridge classifier against the same minimiser found another way, the features of a padded
batch against each text encoded alone, and bad arguments as one-line errors.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bert_np.data.tasks import Example
from bert_np.tokenization import BertTokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "probe_features.py"
spec = importlib.util.spec_from_file_location("probe_features", SCRIPT)
probe_features = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe_features)


def test_ridge_probe_is_the_ridge_minimiser():
    """The probe's closed form (X^T X + alpha I)^-1 X^T Y, on standardised features plus a bias
    column, minimises |X W - Y|^2 + alpha |W|^2; least squares on the stacked system [X; sqrt(alpha)
    I] W = [Y; 0] finds the same minimiser by another route (QR/SVD instead of normal equations).
    Its dev accuracy must equal the probe's; a linearly separable task scores 1.0."""
    rng = np.random.default_rng(0)
    x_train, x_dev = rng.normal(size=(200, 6)), rng.normal(size=(80, 6))
    w_true = rng.normal(size=(6, 3))
    y_train, y_dev = (x_train @ w_true).argmax(1), (x_dev @ w_true).argmax(1)
    alpha = 5.0
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
    a = np.hstack([(x_train - mu) / sd, np.ones((200, 1))])
    b = np.hstack([(x_dev - mu) / sd, np.ones((80, 1))])
    y = -np.ones((200, 3))
    y[np.arange(200), y_train] = 1.0
    stacked = np.vstack([a, np.sqrt(alpha) * np.eye(7)])
    w, *_ = np.linalg.lstsq(stacked, np.vstack([y, np.zeros((7, 3))]), rcond=None)
    expected = float(((b @ w).argmax(1) == y_dev).mean())
    assert probe_features.ridge_probe(x_train, y_train, x_dev, y_dev, 3, alpha) == expected
    separable = (np.r_[np.full(50, -1.0), np.full(50, 1.0)][:, None]
                 + 0.1 * rng.normal(size=(100, 1)))
    labels = np.r_[np.zeros(50, int), np.ones(50, int)]
    assert probe_features.ridge_probe(separable, labels, separable, labels, 2) == 1.0


def test_mean_pair_cosine_of_parallel_and_of_orthogonal_rows():
    """Random pairs of different rows: all rows along one direction give 1, two orthogonal rows
    (every pair is the two of them) give 0."""
    assert probe_features.mean_pair_cosine(np.outer(np.arange(1, 6), [1.0, 2.0])) == \
        pytest.approx(1.0)
    assert probe_features.mean_pair_cosine(np.eye(2)) == pytest.approx(0.0, abs=1e-12)


def test_features_of_a_padded_batch_are_those_of_each_text_alone(data_dir):
    """In a batch, shorter texts are padded and the mask keeps padding out of attention and of
    the token mean; so each text's [CLS], pooler and mean features equal those of the text run
    alone, unpadded (float32; 1e-5 absolute covers the reordered sums)."""
    tokenizer = BertTokenizer.from_vocab(data_dir / "vocab" / "bert-base-uncased" / "vocab.txt")
    model = probe_features.load_model("tiny", tokenizer.vocab_size, seed=0)
    texts = ["a gripping , funny film", "dull",
             "the plot wanders but the cast is superb throughout"]
    examples = [Example(text_a=t, text_b=None, label=0) for t in texts]
    batched = probe_features.encoder_features(model, tokenizer, examples, max_length=32)
    for i, text in enumerate(texts):
        enc = tokenizer.encode_batch([text], max_length=32)
        out = model.forward(**enc)
        h = out["last_hidden_state"][0]                                          # (T, H)
        alone = {"cls": h[0], "pooler": out["pooler_output"][0], "mean": h.mean(0)}
        for name in probe_features.FEATURES:
            np.testing.assert_allclose(batched[name][i], alone[name], atol=1e-5, err_msg=name)


@pytest.mark.parametrize("argv, message", [
    (["--models", "no/such/dir"], "--models: no such model directory: no/such/dir"),
    (["--models", "tiny", "--vocab", "no_such_vocab.txt"],
     "--vocab no_such_vocab.txt: no such file"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys, data_dir):
    vocab = str(data_dir / "vocab" / "bert-base-uncased" / "vocab.txt")
    with pytest.raises(SystemExit) as exit_info:
        probe_features.main(["--task", "sst2", "--vocab", vocab] + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
