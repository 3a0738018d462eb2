"""The one evaluation loop (tumorcls.evaluation.loop): it computes in the precision metrics.json records, reports
plain and TTA figures when asked for both, and ``tumorcls aggregate`` reads the keys it writes (and older files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.export_fixtures import perturb
from tests.helpers.tiny_model import synthetic_batch, tiny_checkpoint
from tumorcls.cli.main import main
from tumorcls.evaluation.aggregate import aggregate, find_metrics
from tumorcls.evaluation.loop import LabelledBatch, checkpoint_predictor, precision_of, score, write_report
from tumorcls.models.checkpoint import load_checkpoint
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.probabilities import softmax

SIDE = 32


@pytest.fixture(scope="module")
def model() -> TumorClassifier:
    torch.manual_seed(0)
    return perturb(TumorClassifier(backbone="test_efficientnet", input_size=SIDE, scheduler="none"))


def _normalised(model: TumorClassifier, images: np.ndarray) -> torch.Tensor:
    mean, std = (torch.tensor(model.hparams[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0) - mean) / std


def test_the_loop_computes_in_the_precision_it_records(model: TumorClassifier) -> None:
    images, labels = synthetic_batch(3, seed=1, side=SIDE)
    batches = [LabelledBatch(images[:5], labels[:5]), LabelledBatch(images[5:], labels[5:])]
    scores = score(checkpoint_predictor(None, model, "cpu"), batches)
    assert scores.precision == "float32" and scores.n == 12 and list(scores.probs) == ["plain"]
    x = _normalised(model, images)
    with torch.no_grad():
        fp32 = softmax(model.net(x).numpy())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = softmax(model.net(x).float().numpy())
    np.testing.assert_allclose(scores.probs["plain"], fp32, rtol=0, atol=1e-6)  # float32 (batch-size rounding only)
    assert np.abs(bf16 - fp32).max() > 1e-4  # bf16 would have given other numbers: the check can tell
    predictor = checkpoint_predictor(None, model, "cpu")
    predictor.precision = "bfloat16 (autocast)"  # a backend that declares its precision is believed
    assert precision_of(predictor) == "bfloat16 (autocast)"


def test_plain_and_tta_are_both_reported_and_the_asked_one_on_top(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    # trained on the synthetic discs, whose mirror image is another class's: TTA changes its answers
    ckpt = tiny_checkpoint(tmp_path_factory)
    model = load_checkpoint(ckpt)[0].eval()
    images, labels = synthetic_batch(4, seed=2)
    scores = score(checkpoint_predictor(ckpt), [LabelledBatch(images, labels)], tta=True)
    x = _normalised(model, images)
    with torch.no_grad():
        plain = model.net(x).argmax(1).numpy()
        tta = (model.net(x) + model.net(torch.flip(x, dims=[3]))).argmax(1).numpy()
    assert (plain != tta).any(), "TTA changes no prediction here: the data cannot tell the modes apart"
    np.testing.assert_array_equal(scores.probs["plain"].argmax(1), plain)
    np.testing.assert_array_equal(scores.probs["tta"].argmax(1), tta)
    metrics = write_report(tmp_path, scores, model.class_names, {"data": "x"}, reported="tta")
    assert metrics["inference"] == "tta" and metrics["acc"] == metrics["tta"]["acc"] == np.mean(tta == labels)
    assert metrics["plain"]["acc"] == np.mean(plain == labels)
    assert metrics["plain"]["recall"]["glioma_tumor"] == np.mean(plain[labels == 0] == 0)
    with pytest.raises(ValueError, match=r"info key\(s\) \['tta'\] would replace the report's keys"):
        write_report(tmp_path / "again", scores, model.class_names, {"tta": True}, reported="tta")


def _write(folder: Path, metrics: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_aggregate_reads_the_new_keys_and_older_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = {"macro_f1": 0.5, "per_class": {"glioma_tumor": {"recall": 0.5}}, "protocol": "grouped"}
    fit = {"split": "val", "temperature": 1.5, "n": 12, "nll_before": 1.0, "nll_after": 0.9}
    _write(
        tmp_path / "runs" / "new",
        {**base, "acc": 0.8, "calibration": {"ece": 0.1, "nll": 0.6}, "temperature_fit": fit}
        | {"plain": {"acc": 0.82, "macro_f1": 0.5}, "tta": {"acc": 0.8, "macro_f1": 0.5}},
    )
    _write(tmp_path / "runs" / "evaluate", {**base, "acc": 0.7, "calibration": {"ece": 0.3, "nll": 0.8}})
    # written before temperature_fit existed: "calibration" held the validation fit, without ece
    _write(tmp_path / "runs" / "old", {**base, "acc": 0.6, "calibration": {"temperature": 1.2, "nll_before": 1.1}})
    summary = aggregate(find_metrics([tmp_path / "runs"]))["metrics"]
    assert summary["acc"]["n"] == 3 and summary["acc"]["mean"] == pytest.approx(0.7)
    assert summary["calibration/ece"]["n"] == 2 and summary["calibration/ece"]["mean"] == pytest.approx(0.2)
    assert summary["calibration/nll"]["mean"] == pytest.approx(0.7)
    assert summary["temperature_fit/temperature"] == {"mean": 1.5, "std": 0.0, "n": 1}
    assert summary["tta/acc"]["n"] == summary["plain/acc"]["n"] == 1
    assert main(["aggregate", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "calibration/ece                 20.00 +-  14.14 %  (n=2)" in out
    assert "calibration/nll                  0.70 +-   0.14  (n=2)" in out
