"""The further task heads and the extra outputs, against transformers on the same weights.

Classes: BertForTokenClassification, BertForQuestionAnswering, BertForMultipleChoice,
BertForNextSentencePrediction, BertForSequenceClassification with problem_type (multi-label BCE,
regression with several outputs), and an untied MLM decoder (tie_word_embeddings false) in
BertForMaskedLM and BertForPreTraining; BertModel for output_hidden_states / output_attentions.

Reference: the transformers class of the same name with the same weights, eager attention (the only
implementation that returns attention probabilities), dropout off. The config is the awkward one
of test_parity.py: hidden size 30 (not a multiple of 64), 3 heads of size 10, intermediate 47,
3 token types; the batch has a half-padded row and a row with one real token.

Compared, with the tolerances of test_parity.py and for the same reasons:
  float64: every output (logits, start/end logits, every hidden state, every attention map)
      <= 1e-10 relative; the loss <= 1e-10 relative; every parameter gradient <= 1e-9 relative,
      except those whose exact gradient is zero, where both sides hold rounding noise and the
      comparison is absolute, <= 1e-12: attention.self.key.bias (softmax ignores a shift), in
      question answering qa_outputs.bias and the last layer's output.LayerNorm.bias (each adds
      the same number to every position's start (end) logit, which the softmax over positions
      ignores), in multiple choice classifier.bias (the same number on every choice's logit).
  float32: every output <= 1e-5 absolute.
  round trips (bert_np save -> transformers load, transformers save -> bert_np load): the file
      holds the same float64 numbers, so outputs agree to rounding, <= 1e-12 relative.
"""
import numpy as np
import pytest

import bert_np
from head_cases import (B, CASES, ODD, OUTPUTS, T, build, compare_outputs, exactly_zero,
                        make_inputs, make_labels)
from reference import compare_gradients, rel_error, to_transformers, torch_inputs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

