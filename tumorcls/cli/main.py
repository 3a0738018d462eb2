"""The ``tumorcls`` console command; each subcommand lives in its own module (listed in SUBCOMMANDS).

Only the chosen subcommand's module is imported (``tumorcls audit --help`` loads neither torch nor Gradio), so the
one-line help of every subcommand, which ``tumorcls --help`` lists, is written here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from tumorcls.errors import TumorclsError
from tumorcls.update_checks import skip_update_checks

# subcommand -> module exposing ``add_arguments(parser)`` and ``run(args) -> int`` and a docstring; importing the
# module and calling add_arguments must not load a model runtime or a web framework (run() does that)
SUBCOMMANDS: dict[str, str] = {
    "audit": "tumorcls.data.audit",
    "aggregate": "tumorcls.cli.aggregate",
    "predict": "tumorcls.cli.predict",
    "evaluate": "tumorcls.cli.evaluate",
    "serve": "tumorcls.cli.serve",
}
# shown by `tumorcls --help` without importing the modules: the opening words of each module's docstring (a test
# holds them to it)
SUMMARIES: dict[str, str] = {
    "audit": "Audit an image dataset: counts, sizes, bad files, exact and near duplicates, split leakage, label "
    "conflicts.",
    "aggregate": "Aggregate the metrics.json of several runs (seeds, folds, a sweep) into mean +- std.",
    "predict": "Classify image files, folders (recursively) and globs with a trained model (.ckpt, .onnx or .h5), or "
    "an ensemble of them",
    "evaluate": "Evaluate a model on a labelled folder-per-class dataset: metrics, report, confusion matrix, "
    "calibration.",
    "serve": "Serve a model, or an ensemble",
}


def chosen_subcommand(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), if it is one of ours."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in SUBCOMMANDS else None


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, Any]:
    """The parser, with the arguments of the chosen subcommand only; that subcommand's module."""
    parser = argparse.ArgumentParser(prog="tumorcls", description="Brain MRI tumour classification tools")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = chosen_subcommand(argv)
    module = importlib.import_module(SUBCOMMANDS[chosen]) if chosen else None
    for name in SUBCOMMANDS:
        if name == chosen:
            module.add_arguments(sub.add_parser(name, help=SUMMARIES[name], description=module.__doc__))
        else:
            sub.add_parser(name, help=SUMMARIES[name], add_help=False)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    skip_update_checks()  # before a subcommand imports albumentations (why: tumorcls.update_checks)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:  # a subcommand that does not stop on signals itself (predict does)
        print("error: interrupted", file=sys.stderr)
        return 130
    except TumorclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`tumorcls aggregate ... | head`): stop quietly, as other command-line tools do;
        # stdout goes to /dev/null so that the interpreter's final flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
