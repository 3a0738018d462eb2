"""The classifier's settings grouped by what they are for. The YAML keys, CLI overrides (``model.lr=...``)
and the hyperparameters saved in checkpoints stay flat (``TumorClassifier(**flat)``); :class:`ModelSettings`
is the grouped view the module reads. A checkpoint loader needs only the architecture and input contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tumorcls.labels import CLASS_NAMES
from tumorcls.models.optim import OptimizerSettings, SchedulerSettings


@dataclass(frozen=True)
class ArchitectureSettings:
    """What the network is: a timm backbone, dropout and a linear head over ``class_names``."""

    backbone: str = "tf_efficientnet_b0.aa_in1k"
    num_classes: int = len(CLASS_NAMES)
    class_names: tuple[str, ...] = CLASS_NAMES
    drop_rate: float = 0.5

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")


@dataclass(frozen=True)
class InputContract:
    """What the network expects: square RGB images of ``input_size`` pixels, normalised with mean / std, after
    the preprocessing of ``tumorcls.data.preprocess`` (``crop``, ``intensity``; "none" in older checkpoints)."""

    input_size: int = 150
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    crop: str = "none"
    intensity: str = "none"


@dataclass(frozen=True)
class RecipeSettings:
    """Training-only choices besides the optimiser: label smoothing and a head-only warm-up."""

    label_smoothing: float = 0.0
    freeze_backbone_epochs: int = 0


@dataclass(frozen=True)
class RuntimeSettings:
    """How the network runs: flip TTA for validation/test logits, memory layout, torch.compile, CUDA graphs
    of the training step (models.cuda_graphs)."""

    tta: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None
    cuda_graphs: bool = False


@dataclass(frozen=True)
class ModelSettings:
    """Every setting of a TumorClassifier except where its first weights come from (pretrained, weights)."""

    architecture: ArchitectureSettings = field(default_factory=ArchitectureSettings)
    inputs: InputContract = field(default_factory=InputContract)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    recipe: RecipeSettings = field(default_factory=RecipeSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> ModelSettings:
        """Group the flat keys of conf/model/*.yaml (and of checkpoints' hyperparameters)."""
        return cls(
            architecture=ArchitectureSettings(
                str(flat["backbone"]),
                int(flat["num_classes"]),
                tuple(str(c) for c in flat["class_names"]),
                float(flat["drop_rate"]),
            ),
            inputs=InputContract(
                int(flat["input_size"]),
                _floats(flat["mean"]),
                _floats(flat["std"]),
                str(flat.get("crop", "none")),
                str(flat.get("intensity", "none")),
            ),
            optimizer=OptimizerSettings(flat["optimizer"], flat["lr"], flat["weight_decay"], flat["backbone_lr_mult"]),
            scheduler=SchedulerSettings(
                flat["scheduler"],
                flat["plateau_factor"],
                flat["plateau_patience"],
                flat["min_lr"],
                flat["warmup_epochs"],
            ),
            recipe=RecipeSettings(flat["label_smoothing"], flat["freeze_backbone_epochs"]),
            runtime=RuntimeSettings(
                bool(flat["tta"]),
                bool(flat["channels_last"]),
                bool(flat["compile"]),
                flat["compile_mode"],
                bool(flat.get("cuda_graphs", False)),
            ),
        )


def _floats(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
