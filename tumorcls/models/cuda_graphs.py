"""The network's work replayed as CUDA graphs: the training forward and backward (``model.cuda_graphs``: true,
or auto on one GPU), the whole training step (``model.cuda_graphs=step``) and evaluation (``cuda_graphs_eval``).

At batch 32 an EfficientNet-B0 step launches about a thousand small kernels, and on a fast GPU the step waits
on the CPU that launches them. ``torch.cuda.make_graphed_callables`` records the network's forward and
backward once and replays each as one graph launch; unlike ``torch.compile(mode="reduce-overhead")`` it compiles
nothing, so it pays off even in a job of a minute. A graph replays fixed shapes only: batches of the recorded
shape (every full batch) replay it, any other batch (the last, shorter one of an epoch), evaluation and a
frozen-backbone warm-up run the network eagerly; both paths share the same parameters.

The recording is made on the first full training batch, under the autocast the step runs in (bf16-mixed records a
bf16 graph; autocast's weight cache is switched off for the recording, as torch requires).

:class:`WholeStepGraph` records forward, loss, backward and the optimizer's step as one graph (one launch per step:
none of the per-parameter gradient accumulation, optimizer launches or Lightning's per-step hooks around them);
the first full batches train eagerly on a side stream as its warm-up (real steps: cuDNN picks its kernels and the
optimizer makes its state there), then the next one is recorded and replayed. The optimizer must be capturable
with its learning rates as device tensors (models.optim.build_optimizer with ``graph_device``). :class:`GraphedEval`
replays the evaluation forward (no gradients) for each batch shape it has seen twice. Both check, before each
replay, that the parameters still live where they were recorded (a swap of parameter storage would otherwise go
unseen) and fall back to the eager path, as they do for any batch, device or state they were not recorded for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

from tumorcls.errors import first_line

log = logging.getLogger(__name__)


def autocast_without_cache(device_type: str) -> torch.autocast:
    """The autocast in effect now (possibly disabled), with its weight cache off."""
    enabled = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type)
    return torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=False)


def record_training_graphs(net: nn.Module, sample: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The graphed training forward of ``net`` for inputs shaped (and laid out) like ``sample``; ``net``'s own
    ``forward`` is left as it was."""
    try:
        with autocast_without_cache(sample.device.type):
            torch.cuda.make_graphed_callables(net, (sample.detach().clone(),))
        return net.forward  # make_graphed_callables replaces forward on the instance ...
    finally:
        net.__dict__.pop("forward", None)  # ... the class's forward serves every other shape


class GraphedTraining:
    """Calls ``net`` for a training step: through CUDA graphs when the batch is a full one on a GPU and
    ``enabled``, eagerly otherwise. ``allowed`` is cleared while part of the network is frozen (the graphs
    compute every parameter's gradient and the BatchNorm statistics of training mode)."""

    def __init__(self, net: nn.Module, enabled: bool) -> None:
        self.net = net
        self.enabled = enabled
        self.allowed = True
        self.graphed: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.key: tuple | None = None  # (shape, strides, dtype, device) of the recorded input

    def _key(self, x: torch.Tensor) -> tuple:
        return tuple(x.shape), x.stride(), x.dtype, x.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.enabled and self.allowed and x.is_cuda and self.net.training):
            return self.net(x)
        if self.graphed is None:
            try:
                self.graphed, self.key = record_training_graphs(self.net, x), self._key(x)
            except (RuntimeError, AssertionError) as exc:  # a network or setting graphs cannot hold: train on
                self.enabled = False
                log.warning("model.cuda_graphs: recording failed, training eagerly: %s", first_line(exc))
                return self.net(x)
            log.info("training forward/backward recorded as CUDA graphs for batches of shape %s", tuple(x.shape))
        if self._key(x) != self.key:
            return self.net(x)
        return self.graphed(x)


def storage_pointers(tensors: Iterable[torch.Tensor]) -> tuple[int, ...]:
    """Where each tensor's data lives: a graph reads parameters, buffers and optimizer state by address."""
    return tuple(t.data_ptr() for t in tensors)


def autocast_key(device_type: str) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


StepOutputs = tuple[torch.Tensor, torch.Tensor]  # (loss, logits), detached


