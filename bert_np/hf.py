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

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .files import remove_quietly, second_name, write_temp

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
        return read_safetensors(st_path)
    if (directory / PYTORCH_NAME).exists():
        return read_pytorch_bin(directory / PYTORCH_NAME)
    raise CheckpointError(f"{directory} holds neither {SAFETENSORS_NAME} nor {PYTORCH_NAME}")


CHECKSUM_KEY = "bert_np_sha256"


def tensors_checksum(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{t.dtype.str}|{t.shape}|".encode())
        h.update(memoryview(t).cast("B"))
    return h.hexdigest()


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file. A damaged header (truncation, garbage) is reported as
    such; files written by bert_np carry a checksum of the tensor data in their metadata, so a
    damaged data section (which the format itself cannot notice) is reported too."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file
    path = Path(path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupted and cannot be read: {e}") from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensors_checksum(tensors) != expected:
        raise CheckpointError(f"{path} is corrupted: its tensor data does not match the checksum "
                              "stored when it was written")
    return tensors


# ---- legacy pytorch_model.bin, read with a restricted unpickler -------------------------------

_TORCH_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                 "LongStorage": np.int64, "IntStorage": np.int32, "BFloat16Storage": None}


class _StorageType:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_):
    """The tensor view (offset, size, stride) of a storage, bounds-checked: a crafted file must
    not make as_strided read memory outside the storage."""
    if not (isinstance(storage, tuple) and len(storage) == 2 and isinstance(storage[1], np.ndarray)):
        raise pickle.UnpicklingError("malformed tensor: its storage is not a storage")
    _, data = storage
    size, stride = tuple(size), tuple(stride)
    ints = (offset, *size, *stride)
    if (len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in ints)):
        raise pickle.UnpicklingError(f"malformed tensor: offset {offset}, size {size}, stride {stride}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= len(data) or offset > len(data):
        raise pickle.UnpicklingError(f"malformed tensor: size {size} and stride {stride} from offset "
                                     f"{offset} reach beyond its storage of {len(data)} elements")
    itemsize = data.dtype.itemsize
    return np.lib.stride_tricks.as_strided(data[offset:], shape=size,
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
        if not (isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"malformed persistent id {pid!r}")
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
            except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError,
                    AttributeError, IndexError, zipfile.BadZipFile) as e:
                raise CheckpointError(f"{path}: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a dict of tensors)")
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
    non_finite = [k for k in sorted(set(state) & set(expected))
                  if np.issubdtype(np.asarray(state[k]).dtype, np.floating)
                  and not np.isfinite(state[k]).all()]
    if non_finite:
        raise CheckpointError(f"checkpoint {source} holds NaN or infinite values in "
                              f"{len(non_finite)} tensor(s): {', '.join(non_finite)}")
    return missing, unexpected


# ---- writing ---------------------------------------------------------------------------------

def write_checkpoint(directory: str | os.PathLike, config_dict: dict, params: dict) -> None:
    """config.json + model.safetensors, replaced as a pair.

    Both files are first written completely to temporary files beside their targets (a failure
    there leaves the directory untouched). Then the weights are renamed into place, then the
    config; if the second rename fails, the previous weights (kept as a hard link or copy) are
    put back. So an exception at any point leaves either the old pair or the new pair, never new
    weights under an old config. (A power cut between the two renames, microseconds apart, is the
    one case this cannot cover; a mismatched pair then fails the shape check on loading.)"""
    from safetensors.numpy import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path, config_path = directory / SAFETENSORS_NAME, directory / CONFIG_NAME
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    metadata = {"format": "pt", CHECKSUM_KEY: tensors_checksum(tensors)}
    text = json.dumps(config_dict, indent=2, sort_keys=True) + "\n"
    tmp_weights = write_temp(weights_path,
                             lambda tmp: save_file(tensors, tmp, metadata=metadata))
    backup = None
    try:
        tmp_config = write_temp(config_path,
                                lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        try:
            if weights_path.exists():
                backup = second_name(weights_path)
            os.replace(tmp_weights, weights_path)
            try:
                os.replace(tmp_config, config_path)
            except BaseException:
                if backup is not None:
                    os.replace(backup, weights_path)
                    backup = None
                else:
                    remove_quietly(weights_path)
                raise
        finally:
            remove_quietly(tmp_config)
    finally:
        remove_quietly(tmp_weights)
        if backup is not None:
            remove_quietly(backup)
