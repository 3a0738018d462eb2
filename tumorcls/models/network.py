"""The classifier network: timm backbone -> global average pooling -> dropout -> linear head."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from tumorcls.errors import WeightsError
from tumorcls.models.pretrained import hub_failure_message, load_backbone_weights

log = logging.getLogger(__name__)


class TumorNet(nn.Module):
    """Keras tutorial's head on any timm backbone: GAP, Dropout(p), Dense(num_classes) (logits)."""

    def __init__(self, backbone: nn.Module, num_classes: int, drop_rate: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(backbone.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, (N, num_features)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(x)))


def create_backbone(
    name: str, pretrained: bool | None = None, weights: str | Path | None = None
) -> tuple[nn.Module, str]:
    """A timm model with its classifier removed and average pooling; returns it and its weights source.

    pretrained: True - ImageNet weights, from the local ``weights`` file when given, else timm's hub;
    False - from scratch: random weights even when ``weights`` is set (model.weights defaults to env
    TUMORCLS_WEIGHTS, which must not turn ``model.pretrained=false`` into a pretrained run);
    None - the ``weights`` file when given, else random weights.
    """
    if pretrained is False and weights:
        log.warning("model.pretrained=false: training '%s' from scratch, ignoring the weights file %s", name, weights)
        weights = None
    use_hub = bool(pretrained) and not weights
    try:
        backbone = timm.create_model(name, pretrained=use_hub, num_classes=0, global_pool="avg")
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid pretrained tag" in str(exc):
            raise WeightsError(f"timm has no model named '{name}' ({exc})") from None
        if use_hub:
            raise WeightsError(hub_failure_message(name, exc)) from None
        raise
    except (OSError, ValueError) as exc:
        if use_hub:
            raise WeightsError(hub_failure_message(name, exc)) from None
        raise
    if weights:
        report = load_backbone_weights(backbone, weights)
        source = f"file:{Path(weights).name} ({len(report['loaded'])} tensors, {len(report['missing'])} missing)"
    elif use_hub:
        source = f"timm-hub:{backbone.pretrained_cfg.get('hf_hub_id') or name}"
    else:
        source = "random-init"
        log.warning("backbone '%s' starts from random weights (no pretrained weights asked for)", name)
    return backbone, source


def create_network(
    backbone: str,
    num_classes: int,
    drop_rate: float = 0.5,
    pretrained: bool | None = None,
    weights: str | Path | None = None,
) -> tuple[TumorNet, str]:
    """The backbone (see :func:`create_backbone` for ``pretrained`` and ``weights``) with the tutorial's head."""
    net, source = create_backbone(backbone, pretrained, weights)
    return TumorNet(net, num_classes, drop_rate), source
