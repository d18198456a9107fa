"""Hugging Face checkpoint directories in and out: config.json + model.safetensors (or a legacy
pytorch_model.bin, read without executing any pickled code).

Parameters are kept under Hugging Face's own state_dict names, so loading is a key-for-key copy
after three normalisations that old or partial checkpoints need:
  - `LayerNorm.gamma` / `LayerNorm.beta` (TF-era names) become `LayerNorm.weight` / `.bias`;
  - a BertModel-only checkpoint (keys without "bert.", like all-MiniLM-L6-v2) gains the prefix when
    loaded into a task model, and a task checkpoint loses it when loaded into a bare BertModel;
  - tied copies are dropped: `cls.predictions.decoder.weight` is the word-embedding table and
    `cls.predictions.decoder.bias` is `cls.predictions.bias` (used when the latter is absent).
Every key and shape is checked before a single tensor is copied.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"

# keys that carry no parameters of their own
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# heads that a model may lack or add; missing ones are initialised, extra ones ignored
HEAD_PREFIXES = ("cls.", "classifier.", "bert.pooler.", "pooler.")


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be loaded as asked."""


def read_state_dict(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory as NumPy arrays, keyed as stored."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    st_path = directory / SAFETENSORS_NAME
    if st_path.exists():
        return _read_safetensors(st_path)
    if (directory / PYTORCH_NAME).exists():
        return read_pytorch_bin(directory / PYTORCH_NAME)
    raise CheckpointError(f"{directory} holds neither {SAFETENSORS_NAME} nor {PYTORCH_NAME}")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupted and cannot be read: {e}") from None


# ---- legacy pytorch_model.bin, read with a restricted unpickler -------------------------------

_TORCH_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                 "LongStorage": np.int64, "IntStorage": np.int32, "BFloat16Storage": None}


class _StorageType:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_):
    dtype_bytes, data = storage
    itemsize = data.dtype.itemsize
    return np.lib.stride_tricks.as_strided(data[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride)).copy()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the handful of names a state_dict pickle needs; anything else is refused,
    so a malicious file cannot run code through `find_class`."""

    def __init__(self, file, zf, prefix):
        super().__init__(file)
        self._zf, self._prefix = zf, prefix

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        if module == "torch" and name in _TORCH_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint pickle: "
                                     "only tensors are allowed")

    def persistent_load(self, pid):
        _, storage_type, key, _location, _numel = pid
        dtype = _TORCH_DTYPES.get(storage_type.name)
        if dtype is None:
            raise pickle.UnpicklingError(f"unsupported tensor storage {storage_type.name}")
        raw = self._zf.read(f"{self._prefix}/data/{key}")
        return (dtype, np.frombuffer(raw, dtype=dtype))


def read_pytorch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A torch.save zip archive of a state_dict, without torch and without executing code."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is not a readable torch zip archive: {e}") from None
    with zf:
        pkl_names = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        if len(pkl_names) != 1:
            raise CheckpointError(f"{path} has no single data.pkl; not a torch.save archive")
        prefix = pkl_names[0][: -len("/data.pkl")]
        with zf.open(pkl_names[0]) as f:
            try:
                state = _RestrictedUnpickler(f, zf, prefix).load()
            except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
                raise CheckpointError(f"{path}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state_dict")
    return dict(state)


# ---- key normalisation and checking ------------------------------------------------------------

def normalize_state_dict(state: dict, expected: dict[str, tuple], base_prefix: str) -> dict:
    """Rename a checkpoint's keys into the model's naming (see the module docstring)."""
    out = {}
    for key, value in state.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.endswith(_BUFFERS):
            continue
        if base_prefix and key.startswith(("embeddings.", "encoder.", "pooler.")):
            key = base_prefix + key
        elif not base_prefix and key.startswith("bert."):
            key = key[len("bert."):]
        out[key] = value
    out.pop("cls.predictions.decoder.weight", None)
    decoder_bias = out.pop("cls.predictions.decoder.bias", None)
    if decoder_bias is not None and "cls.predictions.bias" in expected:
        out.setdefault("cls.predictions.bias", decoder_bias)
    return out


def check_state_dict(state: dict, expected: dict[str, tuple], strict: bool, source: str):
    """Returns (missing_heads, ignored): head keys to initialise, extra head keys to drop.

    Raises CheckpointError listing every missing, unexpected and wrongly shaped key when the
    checkpoint does not fit (in strict mode, any difference at all)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
                   for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != tuple(expected[k])]
    bad_missing = missing if strict else [k for k in missing if not k.startswith(HEAD_PREFIXES)]
    bad_unexpected = unexpected if strict else [k for k in unexpected if not k.startswith(HEAD_PREFIXES)]
    if bad_missing or bad_unexpected or wrong_shape:
        lines = [f"checkpoint {source} does not match the model:"]
        for title, keys in (("missing keys", bad_missing), ("unexpected keys", bad_unexpected),
                            ("wrongly shaped keys", wrong_shape)):
            if keys:
                lines.append(f"  {title} ({len(keys)}):")
                lines.extend(f"    {k}" for k in keys)
        if not strict and (missing or unexpected):
            lines.append("  (heads may be missing or extra; the encoder must match exactly)")
        raise CheckpointError("\n".join(lines))
    return missing, unexpected


# ---- writing ---------------------------------------------------------------------------------

def atomic_write_bytes(path: Path, write) -> None:
    """Call write(tmp_path), fsync it, then rename it over `path`: readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_checkpoint(directory: str | os.PathLike, config_dict: dict, params: dict) -> None:
    """config.json + model.safetensors, each written atomically, the weights first."""
    from safetensors.numpy import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    atomic_write_bytes(directory / SAFETENSORS_NAME,
                       lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    text = json.dumps(config_dict, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(directory / CONFIG_NAME,
                       lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
