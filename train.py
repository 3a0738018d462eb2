"""Train a tumour classifier: ``python train.py model=effnet_b0`` (Hydra; ``-m`` for sweeps).

Only Hydra and a few stdlib-light modules load at start: torch, Lightning and the training code are imported
inside ``main``, so ``python train.py --help`` / ``--cfg job`` answer without them (tests/training/test_imports.py)."""

from __future__ import annotations

import gc
import logging
import sys

import hydra
from omegaconf import DictConfig

from tumorcls.errors import TumorclsError
from tumorcls.hydra_plugin_path import expose_hydra_plugins
from tumorcls.openmp_policy import prefer_passive_openmp_wait
from tumorcls.update_checks import skip_update_checks

prefer_passive_openmp_wait()  # before torch loads OpenMP (why: tumorcls.openmp_policy)
skip_update_checks()  # before albumentations is imported (why: tumorcls.update_checks)
expose_hydra_plugins()  # before Hydra scans for plugins (why: tumorcls.hydra_plugin_path)

log = logging.getLogger("tumorcls")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the optimised metric of the checkpoint the run keeps (best.ckpt: see tumorcls.training.run), so
    Hydra sweepers (Optuna) can minimise/maximise the number of the model they would pick."""
    from hydra.core.hydra_config import HydraConfig

    from tumorcls.training.preflight import preflight

    try:
        preflight(cfg)  # a bad value or a missing dataset: one line before torch and Lightning load
        from tumorcls.training.run import run  # torch and Lightning: only when a job runs

        if gc.get_freeze_count() == 0:  # once (a sweep's first job): the imported modules' objects live as long as
            gc.freeze()  # the process, so no collection needs to walk them again; a later job's garbage is never frozen
        results = run(cfg, HydraConfig.get().runtime.output_dir)
    except TumorclsError as exc:
        log.error("%s", exc)
        sys.exit(2)
    metric = cfg.get("optimized_metric")
    if metric and metric not in results:
        log.warning("optimized_metric=%s is not among the run's figures %s", metric, sorted(results))
    return results.get(metric) if metric else None


def freeze_for_exit() -> None:
    """Collect the run's garbage once, then freeze what is left, so that the interpreter's exit does not walk the
    millions of objects torch, Lightning and SymPy made again and again (python -m tumorcls.bench.main_job on 2
    busy cores: the exit after a run took 1.2-2.4 s before, 0.3-0.8 s frozen). Every object is still released and
    finalised as at any exit; cycles made after this point (none: only the exit runs after it) are left to the OS."""
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    from pathlib import Path

    from tumorcls.config.command_line import refuse_bad_overrides

    # an override naming no key of the schema: one line and exit 2 here, not Hydra's multi-line report (exit 1)
    refuse_bad_overrides(sys.argv[1:], Path(__file__).resolve().parent / "conf", "train")
    try:
        main()
    finally:
        freeze_for_exit()
