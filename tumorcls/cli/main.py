"""The ``tumorcls`` console command; each subcommand lives in its own module (listed in SUBCOMMANDS)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from tumorcls.errors import TumorclsError
from tumorcls.update_checks import skip_update_checks

# subcommand -> module exposing ``add_arguments(parser)`` and ``run(args) -> int`` and a docstring
SUBCOMMANDS: dict[str, str] = {
    "audit": "tumorcls.data.audit",
    "aggregate": "tumorcls.cli.aggregate",
    "predict": "tumorcls.cli.predict",
    "evaluate": "tumorcls.cli.evaluate",
    "serve": "tumorcls.cli.serve",
}


def main(argv: list[str] | None = None) -> int:
    skip_update_checks()  # before a subcommand imports albumentations (why: tumorcls.update_checks)
    parser = argparse.ArgumentParser(prog="tumorcls", description="Brain MRI tumour classification tools")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        doc = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else None
        module.add_arguments(sub.add_parser(name, help=doc, description=module.__doc__))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(modules[args.command].run(args) or 0)
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
