"""Build the parts of a training job from the composed config: data module, model, callbacks, loggers and
the Lightning trainer. Nothing is fitted or decoded here."""

from __future__ import annotations

from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from tumorcls.data.batch_augment import resolve_augment_on
from tumorcls.data.datamodule import TumorDataModule
from tumorcls.device import accelerator_uses_cuda
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.models.pretrained import cache_only_when_hub_unreachable
from tumorcls.run_layout import RunLayout
from tumorcls.training.callbacks import EpochHistory
from tumorcls.training.checkpoint_io import AtomicCheckpointIO
from tumorcls.training.instantiation import instantiate_group, instantiate_node
from tumorcls.training.loggers import build_loggers

TRAINING_ONLY_DATA_KEYS = ("download",)  # data.* keys for train.py itself, not for the data module


def single_cuda_device(trainer_cfg: DictConfig) -> bool:
    """Whether the trainer will run on one CUDA device (the case the ``auto`` speed settings are for)."""
    on_cuda = accelerator_uses_cuda(trainer_cfg.get("accelerator", "auto"))
    return on_cuda and trainer_cfg.get("devices", 1) in (1, "1", [0]) and trainer_cfg.get("num_nodes", 1) == 1


def build_datamodule(data_cfg: DictConfig, layout: RunLayout, on_cuda: bool = False) -> TumorDataModule:
    """The data module (not set up: nothing is decoded yet); its split manifest goes to the run folder.
    ``augment_on: auto`` becomes ``device`` for a CUDA run whose policy runs there, else ``cpu``."""
    node = OmegaConf.to_container(data_cfg, resolve=True)
    for key in TRAINING_ONLY_DATA_KEYS:
        node.pop(key, None)
    policy = node.get("train_augmentations") or []
    node["augment_on"] = resolve_augment_on(node.get("augment_on", "cpu"), policy, on_cuda)
    return instantiate_node(node, "the data module (data)", manifest_path=str(layout.splits_csv), _convert_="all")


def resolve_cuda_graphs(value: Any, single_gpu: bool, compiled: bool) -> bool | str:
    """``model.cuda_graphs``: ``auto`` is the forward/backward graphs (true) for a run on one CUDA device without
    torch.compile, else false; ``step`` (the whole step as one graph, manual optimisation) and true/false as given."""
    if value == "auto":
        return single_gpu and not compiled
    return value if value == "step" else bool(value)


def build_model(model_cfg: DictConfig, datamodule: TumorDataModule, single_gpu: bool = False) -> TumorClassifier:
    """The classifier for the data module's input size, preprocessing and normalisation (its checkpoints record
    them); hub weights fail fast offline. ``cuda_graphs: auto`` is on for a run on one CUDA device."""
    if model_cfg.get("pretrained") and not model_cfg.get("weights"):
        cache_only_when_hub_unreachable()
    graphs = resolve_cuda_graphs(model_cfg.get("cuda_graphs", False), single_gpu, bool(model_cfg.get("compile")))
    return instantiate_node(
        model_cfg,
        "the model (model)",
        cuda_graphs=graphs,
        input_size=datamodule.size,
        mean=list(datamodule.mean),
        std=list(datamodule.std),
        crop=datamodule.decode_options.crop,
        intensity=datamodule.decode_options.intensity,
        _convert_="all",
    )


def build_callbacks(group: DictConfig | None) -> list[L.Callback]:
    """The ``callbacks`` group, plus EpochHistory when the group lacks it (metrics.json's curves need it)."""
    callbacks = instantiate_group(group, "callback")
    if not any(isinstance(c, EpochHistory) for c in callbacks):
        callbacks.append(EpochHistory())
    return callbacks


def build_trainer(trainer_cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Any]) -> L.Trainer:
    """The trainer; ``precision: auto`` is bf16-mixed on CUDA and 32-true elsewhere; checkpoints are written
    atomically, off the training thread."""
    precision = trainer_cfg.get("precision", "auto")
    if precision in (None, "auto"):
        precision = "bf16-mixed" if accelerator_uses_cuda(trainer_cfg.get("accelerator", "auto")) else "32-true"
    return instantiate_node(
        trainer_cfg,
        "the trainer (trainer)",
        callbacks=callbacks,
        logger=loggers or False,
        precision=precision,
        plugins=[AtomicCheckpointIO()],
    )


def build(cfg: DictConfig, layout: RunLayout) -> tuple[TumorDataModule, TumorClassifier, L.Trainer]:
    single_gpu = single_cuda_device(cfg.trainer)
    datamodule = build_datamodule(cfg.data, layout, accelerator_uses_cuda(cfg.trainer.get("accelerator", "auto")))
    model = build_model(cfg.model, datamodule, single_gpu)
    trainer = build_trainer(cfg.trainer, build_callbacks(cfg.get("callbacks")), build_loggers(cfg.get("logger")))
    return datamodule, model, trainer
