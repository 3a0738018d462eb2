"""The optimiser/scheduler factory (models.optim) and the grouped settings (models.settings): the values
the YAML keys and experiment configs set reach the optimiser and schedule they name."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from tests.helpers.paths import CONF
from tumorcls.models.optim import OptimizerSettings, SchedulerSettings, build_optimizer, build_scheduler
from tumorcls.models.settings import ModelSettings


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 5))
        self.head = nn.Linear(5, 2)


def test_build_optimizer_names_groups_and_scales_the_backbone_lr() -> None:
    settings = OptimizerSettings("adamw", lr=2e-3, weight_decay=0.01, backbone_lr_mult=0.25)
    opt = build_optimizer(_Net(), settings)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head"]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-4, 2e-3])
    assert [len(g["params"]) for g in opt.param_groups] == [4, 2]
    assert all(g["weight_decay"] == 0.01 for g in opt.param_groups)
    sgd = build_optimizer(_Net(), OptimizerSettings("sgd", lr=0.1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"]


def test_unknown_names_are_refused_with_the_key_to_fix() -> None:
    with pytest.raises(
        ValueError, match=r"^config: model.optimizer must be one of \['adam', 'adamw', 'sgd'\], got 'lamb'$"
    ):
        OptimizerSettings("lamb")
    with pytest.raises(ValueError, match=r"^config: model.scheduler must be one of \['plateau', 'cosine', 'none'\]"):
        SchedulerSettings("step")


def test_schedules() -> None:
    opt = build_optimizer(_Net(), OptimizerSettings(lr=1e-3))
    assert build_scheduler(opt, SchedulerSettings("none"), 1e-3) is None
    plateau = build_scheduler(opt, SchedulerSettings("plateau", plateau_factor=0.5, plateau_patience=3), 1e-3)
    assert plateau["monitor"] == "val/acc" and plateau["interval"] == "epoch"
    assert plateau["scheduler"].factor == 0.5 and plateau["scheduler"].patience == 3
    with pytest.raises(ValueError, match="needs the number of optimiser steps"):
        build_scheduler(opt, SchedulerSettings("cosine"), 1e-3)
    cosine = build_scheduler(opt, SchedulerSettings("cosine", min_lr=1e-5, warmup_epochs=1), 1e-3, 100, 10)
    factor = cosine["scheduler"].lr_lambdas[0]
    assert cosine["interval"] == "step"
    assert [factor(s) for s in (0, 9)] == pytest.approx([1 / 11, 10 / 11])  # 10 warm-up steps
    assert factor(10) == pytest.approx(1.0) and factor(100) == pytest.approx(0.01)  # min_lr / lr


@pytest.mark.parametrize("experiment", ["tutorial", "best"])
def test_yaml_keys_and_experiments_group_into_settings(experiment: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "model.lr=3e-4", "model.compile=true"])
    flat = {k: v for k, v in cfg.model.items() if k != "_target_"}
    settings = ModelSettings.from_flat(
        {**flat, "class_names": ["a", "b", "c", "d"], "input_size": 150, "mean": [0.5] * 3, "std": [0.2] * 3}
    )
    assert settings.optimizer.lr == 3e-4 and settings.runtime.compile
    assert settings.optimizer.name == cfg.model.optimizer and settings.scheduler.name == cfg.model.scheduler
    if experiment == "best":
        assert (settings.scheduler.warmup_epochs, settings.recipe.label_smoothing) == (1, 0.1)
        assert settings.optimizer.backbone_lr_mult == 0.5 and settings.runtime.tta
    else:
        assert (settings.scheduler.plateau_factor, settings.scheduler.plateau_patience) == (0.3, 2)
