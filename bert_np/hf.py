"""Hugging Face checkpoint directories in and out: config.json + model.safetensors (or a legacy
pytorch_model.bin, read without executing any pickled code), or the sharded form of either:
`model.safetensors.index.json` / `pytorch_model.bin.index.json`, whose "weight_map" names the
shard file of every key.

safetensors files are parsed and written here (the format is small: an 8-byte little-endian header
length, a JSON header of name -> dtype, shape and data_offsets, then the raw little-endian bytes),
because safetensors.numpy cannot read bfloat16, and its save_file makes files of mode 0600 through
a temporary file of its own. bf16 and fp16 tensors are widened to float32 on reading
(bf16 is the top half of a float32: uint16 -> uint32 << 16 -> view float32, exact) and then
converted to the model's dtype. Widening adds no precision: a model loaded from a bf16 checkpoint
holds weights with 8 significant bits (2-3 decimal digits: rounding to nearest leaves a relative
error up to 2^-8 ~ 0.4% per weight against the float32 original), fp16 with 11 bits (2^-11 ~
0.05%, and a range limited to 6e-5..65504); its outputs match those of the same bf16/fp16 weights
computed in float32, not those of the original float32 model.

Parameters are kept under Hugging Face's own state_dict names, so loading is a key-for-key copy
after the normalisations that old or partial checkpoints need:
  - a `module.` prefix on every key (saved from torch's DistributedDataParallel wrapper) is dropped;
  - `LayerNorm.gamma` / `LayerNorm.beta` (TF-era names) become `LayerNorm.weight` / `.bias`;
  - a BertModel-only checkpoint (keys without "bert.", like all-MiniLM-L6-v2) gains the prefix when
    loaded into a task model, and a task checkpoint loses it when loaded into a bare BertModel;
  - tied copies are dropped: `cls.predictions.decoder.weight` is the word-embedding table and
    `cls.predictions.decoder.bias` is `cls.predictions.bias` (used when the latter is absent).
Two keys that would become one name are refused.

Loading is in two steps, so that a file cannot make bert_np allocate what it merely claims:
open_checkpoint reads only the declarations (the safetensors header; the pickle's storage and
tensor records, checked against the zip entries), every key and shape is checked against the
model the config describes, and only then Checkpoint.read reads the tensors, each straight into
an array of its own (peak memory about the model's size).

A save writes every file to a temporary name first and renames them into place, holding a lock on
the directory (a second process saving there meanwhile is refused); config.json records the
checksum of the weights saved with it, so a pair torn by a kill between the renames is refused on
loading, by name (see `open_pair`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .config import WEIGHTS_RECORD
from .files import (directory_lock, file_identities, remove_quietly, remove_stale_temps,
                    replace_files, save_in_progress, second_name, text_writer, write_temp)

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


class TornCheckpointError(CheckpointError):
    """Files of a checkpoint that were not saved together (a save killed between its renames)."""


# the largest safetensors header the format allows (its own reader's limit); a pytorch_model.bin's
# data.pkl (names and tensor records only, ~100 bytes a tensor) is held to the same bound
MAX_HEADER_BYTES = 100_000_000


class StoredTensor(NamedTuple):
    """A tensor as a checkpoint file declares it (its shape from the safetensors header or the
    pickle's tensor record), not read yet: `file.read` reads it."""
    file: object
    name: str
    shape: tuple


class Checkpoint:
    """The tensors of one checkpoint (one file or the shards of an index), keyed as stored, with
    their files held open from reading the headers to reading the data, so that every check
    against declared shapes comes before any allocation and all reads see one version of a file."""

    def __init__(self, files: list, checksum: str | None = None):
        self.files = files
        self.checksum = checksum   # the weights' checksum bert_np stored, None from other writers
        self.name = None           # the file that names the weights (set by open_checkpoint)
        self.tensors = {}
        for file in files:
            self.tensors.update(file.tensors)

    def read(self, wanted: dict[str, StoredTensor], dtype=None) -> dict[str, np.ndarray]:
        """key -> array for `wanted` (key -> StoredTensor). Floating tensors are converted to
        `dtype` (bf16 is widened to float32 when dtype is None), others kept as stored. Every
        array is a fresh, writable, C-contiguous one of its own, also where two keys name one
        stored tensor."""
        loaded, out, used = {}, {}, set()
        for file in self.files:
            names = {t.name for t in wanted.values() if t.file is file}
            if names:
                loaded.update({(id(file), name): a for name, a in file.read(names, dtype).items()})
        for key, t in wanted.items():
            array = loaded[(id(t.file), t.name)]
            out[key] = array.copy() if id(array) in used else array
            used.add(id(array))
        return out

    def close(self) -> None:
        for file in self.files:
            file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_checkpoint(directory: str | os.PathLike) -> Checkpoint:
    """The checkpoint of a directory, looked for in the order transformers uses: model.safetensors,
    its sharded index, pytorch_model.bin, its sharded index. Only headers are read."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    for name, opener in ((SAFETENSORS_NAME, _open_safetensors),
                         (SAFETENSORS_INDEX_NAME, lambda p: open_sharded(p, _SafetensorsFile)),
                         (PYTORCH_NAME, lambda p: Checkpoint([_TorchArchive(p)])),
                         (PYTORCH_INDEX_NAME, lambda p: open_sharded(p, _TorchArchive))):
        if (directory / name).exists():
            checkpoint = opener(directory / name)
            checkpoint.name = name
            return checkpoint
    shards = sorted(p.name for p in directory.iterdir() if _ANY_SHARD.fullmatch(p.name))
    if shards:
        index = SAFETENSORS_INDEX_NAME if shards[0].endswith(".safetensors") else PYTORCH_INDEX_NAME
        raise CheckpointError(f"{directory} holds the shards {', '.join(shards)} but not their "
                              f"index {index}, which names the shard of each tensor")
    raise CheckpointError(f"{directory} holds neither {SAFETENSORS_NAME} nor {PYTORCH_NAME} "
                          f"(nor a sharded {SAFETENSORS_INDEX_NAME} or {PYTORCH_INDEX_NAME})")


def _open_safetensors(path: Path) -> Checkpoint:
    file = _SafetensorsFile(path)
    return Checkpoint([file], file.checksum)


def read_state_dict(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory as NumPy arrays, keyed as stored (see
    open_checkpoint)."""
    with open_checkpoint(directory) as checkpoint:
        return checkpoint.read(checkpoint.tensors)


# how long a load waits for other processes' saves to let it read a whole pair (seconds)
_PATIENCE_WITH_SAVES = 60.0


def open_pair(directory: str | os.PathLike, read_config):
    """(read_config(text of config.json), the checkpoint beside it opened), checked to be one pair.

    bert_np records in config.json (under WEIGHTS_RECORD) the checksum of the weights it saved
    with it. A save killed between renaming its weights and its config into place leaves new
    weights beside the old config, which loads silently when the shapes agree; such a pair is
    refused here, naming the directory (the checksum compared is the one the weights' header
    declares; Checkpoint.read checks the data against it). A config without the record
    (transformers', or written by hand) and weights without a checksum are not checked.

    A save in another process replaces the files one after the other, so a load running meanwhile
    can read one file from before the save and the next from after it. A mismatch (of the pair,
    or of a shard and its index) is therefore reported only when it is the directory's state: no
    file changed since they were read (same inode, size and times) and no save holds the
    directory's lock. Otherwise the files are read again, once a save under way has renamed its
    files into place. Each file is opened once: config.json is read whole, and the weights files
    stay open from their headers to their data."""
    directory = Path(directory)
    deadline = time.monotonic() + _PATIENCE_WITH_SAVES
    while True:
        before = file_identities(directory, _is_weights_or_config)
        try:
            return _open_pair_once(directory, read_config)
        except TornCheckpointError:
            while file_identities(directory, _is_weights_or_config) == before:
                if not save_in_progress(directory) and (
                        file_identities(directory, _is_weights_or_config) == before):
                    raise               # the files as they stand, with no save under way
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)       # a save is under way: wait for its renames


