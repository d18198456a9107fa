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


def to_transformers(model):
    """The transformers model of the same class with the same weights, eager attention, no dropout."""
    import torch
    import transformers

    fields = model.config.to_dict()
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "model_type"):
        fields.pop(key, None)
    hf_config = transformers.BertConfig(**fields, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0,
                                        attn_implementation="eager")
    torch_dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    hf_model = getattr(transformers, type(model).__name__)(hf_config).to(torch_dtype).eval()
    state = {k: torch.tensor(v) for k, v in model.params.items()}
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert set(missing) <= tied and not unexpected, (missing, unexpected)
    return hf_model


def torch_inputs(**arrays):
    import torch
    return {k: torch.tensor(v) for k, v in arrays.items() if v is not None}
