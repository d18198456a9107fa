"""Training checkpoints that resume bit for bit, and the JSONL log of a run.

A training checkpoint is a directory
    config.json, model.safetensors   the model, loadable by transformers and by from_pretrained
    vocab.txt                        the tokenizer's vocabulary (when there is one)
    optimizer.safetensors            AdamW's moments m/<name>, v/<name>
    trainer_state.json               step, AdamW's step count and settings, the random generators'
                                     states and the data position: everything a resumed run needs
written into a temporary directory and renamed into place, so a crash mid-save never leaves a
half-written checkpoint behind; `latest` names the newest complete one. A save holds the lock of
the run directory (a second process saving there meanwhile is refused) and removes what saves
killed midway left there.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..files import atomic_write_text, directory_lock, remove_stale_temps
from ..hf import read_safetensors, write_safetensors
from ..optim import AdamW

LATEST = "latest"
STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"


def rng_state(rng: np.random.Generator) -> dict:
    """The generator's full state, JSON-serialisable."""
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    """Put the generator back into a state `rng_state` returned."""
    rng.bit_generator.state = state


def save_training_checkpoint(out_dir: str | os.PathLike, name: str, model, optimizer: AdamW,
                             state: dict, tokenizer=None, keep: int = 2) -> Path:
    """Write out_dir/name atomically, point out_dir/latest at it, keep the newest `keep`."""
    out_dir = Path(out_dir)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save(tmp)
        opt = optimizer.state_dict()
        moments = {f"{kind}/{k}": v for kind in ("m", "v") for k, v in opt.pop(kind).items()}
        write_safetensors(tmp / OPTIMIZER_NAME, moments)
        full_state = dict(state, optimizer=opt, model_rng=rng_state(model.rng),
                          saved_at=time.time())
        (tmp / STATE_NAME).write_text(json.dumps(full_state, indent=1), encoding="utf-8")

    out_dir.mkdir(parents=True, exist_ok=True)
    with directory_lock(out_dir):
        _remove_killed_saves(out_dir)
        final = replace_directory(out_dir / name, write)
        atomic_write_text(out_dir / LATEST, name)
        _prune(out_dir, keep)
    return final


def _remove_killed_saves(out_dir: Path) -> None:
    """What checkpoint saves killed midway left: their temporary directories (.step-N.tmp), and
    a previous step-N moved aside (.step-N.old), which is removed if step-N is in place and put
    back if the kill came before the new step-N was; temporary files of `latest`."""
    for path in out_dir.glob(".step-*"):
        final = out_dir / path.name[1:-4]
        if not path.is_dir() or path.suffix not in (".tmp", ".old"):
            continue
        if path.suffix == ".old" and not final.exists():
            os.replace(path, final)
        else:
            shutil.rmtree(path, ignore_errors=True)
    remove_stale_temps(out_dir, LATEST.__eq__)


def save_model_directory(directory: str | os.PathLike, model, tokenizer=None) -> Path:
    """The model and its tokenizer written as one unit: a reader (or a crash) sees the previous
    directory or the new one, never new weights beside an old vocabulary (finetune's best/)."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save(tmp)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with directory_lock(directory.parent):
        return replace_directory(directory, write)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions); names the directory."""


def replace_directory(final: Path, write) -> Path:
    """Call write(tmp) on a fresh temporary directory beside `final`, then rename it into place
    (the previous `final` is moved aside first and deleted last). On any failure the temporary
    directory is removed and `final` is left as it was; a write error (an OSError: a full disk,
    permissions) becomes a CheckpointWriteError naming `final`. The caller holds the lock of
    final.parent (files.directory_lock)."""
    tmp = final.parent / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"could not write {final}: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.parent / f".{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    return final


def prepare_output_dir(out: str | os.PathLike, resume: bool = False, overwrite: bool = False,
                       can_resume: bool = True, keep: tuple[str, ...] = ()) -> Path:
    """The run's output directory, made if missing. A non-empty one is refused (a new run would
    mix its log and checkpoints with the old run's) unless `resume` continues that run or
    `overwrite` clears it first (all but the names in `keep`: files a run validates before it
    reuses them, such as distillation's teacher-logit cache); a file, or a directory that cannot
    be written, is refused too."""
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite deletes it: "
                         "pass one of them")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    if not resume and out.is_dir() and any(out.iterdir()):
        if not overwrite:
            names = sorted(p.name for p in out.iterdir())
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            how = "--resume to continue its run, " if can_resume else ""
            raise ValueError(f"--out {out} is not empty ({shown}); pass {how}--overwrite to "
                             "clear it, or choose another directory")
        for path in out.iterdir():
            if path.name in keep:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ValueError(f"--out {out} cannot be written: {e.strerror or e}") from None
    return out


