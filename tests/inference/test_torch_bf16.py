"""The checkpoint backend's bf16 switch: bfloat16 autocast only on CUDA and only when asked for (the float32
reference otherwise), float64 probabilities either way, and the precision recorded for metrics.json saying which."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.tiny_model import synthetic_batch, tiny_checkpoint
from tumorcls.evaluation.loop import precision_of
from tumorcls.inference.backends.torch_checkpoint import TorchPredictor, autocast_dtype


def test_bf16_is_chosen_only_on_cuda_and_only_when_asked() -> None:
    assert autocast_dtype("cuda", True) is torch.bfloat16
    assert autocast_dtype("cuda", False) is None  # the default: the float32 reference
    assert autocast_dtype("cpu", True) is None  # ignored on CPU: float32 there


def test_on_cpu_the_bf16_switch_changes_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    ckpt = tiny_checkpoint(tmp_path_factory)
    images, _ = synthetic_batch(2, seed=5)
    plain = TorchPredictor.from_file(ckpt, "cpu")
    asked = TorchPredictor.from_file(ckpt, "cpu", bf16=True)
    assert asked.autocast_dtype is None and precision_of(asked) == precision_of(plain) == "float32"
    probs = asked.predict_proba(images)
    assert probs.dtype == np.float64 and np.array_equal(probs, plain.predict_proba(images))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast is for CUDA")
def test_bf16_on_a_gpu_stays_close_to_float32_and_says_so(tmp_path_factory: pytest.TempPathFactory) -> None:
    ckpt = tiny_checkpoint(tmp_path_factory)
    images, _ = synthetic_batch(16, seed=5)
    fp32 = TorchPredictor.from_file(ckpt, "cuda")
    bf16 = TorchPredictor.from_file(ckpt, "cuda", bf16=True)
    assert bf16.autocast_dtype is torch.bfloat16
    assert precision_of(bf16) == "bfloat16 autocast (float32 weights)" and "bfloat16" not in precision_of(fp32)
    a, b = fp32.predict_proba(images), bf16.predict_proba(images)
    assert b.dtype == np.float64 and np.allclose(b.sum(axis=1), 1.0)
    assert np.abs(a - b).max() < 5e-2 and (a.argmax(1) == b.argmax(1)).mean() >= 0.95
