"""Hugging Face checkpoint directories in and out: config.json + model.safetensors (or a legacy
pytorch_model.bin, read without executing any pickled code), or the sharded form of either:
`model.safetensors.index.json` / `pytorch_model.bin.index.json`, whose "weight_map" names the
shard file of every key.

safetensors files are parsed here (the format is small: an 8-byte little-endian header length, a
JSON header of name -> dtype, shape and data_offsets, then the raw little-endian bytes), because
safetensors.numpy cannot read bfloat16. bf16 and fp16 tensors are widened to float32 on reading
(bf16 is the top half of a float32: uint16 -> uint32 << 16 -> view float32, exact) and then
converted to the model's dtype. Widening adds no precision: a model loaded from a bf16 checkpoint
holds weights with 8 significant bits (2-3 decimal digits: rounding to nearest leaves a relative
error up to 2^-8 ~ 0.4% per weight against the float32 original), fp16 with 11 bits (2^-11 ~
0.05%, and a range limited to 6e-5..65504); its outputs match those of the same bf16/fp16 weights
computed in float32, not those of the original float32 model.

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
import re
import zipfile
from pathlib import Path

import numpy as np

from .files import remove_quietly, second_name, write_temp

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
SAFETENSORS_INDEX_NAME = SAFETENSORS_NAME + ".index.json"
PYTORCH_INDEX_NAME = PYTORCH_NAME + ".index.json"

# keys that carry no parameters of their own
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# heads that a model may lack or add; missing ones are initialised, extra ones ignored
HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "bert.pooler.", "pooler.")


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be loaded as asked."""


def read_state_dict(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory as NumPy arrays, keyed as stored. Looks, in the
    order transformers does, for model.safetensors, its sharded index, pytorch_model.bin, its
    sharded index."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    for name, read in ((SAFETENSORS_NAME, read_safetensors),
                       (SAFETENSORS_INDEX_NAME, lambda p: read_sharded(p, read_safetensors)),
                       (PYTORCH_NAME, read_pytorch_bin),
                       (PYTORCH_INDEX_NAME, lambda p: read_sharded(p, read_pytorch_bin))):
        if (directory / name).exists():
            return read(directory / name)
    raise CheckpointError(f"{directory} holds neither {SAFETENSORS_NAME} nor {PYTORCH_NAME} "
                          f"(nor a sharded {SAFETENSORS_INDEX_NAME} or {PYTORCH_INDEX_NAME})")


def read_index(index_path: Path) -> dict[str, str]:
    """The weight_map (key -> shard file name) of a sharded checkpoint's index, checked: a JSON
    object whose weight_map maps names to plain file names inside the same directory."""
    try:
        index = json.loads(Path(index_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{index_path} is not a readable JSON index: {e}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path} has no \"weight_map\" object (key -> shard file)")
    for key, shard in weight_map.items():
        if (not isinstance(shard, str) or not shard or Path(shard).name != shard
                or shard in (".", "..")):
            raise CheckpointError(f"{index_path}: weight_map[{key!r}] = {shard!r} is not a file "
                                  "name in the checkpoint directory")
    return weight_map


def read_sharded(index_path: Path, read_file) -> dict[str, np.ndarray]:
    """Every shard named by the index, each read (and checksum-checked) as a single file is; the
    union must hold exactly the keys of the weight_map, each in the shard the map names."""
    weight_map = read_index(index_path)
    directory = Path(index_path).parent
    state = {}
    for shard in sorted(set(weight_map.values())):
        if not (directory / shard).exists():
            keys = sorted(k for k, v in weight_map.items() if v == shard)
            raise CheckpointError(f"{index_path} names the shard {shard}, which is missing from "
                                  f"{directory} ({len(keys)} tensor(s), e.g. {keys[0]})")
        tensors = read_file(directory / shard)
        misplaced = sorted(k for k in tensors if weight_map.get(k) != shard)
        absent = sorted(k for k, v in weight_map.items() if v == shard and k not in tensors)
        if misplaced or absent:
            raise CheckpointError(
                f"shard {directory / shard} does not match {index_path.name}: "
                + (f"holds keys the index places elsewhere or not at all: {', '.join(misplaced)}; "
                   if misplaced else "")
                + (f"lacks keys the index places in it: {', '.join(absent)}" if absent else ""))
        state.update(tensors)
    return state


CHECKSUM_KEY = "bert_np_sha256"


