"""Hydra's Optuna sweeper, resumable: ``hydra.sweeper._target_`` of conf/hparams_search/optuna.yaml. It holds the
sweep folder's lock for the whole sweep and, before Hydra's loop runs, continues the study its storage already
holds (tumorcls.training.sweep_resume.resume_study). Kept light: Hydra imports every plugin module at start-up,
and without the ``sweep`` extra (hydra-optuna-sweeper) this module defines nothing."""

from __future__ import annotations

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # no sweep extra: no plugin (Hydra would warn at every start about a failed import)
    OptunaSweeper = None

if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        """OptunaSweeper whose rerun with the same sweep folder and storage continues where the sweep stopped."""

        def sweep(self, arguments: list[str]) -> None:
            from tumorcls.training.sweep_resume import resume_study, sweep_folder_lock

            with sweep_folder_lock(self.sweeper.sweep_dir):
                resume_study(self.sweeper)
                return super().sweep(arguments)
