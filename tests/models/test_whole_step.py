"""model.cuda_graphs=step: the whole training step under manual optimisation, on CPU. The manual step trains exactly
as automatic optimisation does (same losses, weights, learning rates and global_step after a few steps, with either
schedule); replayed steps (a stand-in graph that reruns the recorded step, since a real one needs a GPU) are counted
and scheduled the same; the schedulers steer the tensor learning rates a recorded step reads; and the routing:
which batches replay, which run eagerly. GPU-only: a real recorded step matches the eager one."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.models.test_cuda_graphs import fake_cuda
from tumorcls.models import cuda_graphs
from tumorcls.models.cuda_graphs import WholeStepGraph
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.models.optim import (
    OptimizerSettings,
    SchedulerSettings,
    build_optimizer,
    build_scheduler,
    rates_as_tensors,
)

BATCHES, BATCH, EPOCHS = 3, 8, 3


class StepLog(L.Callback):
    """Every step's loss, the head's learning rate after it, and the global step."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        lr = float(trainer.optimizers[0].param_groups[-1]["lr"])
        self.rows.append((float(loss), lr, trainer.global_step))


def loaders(constant_val: bool) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(BATCHES * BATCH, 3, 32, 32, generator=g), torch.randint(0, 4, (BATCHES * BATCH,), generator=g)
    vx, vy = (x[:1].repeat(8, 1, 1, 1), torch.zeros(8, dtype=torch.long)) if constant_val else (x[:8], y[:8])
    return DataLoader(TensorDataset(x, y), batch_size=BATCH), DataLoader(TensorDataset(vx, vy), batch_size=8)


def fit(cuda_graphs: bool | str, **model_kwargs) -> tuple[TumorClassifier, L.Trainer, StepLog]:
    torch.manual_seed(0)
    model = TumorClassifier(
        backbone="test_efficientnet", pretrained=False, input_size=32, cuda_graphs=cuda_graphs, **model_kwargs
    )
    train, val = loaders(model_kwargs.get("scheduler") == "plateau")
    steps = StepLog()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=EPOCHS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[steps],
    )
    torch.manual_seed(1)  # dropout draws the same masks in both runs
    trainer.fit(model, train, val)
    return model, trainer, steps


def assert_same_training(manual: tuple, automatic: tuple) -> None:
    (m_model, m_trainer, m_steps), (a_model, a_trainer, a_steps) = manual, automatic
    assert m_model.automatic_optimization is False and a_model.automatic_optimization is True
    assert m_trainer.global_step == a_trainer.global_step == BATCHES * EPOCHS
    assert [r[2] for r in m_steps.rows] == [r[2] for r in a_steps.rows] == list(range(1, BATCHES * EPOCHS + 1))
    for (m_loss, m_lr, _), (a_loss, a_lr, _) in zip(m_steps.rows, a_steps.rows, strict=True):
        assert m_loss == pytest.approx(a_loss, rel=1e-5, abs=1e-6)
        assert m_lr == pytest.approx(a_lr, rel=1e-6)
    m_rates = [float(g["lr"]) for g in m_trainer.optimizers[0].param_groups]
    assert m_rates == pytest.approx([float(g["lr"]) for g in a_trainer.optimizers[0].param_groups], rel=1e-6)
    a_state = a_model.net.state_dict()
    for name, value in m_model.net.state_dict().items():
        assert torch.allclose(value.float(), a_state[name].float(), rtol=1e-4, atol=1e-6), name


