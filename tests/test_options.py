"""One source of defaults: the command line's defaults and help are the option dataclasses', and nothing changes a
caller's options."""

from __future__ import annotations

import dataclasses
from enum import Enum

import pytest
from typer.main import get_command

from cleandoc.cli import app
from cleandoc.options import CleanOptions, RunOptions, TrainOptions, default

REPEATABLE = {"noise"}  # a list option: its command-line default is "none given", its help lists the step names


def command_defaults(name: str) -> dict:
    command = get_command(app).commands[name]
    return {param.name: (param.default.value if isinstance(param.default, Enum) else param.default, param.help)
            for param in command.params}


@pytest.mark.parametrize(("command", "options"), [("clean", RunOptions), ("clean", CleanOptions),
                                                  ("evaluate", RunOptions), ("train", TrainOptions)])
def test_the_command_line_takes_its_defaults_and_help_from_the_options(command, options):
    given = command_defaults(command)
    shared = [item for item in dataclasses.fields(options) if item.name in given and item.name not in REPEATABLE]
    assert len(shared) >= 3
    for item in shared:
        value, help_text = given[item.name]
        assert value == default(options, item.name), item.name
        assert help_text == item.metadata["help"], item.name


def test_every_training_option_is_on_the_command_line():
    given = command_defaults("train")
    assert {item.name for item in dataclasses.fields(TrainOptions)} - {"model"} <= given.keys()  # model: --arch...


def test_options_are_frozen_so_no_one_changes_a_callers_copy():
    options = TrainOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.epochs = 3
    assert TrainOptions().noise == [] and TrainOptions().noise is not TrainOptions().noise
    assert TrainOptions().model == TrainOptions().model and TrainOptions().model is not TrainOptions().model