def _open_pair_once(directory: Path, read_config):
    try:
        text = (directory / CONFIG_NAME).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"{directory} has no {CONFIG_NAME}") from None
    config = read_config(text)
    checkpoint = open_checkpoint(directory)
    recorded = _recorded_weights(text)
    if recorded is not None and checkpoint.checksum is not None and recorded != checkpoint.checksum:
        checkpoint.close()
        raise TornCheckpointError(
            f"{directory}: {CONFIG_NAME} and {checkpoint.name} are not from the same save "
            f"({CONFIG_NAME} records weights {recorded[:12]}..., {checkpoint.name} holds "
            f"{checkpoint.checksum[:12]}...); a save was interrupted between writing the two: "
            "save the model again")
    return config, checkpoint


def _recorded_weights(config_text: str) -> str | None:
    """The weights checksum a config.json records, if any (a broken config is reported later)."""
    try:
        config = json.loads(config_text)
    except ValueError:
        return None
    recorded = config.get(WEIGHTS_RECORD) if isinstance(config, dict) else None
    return recorded if isinstance(recorded, str) else None


# bert_np's sharded index records the checksum of every shard under this metadata key
SHARDS_RECORD = "bert_np_shard_sha256"


def read_index(index_path: Path) -> dict[str, str]:
    """The weight_map (key -> shard file name) of a sharded checkpoint's index, checked: a JSON
    object whose weight_map maps names to plain file names inside the same directory."""
    return _read_index(index_path)[0]


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_files(directory: Path) -> list[str]:
    """The files of a checkpoint directory a loaded model depends on: config.json and every
    weight file from_pretrained may read (single files, sharded indexes and the shards they
    name)."""
    directory = Path(directory)
    names = [CONFIG_NAME]
    for name in (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, PYTORCH_NAME, PYTORCH_INDEX_NAME):
        if (directory / name).is_file():
            names.append(name)
            if name.endswith(".index.json"):
                names += sorted(set(read_index(directory / name).values()))
    return [name for name in names if (directory / name).is_file()]