@pytest.mark.slow  # two trainings per case
@pytest.mark.parametrize(
    ("schedule", "kwargs"),
    [
        ("cosine", {"scheduler": "cosine", "lr": 3e-3, "warmup_epochs": 1, "min_lr": 1e-5}),
        ("plateau", {"scheduler": "plateau", "lr": 1e-5, "plateau_patience": 0, "plateau_factor": 0.5}),
    ],
)
def test_the_manual_step_trains_as_automatic_optimisation_does(schedule: str, kwargs: dict) -> None:
    manual, automatic = fit("step", **kwargs), fit(False, **kwargs)
    assert_same_training(manual, automatic)
    lrs = [r[1] for r in manual[2].rows]
    if schedule == "cosine":  # changed every step: warm-up up, then down
        assert len(set(lrs)) == len(lrs)
    else:  # the constant validation set never improves: ReduceLROnPlateau halves the rate after epochs 2 and 3
        assert lrs == pytest.approx([1e-5] * 2 * BATCHES + [5e-6] * BATCHES, rel=1e-6)
        assert float(manual[1].optimizers[0].param_groups[-1]["lr"]) == pytest.approx(2.5e-6, rel=1e-6)


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Route CPU batches through the whole-step graph, with a stand-in for the recording: each replay reruns the
    recorded step (the static inputs, the raw optimizer), as a CUDA graph replays it; counts the replays."""
    calls: list[int] = []

    def record(step):  # noqa: ANN001, ANN202
        def replay():  # noqa: ANN202
            calls.append(1)
            return step()

        return replay

    monkeypatch.setattr(WholeStepGraph, "routes", lambda self, x: self.enabled and self.allowed)
    monkeypatch.setattr(cuda_graphs, "record_step_graph", record)
    return calls


@pytest.mark.slow  # two trainings per case
def test_replayed_steps_are_counted_and_scheduled_as_optimizer_steps(replays: list[int]) -> None:
    kwargs = {"scheduler": "cosine", "lr": 3e-3, "warmup_epochs": 1, "min_lr": 1e-5}
    manual = fit("step", **kwargs)
    assert len(replays) == BATCHES * EPOCHS - manual[0]._step_graph.warmup  # every full batch after the warm-up
    assert_same_training(manual, fit(False, **kwargs))


def test_schedulers_fill_the_tensor_rates_a_recorded_step_reads() -> None:
    net = nn.Module()
    net.backbone, net.head = nn.Linear(3, 4), nn.Linear(4, 2)
    settings = OptimizerSettings("adamw", lr=1e-3, backbone_lr_mult=0.5)
    opt = build_optimizer(net, settings, graph_device=torch.device("cpu"))
    rates = [group["lr"] for group in opt.param_groups]
    assert all(isinstance(r, torch.Tensor) and r.device.type == "cpu" for r in rates)
    assert rates[0] is not rates[1] and [float(r) for r in rates] == pytest.approx([5e-4, 1e-3])
    plateau = build_scheduler(opt, SchedulerSettings("plateau", plateau_factor=0.5, plateau_patience=0), 1e-3)
    for value in (0.5, 0.5):  # no improvement in the second epoch: reduced
        plateau["scheduler"].step(value)
    assert [g["lr"] is r for g, r in zip(opt.param_groups, rates)] == [True, True]  # the same tensors, filled
    assert [float(r) for r in rates] == pytest.approx([2.5e-4, 5e-4])
    cosine = build_scheduler(opt, SchedulerSettings("cosine", min_lr=0.0), float(rates[1]), total_steps=4)
    cosine["scheduler"].step()
    cosine["scheduler"].step()
    assert opt.param_groups[1]["lr"] is rates[1] and float(rates[1]) == pytest.approx(5e-4 * 0.5, rel=1e-5)
    with pytest.raises(ValueError, match=r"^model.cuda_graphs=step needs model.optimizer adam or adamw"):
        build_optimizer(net, OptimizerSettings("sgd"), graph_device=torch.device("cpu"))


def test_rates_restored_as_floats_become_device_tensors_again() -> None:
    net = nn.Module()
    net.backbone, net.head = nn.Linear(3, 4), nn.Linear(4, 2)
    settings = OptimizerSettings("adam", lr=2e-3, backbone_lr_mult=0.5)
    automatic = build_optimizer(net, settings)  # a checkpoint of automatic optimisation: float rates
    resumed = build_optimizer(net, settings, graph_device=torch.device("cpu"))
    resumed.load_state_dict(automatic.state_dict())
    assert [type(g["lr"]) for g in resumed.param_groups] == [float, float]
    rates_as_tensors(resumed, torch.device("cpu"))
    rates = [g["lr"] for g in resumed.param_groups]
    assert all(isinstance(r, torch.Tensor) and r.dtype == torch.float64 for r in rates) and rates[0] is not rates[1]
    assert [float(r) for r in rates] == [1e-3, 2e-3] and [g["capturable"] for g in resumed.param_groups] == [False] * 2


def routed(graph: WholeStepGraph, x: torch.Tensor, y: torch.Tensor, state: tuple) -> tuple[float, bool]:
    """One call of the graph with markers: the eager step returns 1, the recorded one 2; ``state`` stands for the
    parameters the recording reads."""
    one = lambda a, b: (torch.tensor(1.0), torch.ones(len(a)))  # noqa: E731
    two = lambda a, b: (torch.tensor(2.0), torch.full((len(a),), 2.0))  # noqa: E731
    (loss, _), replayed = graph(x, y, eager=one, graphed=two, state=lambda: state)
    return float(loss), replayed


def test_whole_step_routing_warm_up_record_replay_and_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded: list[int] = []
    monkeypatch.setattr(cuda_graphs, "record_step_graph", lambda step: recorded.append(1) or step)
    monkeypatch.setattr(cuda_graphs, "storage_pointers", lambda tensors: tuple(id(t) for t in tensors))
    params = (torch.zeros(1),)
    graph = WholeStepGraph(enabled=True, warmup=2)
    full, y = fake_cuda((8, 3)), torch.zeros(8, dtype=torch.long)
    assert [routed(graph, full, y, params) for _ in range(2)] == [(1.0, False)] * 2  # the eager warm-up
    assert recorded == [] and routed(graph, full, y, params) == (2.0, True)  # recorded, then replayed
    assert routed(graph, full, y, params) == (2.0, True) and recorded == [1]  # recorded once
    assert routed(graph, fake_cuda((5, 3)), torch.zeros(5, dtype=torch.long), params) == (1.0, False)  # short batch
    assert routed(graph, torch.randn(8, 3), y, params) == (1.0, False)  # a CPU batch
    assert routed(graph, full, y, (torch.zeros(1),)) == (1.0, False)  # the parameters moved
    graph.allowed = False  # a frozen-backbone epoch
    assert routed(graph, full, y, params) == (1.0, False)
    assert routed(WholeStepGraph(enabled=False, warmup=0), full, y, params) == (1.0, False)


def test_a_failed_whole_step_recording_trains_on_eagerly_with_one_warning(monkeypatch, caplog) -> None:  # noqa: ANN001
    def fail(step):  # noqa: ANN001, ANN202
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\ndetail")

    monkeypatch.setattr(cuda_graphs, "record_step_graph", fail)
    graph = WholeStepGraph(enabled=True, warmup=0)
    full, y = fake_cuda((8, 3)), torch.zeros(8, dtype=torch.long)
    with caplog.at_level(logging.WARNING, logger="tumorcls.models.cuda_graphs"):
        assert [routed(graph, full, y, (torch.zeros(1),)) for _ in range(2)] == [(1.0, False)] * 2
    assert [r.getMessage() for r in caplog.records] == [
        "model.cuda_graphs=step: recording failed, training eagerly: "
        "CUDA error: operation not permitted when stream is capturing"
    ]
    assert graph.enabled is False


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@needs_gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_recorded_whole_step_trains_as_the_eager_one_on_a_gpu(precision: str, monkeypatch) -> None:  # noqa: ANN001
    def on_gpu(graph_on: bool) -> tuple[TumorClassifier, L.Trainer]:
        torch.manual_seed(0)
        model = TumorClassifier(
            backbone="test_efficientnet", pretrained=False, input_size=32, cuda_graphs="step", drop_rate=0.0
        )
        model._step_graph.enabled = graph_on
        train, val = loaders(False)
        trainer = L.Trainer(
            accelerator="gpu", devices=1, max_epochs=2, precision=precision, logger=False, enable_checkpointing=False
        )
        trainer.fit(model, train, val)
        return model, trainer

    (graphed, g_trainer), (eager, e_trainer) = on_gpu(True), on_gpu(False)
    assert graphed._step_graph.replay is not None  # the graph really ran
    assert g_trainer.global_step == e_trainer.global_step == 2 * BATCHES
    tol = 3e-2 if precision.startswith("bf16") else 1e-3
    g_state, e_state = graphed.net.state_dict(), eager.net.state_dict()
    for name, value in e_state.items():
        if value.is_floating_point():
            assert (g_state[name] - value).norm() <= tol * (value.norm() + 1e-6), name


@pytest.mark.parametrize(
    ("precision", "world_size", "kept"),
    [("bf16-mixed", 1, True), ("32-true", 1, True), ("16-mixed", 1, False), ("bf16-mixed", 2, False)],
)
def test_the_graph_is_left_out_under_fp16_and_ddp(precision: str, world_size: int, kept: bool, caplog) -> None:  # noqa: ANN001
    model = TumorClassifier(backbone="test_efficientnet", pretrained=False, input_size=32, cuda_graphs="step")
    model._trainer = type("T", (), {"precision": precision, "world_size": world_size})()
    with caplog.at_level(logging.WARNING, logger="tumorcls.models.lit_module"):
        model.on_fit_start()
    assert model._step_graph.enabled is kept and model.automatic_optimization is False  # the eager manual step
    assert [r.getMessage() for r in caplog.records if r.name == "tumorcls.models.lit_module"] == (
        []
        if kept
        else [f"model.cuda_graphs=step: precision {precision}, {world_size} processes: the step runs eagerly"]
    )
