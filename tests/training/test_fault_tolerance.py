"""Killed runs resume, diverging runs stop clearly, seeded runs repeat exactly, files are written atomically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.helpers.paths import REPO
from tests.helpers.synthetic import make_dataset
from tests.helpers.train_runs import small_run_args, train
from tumorcls.atomic_io import atomic_write, atomic_write_json
from tumorcls.data.datamodule import TumorDataModule
from tumorcls.errors import TrainingDivergedError
from tumorcls.models.checkpoint import load_checkpoint
from tumorcls.models.lit_module import TumorClassifier


@pytest.fixture(scope="module")
def bigger_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("bigger") / "mri", {"Training": 50, "Testing": 4}, seed=9)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_completes_every_epoch(bigger_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    args = [*small_run_args(bigger_root), "data.batch_size=4", "trainer.max_epochs=4", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    assert proc.poll() is None, "the run finished before it could be killed; make epochs longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists()
    assert torch.load(last, weights_only=True)["epoch"] < 3  # really killed before the end

    resumed = train([*args, "ckpt_path=last"])
    assert "Restoring states from the checkpoint path" in resumed.stdout + resumed.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 4
    for name in ("classification_report.txt", "confusion_matrix.png", "curves.png", "checkpoints/best.ckpt"):
        assert (run_dir / name).is_file()
    history = torch.load(last, weights_only=True)["callbacks"]
    rows = next(v for k, v in history.items() if "EpochHistory" in k)["history"]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert not list(run_dir.rglob("*.tmp"))


class _DivergingClassifier(TumorClassifier):
    """Returns a NaN loss from global step ``nan_from`` on."""

    nan_from = 7

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = super()._loss(logits, y)
        return loss * float("nan") if self.global_step >= self.nan_from else loss


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    synthetic_root: Path, tmp_path: Path
) -> None:
    dm = TumorDataModule(synthetic_root, size=32, batch_size=16, num_workers=0)  # 3 steps per epoch
    model = _DivergingClassifier(backbone="test_efficientnet")
    best = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val/acc", mode="max")
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None, enable_version_counter=False)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=5, callbacks=[best, last], logger=False, enable_progress_bar=False
    )
    with pytest.raises(TrainingDivergedError, match=r"non-finite training loss .* global step 7"):
        trainer.fit(model, datamodule=dm)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1 and saved["global_step"] == 6  # the end of the last finite epoch
    restored, _ = load_checkpoint(tmp_path / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in restored.parameters())


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(synthetic_root: Path, tmp_path: Path) -> None:
    results = []
    for i in range(2):
        run_dir = tmp_path / f"run{i}"
        train([*small_run_args(synthetic_root), "trainer.max_epochs=2", "seed=3", f"hydra.run.dir={run_dir}"])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        history = next(v for k, v in ckpt["callbacks"].items() if "EpochHistory" in k)["history"]
        results.append((metrics["confusion_matrix"], metrics["acc"], history, ckpt["state_dict"]["net.head.weight"]))
    (cm0, acc0, hist0, w0), (cm1, acc1, hist1, w1) = results
    assert cm0 == cm1 and acc0 == acc1 and hist0 == hist1
    assert torch.equal(w0, w1)


def test_atomic_write_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"acc": 0.5})

    def crash_halfway(tmp: Path) -> None:
        tmp.write_text('{"acc": 0.9')  # a partial write, then the crash
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash_halfway)
    assert json.loads(target.read_text()) == {"acc": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
