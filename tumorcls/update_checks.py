"""No library phones home when a tumorcls command starts.

albumentations asks PyPI for its latest version at every import (a network request with a 2 s timeout, and a
warning on an offline machine) unless ``NO_ALBUMENTATIONS_UPDATE`` is set. The entry points (``train.py``,
``export.py``, ``tumorcls``, the benchmarks) call :func:`skip_update_checks` before anything imports it; a value
the user set wins.
"""

from __future__ import annotations

import os


def skip_update_checks() -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
