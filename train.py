"""Train a tumour classifier: ``python train.py model=effnet_b0`` (Hydra; ``-m`` for sweeps)."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tumorcls.errors import TumorclsError
from tumorcls.hydra_plugin_path import expose_hydra_plugins
from tumorcls.openmp_policy import prefer_passive_openmp_wait
from tumorcls.update_checks import skip_update_checks

prefer_passive_openmp_wait()  # before torch loads OpenMP (why: tumorcls.openmp_policy)
skip_update_checks()  # before albumentations is imported (why: tumorcls.update_checks)
expose_hydra_plugins()  # before Hydra scans for plugins (why: tumorcls.hydra_plugin_path)

from tumorcls.training.run import run  # noqa: E402 - imports torch, after the wait policy is set

log = logging.getLogger("tumorcls")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the optimised metric of the checkpoint the run keeps (best.ckpt: see tumorcls.training.run), so
    Hydra sweepers (Optuna) can minimise/maximise the number of the model they would pick."""
    try:
        results = run(cfg, HydraConfig.get().runtime.output_dir)
    except TumorclsError as exc:
        log.error("%s", exc)
        sys.exit(2)
    metric = cfg.get("optimized_metric")
    if metric and metric not in results:
        log.warning("optimized_metric=%s is not among the run's figures %s", metric, sorted(results))
    return results.get(metric) if metric else None


if __name__ == "__main__":
    main()
