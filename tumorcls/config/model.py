"""The schema of the model group (conf/model/*.yaml): the classifier's flat keys, as users override them
(``model.lr=3e-4``) and as checkpoints save them. tumorcls.models.settings groups them and takes its defaults
and choices from here; the input contract (size, normalisation, preprocessing) comes from the data group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tumorcls.config.rules import (
    BOOL,
    FRACTION,
    NAME,
    RATE,
    integer,
    number,
    one_of,
    option,
    optional,
)
from tumorcls.labels import NUM_CLASSES

OPTIMIZERS = ("adam", "adamw", "sgd")  # tumorcls.models.optim
SCHEDULERS = ("plateau", "cosine", "none")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


@dataclass(frozen=True)
class ModelConfig:
    """conf/model: the backbone and head, where the first weights come from, the recipe, how the network runs."""

    _target_: str = option("tumorcls.models.lit_module.TumorClassifier", NAME, "the LightningModule")
    backbone: str = option("tf_efficientnet_b0.aa_in1k", NAME, "a timm model name")
    num_classes: int = option(NUM_CLASSES, one_of(NUM_CLASSES), "the label map's classes")
    drop_rate: float = option(0.5, RATE, "dropout before the head")
    pretrained: bool = option(True, BOOL, "ImageNet weights (hub, or the weights file)")
    weights: str | None = option(None, optional(NAME), "a local weights file (env TUMORCLS_WEIGHTS)")
    optimizer: str = option("adam", one_of(*OPTIMIZERS), "adam | adamw | sgd")
    lr: float = option(1e-3, number(0.0, lo_open=True), "the head's learning rate")
    weight_decay: float = option(0.0, number(0.0), "weight decay")
    scheduler: str = option("plateau", one_of(*SCHEDULERS), "plateau (on val/acc) | cosine | none")
    plateau_factor: float = option(0.3, FRACTION, "plateau: lr factor")
    plateau_patience: int = option(2, integer(0), "plateau: epochs without improvement")
    min_lr: float = option(1e-6, number(0.0), "floor of both schedules")
    warmup_epochs: int = option(0, integer(0), "cosine: linear warm-up epochs")
    label_smoothing: float = option(0.0, RATE, "cross-entropy label smoothing")
    backbone_lr_mult: float = option(1.0, number(0.0, 1.0), "the backbone's lr is lr * this")
    freeze_backbone_epochs: int = option(0, integer(0), "head-only epochs first")
    tta: bool = option(False, BOOL, "validation/test logits averaged with the mirror image's")
    channels_last: bool = option(True, BOOL, "channels-last memory layout")
    compile: bool = option(False, BOOL, "torch.compile the network")
    compile_mode: str | None = option(None, optional(one_of(*COMPILE_MODES)), "torch.compile's mode; null: default")
    cuda_graphs: Any = option("auto", one_of("auto", True, False, "step"), "CUDA graphs of the training step")
    cuda_graphs_eval: bool = option(False, BOOL, "CUDA graphs of the validation/test forward")


DEFAULTS = ModelConfig()
