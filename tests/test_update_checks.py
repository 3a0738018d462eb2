"""Entry points switch off albumentations' PyPI version check (a network request at import), unless the user set
the variable themselves."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.paths import REPO
from tumorcls.update_checks import skip_update_checks


def test_the_check_is_switched_off_and_a_users_value_wins(monkeypatch) -> None:
    monkeypatch.delenv("NO_ALBUMENTATIONS_UPDATE", raising=False)
    skip_update_checks()
    assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "1"
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "0")
    skip_update_checks()
    assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "0"


def test_the_tumorcls_command_imports_albumentations_without_asking_pypi(monkeypatch) -> None:
    """Run in a fresh interpreter whose urllib refuses every request: the command must not try one."""
    monkeypatch.delenv("NO_ALBUMENTATIONS_UPDATE", raising=False)
    code = (
        "import urllib.request, sys\n"
        "def refuse(*a, **k): raise SystemExit('a network request was made')\n"
        "urllib.request.OpenerDirector.open = refuse\n"
        "urllib.request.urlopen = refuse\n"
        "from tumorcls.cli.main import main\n"
        "try:\n    main(['predict', '--help'])\nexcept SystemExit:\n    pass\n"
        "import albumentations\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "network request" not in proc.stderr
