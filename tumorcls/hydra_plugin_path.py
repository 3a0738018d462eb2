"""Where Hydra finds tumorcls's own Hydra plugins (the resumable Optuna sweeper of hparams_search=optuna).

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package, which it scans on ``sys.path``.
tumorcls ships its portion of that namespace in the folder ``tumorcls/hydra-plugins/`` (a name that is no Python
package, so importing tumorcls never loads it); ``train.py`` puts that folder on ``sys.path`` before Hydra starts."""

from __future__ import annotations

import sys
from pathlib import Path

PLUGINS_ROOT = Path(__file__).with_name("hydra-plugins")  # holds hydra_plugins/tumorcls_sweepers/


def expose_hydra_plugins() -> None:
    """Make Hydra's plugin scan see tumorcls's plugins (once; the entry points call it, never an import)."""
    root = str(PLUGINS_ROOT)
    if root not in sys.path:
        sys.path.append(root)
