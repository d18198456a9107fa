"""`bert-np pretrain` end to end on Google's sample_text.txt: checkpoints, exact resume, a NaN stop.

Resume is compared bit for bit (==, no tolerance): the resumed run must see the same batches, the
same dropout masks and the same optimizer state, so every logged loss is the same float.
"""
import json
from pathlib import Path

import numpy as np
import pytest

import bert_np
from bert_np.train import checkpoints, loop
from bert_np.train.pretrain import PretrainSettings, pretrain


@pytest.fixture
def settings(data_dir, tmp_path):
    cfg = bert_np.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    cfg.to_json_file(tmp_path / "config.json")
    corpus = str(data_dir / "pretrain_corpus" / "sample_text.txt")

    def make(out, **kw):
        fields = dict(corpus=[corpus], eval_corpus=[corpus], config=str(tmp_path / "config.json"),
                      vocab=str(data_dir / "vocab" / "bert-base-uncased" / "vocab.txt"),
                      out=str(tmp_path / out), steps=8, batch_size=4, max_seq_length=48,
                      warmup_steps=2, lr=1e-3, checkpoint_every=3, eval_every=4, eval_batches=2)
        fields.update(kw)
        return PretrainSettings(**fields)
    return make


def train_losses(out_dir):
    records = [json.loads(line) for line in open(out_dir / "log.jsonl")]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def crash_at(monkeypatch, step_to_crash, error):
    real_step = loop.train_step

    def flaky(model, optimizer, batch, max_grad_norm, step, stats=None, compute_grads=None):
        if step == step_to_crash:
            raise error
        return real_step(model, optimizer, batch, max_grad_norm, step, stats, compute_grads)
    monkeypatch.setattr("bert_np.train.loop.train_step", flaky)


def test_run_writes_checkpoints_log_and_plot(settings):
    s = settings("run")
    result = pretrain(s, progress=False)
    out = s.out
    assert result["step"] == 8
    assert (checkpoints.latest_checkpoint(out).name == "step-8")
    assert sorted(p.name for p in (Path(out)).glob("step-*")) == ["step-6", "step-8"]  # keep 2
    assert (Path(out) / "curves.png").stat().st_size > 0
    model = bert_np.BertForPreTraining.from_pretrained(Path(out) / "final", strict=True)
    assert model.config.hidden_size == 32
    assert 0.0 <= result["last_eval"]["mlm_acc"] <= 1.0


def test_resume_after_a_crash_is_bit_exact(settings, monkeypatch):
    uninterrupted = settings("a")
    pretrain(uninterrupted, progress=False)
    interrupted = settings("b")
    crash_at(monkeypatch, 5, KeyboardInterrupt())  # dies during step 5; last checkpoint: step 3
    with pytest.raises(KeyboardInterrupt):
        pretrain(interrupted, progress=False)
    monkeypatch.undo()
    assert checkpoints.latest_checkpoint(interrupted.out).name == "step-3"
    pretrain(interrupted, resume=True, progress=False)
    a, b = train_losses(Path(uninterrupted.out)), train_losses(Path(interrupted.out))
    assert [s for s, _ in b] == list(range(1, 9))
    assert a == b  # exact equality of every loss
    pa = bert_np.BertForPreTraining.from_pretrained(Path(uninterrupted.out) / "final").params
    pb = bert_np.BertForPreTraining.from_pretrained(Path(interrupted.out) / "final").params
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(settings, monkeypatch):
    s = settings("nan")
    crash_at(monkeypatch, 5, loop.NonFiniteLossError("step 5: loss nan, gradient norm nan"))
    with pytest.raises(loop.NonFiniteLossError, match=r"step 5.*last good checkpoint is .*step-3"):
        pretrain(s, progress=False)
    good = checkpoints.latest_checkpoint(s.out)
    assert good.name == "step-3"
    bert_np.BertForPreTraining.from_pretrained(good, strict=True)


def test_train_step_refuses_a_nan_loss_before_updating(settings):
    model = bert_np.BertForPreTraining(bert_np.BertConfig.preset("tiny", vocab_size=50), seed=0)
    model.params["bert.embeddings.LayerNorm.weight"][0] = np.nan
    before = {k: v.copy() for k, v in model.params.items()}
    opt = bert_np.optim.AdamW(model.params, lr=0.1)
    ids = np.array([[2, 5, 7, 3]])
    batch = dict(input_ids=ids, labels=np.array([[-100, 5, -100, -100]]), next_sentence_label=[0])
    with pytest.raises(loop.NonFiniteLossError, match="step 7"):
        loop.train_step(model, opt, batch, 1.0, step=7)
    assert all(np.array_equal(before[k], model.params[k], equal_nan=True) for k in before)


