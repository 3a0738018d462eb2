"""LightningModule: the classifier network trained with cross-entropy under the recipe of models.optim
(the tutorial's Adam + ReduceLROnPlateau on val/acc, or AdamW/SGD and warm-up cosine), with torchmetrics for
accuracy, macro-F1, per-class precision/recall and the confusion matrix. Settings arrive flat (the YAML keys
users override) and are read through the grouped view of models.settings."""

from __future__ import annotations

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
from tumorcls.models.cuda_graphs import GraphedTraining
from tumorcls.models.network import create_network
from tumorcls.models.optim import build_optimizer, build_scheduler
from tumorcls.models.settings import ModelSettings

# training losses are checked for NaN/inf in groups of this many steps (a host-device sync per check, not per step)
FINITE_CHECK_EVERY = 50


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
    """timm backbone + GAP + dropout + linear head. The arguments are the flat keys of conf/model/*.yaml, saved
    as plain-value hyperparameters (checkpoints load with ``torch.load(weights_only=True)``); the module reads
    them grouped, as ``self.settings`` (architecture, inputs, optimizer, scheduler, recipe, runtime).
    ``pretrained``/``weights`` say where the backbone's first weights come from (models.network)."""

    def __init__(
        self,
        backbone: str = "tf_efficientnet_b0.aa_in1k",
        num_classes: int = len(CLASS_NAMES),
        class_names: Sequence[str] = CLASS_NAMES,
        drop_rate: float = 0.5,
        pretrained: bool | None = None,
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
        cuda_graphs: bool = False,
        input_size: int = 150,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        crop: str = "none",
        intensity: str = "none",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        # plain Python values only, so that checkpoints load with weights_only=True
        self.hparams.update(
            class_names=[str(c) for c in class_names],
            mean=[float(m) for m in mean],
            std=[float(s) for s in std],
            weights=str(weights) if weights else None,
        )
        self.settings = ModelSettings.from_flat(self.hparams)
        arch = self.settings.architecture
        self.net, self.weights_source = create_network(arch.backbone, num_classes, arch.drop_rate, pretrained, weights)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # outside the module registry (not state): the training forward, through CUDA graphs when asked for
        object.__setattr__(self, "_train_forward", GraphedTraining(self.net, self.settings.runtime.cuda_graphs))
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_metrics = _metrics(num_classes).clone(prefix="val/")
        self.test_metrics = _metrics(num_classes).clone(prefix="test/")
        self.last_confmat: dict[str, torch.Tensor] = {}
        self._unchecked_losses: list[tuple[torch.Tensor, int, int]] = []  # (loss, epoch, global step)

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams.class_names)

    def setup(self, stage: str) -> None:
        runtime = self.settings.runtime
        if runtime.compile and "_compiled_net" not in self.__dict__:
            # kept outside the module registry, so state_dict keys (and checkpoints) stay those of ``net``
            object.__setattr__(self, "_compiled_net", torch.compile(self.net, mode=runtime.compile_mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._memory_format(x)
        return self.__dict__.get("_compiled_net", self.net)(x)

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.settings.runtime.channels_last else x

    def train_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a training step: as ``forward``, but replayed from CUDA graphs with ``cuda_graphs``."""
        if "_compiled_net" in self.__dict__:
            return self(x)
        return self._train_forward(self._memory_format(x))

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for validation/test; with ``tta`` the mean of the image's and its mirror image's logits."""
        logits = self(x)
        if self.settings.runtime.tta:
            logits = (logits + self(torch.flip(x, dims=[3]))) / 2
        return logits

    def on_train_epoch_start(self) -> None:
        """A short frozen-backbone warm-up: only the new head learns for ``freeze_backbone_epochs`` epochs
        (BatchNorm statistics stay frozen too), so its random start does not disturb the pretrained features."""
        frozen = self.current_epoch < self.settings.recipe.freeze_backbone_epochs
        self._train_forward.allowed = not frozen
        self.net.backbone.requires_grad_(not frozen)
        if frozen:
            self.net.backbone.eval()

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=self.settings.recipe.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.train_logits(x)
        loss = self._loss(logits, y)
        self._unchecked_losses.append((loss.detach(), self.current_epoch, self.global_step))
        if len(self._unchecked_losses) >= FINITE_CHECK_EVERY:
            self.check_finite_losses()
        self.train_acc(logits.argmax(1), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def check_finite_losses(self) -> None:
        """Raise TrainingDivergedError naming the first step whose loss was NaN or infinite. Losses are checked in
        groups (every FINITE_CHECK_EVERY steps, before validation and at the end of each training epoch, so before
        any checkpoint of that epoch is written): one host-device sync per group instead of one per step."""
        pending, self._unchecked_losses = self._unchecked_losses, []
        if not pending:
            return
        losses = torch.stack([loss.float() for loss, _, _ in pending])
        bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
        if bad:
            value, epoch, step = losses[bad[0]].item(), pending[bad[0]][1], pending[bad[0]][2]
            raise TrainingDivergedError(
                f"non-finite training loss ({value}) at epoch {epoch}, global step {step}; "
                "lower model.lr or check the data. The last good checkpoint is kept."
            )

    def on_validation_start(self) -> None:
        self.check_finite_losses()

    def on_train_epoch_end(self) -> None:
        self.check_finite_losses()

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
        """For ``trainer.test`` called directly. train.py does not run it: its test figures (metrics.json and the
        loggers' ``test/*``) come from the one evaluation loop, tumorcls.evaluation.loop."""
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
        """Uncalibrated probabilities (T = 1): the calibration temperature is checkpoint data
        (``load_checkpoint(...)[1].temperature``), not model state."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return torch.softmax(self.eval_logits(x).float(), dim=1)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser training uses (models.optim.build_optimizer over this network and its settings)."""
        return build_optimizer(self.net, self.settings.optimizer)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.build_optimizer()
        settings = self.settings
        if settings.scheduler.name == "cosine":  # estimated_stepping_batches may load the train data: only if needed
            steps, epochs = int(self.trainer.estimated_stepping_batches), self.trainer.max_epochs
        else:
            steps, epochs = None, None
        scheduler = build_scheduler(optimizer, settings.scheduler, settings.optimizer.lr, steps, epochs)
        return {"optimizer": optimizer} if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