def _read_index(index_path: Path) -> tuple[dict[str, str], dict[str, str] | None]:
    """read_index, and the shard checksums bert_np's index records (None in others' indexes)."""
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
    shards = (index.get("metadata") or {}).get(SHARDS_RECORD)
    return weight_map, shards if isinstance(shards, dict) else None


def shards_checksum(shard_checksums: dict[str, str]) -> str:
    """The checksum of a sharded checkpoint's weights: a digest of its shards' checksums."""
    return hashlib.sha256(json.dumps(shard_checksums, sort_keys=True).encode()).hexdigest()


def open_sharded(index_path: Path, open_file) -> Checkpoint:
    """Every shard named by the index, its header read as a single file's is; the union must hold
    exactly the keys of the weight_map, each in the shard the map names. Where the index records
    the shards' checksums (bert_np's does), each shard must be the one recorded: a save killed
    midway leaves new shards beside old ones."""
    weight_map, recorded = _read_index(index_path)
    directory = Path(index_path).parent
    files = []
    try:
        for shard in sorted(set(weight_map.values())):
            if not (directory / shard).exists():
                keys = sorted(k for k, v in weight_map.items() if v == shard)
                raise CheckpointError(f"{index_path} names the shard {shard}, which is missing "
                                      f"from {directory} ({len(keys)} tensor(s), e.g. {keys[0]})")
            files.append(open_file(directory / shard))
            if recorded is not None and recorded.get(shard) != getattr(files[-1], "checksum", None):
                raise TornCheckpointError(
                    f"{directory}: {shard} and {index_path.name} are not from the same save (the "
                    "shard's checksum is not the one the index records); a save was interrupted "
                    "between writing the two: save the model again")
            tensors = files[-1].tensors
            misplaced = sorted(k for k in tensors if weight_map.get(k) != shard)
            absent = sorted(k for k, v in weight_map.items() if v == shard and k not in tensors)
            if misplaced or absent:
                raise CheckpointError(
                    f"shard {directory / shard} does not match {index_path.name}: "
                    + (f"holds keys the index places elsewhere or not at all: "
                       f"{', '.join(misplaced)}; " if misplaced else "")
                    + (f"lacks keys the index places in it: {', '.join(absent)}" if absent else ""))
    except BaseException:
        Checkpoint(files).close()
        raise
    return Checkpoint(files, None if recorded is None else shards_checksum(recorded))


CHECKSUM_KEY = "bert_np_sha256"


def _checksum_prefix(name: str, dtype: np.dtype, shape: tuple) -> bytes:
    return f"{name}|{dtype.str}|{tuple(shape)}|".encode()


