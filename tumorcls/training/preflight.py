"""What ``train.py`` checks before torch and Lightning load (about six seconds of imports): every config value the
schema can judge without importing a ``_target_``, and whether the dataset folder is there or may be downloaded. A
misspelt value or a missing dataset is then refused in about a second instead of after the imports;
tumorcls.training.run checks everything again, and the open groups against their targets, before any work."""

from __future__ import annotations

from omegaconf import DictConfig

from tumorcls.data.download import needs_download
from tumorcls.training.config_checks import check_values


def preflight(cfg: DictConfig) -> None:
    """Raise a TumorclsError (one line) for a bad value of a closed group or a dataset that cannot be found."""
    check_values(cfg)
    data = cfg.get("data")
    if data is not None:
        needs_download(data.root, data.get("download", "auto"))
