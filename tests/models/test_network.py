"""The network and its pretrained weights: shapes, gradients, local files, offline hub failures."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from tumorcls.errors import WeightsError
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.models.network import create_network


def test_forward_backward_shapes_and_head() -> None:
    net, source = create_network("test_efficientnet", num_classes=4, drop_rate=0.5)
    assert source == "random-init"
    assert isinstance(net.dropout, torch.nn.Dropout) and net.dropout.p == 0.5
    assert net.head.out_features == 4 and net.head.in_features == net.backbone.num_features
    x = torch.randn(3, 3, 64, 64, requires_grad=True)
    logits = net(x)
    assert logits.shape == (3, 4)
    logits.sum().backward()
    assert net.head.weight.grad is not None and x.grad is not None and torch.isfinite(x.grad).all()


def test_effnet_b0_is_the_keras_architecture() -> None:
    net, _ = create_network("tf_efficientnet_b0", num_classes=4)
    bn = net.backbone.bn1
    assert abs(bn.eps - 1e-3) < 1e-9  # Keras BatchNormalization epsilon
    assert type(net.backbone.conv_stem).__name__ == "Conv2dSame"  # TF "same" padding
    assert net.backbone.num_features == 1280
    assert net(torch.randn(1, 3, 150, 150)).shape == (1, 4)


def _donor_file(tmp_path: Path, drop: tuple[str, ...] = ()) -> tuple[Path, dict[str, torch.Tensor]]:
    donor = timm.create_model("test_efficientnet", num_classes=1000)
    state = {k: v.clone() for k, v in donor.state_dict().items() if k not in drop}
    path = tmp_path / "donor.safetensors"
    save_file(state, str(path))
    return path, state


def test_local_safetensors_load_without_head_and_log_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, state = _donor_file(tmp_path, drop=("conv_head.weight",))
    with caplog.at_level(logging.WARNING):
        net, source = create_network("test_efficientnet", 4, weights=path)
    assert torch.equal(net.backbone.conv_stem.weight, state["conv_stem.weight"])
    assert net.head.out_features == 4  # the 1000-class classifier was dropped, not loaded
    assert "1 missing" in source and "conv_head.weight" in caplog.text


def test_local_torch_state_dict_loads_with_weights_only(tmp_path: Path) -> None:
    donor = timm.create_model("test_efficientnet", num_classes=0)
    torch.save({"state_dict": donor.state_dict()}, tmp_path / "w.pth")
    net, _ = create_network("test_efficientnet", 4, weights=tmp_path / "w.pth")
    assert torch.equal(net.backbone.bn1.running_var, donor.bn1.running_var)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path, _ = _donor_file(tmp_path)
    with pytest.raises(WeightsError, match="does not fit this backbone"):
        create_network("tf_efficientnet_b0", 4, weights=path)


class Evil:
    """An arbitrary class: unpickling it would run code of the file's choosing."""


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        create_network("test_efficientnet", 4, weights=tmp_path / "evil.pth")


def test_missing_weights_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weights file not found"):
        create_network("test_efficientnet", 4, weights=tmp_path / "nope.safetensors")


def test_offline_hub_names_both_alternatives() -> None:
    with pytest.raises(WeightsError) as err:
        create_network("tf_efficientnet_b0.aa_in1k", 4, pretrained=True)
    msg = str(err.value)
    assert "model.weights=" in msg and "model.pretrained=false" in msg and "\n" not in msg


def test_unknown_backbone_is_one_line() -> None:
    with pytest.raises(WeightsError, match="timm has no model named 'efficientnet_b99'"):
        create_network("efficientnet_b99", 4)


def test_checkpoint_hparams_are_plain_values() -> None:
    model = TumorClassifier(backbone="test_efficientnet", class_names=("a", "b", "c", "d"))
    for value in model.hparams.values():
        assert isinstance(value, str | int | float | bool | list | type(None))


@pytest.mark.integration
def test_shared_partial_weights_load_into_effnet_b0(real_weights: Path) -> None:
    net, source = create_network("tf_efficientnet_b0.aa_in1k", 4, weights=real_weights)
    assert source.startswith("file:") and "356 tensors, 2 missing" in source
    assert net(torch.zeros(2, 3, 150, 150)).shape == (2, 4)
