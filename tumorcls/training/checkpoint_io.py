"""Checkpoint files written atomically and off the training thread.

Atomic: a crash or a SIGKILL while saving never leaves a truncated ``.ckpt`` under the final name (the previous
one stays until the new one is complete). Off the training thread: serialising and fsyncing a checkpoint of tens of
MB takes longer than a GPU epoch of this data set, and two are saved per epoch. So a save copies the checkpoint's
tensors to host memory (a snapshot later optimizer steps cannot change) and hands the write to one background thread.
The next save, load or removal, :meth:`AtomicCheckpointIO.wait` and the strategy's teardown at the end of
``fit``/``test`` wait for that write, and raise its error if it failed.

A failed write is one line naming the file (``cannot write '.../last.ckpt': disk full``): the checkpoint is
serialised through a Python file object, whose failed ``write`` raises ``OSError`` with its errno, which
:func:`tumorcls.atomic_io.atomic_write` turns into that line. (``torch.save`` given a path writes through its own C++
writer, which reports a full disk as ``[enforce fail at inline_container.cc] unexpected pos ...``, a traceback.)

Why not Lightning's ``AsyncCheckpointIO`` wrapped around an atomic ``TorchCheckpointIO`` (tried with Lightning 2.6;
the tests in ``tests/training/test_checkpoint_io_background.py`` show each point but the GPU one, which is read from
its ``_clone_tensor``): its ``save_checkpoint`` queues a write without waiting for the one before, so writes pile up
with a snapshot each in memory; ``remove_checkpoint`` and ``load_checkpoint`` do not wait for the queued write of
the same file, so a checkpoint that ``ModelCheckpoint`` removed comes back when its write lands; a failed write is
raised again at every later save and at teardown; its snapshot is ``tensor.detach().clone()``, a copy on the GPU
(GPU memory, and the device-to-host copy left to the writer), which also unties tied weights; and it does not
pickle (its executor), which spawned DDP needs. Ours keeps one write in flight, in order, from a host snapshot,
waits before a load or a removal, raises an error once, and pickles.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tumorcls.atomic_io import atomic_write

_StorageKey = tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype, torch.device]


def host_snapshot(checkpoint: Any) -> Any:
    """A copy of ``checkpoint`` whose dicts, lists and tuples are new and whose tensors are detached clones in CPU
    memory. Tensors that are the same view of one storage (tied weights) stay shared, as ``torch.save`` keeps them."""
    copies: dict[_StorageKey, torch.Tensor] = {}
    cuda_devices: set[torch.device] = set()

    def to_host(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        copy = copies.get(key) if key is not None else None
        if copy is None:
            if tensor.is_cuda:  # into pinned memory, asynchronously; one synchronize per device below
                cuda_devices.add(tensor.device)
                copy = tensor.detach().to("cpu", non_blocking=True)
            else:
                copy = tensor.detach().to("cpu", copy=True)
            if key is not None:
                copies[key] = copy
        if isinstance(tensor, torch.nn.Parameter):
            return torch.nn.Parameter(copy, requires_grad=tensor.requires_grad)
        return copy

    snapshot = apply_to_collection(checkpoint, torch.Tensor, to_host)
    for device in cuda_devices:
        torch.cuda.synchronize(device)
    return snapshot


def _storage_key(tensor: torch.Tensor) -> _StorageKey | None:
    if tensor.layout != torch.strided or tensor.device.type == "meta" or tensor.numel() == 0:
        return None
    return (
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
        tensor.dtype,
        tensor.device,
    )


def save_to_file(checkpoint: Any, path: Path) -> None:
    """``torch.save`` through a Python file object: a failed write raises ``OSError`` with its errno (ENOSPC...)."""
    with open(path, "wb") as fh:
        torch.save(checkpoint, fh)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves go to a temporary file that is renamed over the target; with ``background``
    (the default) the write runs on a single worker thread, at most one at a time, in the order of the saves.

    ``background=False`` writes in the caller's thread, from the checkpoint as given (no snapshot).
    """

    def __init__(self, background: bool = True) -> None:
        super().__init__()
        self.background = background
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[Path] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if not self.background:
            atomic_write(path, lambda tmp: save_to_file(checkpoint, tmp))
            return
        snapshot = host_snapshot(checkpoint)  # while the previous write may still run: at most two in memory
        self.wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending = self._executor.submit(atomic_write, path, lambda tmp: save_to_file(snapshot, tmp))

    def wait(self) -> None:
        """Block until the write in flight, if any, is on disk; raise its error (once) if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()  # re-raises the write's own exception object

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        self.wait()  # the file may be the one being written
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        self.wait()  # a removal must not race the write of the same file
        super().remove_checkpoint(path)

    def teardown(self) -> None:
        """Called by the strategy's teardown at the end of ``fit``/``test``: the last write lands before they return.
        The object stays usable: a later save starts a new worker."""
        try:
            self.wait()
        finally:
            executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=True)
        super().teardown()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_executor"] = None  # threads and futures do not pickle; the copy starts its own worker
        state["_pending"] = None
        return state