@pytest.mark.parametrize("case", list(CASES))
def test_float64_outputs_hidden_states_attentions_loss_and_gradients(case, parity_report):
    model = build(case, np.float64)
    hf_model = to_transformers(model)
    inputs, rng = make_inputs(model, seed=11)
    tag = f"{case} odd B={B} T={T}"
    ours = model.forward(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = hf_model(**torch_inputs(**inputs), output_hidden_states=True, output_attentions=True)
    compare_outputs(ours, theirs, 1e-10, "heads float64 outputs (rel)", tag, parity_report)
    if case == "BertModel":
        return
    labels = make_labels(model, inputs, rng)
    stats = {}
    loss, grads = model.loss_and_grads(**inputs, **labels, training=True, stats=stats,
                                       output_hidden_states=True, output_attentions=True)
    hf_model.train()  # dropout is 0: training mode changes nothing but is the path we compare
    hf_out = hf_model(**torch_inputs(**inputs, **labels), output_hidden_states=True,
                      output_attentions=True)
    hf_out.loss.backward()
    loss_err = abs(loss - hf_out.loss.item()) / abs(hf_out.loss.item())
    parity_report.append(("heads float64 loss (rel)", tag, loss_err))
    assert loss_err <= 1e-10, f"{tag} loss: {loss:.17g} vs {hf_out.loss.item():.17g}"
    # the training pass hands out the same hidden states and attentions
    compare_outputs({k: stats[k] for k in ("hidden_states", "attentions")}, hf_out, 1e-10,
                    "heads float64 training outputs (rel)", tag, parity_report, main=False)
    hf_params = dict(hf_model.named_parameters())
    assert set(grads) == set(model.params) and set(model.params) <= set(hf_params)
    worst_grad, worst_key_bias = compare_gradients(grads, hf_model, tag, exactly_zero(model))
    parity_report.append(("heads float64 gradients (rel)", tag, worst_grad))
    parity_report.append(("heads float64 zero gradients (abs)", tag, worst_key_bias))


@pytest.mark.parametrize("case", list(CASES))
def test_float32_outputs(case, parity_report):
    model = build(case, np.float32)
    hf_model = to_transformers(model)
    inputs, _ = make_inputs(model, seed=5)
    ours = model.forward(**inputs, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        theirs = hf_model(**torch_inputs(**inputs), output_hidden_states=True,
                          output_attentions=True)
    for name, value in ours.items():
        for array in (value if isinstance(value, tuple) else (value,)):
            assert array.dtype == np.float32, name
    compare_outputs(ours, theirs, 1e-5, "heads float32 outputs (abs)", case, parity_report,
                    relative=False)


@pytest.mark.parametrize("case", ["TokenClassification", "QuestionAnswering", "MultipleChoice",
                                  "NextSentencePrediction", "SequenceClassification-multi-label",
                                  "PreTraining-untied"])
def test_round_trips_with_transformers(case, tmp_path):
    """bert_np save -> transformers from_pretrained gives bert_np's outputs; transformers
    save_pretrained (a fresh random model) -> bert_np from_pretrained(strict=True) gives
    transformers' outputs: every key and shape agrees both ways."""
    model = build(case, np.float64, seed=3)
    inputs, _ = make_inputs(model, seed=2)
    class_name = type(model).__name__
    model.save_pretrained(tmp_path / "ours")
    hf_loaded = getattr(transformers, class_name).from_pretrained(
        tmp_path / "ours", attn_implementation="eager", dtype=torch.float64).eval()
    ours = model.forward(**inputs)
    with torch.no_grad():
        theirs = hf_loaded(**torch_inputs(**inputs))
    names = [n for n in OUTPUTS if n in ours and getattr(theirs, n, None) is not None]
    assert names
    for name in names:
        assert rel_error(ours[name], getattr(theirs, name).numpy()) <= 1e-12, name

    torch.manual_seed(0)
    fields = {k: v for k, v in model.config.to_dict().items() if k != "model_type"}
    hf_model = getattr(transformers, class_name)(transformers.BertConfig(**fields)).double().eval()
    hf_model.save_pretrained(tmp_path / "theirs")
    loaded = getattr(bert_np, class_name).from_pretrained(tmp_path / "theirs", dtype=np.float64,
                                                         strict=True)
    with torch.no_grad():
        theirs = hf_model(**torch_inputs(**inputs))
    ours = loaded.forward(**inputs)
    for name in names:
        assert rel_error(ours[name], getattr(theirs, name).numpy()) <= 1e-12, name


def test_untied_decoder_is_its_own_parameter():
    """tie_word_embeddings false: the decoder weight is a parameter of its own, saved under
    cls.predictions.decoder.weight; changing it changes the MLM logits and not the encoder."""
    model = build("MaskedLM-untied", np.float64)
    assert "cls.predictions.decoder.weight" in model.params
    inputs, _ = make_inputs(model, seed=1)
    before = model.forward(**inputs)
    model.params["cls.predictions.decoder.weight"] += 0.1
    after = model.forward(**inputs)
    np.testing.assert_array_equal(after["last_hidden_state"], before["last_hidden_state"])
    assert np.abs(after["logits"] - before["logits"]).max() > 1e-3


def test_asking_for_hidden_states_and_attentions_changes_no_number(monkeypatch):
    """In training with dropout on (same seed, same dropout masks), the outputs are identical,
    bit for bit, whether or not hidden states and attentions are asked for; the attentions are
    the probabilities after dropout: with dropout only on the attention, layer 0's maps are
    either 0 or the evaluation map / (1 - p). Not asking keeps the attention from materialising
    its probabilities in inference (keep_cache False everywhere)."""
    cfg = bert_np.BertConfig(**ODD, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5,
                             num_labels=5)
    model = bert_np.BertForTokenClassification(cfg, seed=0, dtype=np.float64)
    inputs, _ = make_inputs(model, seed=4)
    outs = []
    for flags in (False, True):
        model.rng = np.random.default_rng(9)
        outs.append(model.forward(**inputs, training=True, output_hidden_states=flags,
                                  output_attentions=flags))
    plain, full = outs
    assert "hidden_states" not in plain and "attentions" not in plain
    for name in ("logits", "last_hidden_state"):
        np.testing.assert_array_equal(plain[name], full[name])
    np.testing.assert_array_equal(full["hidden_states"][-1], full["last_hidden_state"])
    evaluation = model.forward(**inputs, output_attentions=True)["attentions"][0]
    dropped = full["attentions"][0]
    kept = dropped != 0
    assert 0.3 < kept[evaluation != 0].mean() < 0.7   # (padding keys have probability 0)
    np.testing.assert_allclose(dropped[kept], evaluation[kept] / 0.5, rtol=1e-14)

    import bert_np.encoder as encoder
    seen = []
    original = encoder.attention_forward

    def recording(*args, **kwargs):
        seen.append(kwargs["keep_cache"])
        return original(*args, **kwargs)
    monkeypatch.setattr(encoder, "attention_forward", recording)
    model.forward(**inputs, output_hidden_states=True)
    assert seen == [False, False]
    model.forward(**inputs, output_attentions=True)
    assert seen[2:] == [True, True]


@pytest.mark.parametrize("class_name,kwargs,message", [
    ("BertForMultipleChoice", dict(input_ids=np.ones((2, 5), np.int64), labels=[0, 1]),
     r"input_ids must be 3-D \(batch, num_choices, seq_len\)"),
    ("BertForMultipleChoice", dict(input_ids=np.ones((2, 3, 5), np.int64),
                                   attention_mask=np.ones((2, 5)), labels=[0, 1]),
     r"attention_mask has shape \(2, 5\), expected \(2, 3, 5\)"),
    ("BertForMultipleChoice", dict(input_ids=np.ones((2, 3, 5), np.int64), labels=[0, 3]),
     r"labels holds 3, outside \[0, 3\)"),
    ("BertForQuestionAnswering", dict(input_ids=np.ones((2, 5), np.int64), start_positions=[1, 2]),
     "needs start_positions and end_positions"),
    ("BertForQuestionAnswering", dict(input_ids=np.ones((2, 5), np.int64), start_positions=[1, 2],
                                      end_positions=[1, 2, 3]),
     r"end_positions must have shape \(2,\)"),
    ("BertForQuestionAnswering", dict(input_ids=np.ones((2, 5), np.int64),
                                      start_positions=[1.5, 2], end_positions=[1, 2]),
     "start_positions must hold integers"),
    ("BertForTokenClassification", dict(input_ids=np.ones((2, 5), np.int64), labels=np.ones(2)),
     r"labels has shape \(2,\), expected \(2, 5\)"),
    ("BertForNextSentencePrediction", dict(input_ids=np.ones((2, 5), np.int64), labels=[0, 2]),
     r"labels holds 2, outside \[0, 2\)"),
    ("BertForSequenceClassification-multi", dict(input_ids=np.ones((2, 5), np.int64),
                                                 labels=np.full((2, 4), 2.0)),
     r"labels holds 2.0; multi-label targets are probabilities in \[0, 1\]"),
    ("BertForSequenceClassification-multi", dict(input_ids=np.ones((2, 5), np.int64),
                                                 labels=np.ones((2, 3))),
     r"labels must have shape \(2, 4\) for multi_label_classification"),
])
def test_bad_inputs_are_one_line_errors_naming_the_argument(class_name, kwargs, message):
    fields = dict(ODD)
    if class_name.endswith("-multi"):
        class_name = "BertForSequenceClassification"
        fields.update(num_labels=4, problem_type="multi_label_classification")
    elif class_name == "BertForTokenClassification":
        fields["num_labels"] = 5
    model = getattr(bert_np, class_name)(bert_np.BertConfig(**fields), seed=0)
    with pytest.raises(ValueError, match=message) as info:
        model.loss_and_grads(**kwargs)
    assert "\n" not in str(info.value)


def test_config_refuses_an_unknown_problem_type_and_qa_needs_two_labels():
    with pytest.raises(ValueError, match="BertConfig.problem_type must be one of"):
        bert_np.BertConfig(**ODD, problem_type="multi_label")
    with pytest.raises(ValueError, match="BertForQuestionAnswering needs config.num_labels == 2"):
        bert_np.BertForQuestionAnswering(bert_np.BertConfig(**ODD, num_labels=3))
