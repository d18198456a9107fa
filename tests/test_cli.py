"""`bert-np --help`: every option of every verb says what it does and its default."""
import argparse
import re

import pytest

from bert_np import cli
from bert_np.train.distill import DistillSettings
from bert_np.train.finetune import FinetuneSettings
from bert_np.train.pretrain import PretrainSettings
from bert_np.train.quantize import QuantizeSettings

VERBS = ["demo", "pretrain", "train-tokenizer", "finetune", "distill", "evaluate", "predict",
         "quantize"]


def subparsers():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_verb_is_covered():
    assert sorted(subparsers()) == sorted(VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_help_describes_every_option_with_its_default(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([verb, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    options = [a for a in subparsers()[verb]._actions
               if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert options
    for action in options:
        assert action.help, f"{verb} {action.option_strings[0]} has no help"
        if action.required:
            tail = "(required)"
        elif action.nargs == 0:
            tail = "(default: off)"
        else:
            tail = f"(default: {action.default})"
        described = " ".join(action.help.split()) + " " + tail
        assert described in text, f"{verb} {action.option_strings[0]}: {described!r} not shown"


@pytest.mark.parametrize("settings_class,verb", [(PretrainSettings, "pretrain"),
                                                 (FinetuneSettings, "finetune"),
                                                 (DistillSettings, "distill"),
                                                 (QuantizeSettings, "quantize")])
def test_settings_defaults_are_the_cli_defaults(settings_class, verb):
    """Each default is written once, on the settings field; the option takes it from there."""
    import dataclasses
    parser = subparsers()[verb]
    by_dest = {a.dest: a for a in parser._actions}
    for field in dataclasses.fields(settings_class):
        action = by_dest[field.name]
        assert action.help == field.metadata["help"]
        if field.default is not dataclasses.MISSING:
            assert action.default == field.default
            assert re.fullmatch(r"--[a-z-]+", action.option_strings[0])