def tensors_checksum(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(_checksum_prefix(name, t.dtype, t.shape))
        h.update(memoryview(t).cast("B"))
    return h.hexdigest()


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: bf16 is the top 16 bits of a float32, so the
    widening is exact: uint16 -> uint32, shifted 16 bits left, viewed as float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _as_loaded(raw: np.ndarray, bf16: bool, dtype) -> np.ndarray:
    """A stored tensor as read: bf16 bit patterns widened to float32, then floating tensors
    converted to `dtype` (if given); an array that needs no conversion is returned as it is."""
    if bf16:
        raw = bf16_to_float32(raw)
    if dtype is not None and np.issubdtype(raw.dtype, np.floating) and raw.dtype != dtype:
        return raw.astype(dtype)
    return raw


# ---- safetensors, parsed here ------------------------------------------------------------------

# safetensors dtype -> NumPy dtype (little-endian); BF16 is read as uint16 and widened
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
_CHUNK = 2 ** 20
# shard file names as transformers writes them (an index names them; without it they are useless)
_ANY_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors|pytorch_model-\d{5}-of-\d{5}\.bin")


class _SafetensorsFile:
    """A safetensors file whose header has been read and checked (every tensor's dtype, shape
    and data_offsets, contiguous and covering the data exactly); tensors are read on demand. A
    damaged header (truncation, garbage) is reported as such; files written by bert_np carry a
    checksum of the tensor data in their metadata, so a damaged data section (which the format
    itself cannot notice) is reported too, by `read`."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._f = open(self.path, "rb")
        except OSError as e:
            raise CheckpointError(f"{self.path} cannot be read: {e}") from None
        try:
            self._parse_header()
        except (OSError, ValueError) as e:
            self._f.close()
            raise CheckpointError(f"{self.path} is truncated or corrupted and cannot be read: "
                                  f"{e}") from None

    def _parse_header(self):
        size = os.fstat(self._f.fileno()).st_size
        if size < 8:
            raise ValueError(f"file of {size} bytes has no 8-byte header length")
        n = int.from_bytes(self._f.read(8), "little")
        if n > size - 8:
            raise ValueError(f"header length {n} exceeds the file ({size} bytes)")
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"header length {n} exceeds the format's limit of {MAX_HEADER_BYTES}")
        try:
            header = json.loads(self._f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"header is not JSON: {e}") from None
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        self.checksum = metadata.get(CHECKSUM_KEY) if isinstance(metadata, dict) else None
        self._data_start, data_size = 8 + n, size - 8 - n
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
        self._entries, end = {}, 0
        for begin, stop, name, dtype, shape, np_dtype in sorted(entries):   # contiguous, in order
            count = math.prod(shape)
            if begin != end or stop - begin != count * np_dtype.itemsize or stop > data_size:
                raise ValueError(f"tensor {name!r}: data_offsets {[begin, stop]} do not fit its "
                                 f"{dtype} shape {list(shape)} in {data_size} data bytes")
            end = stop
            self._entries[name] = (dtype, np_dtype, shape, begin, stop)
        if end != data_size:
            raise ValueError(f"the tensors take {end} of the {data_size} data bytes")
        self.tensors = {name: StoredTensor(self, name, shape)
                        for name, (_, _, shape, _, _) in self._entries.items()}

    def read(self, names: set[str], dtype=None) -> dict[str, np.ndarray]:
        """The tensors `names`, each read straight into an array of its own. With a checksum in
        the metadata every tensor's bytes pass through it (the unwanted ones in chunks)."""
        digest = hashlib.sha256() if self.checksum is not None else None
        out = {}
        try:
            for name in sorted(self._entries if digest else names):
                st_dtype, np_dtype, shape, begin, stop = self._entries[name]
                self._f.seek(self._data_start + begin)
                if digest:
                    digest.update(_checksum_prefix(name, np_dtype, shape))
                if name in names:
                    raw = np.empty(shape, np_dtype)
                    flat = raw.reshape(-1).view(np.uint8)
                    if self._f.readinto(flat) != stop - begin:
                        raise ValueError(f"tensor {name!r} is cut short")
                    if digest:
                        digest.update(flat)
                    out[name] = _as_loaded(raw, st_dtype == "BF16", dtype)
                else:
                    for at in range(begin, stop, _CHUNK):
                        chunk = self._f.read(min(_CHUNK, stop - at))
                        if not chunk:
                            raise ValueError(f"tensor {name!r} is cut short")
                        digest.update(chunk)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{self.path} is truncated or corrupted and cannot be read: "
                                  f"{e}") from None
        if digest and digest.hexdigest() != self.checksum:
            raise CheckpointError(f"{self.path} is corrupted: its tensor data does not match the "
                                  "checksum stored when it was written")
        return out

    def close(self) -> None:
        self._f.close()


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file (bf16 widened to float32, see the module docstring),
    checked as _SafetensorsFile says."""
    with Checkpoint([_SafetensorsFile(path)]) as checkpoint:
        return checkpoint.read(checkpoint.tensors)


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> None:
    """Write tensors (float64/32/16, integer, bool; any byte order) as a safetensors file that
    transformers and the safetensors library read: the header (padded with spaces to a multiple
    of 8 bytes, as safetensors pads it) lists the tensors in name order, their bytes follow
    little-endian and back to back. The file is opened with the usual mode (0666 minus the umask)
    and written tensor by tensor, with no copy of the whole checkpoint in memory."""
    names = {np.dtype(v): k for k, v in _ST_DTYPES.items() if k != "BF16"}
    arrays, header, offset = [], {}, 0
    for name in sorted(tensors):
        t = np.asarray(tensors[name])
        if t.dtype.newbyteorder("<") not in names:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} cannot be saved as safetensors")
        t = np.ascontiguousarray(t, dtype=t.dtype.newbyteorder("<"))
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + t.nbytes]}
        arrays.append(t)
        offset += t.nbytes
    if metadata:
        header = {"__metadata__": dict(metadata), **header}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for t in arrays:
            f.write(memoryview(t.reshape(-1)).cast("B"))


# ---- legacy pytorch_model.bin, read with a restricted unpickler -------------------------------

_TORCH_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                 "LongStorage": np.int64, "IntStorage": np.int32, "BFloat16Storage": np.uint16}


class _StorageType:
    def __init__(self, name):
        self.name = name


class _Storage(NamedTuple):
    """A storage record of the pickle: its key, the zip entry holding its bytes, its dtype and
    number of elements (consistent with the entry's declared size)."""
    key: str
    entry: zipfile.ZipInfo
    dtype: np.dtype
    numel: int
    bf16: bool


class _View(NamedTuple):
    """A tensor record of the pickle: a view (offset, size, stride) of a storage, not read yet."""
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    @property
    def numel(self) -> int:
        return math.prod(self.size)

    @property
    def reach(self) -> int:
        """How many elements of its storage, from the start, the view needs."""
        if self.numel == 0:
            return 0
        return self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1


def _rebuild_tensor(storage, offset, size, stride, *_):
    """The tensor record (offset, size, stride) of a storage, bounds-checked: a crafted file must
    not make as_strided read memory outside the storage."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("malformed tensor: its storage is not a storage")
    size, stride = tuple(size), tuple(stride)
    ints = (offset, *size, *stride)
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in ints):
        raise pickle.UnpicklingError(f"malformed tensor: offset {offset}, size {size}, stride {stride}")
    view = _View(storage, offset, size, stride)
    if view.reach > storage.numel or offset > storage.numel:
        raise pickle.UnpicklingError(f"malformed tensor: size {size} and stride {stride} from offset "
                                     f"{offset} reach beyond its storage of {storage.numel} elements")
    return view


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the handful of names a state_dict pickle needs; anything else is refused,
    so a malicious file cannot run code through `find_class`. Storages are records checked
    against their zip entries; nothing is read from them here."""

    def __init__(self, file, zf, prefix):
        super().__init__(file)
        self._zf, self._prefix, self._storages = zf, prefix, {}

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
        if not (isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError(f"malformed persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        dtype = np.dtype(_TORCH_DTYPES[storage_type.name])
        bf16 = storage_type.name == "BFloat16Storage"
        storage = _Storage(key, _storage_entry(self._zf, f"{self._prefix}/data/{key}"), dtype,
                           numel, bf16)
        if self._storages.setdefault(key, storage) != storage:
            raise pickle.UnpicklingError(f"storage {key} is declared twice, differently")
        declared = numel * dtype.itemsize
        if storage.entry.file_size != declared:
            raise pickle.UnpicklingError(
                f"storage {key} declares {numel} {'bfloat16' if bf16 else dtype.name} elements "
                f"({declared} bytes) but its archive entry {storage.entry.filename} holds "
                f"{storage.entry.file_size} bytes")
        return storage


def _storage_entry(zf: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The zip entry `name`, stored or deflated (torch.save stores; torch reads those two)."""
    try:
        entry = zf.getinfo(name)
    except KeyError:
        raise pickle.UnpicklingError(f"the archive has no entry {name}") from None
    if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise pickle.UnpicklingError(f"archive entry {name} uses compression method "
                                     f"{entry.compress_type}; torch archives are stored or deflated")
    return entry


class _TorchArchive:
    """A torch.save zip archive of a state_dict, its pickle read (without torch and without
    executing code) into tensor records. Before anything is read from a storage: a view may not
    have more elements than its storage (a stride-0 view repeating one number is refused), and a
    compressed storage may not be larger than the tensors it backs (torch.save stores its
    entries uncompressed; a view of part of a stored storage, as torch.save writes a slice, is
    fine: only what it reaches is read). So the archive expands to no more than its tensors,
    whose shapes the model then checks against its config."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._zf = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{self.path} is not a readable torch zip archive: {e}") from None
        try:
            self._views = self._unpickle()
        except CheckpointError:
            self._zf.close()
            raise
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError,
                AttributeError, IndexError, zipfile.BadZipFile) as e:
            self._zf.close()
            raise CheckpointError(f"{self.path}: {e}") from None
        self.tensors = {name: StoredTensor(self, name, v.size) for name, v in self._views.items()}

    def _unpickle(self) -> dict[str, _View]:
        pkl_names = [n for n in self._zf.namelist() if n.endswith("/data.pkl")]
        if len(pkl_names) != 1:
            raise CheckpointError(f"{self.path} has no single data.pkl; not a torch.save archive")
        entry = _storage_entry(self._zf, pkl_names[0])
        if entry.file_size > MAX_HEADER_BYTES:
            raise ValueError(f"{entry.filename} holds {entry.file_size} bytes, more than a "
                             f"state_dict pickle needs (at most {MAX_HEADER_BYTES})")
        with self._zf.open(entry) as f:
            state = _RestrictedUnpickler(f, self._zf, entry.filename[:-len("/data.pkl")]).load()
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _View)
                                                  for k, v in state.items()):
            raise CheckpointError(f"{self.path} does not hold a state_dict (a dict of tensors)")
        users = {}
        for name, view in state.items():
            if view.numel > view.storage.numel:
                raise ValueError(f"tensor {name!r}: a view of {view.numel} elements over a "
                                 f"storage of {view.storage.numel}: a checkpoint tensor must be "
                                 "backed by its storage")
            users.setdefault(view.storage.key, []).append(name)
        for key, names in users.items():       # a stored entry's bytes are in the file itself
            storage = state[names[0]].storage
            reach = max(state[n].reach for n in names)
            if reach < storage.numel and storage.entry.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"storage {key} inflates to {storage.numel} elements but its "
                                 f"tensors ({', '.join(names)}) use {reach}: a compressed archive "
                                 "may expand to no more than its tensors")
        return dict(state)

    def read(self, names: set[str], dtype=None) -> dict[str, np.ndarray]:
        """The tensors `names`: of each one's storage only the elements it reaches are inflated,
        a chunk at a time into one array, which is the tensor itself when the view is the whole
        storage in order (as torch.save writes a parameter)."""
        out = {}
        for name in sorted(names):
            view = self._views[name]
            storage = view.storage
            data = self._read_storage(storage, view.reach)
            strided = np.lib.stride_tricks.as_strided(
                data[view.offset:], shape=view.size,
                strides=tuple(s * storage.dtype.itemsize for s in view.stride))
            whole = view.offset == 0 and view.numel == view.reach and strided.flags.c_contiguous
            raw = data.reshape(view.size) if whole else strided.copy()
            out[name] = _as_loaded(raw, storage.bf16, dtype)
        return out

    def _read_storage(self, storage: _Storage, count: int) -> np.ndarray:
        """The first `count` elements of a storage, inflated from its zip entry."""
        buffer = np.empty(count * storage.dtype.itemsize, np.uint8)
        try:
            with self._zf.open(storage.entry) as f:
                at = 0
                while at < buffer.size:
                    chunk = f.read(min(_CHUNK, buffer.size - at))
                    if not chunk:
                        raise EOFError(f"it ends after {at} bytes")
                    buffer[at:at + len(chunk)] = np.frombuffer(chunk, np.uint8)
                    at += len(chunk)
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"{self.path}: storage {storage.key} cannot be read: {e}") from None
        return buffer.view(storage.dtype)

    def close(self) -> None:
        self._zf.close()


