"""Grad-CAM: the heatmap of a model trained on synthetic marks peaks where the mark is, and
``predict --cam`` writes one overlay PNG per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.synthetic import MARK_CENTRES
from tests.helpers.tiny_model import SIDE, synthetic_batch, tiny_checkpoint
from tumorcls.cli.main import main
from tumorcls.inference.backends import load_predictor
from tumorcls.inference.gradcam import GradCamExplainer, cam_peak, target_layer
from tumorcls.labels import CLASS_NAMES

# test_efficientnet's last map is 2x2 at 64 px and every cell sees the whole image, so the stride-8
# map (8x8) is where this tiny model's evidence is still local
LAYER = "backbone.blocks.2"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory)


def quadrant(row: float, col: float, side: int) -> tuple[bool, bool]:
    return row >= side / 2, col >= side / 2


def mark_quadrant(label: int) -> tuple[bool, bool]:
    cy, cx = MARK_CENTRES[label]
    return cy >= 0.5, cx >= 0.5


def test_cam_peaks_in_the_quadrant_of_the_class_mark(ckpt: Path) -> None:
    predictor = load_predictor(ckpt)
    images, labels = synthetic_batch(4, seed=1000)  # unseen images, 4 per class
    cams = GradCamExplainer(predictor.model.net, predictor.preprocess, LAYER)(images, labels)
    assert cams.shape == (16, SIDE, SIDE) and cams.min() >= 0.0 and cams.max() <= 1.0
    hits = [quadrant(*cam_peak(c), SIDE) == mark_quadrant(int(y)) for c, y in zip(cams, labels)]
    assert sum(hits) >= 14, f"CAM peak in the mark's quadrant for {sum(hits)}/16 images (chance: 4)"


def test_default_layer_is_the_final_feature_map() -> None:
    import timm
    from torch import nn

    from tumorcls.models.network import TumorNet

    net = TumorNet(timm.create_model("test_efficientnet", num_classes=0), 4)
    assert target_layer(net) is net.backbone.bn2
    assert target_layer(net, "backbone.blocks.2") is net.backbone.blocks[2]
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        target_layer(net, "nope")
    with pytest.raises(ValueError, match="no forward_features"):
        target_layer(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_predict_cam_writes_overlays_that_show_the_mark(ckpt: Path, tmp_path: Path, capsys) -> None:
    images, labels = synthetic_batch(1, seed=2000)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for img, y in zip(images, labels):
        Image.fromarray(img).save(folder / f"{CLASS_NAMES[y]}.png")
    cams = tmp_path / "cams"
    rc = main(["predict", str(folder), "--model", str(ckpt), "--json", "--cam", str(cams), "--cam-layer", LAYER])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(doc["predictions"]) == 4
    assert sorted(p.name for p in cams.iterdir()) == sorted(f"{c}_cam.png" for c in CLASS_NAMES)
    for row in doc["predictions"]:
        assert row["predicted"] == Path(row["path"]).stem  # the CAM is drawn for the predicted class
        png = Image.open(row["cam"])
        assert png.format == "PNG" and png.size == (SIDE, SIDE) and png.mode == "RGB"
        # the image is grey, so red minus blue is the jet colour map's heat alone; hottest quadrant = the mark's
        rgb = np.asarray(png, dtype=np.float64)
        heat = rgb[..., 0] - rgb[..., 2]
        h = SIDE // 2
        means = {(r, c): heat[r * h : (r + 1) * h, c * h : (c + 1) * h].mean() for r in (0, 1) for c in (0, 1)}
        hottest = max(means, key=means.get)
        assert (bool(hottest[0]), bool(hottest[1])) == mark_quadrant(CLASS_NAMES.index(row["predicted"]))


def test_unknown_cam_layer_is_one_clear_line(ckpt: Path, tmp_path: Path, capsys) -> None:
    images, _ = synthetic_batch(1, seed=3)
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    rc = main(["predict", str(tmp_path / "a.png"), "--model", str(ckpt), "--cam", str(tmp_path), "--cam-layer", "x"])
    assert rc == 2 and "error: Grad-CAM: the network has no layer named 'x'" in capsys.readouterr().err
