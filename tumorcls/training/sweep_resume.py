"""Resuming a killed Optuna sweep (``python train.py -m hparams_search=optuna``) where it stopped.

Hydra's Optuna sweeper (hydra-optuna-sweeper 1.3) already loads an existing study from its storage
(``load_if_exists``), but then runs ``n_trials`` more trials and numbers its jobs from 0 again, so a rerun would redo
the whole budget and write over the finished trials' run folders. Before its loop starts, :func:`resume_study`
(called by the sweeper plugin in ``tumorcls/hydra-plugins/``, see tumorcls.hydra_plugin_path) makes the rerun
continue instead:

* ``n_trials`` counts the study's trials in total: finished ones (complete, pruned, failed) count, so the rerun
  runs only what is left;
* a trial still RUNNING in the storage was killed with the sweep (the sweep folder's lock, held for the whole
  sweep, rules out a live one): it is marked failed (user attribute ``killed``, not counted) and its parameters are
  queued again, so the trial it was runs first;
* jobs are numbered by their trial number, so run folder ``<sweep dir>/<N>`` is trial N's, and the finished ones
  are never written again;
* the sampler draws fresh random numbers (``reseed_rng``): restarted from its configured seed it would propose the
  finished trials' parameters again. The trials after the resume therefore differ from those an uninterrupted
  sweep would have run; the finished ones, and what the sampler learns from them, are kept.

Optuna is imported inside the functions: it comes with the ``sweep`` extra only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from tumorcls.errors import TumorclsError

log = logging.getLogger(__name__)

SWEEP_LOCK = ".sweep.lock"  # in the sweep folder, held by the sweeping process
KILLED = "killed"  # user attribute of a trial found RUNNING when the sweep resumed


@contextmanager
def sweep_folder_lock(sweep_dir: str | Path) -> Iterator[None]:
    """Hold the sweep folder's lock for the whole sweep; one line if another live sweep holds it."""
    folder = Path(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)  # also where the SQLite storage is created
    lock = FileLock(folder / SWEEP_LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise TumorclsError(f"sweep folder '{folder}' is in use by another sweep; wait for it to end") from None
    try:
        yield
    finally:
        lock.release()


def _counted(trial: Any) -> bool:
    from optuna.trial import TrialState

    finished = trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return finished and not trial.user_attrs.get(KILLED, False)


def _requeue_killed(study: Any, storage: Any) -> int:
    """Mark the trials left RUNNING by a killed sweep failed (``killed``) and queue their parameters again."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    killed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in killed:
        storage.set_trial_user_attr(
            storage.get_trial_id_from_study_id_trial_number(study_id, trial.number), KILLED, True
        )
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params))
        log.info("trial %d was killed with the sweep: queued again with its parameters %s", trial.number, trial.params)
    return len(killed)


def resume_study(impl: Any) -> None:
    """Make ``impl`` (the Optuna sweeper's implementation, set up, its loop not started) continue the study its
    storage holds: only the trials left of ``n_trials`` run, numbered after the study's trials."""
    if impl.storage is None:
        return
    import optuna

    try:
        study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
    except KeyError:  # no such study yet: a fresh sweep
        return
    storage = optuna.storages.get_storage(impl.storage)
    numbered = len(study.get_trials(deepcopy=False))  # the next trial's number (a queued one comes first)
    requeued = _requeue_killed(study, storage)
    done = sum(_counted(t) for t in study.get_trials(deepcopy=False))
    left = max(0, int(impl.n_trials) - done)
    log.info(
        "resuming study '%s' (%s): %d of n_trials=%d trials finished, %d killed and queued again, %d to run",
        study.study_name,
        impl.storage,
        done,
        impl.n_trials,
        requeued,
        left,
    )
    impl.n_trials = left
    impl.job_idx = numbered
    reseed = getattr(impl.sampler, "reseed_rng", None)  # a GridSampler is still a partial here: it needs none
    if callable(reseed):
        reseed()