def read_pytorch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A torch.save zip archive of a state_dict, without torch and without executing code."""
    with Checkpoint([_TorchArchive(path)]) as checkpoint:
        return checkpoint.read(checkpoint.tensors)


# ---- key normalisation and checking ------------------------------------------------------------

def normalize_state_dict(state: dict, expected: dict[str, tuple], base_prefix: str,
                         source: str = "") -> dict:
    """Rename a checkpoint's keys into the model's naming (see the module docstring). Two keys
    that become one name are refused, naming both: one would silently replace the other."""
    if state and all(key.startswith("module.") for key in state):   # saved from a DDP wrapper
        state = {key[len("module."):]: value for key, value in state.items()}
    out, origin = {}, {}
    for stored, value in state.items():
        key = stored.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.endswith(_BUFFERS):
            continue
        if base_prefix and key.startswith(("embeddings.", "encoder.", "pooler.")):
            key = base_prefix + key
        elif not base_prefix and key.startswith("bert."):
            key = key[len("bert."):]
        if key in origin:
            first, second = sorted((origin[key], stored))
            raise CheckpointError(f"checkpoint {source}: the keys {first} and {second} both name "
                                  f"{key}; a checkpoint must hold each tensor once")
        out[key], origin[key] = value, stored
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


_LAYER_KEY = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.attention\.self\.query\.weight$")


def check_layer_count(num_hidden_layers: int, state: dict, config_path, source: str) -> None:
    """The config's num_hidden_layers against the layers the checkpoint's keys hold, before the
    model's parameter names (16 a layer) are made."""
    layers = {int(m.group(1)) for m in map(_LAYER_KEY.search, state) if m}
    held = max(layers) + 1 if layers else 0
    if held != num_hidden_layers:
        span = f" (encoder.layer.0 to encoder.layer.{held - 1})" if held else ""
        raise CheckpointError(f"{config_path}: num_hidden_layers={num_hidden_layers} but {source} "
                              f"holds {held} layers{span}")


