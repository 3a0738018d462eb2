"""model.cuda_graphs and cuda_graphs_eval: which batches go through the recorded graphs (full training batches on a
GPU; evaluation batches of a shape seen before, without gradients), the eager fallbacks, and (on a GPU) that a
graphed step and a graphed evaluation compute what the eager ones do."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from tumorcls.models import cuda_graphs
from tumorcls.models.cuda_graphs import GraphedEval, GraphedTraining
from tumorcls.models.lit_module import TumorClassifier


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that says it is on CUDA, so the routing can be tested without a GPU."""

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True


def fake_cuda(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape).as_subclass(FakeCudaTensor)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Replace the recording by a marker: the 'graphed' forward returns the eager result plus 100."""
    recorded: list[tuple[int, ...]] = []

    def record(net: nn.Module, sample: torch.Tensor):
        recorded.append(tuple(sample.shape))
        return lambda x: net(x) + 100.0

    monkeypatch.setattr(cuda_graphs, "record_training_graphs", record)
    return recorded


def test_full_training_batches_replay_the_graph_and_other_batches_run_eagerly(recorder) -> None:
    net = nn.Linear(3, 2)
    graphed = GraphedTraining(net, enabled=True)
    full, short = fake_cuda((8, 3)), fake_cuda((5, 3))
    assert torch.allclose(graphed(full), net(full) + 100.0)  # recorded on the first batch, then replayed
    assert torch.allclose(graphed(short), net(short))  # the last, shorter batch of an epoch
    again = fake_cuda((8, 3))
    assert torch.allclose(graphed(again), net(again) + 100.0)  # every further full batch replays it
    net.eval()
    assert torch.allclose(graphed(full), net(full))  # evaluation never goes through the training graph
    net.train()
    graphed.allowed = False  # a frozen-backbone epoch
    assert torch.allclose(graphed(full), net(full))
    cpu = torch.randn(8, 3)
    graphed.allowed = True
    assert torch.allclose(graphed(cpu), net(cpu))  # a CPU batch
    assert recorder == [(8, 3)]  # recorded once


def test_nothing_is_recorded_when_disabled(recorder) -> None:
    net = nn.Linear(3, 2)
    x = fake_cuda((8, 3))
    assert torch.allclose(GraphedTraining(net, enabled=False)(x), net(x)) and recorder == []


def test_a_failed_recording_trains_on_eagerly_with_one_warning(monkeypatch, caplog) -> None:
    def fail(net: nn.Module, sample: torch.Tensor):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(cuda_graphs, "record_training_graphs", fail)
    net = nn.Linear(3, 2)
    graphed = GraphedTraining(net, enabled=True)
    x = fake_cuda((8, 3))
    with caplog.at_level(logging.WARNING, logger="tumorcls.models.cuda_graphs"):
        assert torch.allclose(graphed(x), net(x)) and torch.allclose(graphed(x), net(x))
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "model.cuda_graphs: recording failed, training eagerly: operation not permitted when stream is capturing"
    ]
    assert graphed.enabled is False


def test_the_classifier_routes_its_training_step_through_the_wrapper(recorder) -> None:
    model = TumorClassifier(backbone="test_efficientnet", pretrained=False, input_size=32, cuda_graphs=True)
    assert model.settings.runtime.cuda_graphs is True and model.hparams.cuda_graphs is True
    x = torch.randn(4, 3, 32, 32)
    model.train()
    model.train_logits(x)  # CPU: eager, nothing recorded
    assert recorder == []
    default = TumorClassifier(backbone="test_efficientnet", pretrained=False, input_size=32)
    assert default._train_forward.enabled is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_a_graphed_training_step_matches_an_eager_one_on_a_gpu(dtype: torch.dtype | None) -> None:
    torch.manual_seed(0)
    eager = TumorClassifier(backbone="test_efficientnet", pretrained=False, input_size=32, drop_rate=0.0).cuda()
    graphed = TumorClassifier(backbone="test_efficientnet", pretrained=False, input_size=32, drop_rate=0.0)
    graphed.load_state_dict(eager.state_dict())
    graphed = graphed.cuda()
    graphed._train_forward.enabled = True
    eager.train(), graphed.train()
    x, y = torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 4, (8,), device="cuda")
    for step in range(3):  # the first step records, the next ones replay
        losses, grads = [], []
        for model in (eager, graphed):
            model.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model._loss(model.train_logits(x + step), y)
            loss.backward()
            losses.append(loss.detach())
            grads.append(torch.cat([p.grad.flatten() for p in model.net.parameters()]))
        tol = 2e-2 if dtype else 1e-4
        assert torch.allclose(losses[0], losses[1], rtol=tol, atol=tol)
        assert (grads[0] - grads[1]).norm() / grads[0].norm() < tol
    assert graphed._train_forward.graphed is not None  # the graphed path really ran


@pytest.fixture
def eval_recorder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Replace the evaluation recording by a marker: the 'graphed' forward returns the eager result plus 100."""
    recorded: list[tuple[int, ...]] = []

    def record(net: nn.Module, sample: torch.Tensor):
        recorded.append(tuple(sample.shape))
        weight, bias = net.weight.data, net.bias.data  # a recording reads the storage it saw, as a graph does
        return lambda x: x @ weight.T + bias + 100.0

    monkeypatch.setattr(cuda_graphs, "record_eval_graph", record)
    return recorded


