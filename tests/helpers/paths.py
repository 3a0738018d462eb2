"""Where the repository, its configs and the scripts are, for tests in any folder."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