# config field -> (the key, without prefix, whose shape holds it; the axis)
_SIZE_FIELDS = {"vocab_size": ("embeddings.word_embeddings.weight", 0),
                "hidden_size": ("embeddings.word_embeddings.weight", 1),
                "max_position_embeddings": ("embeddings.position_embeddings.weight", 0),
                "type_vocab_size": ("embeddings.token_type_embeddings.weight", 0),
                "intermediate_size": ("encoder.layer.0.intermediate.dense.weight", 0)}


def _config_disagreements(config, state: dict, base_prefix: str) -> list[str]:
    """`field=value, the checkpoint n (key)` for each size field of the config that the
    checkpoint's shapes contradict."""
    found = []
    for field, (key, axis) in _SIZE_FIELDS.items():
        shape = tuple(state[base_prefix + key].shape) if base_prefix + key in state else ()
        if len(shape) == 2 and shape[axis] != getattr(config, field):
            found.append(f"{field}={getattr(config, field)}, the checkpoint {shape[axis]} ({key})")
    return found


def check_state_dict(state: dict, expected: dict[str, tuple], strict: bool, source: str,
                     config=None, base_prefix: str = ""):
    """Returns (missing_heads, ignored): head keys to initialise, extra head keys to drop. Only
    the shapes of `state` are looked at (its values may be arrays or StoredTensors).

    Raises CheckpointError listing every missing, unexpected and wrongly shaped key when the
    checkpoint does not fit (in strict mode, any difference at all); when `config` is given and
    its sizes disagree with the checkpoint's, the first line names those fields."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
                   for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != tuple(expected[k])]
    bad_missing = missing if strict else [k for k in missing if not k.startswith(HEAD_PREFIXES)]
    bad_unexpected = unexpected if strict else [k for k in unexpected if not k.startswith(HEAD_PREFIXES)]
    if bad_missing or bad_unexpected or wrong_shape:
        fields = _config_disagreements(config, state, base_prefix) if config is not None else []
        lines = [f"checkpoint {source} does not match the model"
                 + (f": config.json {'; '.join(fields)}" if fields else ":")]
        for title, keys in (("missing keys", bad_missing), ("unexpected keys", bad_unexpected),
                            ("wrongly shaped keys", wrong_shape)):
            if keys:
                lines.append(f"  {title} ({len(keys)}):")
                lines.extend(f"    {k}" for k in keys)
        if not strict and (missing or unexpected):
            lines.append("  (heads may be missing or extra; the encoder must match exactly)")
        raise CheckpointError("\n".join(lines))
    return missing, unexpected


def _all_finite(array: np.ndarray) -> bool:
    flat = array.reshape(-1)               # in chunks: no mask the size of a whole embedding table
    return all(np.isfinite(flat[i:i + _CHUNK]).all() for i in range(0, flat.size, _CHUNK))


def check_finite(arrays: dict[str, np.ndarray], source: str) -> None:
    """Refuse NaN or infinite values in the floating tensors of a loaded checkpoint."""
    non_finite = [k for k in sorted(arrays) if isinstance(arrays[k], np.ndarray)
                  and np.issubdtype(arrays[k].dtype, np.floating) and not _all_finite(arrays[k])]
    if non_finite:
        raise CheckpointError(f"checkpoint {source} holds NaN or infinite values in "
                              f"{len(non_finite)} tensor(s): {', '.join(non_finite)}")


# ---- writing ---------------------------------------------------------------------------------

def save_checkpoint(directory: str | os.PathLike, config_dict: dict, params: dict,
                    max_shard_size=None) -> None:
    """What save_pretrained writes: config.json + model.safetensors (write_checkpoint), or
    config.json + shards + index with max_shard_size (write_sharded_checkpoint), while holding
    the directory's lock: a second process saving into the same directory meanwhile is refused
    (files.SaveInProgressError). Temporary files that killed saves left are removed first."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with directory_lock(directory):
        remove_stale_temps(directory, _is_checkpoint_file)
        if max_shard_size is None:
            write_checkpoint(directory, config_dict, params)
            remove_shards(directory)
        else:
            write_sharded_checkpoint(directory, config_dict, params, max_shard_size)


