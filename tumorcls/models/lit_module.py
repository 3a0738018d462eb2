"""LightningModule: the tutorial's optimisation recipe (Adam, cross-entropy, ReduceLROnPlateau on
val/acc) with cosine as an option, and torchmetrics for accuracy, macro-F1, per-class precision/recall
and the confusion matrix."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from tumorcls.errors import TrainingDivergedError
from tumorcls.labels import CLASS_NAMES
from tumorcls.models.network import create_network

SCHEDULERS = ("plateau", "cosine", "none")


def _metrics(num_classes: int) -> MetricCollection:
    """Argument validation is off: it runs torch.unique on every update, a host-device sync per step on CUDA;
    predictions are argmaxes and labels come from the data module, so both are always in range."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
            "f1": MulticlassF1Score(num_classes, average="macro", validate_args=False),
            "precision": MulticlassPrecision(num_classes, average=None, validate_args=False),
            "recall": MulticlassRecall(num_classes, average=None, validate_args=False),
            "confmat": MulticlassConfusionMatrix(num_classes, validate_args=False),
        }
    )


class TumorClassifier(L.LightningModule):
    """timm backbone + GAP + dropout + linear head. Hyperparameters are plain values, so checkpoints
    load with ``torch.load(weights_only=True)``."""

    def __init__(
        self,
        backbone: str = "tf_efficientnet_b0.aa_in1k",
        num_classes: int = len(CLASS_NAMES),
        class_names: Sequence[str] = CLASS_NAMES,
        drop_rate: float = 0.5,
        pretrained: bool = False,
        weights: str | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: str = "plateau",
        plateau_factor: float = 0.3,
        plateau_patience: int = 2,
        min_lr: float = 1e-6,
        warmup_epochs: int = 0,
        label_smoothing: float = 0.0,
        backbone_lr_mult: float = 1.0,
        freeze_backbone_epochs: int = 0,
        tta: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        input_size: int = 150,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown model.scheduler {scheduler!r}; choose one of {list(SCHEDULERS)}")
        if optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"unknown model.optimizer {optimizer!r}; choose adam, adamw or sgd")
        if not 0.0 <= backbone_lr_mult <= 1.0:
            raise ValueError(f"model.backbone_lr_mult must be in [0, 1], got {backbone_lr_mult}")
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.save_hyperparameters(logger=False)
        # plain Python values only, so that checkpoints load with weights_only=True
        self.hparams.update(
            class_names=[str(c) for c in class_names],
            mean=[float(m) for m in mean],
            std=[float(s) for s in std],
            weights=str(weights) if weights else None,
        )
        self.net, self.weights_source = create_network(backbone, num_classes, drop_rate, pretrained, weights)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_metrics = _metrics(num_classes).clone(prefix="val/")
        self.test_metrics = _metrics(num_classes).clone(prefix="test/")
        self.last_confmat: dict[str, torch.Tensor] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams.class_names)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and "_compiled_net" not in self.__dict__:
            # kept outside the module registry, so state_dict keys (and checkpoints) stay those of ``net``
            object.__setattr__(self, "_compiled_net", torch.compile(self.net, mode=self.hparams.compile_mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.__dict__.get("_compiled_net", self.net)(x)

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for validation/test; with ``tta`` the mean of the image's and its mirror image's logits."""
        logits = self(x)
        if self.hparams.tta:
            logits = (logits + self(torch.flip(x, dims=[3]))) / 2
        return logits

    def on_train_epoch_start(self) -> None:
        """A short frozen-backbone warm-up: only the new head learns for ``freeze_backbone_epochs`` epochs
        (BatchNorm statistics stay frozen too), so its random start does not disturb the pretrained features."""
        frozen = self.current_epoch < self.hparams.freeze_backbone_epochs
        self.net.backbone.requires_grad_(not frozen)
        if frozen:
            self.net.backbone.eval()

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, global step "
                f"{self.global_step}; lower model.lr or check the data. The last good checkpoint is kept."
            )
        self.train_acc(logits.argmax(1), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self.eval_logits(x)
        loss = self._loss(logits, y)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits.argmax(1), y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_eval_epoch(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        values = metrics.compute()
        metrics.reset()
        confmat = values.pop(f"{stage}/confmat")
        self.last_confmat[stage] = confmat.detach().cpu()
        precision = values.pop(f"{stage}/precision")
        recall = values.pop(f"{stage}/recall")
        for i, name in enumerate(self.class_names):
            values[f"{stage}/precision/{name}"] = precision[i]
            values[f"{stage}/recall/{name}"] = recall[i]
        self.log(f"{stage}/acc", values.pop(f"{stage}/acc"), prog_bar=True)
        self.log_dict(values)

    def on_validation_epoch_end(self) -> None:
        self._log_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval_epoch("test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return torch.softmax(self.eval_logits(x).float() / getattr(self, "temperature", 1.0), dim=1)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, with named parameter groups (``backbone``, ``head``) for discriminative learning rates."""
        hp = self.hparams
        # discriminative learning rates: the pretrained backbone moves slower than the new head
        backbone = list(self.net.backbone.parameters())
        in_backbone = {id(p) for p in backbone}  # by identity: names change when the net is compiled
        params = [
            {"name": "backbone", "params": backbone, "lr": hp.lr * hp.backbone_lr_mult},
            {"name": "head", "params": [p for p in self.net.parameters() if id(p) not in in_backbone], "lr": hp.lr},
        ]
        if hp.optimizer in ("adam", "adamw"):
            cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
            try:  # one fused kernel per step instead of several per tensor: fewer launches on CUDA
                opt = cls(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=True)
            except (RuntimeError, TypeError):  # a device or dtype without a fused kernel
                opt = cls(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=0.9, nesterov=True, weight_decay=hp.weight_decay)
        return opt

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = self.build_optimizer()
        if hp.scheduler == "none":
            return {"optimizer": opt}
        if hp.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=hp.plateau_factor, patience=hp.plateau_patience, min_lr=hp.min_lr
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/acc", "interval": "epoch"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(total - 1, int(hp.warmup_epochs * total / max(1, self.trainer.max_epochs or 1)))
        floor = min(1.0, hp.min_lr / hp.lr)

        def cosine(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