def test_resume_refuses_changed_settings(settings):
    pretrain(settings("c", steps=3), progress=False)
    with pytest.raises(ValueError, match="lr"):
        pretrain(settings("c", steps=3, lr=5e-4), resume=True, progress=False)


def test_resume_of_a_checkpoint_written_before_a_setting_existed(settings):
    """A setting added later (here `nsp`, default True, and `init`, default unset) is absent
    from an older checkpoint's saved settings; that run used the default, so the same command
    resumes it. A value other than the
    default is still refused, naming the setting."""
    pretrain(settings("old", steps=3, checkpoint_every=2), progress=False)
    state_file = checkpoints.latest_checkpoint(settings("old").out) / checkpoints.STATE_NAME
    state = json.loads(state_file.read_text())
    del state["settings"]["nsp"]
    del state["settings"]["init"], state["inputs"]["init"]   # --init came later too
    state_file.write_text(json.dumps(state))
    result = pretrain(settings("old", steps=3, checkpoint_every=2), resume=True, progress=False)
    assert result["step"] == 3
    with pytest.raises(ValueError, match="nsp"):
        pretrain(settings("old", steps=3, checkpoint_every=2, nsp=False), resume=True,
                 progress=False)


def eval_records(out_dir):
    records = [json.loads(line) for line in open(Path(out_dir) / "log.jsonl")]
    return {r["step"]: r for r in records if r["kind"] == "eval"}


def test_init_starts_from_the_saved_weights(settings):
    """--init continues from a saved model: the new run's held-out evaluation before its first
    step (same eval corpus, same seed, so the same masked batches) equals, float for float, the
    evaluation the first run wrote after its last step; the model's config, and without --vocab
    its vocabulary, come from --init."""
    first = settings("first")
    pretrain(first, progress=False)
    again = settings("again", config=None, init=str(Path(first.out) / "final"), vocab=None, steps=2)
    assert again.vocab == str(Path(first.out) / "final" / "vocab.txt")
    pretrain(again, progress=False)
    assert eval_records(again.out)[0] == {**eval_records(first.out)[8], "step": 0}
    model = bert_np.BertForPreTraining.from_pretrained(Path(again.out) / "final")
    assert model.config.hidden_size == 32          # --init's config (the preset tiny has 128)


def test_init_bad_input_is_a_clear_error(settings, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--init .*no config.json"):
        settings("x", config=None, init=str(tmp_path / "empty"))
    first = settings("first", steps=1)
    pretrain(first, progress=False)
    final = str(Path(first.out) / "final")
    with pytest.raises(ValueError, match="--init .* and --config .*drop --config"):
        settings("x", init=final)                   # the fixture's config.json as well
    with pytest.raises(ValueError, match="--init .* and --config tiny.*drop --config"):
        settings("x", config="tiny", init=final)    # the default preset, named, is refused too
    other = tmp_path / "other_vocab"
    bert_np.BertForPreTraining(bert_np.BertConfig.preset("tiny", vocab_size=50)).save_pretrained(other)
    with pytest.raises(ValueError, match="--init .* has vocab_size 50, --vocab has 30522"):
        pretrain(settings("x", config=None, init=str(other)), progress=False)
    with pytest.raises(FileNotFoundError, match="--init .*other_vocab has no vocab.txt; give --vocab"):
        settings("x", config=None, init=str(other), vocab=None)
    with pytest.raises(ValueError, match="--vocab is needed .* when there is no --init"):
        settings("x", vocab=None)
    with pytest.raises(ValueError, match="max_seq_length 128 exceeds --init .*64"):
        pretrain(settings("x", config=None, init=final, max_seq_length=128), progress=False)


def test_resume_refuses_other_init_weights(settings, tmp_path):
    """The weights --init names are an input of the run: compared by content on resume, so a
    directory overwritten with another model is refused even at the same path."""
    first = settings("first", steps=1)
    pretrain(first, progress=False)
    start = tmp_path / "start"
    bert_np.BertForPreTraining.from_pretrained(Path(first.out) / "final").save_pretrained(start)
    run = dict(config=None, init=str(start), steps=3, checkpoint_every=2)
    pretrain(settings("cont", **run, max_steps=2), progress=False)
    model = bert_np.BertForPreTraining.from_pretrained(start)
    model.params["bert.pooler.dense.bias"] += 1.0
    model.save_pretrained(start)
    with pytest.raises(ValueError, match="init"):
        pretrain(settings("cont", **run), resume=True, progress=False)
