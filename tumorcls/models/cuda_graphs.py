"""The training forward and backward of the network replayed as CUDA graphs (``model.cuda_graphs``).

At batch 32 an EfficientNet-B0 step launches about a thousand small kernels, and on a fast GPU the step waits
on the CPU that launches them. ``torch.cuda.make_graphed_callables`` records the network's forward and
backward once and replays each as one graph launch; unlike ``torch.compile(mode="reduce-overhead")`` it compiles
nothing, so it pays off even in a job of a minute. A graph replays fixed shapes only: batches of the recorded
shape (every full batch) replay it, any other batch (the last, shorter one of an epoch), evaluation and a
frozen-backbone warm-up run the network eagerly; both paths share the same parameters.

The recording is made on the first full training batch, under the autocast the step runs in (bf16-mixed records a
bf16 graph; autocast's weight cache is switched off for the recording, as torch requires).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from tumorcls.errors import first_line

log = logging.getLogger(__name__)


def _autocast_without_cache(device_type: str) -> torch.autocast:
    """The autocast in effect now (possibly disabled), with its weight cache off."""
    enabled = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type)
    return torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=False)


def record_training_graphs(net: nn.Module, sample: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The graphed training forward of ``net`` for inputs shaped (and laid out) like ``sample``; ``net``'s own
    ``forward`` is left as it was."""
    try:
        with _autocast_without_cache(sample.device.type):
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
