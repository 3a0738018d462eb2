"""Where the backbone's first weights come from: ``model.pretrained=false`` trains from scratch even when
env TUMORCLS_WEIGHTS (the default of model.weights) names a weights file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from safetensors.torch import save_file

from tests.helpers.paths import CONF
from tumorcls.models.network import create_network


@pytest.fixture
def donor_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(123)
    donor = timm.create_model("test_efficientnet", num_classes=0)
    state = {k: v.clone() for k, v in donor.state_dict().items()}
    path = tmp_path / "donor.safetensors"
    save_file(state, str(path))
    return path, state


def _model_from_config(overrides: list[str]):  # noqa: ANN202 - a TumorClassifier
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model.backbone=test_efficientnet", *overrides])
    return instantiate(cfg.model, input_size=48, _convert_="all")


def test_pretrained_false_ignores_tumorcls_weights(donor_weights, monkeypatch: pytest.MonkeyPatch) -> None:
    path, state = donor_weights
    monkeypatch.setenv("TUMORCLS_WEIGHTS", str(path))
    scratch = _model_from_config(["model.pretrained=false"])
    assert scratch.weights_source == "random-init"
    assert not torch.equal(scratch.net.backbone.conv_stem.weight, state["conv_stem.weight"])
    pretrained = _model_from_config([])  # the default (pretrained: true) takes the file from the variable
    assert pretrained.weights_source.startswith("file:donor.safetensors")
    assert torch.equal(pretrained.net.backbone.conv_stem.weight, state["conv_stem.weight"])


def test_explicit_false_wins_over_a_weights_file(donor_weights, caplog: pytest.LogCaptureFixture) -> None:
    path, state = donor_weights
    # in-process Hydra runs of other tests may have disabled or raised this logger: listen to it directly
    logger = logging.getLogger("tumorcls.models.network")
    saved = logger.disabled, logger.level
    logger.disabled = False
    logger.setLevel(logging.WARNING)  # setLevel, not .level: it also clears the logger's cached decisions
    logger.addHandler(caplog.handler)
    try:
        net, source = create_network("test_efficientnet", 4, pretrained=False, weights=path)
    finally:
        logger.removeHandler(caplog.handler)
        logger.disabled = saved[0]
        logger.setLevel(saved[1])
    assert source == "random-init" and "from scratch, ignoring the weights file" in caplog.text
    assert not torch.equal(net.backbone.conv_stem.weight, state["conv_stem.weight"])
    # left unsaid (None), a given file is loaded, as programmatic callers expect
    net, source = create_network("test_efficientnet", 4, weights=path)
    assert source.startswith("file:") and torch.equal(net.backbone.conv_stem.weight, state["conv_stem.weight"])