def test_evaluation_replays_a_graph_per_batch_shape_after_one_eager_call(eval_recorder) -> None:
    net = nn.Linear(3, 2).eval()
    graphed = GraphedEval(net, enabled=True)
    full, short = fake_cuda((8, 3)), fake_cuda((5, 3))
    with torch.no_grad():
        assert torch.allclose(graphed(full), net(full))  # the first batch of a shape: eager (the warm-up)
        assert torch.allclose(graphed(full), net(full) + 100.0)  # the second: recorded and replayed
        assert torch.allclose(graphed(short), net(short)) and torch.allclose(graphed(short), net(short) + 100.0)
        assert torch.allclose(graphed(full), net(full) + 100.0)
        assert eval_recorder == [(8, 3), (5, 3)]  # one recording per shape
        cpu = torch.randn(8, 3)
        assert torch.allclose(graphed(cpu), net(cpu))  # a CPU batch
        net.train()
        assert torch.allclose(graphed(full), net(full))  # training mode: never
        net.eval()
        net.weight.data = net.weight.data * 2  # new parameter storage: the old recordings would read stale memory
        assert torch.allclose(graphed(full), net(full) + 100.0)  # dropped and recorded again, on the new storage
        assert eval_recorder == [(8, 3), (5, 3), (8, 3)] and len(graphed.graphs) == 1
    assert torch.allclose(graphed(full), net(full))  # gradients enabled: never
    assert torch.allclose(GraphedEval(net, enabled=False)(full), net(full))


def test_the_classifier_evaluates_through_the_eval_graphs_only_when_asked(eval_recorder) -> None:
    model = TumorClassifier(backbone="test_efficientnet", pretrained=False, input_size=32, cuda_graphs_eval=True)
    model.eval()
    assert model._eval_forward.enabled is True
    default = TumorClassifier(backbone="test_efficientnet", pretrained=False, input_size=32)
    assert default._eval_forward.enabled is False and default.hparams.cuda_graphs_eval is False
    compiled = TumorClassifier(
        backbone="test_efficientnet", pretrained=False, input_size=32, cuda_graphs_eval=True, compile=True
    )
    assert compiled._eval_forward.enabled is False  # torch.compile's own graphs instead
    with torch.no_grad():
        model.eval_logits(torch.randn(2, 3, 32, 32))  # CPU: eager, nothing recorded
    assert eval_recorder == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_graphed_evaluation_matches_eager_evaluation_on_a_gpu(dtype: torch.dtype | None) -> None:
    model = TumorClassifier(
        backbone="test_efficientnet", pretrained=False, input_size=32, cuda_graphs_eval=True, tta=True
    )
    model = model.cuda().eval()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        eager = model.net(model._memory_format(x)).float()
        eager = (eager + model.net(model._memory_format(torch.flip(x, dims=[3]))).float()) / 2
        outs = [model.eval_logits(x + 0).float() for _ in range(3)]  # eager warm-up, then recorded and replayed
    assert len(model._eval_forward.graphs) >= 1  # the graphed path really ran
    tol = 2e-2 if dtype else 1e-4
    for out in outs:
        assert torch.allclose(out, eager, rtol=tol, atol=tol)
