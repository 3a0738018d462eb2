"""Calibration: ECE, temperature fitting, the temperature stored in a checkpoint (safe to load, resumable),
and the fit wired into training (metrics.json "temperature_fit")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.tiny_model import synthetic_batch, tiny_checkpoint
from tests.helpers.train_runs import small_run_args, train
from tumorcls.evaluation.calibration import expected_calibration_error, fit_temperature, store_temperature
from tumorcls.evaluation.loop import LabelledBatch
from tumorcls.evaluation.temperature_fit import fit_checkpoint_temperature
from tumorcls.inference.backends import TorchPredictor, load_predictor
from tumorcls.models.checkpoint import CHECKPOINT_KEY, load_checkpoint
from tumorcls.probabilities import softmax


def test_ece_by_hand() -> None:
    # two bins of 2 (n_bins=2): confidences 0.9, 0.8 (one right) and 0.4, 0.3... in a 3-class problem
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.45, 0.3, 0.25], [0.4, 0.35, 0.25]])
    labels = np.array([0, 1, 0, 0])
    # upper bin: mean conf 0.85, accuracy 0.5 -> 0.35; lower bin: mean conf 0.425, accuracy 1.0 -> 0.575
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.575)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_fit_temperature_recovers_the_true_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 4))
    true_t = 2.5  # labels drawn from softmax(logits / 2.5): these logits are over-confident by 2.5
    p = softmax(logits, true_t)
    labels = np.array([rng.choice(4, p=row) for row in p])
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.08)
    raw, cal = expected_calibration_error(softmax(logits), labels), expected_calibration_error(p, labels)
    assert cal < raw / 2
    with pytest.raises(ValueError, match="need N x C logits"):
        fit_temperature(np.zeros((0, 4)), np.zeros(0))


def test_stored_temperature_keeps_every_key_loads_safely_and_is_used(tmp_path_factory, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(tiny_checkpoint(tmp_path_factory), ckpt)
    before = torch.load(ckpt, weights_only=True)
    images, labels = synthetic_batch(4, seed=5)
    batches = [LabelledBatch(images[:8], labels[:8]), LabelledBatch(images[8:], labels[8:])]
    summary = fit_checkpoint_temperature(ckpt, batches, split="val")
    assert summary["n"] == 16 and summary["nll_after"] <= summary["nll_before"] + 1e-9
    assert (summary["split"], summary["inference"], summary["precision"]) == ("val", "plain", "float32")
    # the temperature of the checkpoint backend's own logits on these images (TorchPredictor: what predict runs)
    with torch.no_grad():
        model = load_checkpoint(ckpt)[0].eval()
        logits = model(TorchPredictor(model).preprocess(images)).double().numpy()
    assert summary["temperature"] == pytest.approx(fit_temperature(logits, labels), rel=1e-6)
    after = torch.load(ckpt, weights_only=True)  # still loads without unpickling arbitrary objects
    assert set(after) == set(before) | {CHECKPOINT_KEY}
    for key, value in before["state_dict"].items():
        assert torch.equal(after["state_dict"][key], value)
    assert after["hyper_parameters"] == before["hyper_parameters"]
    assert after[CHECKPOINT_KEY]["temperature"] == summary["temperature"]
    assert load_checkpoint(ckpt)[1].temperature == summary["temperature"]
    assert load_predictor(ckpt).temperature == summary["temperature"]
    store_temperature(ckpt, 1.5)  # re-calibrating replaces T and keeps the rest
    assert torch.load(ckpt, weights_only=True)[CHECKPOINT_KEY]["temperature"] == 1.5


@pytest.mark.slow
def test_training_calibrates_the_best_checkpoint_and_it_still_resumes(synthetic_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*small_run_args(synthetic_root), f"hydra.run.dir={run_dir}"]
    proc = train([*args, "trainer.max_epochs=1"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cal = metrics["temperature_fit"]
    assert cal["n"] == metrics["split_sizes"]["val"] and cal["temperature"] > 0 and cal["split"] == "val"
    assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(cal)
    assert metrics["calibration"]["temperature"] == cal["temperature"]  # the test split, at the fitted T
    assert "temperature" in proc.stdout + proc.stderr
    best = run_dir / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, weights_only=True)
    assert ckpt[CHECKPOINT_KEY]["temperature"] == cal["temperature"]
    assert {"optimizer_states", "loops", "callbacks", "state_dict"} <= set(ckpt)
    # the rewritten checkpoint still resumes training
    proc = train([*args, "trainer.max_epochs=2", f"ckpt_path={best}", "calibrate=false"])
    assert "Restoring states from the checkpoint path" in proc.stdout + proc.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


def test_degenerate_validation_sets_give_a_clipped_temperature() -> None:
    from tumorcls.evaluation.calibration import TEMPERATURE_RANGE, fit_temperature

    logits = np.array([[0.01, 0.0, 0.0, 0.0]] * 4)  # nearly uniform and always right: NLL falls as T -> 0
    assert fit_temperature(logits, np.zeros(4, dtype=int)) == TEMPERATURE_RANGE[0]
    wrong = np.array([[5.0, 0.0, 0.0, 0.0]] * 4)  # confidently wrong: NLL falls as T -> infinity
    assert fit_temperature(wrong, np.ones(4, dtype=int)) == TEMPERATURE_RANGE[1]
