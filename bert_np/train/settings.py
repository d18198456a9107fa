"""Settings fields that carry their default and a help text: the one place both live.

The settings dataclasses of the training runs (PretrainSettings, FinetuneSettings) declare every
field with `setting(...)`; `bert_np.cli` builds each verb's command-line options from those fields,
so `bert-np <verb> --help` shows the same description and default the Python API uses.

Field metadata read by the CLI:
    help     what the option does
    flag     the option's name when it is not --field-name (e.g. --cased for lowercase=True)
    choices  the allowed values
"""
from __future__ import annotations

from dataclasses import MISSING, field


def setting(default=MISSING, *, help: str, default_factory=MISSING, flag: str | None = None,
            choices: tuple | None = None):
    """A dataclass field with its help text (and no default: a required option)."""
    metadata = {"help": help}
    if flag is not None:
        metadata["flag"] = flag
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, default_factory=default_factory, metadata=metadata)


def check_positive(settings, names) -> None:
    """Raise ValueError naming the first of `names` whose value is below 1."""
    for name in names:
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(settings, name)}")


def check_dropout(p: float | None) -> None:
    """A dropout override is unset or a probability in [0, 1)."""
    if p is not None and not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