def tensors_checksum(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{t.dtype.str}|{t.shape}|".encode())
        h.update(memoryview(t).cast("B"))
    return h.hexdigest()


# safetensors dtype -> NumPy dtype (little-endian); BF16 is read as uint16 and widened
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: bf16 is the top 16 bits of a float32, so the
    widening is exact: uint16 -> uint32, shifted 16 bits left, viewed as float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _parse_safetensors(raw: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, metadata) of a safetensors file's bytes; a ValueError for any inconsistency."""
    if len(raw) < 8:
        raise ValueError(f"file of {len(raw)} bytes has no 8-byte header length")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise ValueError(f"header length {n} exceeds the file ({len(raw)} bytes)")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(raw)[8 + n:]
    entries = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, stop) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            np_dtype = np.dtype(_ST_DTYPES[dtype])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {name!r}: malformed or unsupported entry {info!r}") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (*shape, begin, stop)):
            raise ValueError(f"tensor {name!r}: malformed shape or data_offsets {info!r}")
        entries.append((begin, stop, name, dtype, shape, np_dtype))
    tensors, end = {}, 0
    for begin, stop, name, dtype, shape, np_dtype in sorted(entries):   # contiguous, in order
        count = int(np.prod(shape, dtype=np.int64))
        if begin != end or stop - begin != count * np_dtype.itemsize or stop > len(data):
            raise ValueError(f"tensor {name!r}: data_offsets {[begin, stop]} do not fit its "
                             f"{dtype} shape {list(shape)} in {len(data)} data bytes")
        end = stop
        array = np.frombuffer(data[begin:stop], dtype=np_dtype).reshape(shape)
        tensors[name] = bf16_to_float32(array) if dtype == "BF16" else array.copy()
    if end != len(data):
        raise ValueError(f"the tensors take {end} of the {len(data)} data bytes")
    return tensors, metadata


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file (bf16 and fp16 widened to float32, see the module
    docstring). A damaged header (truncation, garbage) is reported as such; files written by
    bert_np carry a checksum of the tensor data in their metadata, so a damaged data section
    (which the format itself cannot notice) is reported too."""
    path = Path(path)
    try:
        tensors, metadata = _parse_safetensors(path.read_bytes())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupted and cannot be read: {e}") from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensors_checksum(tensors) != expected:
        raise CheckpointError(f"{path} is corrupted: its tensor data does not match the checksum "
                              "stored when it was written")
    return tensors


# ---- legacy pytorch_model.bin, read with a restricted unpickler -------------------------------

_TORCH_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                 "LongStorage": np.int64, "IntStorage": np.int32, "BFloat16Storage": "bf16"}


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
        if dtype == "bf16":                                   # widened exactly to float32
            return (np.float32, bf16_to_float32(np.frombuffer(raw, dtype="<u2")))
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
    if "cls.predictions.decoder.weight" in expected:
        # untied decoder (tie_word_embeddings false): its own weight and bias; transformers 4
        # kept one bias for both names and may have stored it under cls.predictions.bias only
        if "cls.predictions.decoder.bias" not in out and "cls.predictions.bias" in out:
            out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]
        return out
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



# ---- sharded writing -------------------------------------------------------------------------

_SIZE_UNITS = {"B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
               "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}
_SHARD_PATTERN = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def parse_size(size) -> int:
    """A shard size as transformers writes it: an int of bytes, or "50KB", "5MB", "2GB" (powers
    of 1000) or "5GiB" (powers of 1024)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)\s*", str(size).upper())
        if not match:
            raise ValueError(f"max_shard_size must be a number of bytes or a size like '50KB', "
                             f"'5MB', '2GB', '5GiB'; got {size!r}")
        value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def split_into_shards(tensors: dict[str, np.ndarray], max_bytes: int) -> list[dict]:
    """Consecutive groups of tensors (in key order) of at most max_bytes each; a tensor larger
    than max_bytes gets a shard of its own, as transformers does."""
    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        if current and size + t.nbytes > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += t.nbytes
    if current:
        shards.append(current)
    return shards


def write_sharded_checkpoint(directory: str | os.PathLike, config_dict: dict, params: dict,
                             max_shard_size) -> None:
    """config.json + model-0000i-of-0000n.safetensors shards + model.safetensors.index.json, the
    layout transformers' save_pretrained(max_shard_size=...) writes and from_pretrained reads.
    Each shard carries the checksum of its own tensors.

    Every file is first written completely to a temporary name (a failure there leaves the
    directory untouched); then the shards, the index and the config are renamed into place, and
    the files of a previous checkpoint that would shadow or confuse the new one (model.safetensors,
    shards that the new index does not name) are removed. A failure during the renames can leave
    a mixture, which the per-shard checksums and the key checks refuse on loading."""
    from safetensors.numpy import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    groups = split_into_shards(tensors, parse_size(max_shard_size))
    names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": {k: name for name, group in zip(names, groups) for k in group}}
    files = {}                                              # final path -> temporary file
    try:
        for name, group in zip(names, groups):
            metadata = {"format": "pt", CHECKSUM_KEY: tensors_checksum(group)}
            files[directory / name] = write_temp(
                directory / name, lambda tmp, g=group, m=metadata: save_file(g, tmp, metadata=m))
        for path, text in ((directory / SAFETENSORS_INDEX_NAME, json.dumps(index, indent=2)),
                           (directory / CONFIG_NAME, json.dumps(config_dict, indent=2,
                                                                sort_keys=True))):
            files[path] = write_temp(path, lambda tmp, t=text: Path(tmp).write_text(
                t + "\n", encoding="utf-8"))
        for path, tmp in files.items():
            os.replace(tmp, path)
    finally:
        for tmp in files.values():
            remove_quietly(tmp)
    remove_quietly(directory / SAFETENSORS_NAME)
    for old in directory.iterdir():
        if _SHARD_PATTERN.fullmatch(old.name) and old.name not in names:
            remove_quietly(old)


def remove_shards(directory: str | os.PathLike) -> None:
    """After a single-file save: remove a previous sharded checkpoint's index and shards."""
    directory = Path(directory)
    remove_quietly(directory / SAFETENSORS_INDEX_NAME)
    for old in directory.iterdir():
        if _SHARD_PATTERN.fullmatch(old.name):
            remove_quietly(old)
