"""Settings fields that carry their default and a help text: the one place both live.

The settings dataclasses of the training runs (PretrainSettings, FinetuneSettings) declare every
field with `setting(...)`; `bert_np.cli` builds each verb's command-line options from those fields,
so `bert-np <verb> --help` shows the same description and default the Python API uses.

Field metadata read by the CLI:
    help     what the option does
    flag     the option's name when it is not --field-name (e.g. --cased for lowercase=True)
    choices  the allowed values

Every numeric setting is checked in the dataclass's __post_init__ with `check_number` (type,
finite, range), so the Python API and the command line refuse the same values with the same
message, which names the field and its flag.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
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


def flag_of(settings, name: str) -> str:
    """The command-line flag of a settings field."""
    f = next(f for f in dataclasses.fields(settings) if f.name == name)
    return f.metadata.get("flag", "--" + name.replace("_", "-"))


def check_number(settings, name: str, *, integer: bool = False, minimum=None, above=None,
                 below=None, maximum=None, optional: bool = False, none_means: str = "") -> None:
    """Raise ValueError naming field and flag unless the value is a finite number (an integer if
    `integer`) with minimum <= value <= maximum, above < value < below (the bounds given);
    None passes only if `optional`, and `none_means` then says what None does."""
    value = getattr(settings, name)
    what = f"{name} ({flag_of(settings, name)})"
    unset = f"; unset ({flag_of(settings, name)} none) {none_means}" if none_means else ""
    if value is None:
        if optional:
            return
        raise ValueError(f"{what} must be set")
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{what} must be {'an integer' if integer else 'a number'}, "
                         f"got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value}{unset}")
    for bound, holds, sign in ((minimum, lambda b: value >= b, ">="), (above, lambda b: value > b, ">"),
                               (below, lambda b: value < b, "<"), (maximum, lambda b: value <= b, "<=")):
        if bound is not None and not holds(bound):
            raise ValueError(f"{what} must be {sign} {bound}, got {value}{unset}")


def setting_like(settings_class, name: str, **changes):
    """A field declared as `name` is in another settings dataclass (default, help, flag, choices),
    with `changes` applied: runs that share an option share its default and help text."""
    declared = {f.name: f for f in dataclasses.fields(settings_class)}[name]
    kwargs = dict(default=declared.default, default_factory=declared.default_factory,
                  help=declared.metadata["help"], flag=declared.metadata.get("flag"),
                  choices=declared.metadata.get("choices"))
    kwargs.update(changes)
    return setting(**kwargs)


def check_positive(settings, names) -> None:
    """Raise ValueError naming the first of `names` that is not an integer >= 1."""
    for name in names:
        check_number(settings, name, integer=True, minimum=1)


def check_dropout(p: float | None) -> None:
    """A dropout override is unset or a probability in [0, 1)."""
    if p is not None and not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
