"""The command line checked against the schema before Hydra composes, so that ``python train.py data.sizee=64``
stops in one line with the key it meant (``error: config: unknown key 'data.sizee'; did you mean 'data.size'?``,
exit 2) instead of Hydra's multi-line "Could not override" report (exit 1); a misspelt group option
(``data=strong_augmnt``) likewise. The arguments are read by Hydra's own argument parser and override parser,
so a key is what Hydra would take it to be; Hydra's own keys (``hydra.*``, ``hydra/...``) are left to it, and so
is anything it cannot parse (it says why itself).

Closed groups (data, model, paths, the top level, export) are checked against their schema. In the open ones
(trainer, callbacks, logger) a key the shipped configs give that node passes at once; any other key is looked up
in the signature of the node's ``_target_`` (given on the command line, else the shipped one), which imports that
library only then: ``--help`` and the common overrides load neither torch nor Lightning. Values are checked after
composition (tumorcls.training.config_checks), where ``+data.sizee=64`` and a misspelt key in a YAML file are
caught too."""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tumorcls.config.check import closed_keys, fields_of
from tumorcls.config.export import ExportConfig
from tumorcls.config.rules import ConfigError, NamedTargets, unknown_key
from tumorcls.config.targets import HYDRA_KEYS, locate, parameters
from tumorcls.config.train import TrainConfig

SCHEMAS = {"train": TrainConfig, "export": ExportConfig}


@dataclass
class Shipped:
    """What conf/ holds: each group's options, and per node path (``trainer``, ``callbacks.ema``) the keys and the
    ``_target_`` some shipped file gives it."""

    options: dict[str, list[str]] = field(default_factory=dict)
    keys: dict[str, set[str]] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)

    def record(self, node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        self.keys.setdefault(path, set()).update(str(k) for k in node)
        if isinstance(node.get("_target_"), str):
            self.targets.setdefault(path, node["_target_"])
        for key, child in node.items():
            self.record(child, f"{path}.{key}" if path else str(key))


@functools.cache
def shipped_configs(conf_dir: Path) -> Shipped:
    """The options and node keys of every group file under ``conf_dir`` (``# @package _global_`` files set keys of
    several groups)."""
    from omegaconf import OmegaConf

    shipped = Shipped()
    for group in sorted(p for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra"):
        files = sorted(group.glob("*.yaml"))
        shipped.options[group.name] = [f.stem for f in files]
        for path in files:
            content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
            content.pop("defaults", None)
            is_global = path.read_text(encoding="utf-8").lstrip().startswith("# @package _global_")
            shipped.record(content if is_global else {group.name: content}, "")
    return shipped


def _option_problem(group: str, value: Any, shipped: Shipped) -> str | None:
    """A group option the group does not have (``data=strong_augmnt``); a sweep's options each."""
    options = shipped.options[group]
    chosen = getattr(value, "list", [value])  # a choice sweep (data=a,b) or one option (null deselects)
    for option in chosen:
        if isinstance(option, str) and option not in options:
            near = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
            hint = f"; did you mean '{group}={near[0]}'?" if near else f" (the options: {', '.join(options)})"
            return f"config: unknown option '{group}={option}'{hint}"
    return None


def _target_key_problem(target: str | None, key: str, where: str, candidates: Sequence[str]) -> str | None:
    """``key`` is no parameter of ``target`` (imported now); None when it is, or when that cannot be told."""
    if not target:
        return None
    try:
        params = parameters(locate(target, where))
    except ConfigError:  # the composed check says why the target does not load
        return None
    if params is None or key in params:
        return None
    return str(unknown_key(f"{where}.{key}", [*candidates, *params]))


def _named_problem(rest: list[str], where: str, adds: bool, shipped: Shipped, given: dict[str, str]) -> str | None:
    """``callbacks.<name>[.<key>]``: a name the shipped configs have (or a new one, added with ``+``), and a key of
    its ``_target_``."""
    name = f"{where}.{rest[0]}"
    if rest[0] not in shipped.keys.get(where, set()) and not adds:
        return str(unknown_key(name, shipped.keys.get(where, set())))
    if len(rest) == 1 or rest[1] in HYDRA_KEYS or rest[1] in shipped.keys.get(name, set()):
        return None
    target = given.get(name) or shipped.targets.get(name)
    return _target_key_problem(target, rest[1], name, ()) or _needs_plus(f"{name}.{rest[1]}", adds)


def _needs_plus(key: str, adds: bool) -> str | None:
    """A parameter no shipped config sets must be added (``+trainer.limit_train_batches=5``): Hydra's rule,
    said in one line instead of its multi-line "Could not override" report."""
    if adds:
        return None
    return f"config: no config in conf/ sets '{key}'; add it with a plus: '+{key}=...'"


def _key_problem(schema: type, parts: list[str], prefix: str, adds: bool, context: tuple[Shipped, dict]) -> str | None:
    """The first part of ``parts`` that is no key of ``schema`` (at ``prefix``), as the error line."""
    shipped, given = context
    head, rest = parts[0], parts[1:]
    where = f"{prefix}.{head}" if prefix else head
    known = fields_of(schema)
    if head not in known:
        if not getattr(schema, "OPEN", False):
            return str(unknown_key(where, known, closed_keys(TrainConfig)))
        if head in shipped.keys.get(prefix, set()) or head in getattr(schema, "RESERVED", {}):
            return None
        target = given.get(prefix) or shipped.targets.get(prefix) or known["_target_"].default
        return _target_key_problem(target, head, prefix, list(known)) or _needs_plus(where, adds)
    if not rest:
        return None
    if "section" in known[head].metadata:
        return _key_problem(known[head].metadata["section"], rest, where, adds, context)
    if isinstance(known[head].metadata["rule"], NamedTargets):
        return _named_problem(rest, where, adds, shipped, given)
    return None  # inside a value (a list item, an augmentation's key): checked after composition


def bad_override(overrides: Sequence[str], config_name: str, conf_dir: Path) -> str | None:
    """The error line for the first override that names no key (or option) of the schema, or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:  # Hydra reports its own syntax errors
        return None
    groups = shipped_configs(conf_dir) if config_name == "train" else Shipped()
    given = {o.key_or_group.rpartition(".")[0]: o.value() for o in parsed if o.key_or_group.endswith("._target_")}
    for override in parsed:
        key = override.key_or_group
        if override.package is not None or key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if key in groups.options:
            problem = None if override.is_delete() else _option_problem(key, override.value(), groups)
        else:
            adds = override.is_add() or override.is_force_add()
            problem = _key_problem(SCHEMAS[config_name], key.split("."), "", adds, (groups, given))
        if problem:
            return problem
    return None


def refuse_bad_overrides(argv: Sequence[str], conf_dir: str | Path, config_name: str) -> None:
    """For a script's ``__main__``: exit 2 with ``error: config: ...`` on stderr when an override of ``argv`` names
    no key of the schema of ``config_name`` (``train`` or ``export``) in ``conf_dir``; return otherwise. A run
    with another config (``--config-name``, ``--config-path``, ``--config-dir``) is left to Hydra."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(list(argv))  # a malformed flag: Hydra's usage line, exit 2
    if args.config_path or args.config_dir or args.config_name not in (None, config_name):
        return
    problem = bad_override(args.overrides, config_name, Path(conf_dir))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
