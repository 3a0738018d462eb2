"""Command-line front-ends: the ``tumorcls`` console command and its subcommands (argparse only)."""

from tumorcls.cli.main import SUBCOMMANDS, main

__all__ = ["SUBCOMMANDS", "main"]
