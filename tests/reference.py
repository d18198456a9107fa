"""Helpers shared by the tests: the transformers twin of a bert_np model, finite differences, and
the relative-error measure every tolerance in the tests refers to."""
import numpy as np


def rel_error(actual, reference):
    """max |actual - reference| / max |reference|: the error relative to the tensor's scale."""
    actual, reference = np.asarray(actual, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    scale = np.abs(reference).max()
    return float(np.abs(actual - reference).max() / scale) if scale > 0 else float(np.abs(actual).max())


def abs_error(actual, reference):
    return float(np.abs(np.asarray(actual, np.float64) - np.asarray(reference, np.float64)).max())


def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to every entry of x (changed in place)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        f_plus = f()
        flat[i] = orig - eps
        f_minus = f()
        flat[i] = orig
        gflat[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def perturb_params(model, seed, scale=0.05):
    """Random offsets on every parameter, so LayerNorm weights are not all one and biases not all
    zero: a parity test on freshly initialised weights would miss errors in those paths."""
    rng = np.random.default_rng(seed)
    for k, v in model.params.items():
        model.params[k] = (v + rng.normal(0.0, scale, v.shape)).astype(v.dtype)


def to_transformers(model, keep_dropout=False):
    """The transformers model of the same class with the same weights, eager attention, dropout
    off (with keep_dropout, the dropout rates of the bert_np config)."""
    import torch
    import transformers

    fields = model.config.to_dict()
    fields.pop("model_type", None)
    if not keep_dropout:
        fields.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf_config = transformers.BertConfig(**fields, attn_implementation="eager")
    torch_dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    hf_model = getattr(transformers, type(model).__name__)(hf_config).to(torch_dtype).eval()
    state = {k: torch.tensor(v) for k, v in model.params.items()}
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert set(missing) <= tied and not unexpected, (missing, unexpected)
    return hf_model


def compare_gradients(grads, hf_model, tag, exactly_zero=()):
    """Every bert_np gradient against the twin's `.grad` after its backward (None: the parameter
    is unused by the loss, so 0): <= 1e-9 relative. The key biases and the keys in `exactly_zero`
    have an exact gradient of 0, so both sides hold rounding noise and the bound is 1e-12
    absolute. Returns (worst relative error, worst absolute error of those)."""
    hf_params = dict(hf_model.named_parameters())
    worst_rel, worst_abs = 0.0, 0.0
    for key, grad in grads.items():
        ref = hf_params[key].grad
        ref = np.zeros_like(grad) if ref is None else ref.numpy()
        if key.endswith("attention.self.key.bias") or key in exactly_zero:
            err = abs_error(grad, ref)
            worst_abs = max(worst_abs, err)
            assert err <= 1e-12, f"{tag} {key}: absolute error {err:.2e}"
        else:
            err = rel_error(grad, ref)
            worst_rel = max(worst_rel, err)
            assert err <= 1e-9, f"{tag} grad {key}: relative error {err:.2e}"
    return worst_rel, worst_abs


def torch_inputs(**arrays):
    import torch
    return {k: torch.tensor(v) for k, v in arrays.items() if v is not None}
