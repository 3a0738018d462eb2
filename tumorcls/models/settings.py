"""The classifier's settings grouped by what they are for. The YAML keys, CLI overrides (``model.lr=...``)
and the hyperparameters saved in checkpoints stay flat (``TumorClassifier(**flat)``); :class:`ModelSettings`
is the grouped view the module reads. A checkpoint loader needs only the architecture and input contract.

The defaults and rules are the schema's (tumorcls.config.model for the model group's keys, tumorcls.config.data
for the input contract the data module hands over): each group checks its keys there when built, so a classifier
built in Python refuses a bad value in the same line as ``train.py`` (``config: model.lr must be ...``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tumorcls.config.check import check_settings
from tumorcls.config.data import DEFAULTS as DATA
from tumorcls.config.model import DEFAULTS as MODEL
from tumorcls.config.model import ModelConfig
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.optim import OptimizerSettings, SchedulerSettings


@dataclass(frozen=True)
class ArchitectureSettings:
    """What the network is: a timm backbone, dropout and a linear head over ``class_names``."""

    backbone: str = MODEL.backbone
    num_classes: int = MODEL.num_classes
    class_names: tuple[str, ...] = CLASS_NAMES
    drop_rate: float = MODEL.drop_rate

    def __post_init__(self) -> None:
        check_settings(self, ModelConfig, "model")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")


@dataclass(frozen=True)
class InputContract:
    """What the network expects: square RGB images of ``input_size`` pixels, normalised with mean / std, after
    the preprocessing of ``tumorcls.data.preprocess`` (``crop``, ``intensity``; "none" in older checkpoints).
    Set from the data module (already checked there), or read from a checkpoint."""

    input_size: int = DATA.size
    mean: tuple[float, ...] = DATA.mean
    std: tuple[float, ...] = DATA.std
    crop: str = DATA.crop
    intensity: str = DATA.intensity


@dataclass(frozen=True)
class RecipeSettings:
    """Training-only choices besides the optimiser: label smoothing and a head-only warm-up."""

    label_smoothing: float = MODEL.label_smoothing
    freeze_backbone_epochs: int = MODEL.freeze_backbone_epochs

    def __post_init__(self) -> None:
        check_settings(self, ModelConfig, "model")


@dataclass(frozen=True)
class RuntimeSettings:
    """How the network runs: flip TTA for validation/test logits, memory layout, torch.compile, CUDA graphs
    of the training step (models.cuda_graphs). ``cuda_graphs`` is resolved: training.build turns the config's
    ``auto`` into true or false for the devices of the run (``step`` stays ``step``)."""

    tta: bool = MODEL.tta
    channels_last: bool = MODEL.channels_last
    compile: bool = MODEL.compile
    compile_mode: str | None = MODEL.compile_mode
    cuda_graphs: bool | str = False

    def __post_init__(self) -> None:
        check_settings(self, ModelConfig, "model")


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
        """Group the flat keys of conf/model/*.yaml (and of checkpoints' hyperparameters); a key the mapping lacks
        (an older checkpoint) takes its default."""
        plain = dict(flat)
        for key in ("class_names", "mean", "std"):
            if key in plain:
                plain[key] = tuple(plain[key])
        return cls(**{f.name: _group(f.default_factory, plain) for f in fields(cls)})


def _group(settings: type, flat: Mapping[str, Any]) -> Any:
    """One settings group from the flat keys it holds (a field's ``key`` metadata names its flat key)."""
    chosen = {}
    for f in fields(settings):
        key = f.metadata.get("key", f.name)
        if key in flat:
            chosen[f.name] = flat[key]
    return settings(**chosen)