def _prune(out_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints (directories named step-N)."""
    steps = sorted((int(p.name.split("-")[1]), p) for p in out_dir.glob("step-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    for _, path in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(path)


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint `out_dir/latest` names, or None when there is no complete one."""
    pointer = Path(out_dir) / LATEST
    if not pointer.exists():
        return None
    path = Path(out_dir) / pointer.read_text(encoding="utf-8").strip()
    return path if (path / STATE_NAME).exists() else None


def latest_state(out_dir: str | os.PathLike) -> tuple[Path, dict]:
    """The latest complete checkpoint in `out_dir` and the state saved in it, for --resume; a
    FileNotFoundError naming --resume when there is none."""
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {out_dir}")
    return checkpoint, json.loads((checkpoint / STATE_NAME).read_text(encoding="utf-8"))


def load_training_checkpoint(directory: str | os.PathLike, model, optimizer: AdamW) -> dict:
    """Restore the parameters, AdamW and the model's dropout generator; return the saved state."""
    directory = Path(directory)
    state = json.loads((directory / STATE_NAME).read_text(encoding="utf-8"))
    loaded = type(model).from_pretrained(directory, dtype=model.dtype, strict=True)
    for k in model.params:
        model.params[k][...] = loaded.params[k]  # in place: the optimizer holds these arrays
    moments = read_safetensors(directory / OPTIMIZER_NAME)
    opt = dict(state["optimizer"])
    for kind in ("m", "v"):
        opt[kind] = {k: moments[f"{kind}/{k}"] for k in model.params}
    optimizer.load_state_dict(opt)
    set_rng_state(model.rng, state["model_rng"])
    return state


class JsonlLog:
    """Append-only log, one JSON object per line, flushed at every record. A run killed mid-write
    leaves a torn last line: reading drops it (and says so on stderr); any other line that is not
    JSON is an error naming file and line."""

    def __init__(self, path: str | os.PathLike, truncate_after_step: int | None = None,
                 keep_records: int | None = None):
        """A new log (an old file is removed), or on resume the old one without the records
        written after the checkpoint resumed from: those past its step (`truncate_after_step`),
        or all but the first `keep_records` (a run that evaluates at a step after saving that
        step's checkpoint: finetune's and distill's end of epoch)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        resumed = truncate_after_step is not None or keep_records is not None
        if resumed and self.path.exists():
            kept = self.records()[:keep_records]
            if truncate_after_step is not None:
                kept = [r for r in kept if r.get("step", 0) <= truncate_after_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif not resumed and self.path.exists():
            self.path.unlink()

    def write(self, record: dict) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # a full disk: say which file
            raise OSError(e.errno, f"could not write {self.path}: {e.strerror}") from e

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return read_jsonl_log(self.path)


def read_jsonl_log(path: Path) -> list[dict]:
    """The records of a JSONL log; a torn last line is dropped with a notice on stderr."""
    lines = [(n, line) for n, line in
             enumerate(path.read_text(encoding="utf-8").split("\n"), start=1) if line.strip()]
    records = []
    for i, (lineno, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                print(f"{path}:{lineno}: dropped a torn last line (a write was interrupted): "
                      f"{line[:60]!r}", file=sys.stderr)
                break
            raise ValueError(f"{path}:{lineno}: not a JSON record ({e.msg}, column {e.colno})"
                             ) from None
    return records