def record_step_graph(step: Callable[[], StepOutputs]) -> Callable[[], StepOutputs]:
    """``step`` (reading static inputs) recorded as one CUDA graph: nothing runs now; each call of the result
    replays the recording and returns its outputs (the same tensors every time, overwritten by the next replay)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # a loader's pinning thread may not abort it
        outputs = step()

    def replay() -> StepOutputs:
        graph.replay()
        return outputs

    return replay


class WholeStepGraph:
    """A training step (forward, loss, backward, optimizer step) through one CUDA graph (``model.cuda_graphs=step``)
    for full batches on a GPU once ``warmup`` of them have trained eagerly; every other batch, a frozen-backbone
    epoch (``allowed`` cleared), a failed recording or moved parameters run the eager step."""

    def __init__(self, enabled: bool, warmup: int = 3) -> None:
        self.enabled = enabled
        self.allowed = True
        self.warmup = warmup
        self.eager_full_batches = 0
        self.replay: Callable[[], StepOutputs] | None = None
        self.key: tuple | None = None
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pointers: tuple[int, ...] = ()

    @staticmethod
    def _key(x: torch.Tensor, y: torch.Tensor) -> tuple:
        return tuple(x.shape), x.stride(), x.dtype, x.device, tuple(y.shape), autocast_key(x.device.type)

    def routes(self, x: torch.Tensor) -> bool:
        """Whether ``x`` may go through the graph at all (a GPU batch, enabled and allowed)."""
        return self.enabled and self.allowed and x.is_cuda

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        eager: Callable[[torch.Tensor, torch.Tensor], StepOutputs],
        graphed: Callable[[torch.Tensor, torch.Tensor], StepOutputs],
        state: Callable[[], Iterable[torch.Tensor]],
        count: Callable[[Callable[[], StepOutputs]], StepOutputs] = lambda replay: replay(),
    ) -> tuple[StepOutputs, bool]:
        """One step of ``x``/``y``: (loss, logits) and whether the graph ran it. ``eager`` is the step as Lightning
        counts it; ``graphed`` the same step on static inputs, for the recording; ``state`` the tensors the
        recording reads by address (parameters and buffers; the optimizer's state only changes in place);
        ``count`` runs a replay the way the trainer counts an optimizer step."""
        if not self.routes(x):
            return eager(x, y), False
        if self.replay is None:
            if self.eager_full_batches < self.warmup:
                self.eager_full_batches += 1
                return on_side_stream(lambda: eager(x, y), x.device), False
            if not self._record(x, y, graphed, state):
                return eager(x, y), False
        if self._key(x, y) != self.key or storage_pointers(state()) != self.pointers:
            return eager(x, y), False
        static_x, static_y = self.static
        static_x.copy_(x)
        static_y.copy_(y)
        loss, logits = count(self.replay)
        return (loss.clone(), logits.clone()), True

    def _record(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        graphed: Callable[[torch.Tensor, torch.Tensor], StepOutputs],
        state: Callable[[], Iterable[torch.Tensor]],
    ) -> bool:
        static_x, static_y = x.detach().clone(), y.detach().clone()
        try:
            self.replay = record_step_graph(lambda: graphed(static_x, static_y))
        except (RuntimeError, AssertionError) as exc:  # a network, optimizer or setting a graph cannot hold
            self.enabled = False
            log.warning("model.cuda_graphs=step: recording failed, training eagerly: %s", first_line(exc))
            return False
        self.static, self.key = (static_x, static_y), self._key(x, y)
        self.pointers = storage_pointers(state())
        log.info("the whole training step recorded as one CUDA graph for batches of shape %s", tuple(x.shape))
        return True


def on_side_stream(run: Callable[[], StepOutputs], device: torch.device) -> StepOutputs:
    """``run`` on a side CUDA stream, ordered after and before the current one (the warm-up torch asks for before
    a recording); on other devices simply ``run``."""
    if device.type != "cuda":
        return run()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        out = run()
    torch.cuda.current_stream(device).wait_stream(side)
    return out


def record_eval_graph(net: nn.Module, sample: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net``'s forward on inputs like ``sample`` recorded as one CUDA graph, under the autocast in effect (its
    cache off); the result copies its input in, replays, and returns the (reused) output tensor."""
    static_x = sample.detach().clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"), autocast_without_cache(sample.device.type):
        static_out = net(static_x)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static_x.copy_(x)
        graph.replay()
        return static_out

    return replay


class GraphedEval:
    """Calls ``net`` for evaluation (eval mode, no gradients): through a CUDA graph recorded for each input shape
    (and autocast, inference mode) seen twice on a GPU (the first call is the eager warm-up), eagerly otherwise."""

    MAX_GRAPHS = 4  # the full and the last batch of validation and test, with and without TTA's flip

    def __init__(self, net: nn.Module, enabled: bool) -> None:
        self.net = net
        self.enabled = enabled
        self.graphs: dict[tuple, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.seen: set[tuple] = set()
        self.pointers: tuple[int, ...] = ()

    def _key(self, x: torch.Tensor) -> tuple:
        return (
            tuple(x.shape),
            x.stride(),
            x.dtype,
            x.device,
            autocast_key(x.device.type),
            torch.is_inference_mode_enabled(),
        )

    def _state(self) -> tuple[int, ...]:
        return storage_pointers([*self.net.parameters(), *self.net.buffers()])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.enabled and x.is_cuda and not self.net.training and not torch.is_grad_enabled()):
            return self.net(x)
        key = self._key(x)
        if self.graphs and self._state() != self.pointers:  # parameters moved: recordings read stale memory
            self.graphs.clear()
        if key not in self.graphs:
            if key not in self.seen or len(self.graphs) >= self.MAX_GRAPHS:
                self.seen.add(key)
                return self.net(x)
            try:
                self.graphs[key] = record_eval_graph(self.net, x)
            except (RuntimeError, AssertionError) as exc:
                self.enabled = False
                log.warning("model.cuda_graphs_eval: recording failed, evaluating eagerly: %s", first_line(exc))
                return self.net(x)
            self.pointers = self._state()
        return self.graphs[key](x).clone()
