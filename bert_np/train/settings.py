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

from dataclasses import MISSING, field, fields


def setting(default=MISSING, *, help: str, default_factory=MISSING, flag: str | None = None,
            choices: tuple | None = None):
    """A dataclass field with its help text (and no default: a required option)."""
    metadata = {"help": help}
    if flag is not None:
        metadata["flag"] = flag
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, default_factory=default_factory, metadata=metadata)


def setting_like(settings_class, name: str, **changes):
    """A field declared as `name` is in another settings dataclass (default, help, flag, choices),
    with `changes` applied: runs that share an option share its default and help text."""
    declared = {f.name: f for f in fields(settings_class)}[name]
    kwargs = dict(default=declared.default, default_factory=declared.default_factory,
                  help=declared.metadata["help"], flag=declared.metadata.get("flag"),
                  choices=declared.metadata.get("choices"))
    kwargs.update(changes)
    return setting(**kwargs)


def check_positive(settings, names) -> None:
    """Raise ValueError naming the first of `names` whose value is below 1."""
    for name in names:
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(settings, name)}")