def _is_checkpoint_file(name: str) -> bool:
    return (name in (CONFIG_NAME, SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME)
            or _SHARD_PATTERN.fullmatch(name) is not None)


def _is_weights_or_config(name: str) -> bool:
    return _is_checkpoint_file(name) or name.startswith("pytorch_model")


def write_checkpoint(directory: str | os.PathLike, config_dict: dict, params: dict) -> None:
    """config.json + model.safetensors, replaced as a pair.

    Both files are first written completely to temporary files beside their targets (a failure
    there leaves the directory untouched). Then the weights are renamed into place, then the
    config; if the second rename fails, the previous weights (kept as a hard link or copy) are
    put back. So an exception at any point leaves either the old pair or the new pair. A kill or
    a power cut between the two renames cannot be undone: it leaves the new weights beside the
    old config. The config records the checksum of its weights (WEIGHTS_RECORD), so open_pair
    refuses such a pair by name."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path, config_path = directory / SAFETENSORS_NAME, directory / CONFIG_NAME
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    metadata = {"format": "pt", CHECKSUM_KEY: tensors_checksum(tensors)}
    config_dict = dict(config_dict, **{WEIGHTS_RECORD: metadata[CHECKSUM_KEY]})
    text = json.dumps(config_dict, indent=2, sort_keys=True) + "\n"
    tmp_weights = write_temp(weights_path,
                             lambda tmp: write_safetensors(tmp, tensors, metadata))
    backup = None
    try:
        tmp_config = write_temp(config_path, text_writer(text))
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
    a mixture: the index records every shard's checksum and the config a digest of them, so
    open_pair refuses a new shard beside an old index or a new index beside an old config."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    groups = split_into_shards(tensors, parse_size(max_shard_size))
    names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    checksums = {name: tensors_checksum(group) for name, group in zip(names, groups)}
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values()),
                          SHARDS_RECORD: checksums},
             "weight_map": {k: name for name, group in zip(names, groups) for k in group}}
    config_dict = dict(config_dict, **{WEIGHTS_RECORD: shards_checksum(checksums)})
    writes = {}
    for name, group in zip(names, groups):
        metadata = {"format": "pt", CHECKSUM_KEY: checksums[name]}
        writes[directory / name] = lambda tmp, g=group, m=metadata: write_safetensors(tmp, g, m)
    writes[directory / SAFETENSORS_INDEX_NAME] = text_writer(json.dumps(index, indent=2) + "\n")
    writes[directory / CONFIG_NAME] = text_writer(json.dumps(config_dict, indent=2,
                                                             sort_keys=True) + "\n")
    replace_files(writes)        # shards, then the index, then the config
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
