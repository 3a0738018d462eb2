"""The README's commands are ones the tools take. Each ``python train.py`` command in a code block, a table or the
prose (its overrides; a sweep's first value) passes the command-line check, composes and passes every config check;
each ``python export.py`` command passes export's; each ``tumorcls`` command parses; and each refusal the README
shows (``$ python train.py ...`` and the line under it) is the line train.py gives."""

from __future__ import annotations

import re

import pytest

from tests.helpers.paths import CONF, REPO
from tests.helpers.train_runs import compose_export, compose_train
from tumorcls.cli.main import build_parser
from tumorcls.config.check import plain_values
from tumorcls.config.command_line import bad_override
from tumorcls.config.export import check_export_config
from tumorcls.config.rules import ConfigError
from tumorcls.training.config_checks import check_config

README = (REPO / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")  # shell line continuations
SHOWN_REFUSAL = re.compile(r"^ +\$ python train\.py (\S+)\n +(?:error: |\[ERROR\] )(.+)$", re.M)
# an inline command may wrap onto the next line; a code block's next line is another command or its end
ARGS = r"((?:(?: +|\n(?!python|tumorcls|```|\s*$))[^\s`#|]+)*)"
COMMAND = re.compile(r"(?<!\$ )python train\.py" + ARGS)
EXPORT_COMMAND = re.compile(r"python export\.py" + ARGS)
CLI_COMMAND = re.compile(r"^ *tumorcls( +(?:predict|evaluate|serve|audit|aggregate)" + ARGS[1:], re.M)
NOT_AN_OVERRIDE = ("-m", "...", "--help")


def overrides_of(command: str) -> list[str]:
    """The config overrides of a command line: no flags, placeholders or Hydra's own keys; a sweep's first value."""
    kept = []
    for token in command.split():
        key, _, value = token.partition("=")
        if token in NOT_AN_OVERRIDE or "<" in token or "$" in token or key.startswith(("hydra.", "hydra/")):
            continue
        kept.append(f"{key}={value.split(',')[0]}" if "[" not in value else token)
    return kept


def commands(pattern: re.Pattern = COMMAND) -> list[list[str]]:
    found = [overrides_of(match.replace('"', "")) for match in pattern.findall(README)]
    return [c for i, c in enumerate(found) if c not in found[:i]]


def cli_commands() -> list[list[str]]:
    """Each ``tumorcls`` command's words, its optional parts (``[--json audit.json]``) included."""
    return [match.replace("[", "").replace("]", "").split() for match in CLI_COMMAND.findall(README)]


def test_the_readme_shows_commands_and_refusals() -> None:
    assert len(commands()) >= 15 and len(SHOWN_REFUSAL.findall(README)) >= 2
    assert len(commands(EXPORT_COMMAND)) >= 4 and len(cli_commands()) >= 10
    assert ["experiment=shift", "data.protocol=official", "trainer.max_epochs=8", "seed=42"] in commands()


@pytest.mark.parametrize("overrides", commands(), ids=" ".join)
def test_a_readme_command_composes_and_passes_every_check(overrides: list[str]) -> None:
    assert bad_override(overrides, "train", CONF) is None
    check_config(compose_train(overrides))


@pytest.mark.parametrize(("override", "line"), SHOWN_REFUSAL.findall(README))
def test_a_refusal_the_readme_shows_is_the_line_train_py_gives(override: str, line: str) -> None:
    problem = bad_override([override], "train", CONF)
    if problem is None:  # a key of the schema with a bad value: the composed config's check refuses it
        with pytest.raises(ConfigError) as refused:
            check_config(compose_train([override]))
        problem = str(refused.value)
    assert problem == line


@pytest.mark.parametrize("overrides", commands(EXPORT_COMMAND), ids=" ".join)
def test_a_readme_export_command_passes_export_s_checks(overrides: list[str]) -> None:
    overrides = [o if not o.endswith("=...") else o.replace("...", "x.ckpt") for o in overrides]
    assert bad_override(overrides, "export", CONF) is None
    check_export_config(plain_values(compose_export(overrides)))


@pytest.mark.parametrize("argv", cli_commands(), ids=" ".join)
def test_a_readme_tumorcls_command_parses(argv: list[str]) -> None:
    parser, _ = build_parser(argv)
    parser.parse_args(argv)  # an unknown option or a missing argument: SystemExit
