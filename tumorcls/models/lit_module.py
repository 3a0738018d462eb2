"""LightningModule: the classifier network trained with cross-entropy under the recipe of models.optim
(the tutorial's Adam + ReduceLROnPlateau on val/acc, or AdamW/SGD and warm-up cosine), with torchmetrics for
accuracy, macro-F1, per-class precision/recall and the confusion matrix. Settings arrive flat (the YAML keys
users override) and are read through the grouped view of models.settings.

``cuda_graphs="step"`` trains with manual optimisation, so that the whole step (forward, loss, backward, the
optimizer's update) can be one CUDA graph (models.cuda_graphs.WholeStepGraph): the module then zeroes the
gradients, runs backward and the update itself, as automatic optimisation would (outside autocast), steps the
schedules where Lightning would (cosine after each step; ReduceLROnPlateau at the end of each training epoch, on
``val/acc``), and counts every replayed step as Lightning counts an optimizer step (``global_step``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
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
from tumorcls.models.cuda_graphs import (
    GraphedEval,
    GraphedTraining,
    StepOutputs,
    WholeStepGraph,
    autocast_without_cache,
)
from tumorcls.models.network import create_network
from tumorcls.models.optim import build_optimizer, build_scheduler, rates_as_tensors
from tumorcls.models.settings import ModelSettings

log = logging.getLogger(__name__)

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
        cuda_graphs: bool | str = False,
        cuda_graphs_eval: bool = False,
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
        if cuda_graphs == "step" and optimizer == "sgd":  # refused before anything is built or decoded
            raise ValueError("model.cuda_graphs=step needs model.optimizer adam or adamw (SGD is not capturable)")
        arch = self.settings.architecture
        self.net, self.weights_source = create_network(arch.backbone, num_classes, arch.drop_rate, pretrained, weights)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # outside the module registry (not state): the training forward, the whole step and evaluation forwards,
        # through CUDA graphs when asked for
        mode, compiled = self.settings.runtime.cuda_graphs, self.settings.runtime.compile
        object.__setattr__(self, "_train_forward", GraphedTraining(self.net, mode is True))
        object.__setattr__(self, "_step_graph", WholeStepGraph(mode == "step" and not compiled))
        object.__setattr__(self, "_eval_forward", GraphedEval(self.net, bool(cuda_graphs_eval) and not compiled))
        self.automatic_optimization = mode != "step"
        self._plateau_monitor: str | None = None  # manual optimisation steps ReduceLROnPlateau on this metric
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

    def _eval_forward_of(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` for evaluation, replayed from CUDA graphs with ``cuda_graphs_eval`` (models.cuda_graphs)."""
        if "_compiled_net" in self.__dict__:
            return self(x)
        return self._eval_forward(self._memory_format(x))

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for validation/test; with ``tta`` the mean of the image's and its mirror image's logits."""
        logits = self._eval_forward_of(x)
        if self.settings.runtime.tta:
            logits = (logits + self._eval_forward_of(torch.flip(x, dims=[3]))) / 2
        return logits

    def on_train_start(self) -> None:
        """Manual optimisation: the rates a recorded step reads are device tensors again after a resume."""
        if not self.automatic_optimization:
            for optimizer in self.trainer.optimizers:
                rates_as_tensors(optimizer, self.device)

    def on_fit_start(self) -> None:
        """The whole-step graph records single-process bf16/fp32 steps only: under DDP its backward would hold the
        gradient all-reduce, and fp16's loss scaling happens outside it; such runs take the eager manual step."""
        precision = str(self.trainer.precision)
        if self._step_graph.enabled and (self.trainer.world_size > 1 or precision.startswith("16")):
            self._step_graph.enabled = False
            processes = self.trainer.world_size
            log.warning(
                "model.cuda_graphs=step: precision %s, %d processes: the step runs eagerly", precision, processes
            )

    def on_train_epoch_start(self) -> None:
        """A short frozen-backbone warm-up: only the new head learns for ``freeze_backbone_epochs`` epochs
        (BatchNorm statistics stay frozen too), so its random start does not disturb the pretrained features."""
        frozen = self.current_epoch < self.settings.recipe.freeze_backbone_epochs
        self._train_forward.allowed = self._step_graph.allowed = not frozen
        self.net.backbone.requires_grad_(not frozen)
        if frozen:
            self.net.backbone.eval()

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=self.settings.recipe.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        step = self.global_step
        if self.automatic_optimization:
            logits = self.train_logits(x)
            loss = self._loss(logits, y)
        else:
            loss, logits = self._whole_step(x, y)
        self._unchecked_losses.append((loss.detach(), self.current_epoch, step))
        if len(self._unchecked_losses) >= FINITE_CHECK_EVERY:
            self.check_finite_losses()
        # update(), not the metric's forward: no batch value is computed (the epoch's is logged), nothing is copied
        self.train_acc.update(logits.detach().argmax(1), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def _whole_step(self, x: torch.Tensor, y: torch.Tensor) -> StepOutputs:
        """Manual optimisation (``cuda_graphs=step``): one optimizer step on this batch, through the whole-step graph
        where it applies, else eagerly; then the per-step schedule. Returns the detached loss and logits."""
        optimizer = self.optimizers()
        (loss, logits), _ = self._step_graph(
            self._memory_format(x),
            y,
            eager=lambda a, b: self._eager_step(optimizer, a, b),
            graphed=lambda a, b: self._recorded_step(optimizer.optimizer, a, b),
            state=lambda: [*self.net.parameters(), *self.net.buffers()],
            count=lambda replay: counted_as_optimizer_step(optimizer, replay),
        )
        self._step_schedules("step")
        return loss, logits

    def _eager_step(self, optimizer: LightningOptimizer, x: torch.Tensor, y: torch.Tensor) -> StepOutputs:
        """Forward and loss under the step's autocast; zero, backward and update outside it, through Lightning (its
        hooks, precision plugin and step count), as automatic optimisation orders them."""
        logits = self.__dict__.get("_compiled_net", self.net)(x)
        loss = self._loss(logits, y)
        optimizer.zero_grad()
        with torch.autocast(x.device.type, enabled=False):
            self.manual_backward(loss)
            optimizer.step()
        return loss.detach(), logits.detach()

    def _recorded_step(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> StepOutputs:
        """The same step as the whole-step graph records it: on static inputs, the raw optimizer (capturable, its
        rates device tensors), gradients set to None first so that the recording owns them."""
        optimizer.zero_grad(set_to_none=True)
        with autocast_without_cache(x.device.type):
            logits = self.net(x)
            loss = self._loss(logits, y)
        with torch.autocast(x.device.type, enabled=False):
            loss.backward()
            optimizer.step()
        return loss.detach(), logits.detach()

    def _step_schedules(self, interval: str) -> None:
        """Manual optimisation steps the schedules itself, at the points automatic optimisation would: ``step``
        schedules (cosine) after each optimizer step, ``epoch`` ones at the end of the training epoch, after its
        validation: ReduceLROnPlateau on its metric (skipped in an epoch without validation)."""
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval:
                continue
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                value = self.trainer.callback_metrics.get(self._plateau_monitor or "")
                if value is not None:
                    config.scheduler.step(float(value))
            else:
                config.scheduler.step()

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
        if not self.automatic_optimization:
            self._step_schedules("epoch")

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
        """The optimiser training uses (models.optim.build_optimizer over this network and its settings); for the
        whole-step graph with its rates as tensors on this module's device (capturable there on CUDA)."""
        graph_device = None if self.automatic_optimization else self.device
        return build_optimizer(self.net, self.settings.optimizer, graph_device)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.build_optimizer()
        settings = self.settings
        if settings.scheduler.name == "cosine":  # estimated_stepping_batches may load the train data: only if needed
            steps, epochs = int(self.trainer.estimated_stepping_batches), self.trainer.max_epochs
        else:
            steps, epochs = None, None
        scheduler = build_scheduler(optimizer, settings.scheduler, settings.optimizer.lr, steps, epochs)
        if scheduler is not None and not self.automatic_optimization:  # stepped by _step_schedules, not Lightning
            self._plateau_monitor = scheduler.pop("monitor", None)
        return {"optimizer": optimizer} if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


def counted_as_optimizer_step(optimizer: LightningOptimizer, replay: Callable[[], StepOutputs]) -> StepOutputs:
    """Run a replayed whole step between the two hooks ``LightningOptimizer.step`` itself calls around an update
    (set by Lightning's manual-optimisation loop: they count the step, so ``global_step``, logging intervals,
    ``max_steps`` and checkpoints see it, and time it as the profiler's ``optimizer_step``)."""
    optimizer._on_before_step()
    try:
        return replay()
    finally:
        optimizer._on_after_step()
