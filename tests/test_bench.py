"""The benchmark command runs end to end on CPU with a tiny model and writes every figure it promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tumorcls.bench import train_eval as bench

TINY = ["--device", "cpu", "--model", "test_efficientnet", "--size", "32", "--batch-size", "4", "--steps", "2"]
TINY += ["--warmup", "1", "--repeats", "2", "--images", "8", "--threads", "2"]


def test_bench_on_cpu_writes_positive_figures_and_the_expected_keys(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = [*TINY, "--parts", "train,eval,data", "--recipe", "--workers", "0", "--recipe-epochs", "1"]
    args += ["--recipe-train-images", "8", "--recipe-val-images", "4", "--json", str(out)]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"machine", "config", "train", "eval", "data", "recipe"}
    machine = result["machine"]
    for key in ("platform", "nproc", "cpu_model", "gpu", "torch", "date", "load_average"):
        assert key in machine
    assert machine["gpu"] is None and machine["torch"] == torch.__version__
    assert result["config"]["device"] == "cpu" and result["config"]["precision"] == "32"
    for part in ("train", "eval"):
        assert result[part]["images_per_s"] > 0 and len(result[part]["repeats"]) == 2
    assert list(result["data"]["by_workers"]) == ["workers=0"]
    assert result["data"]["images_per_s"] == result["data"]["by_workers"]["workers=0"]["images_per_s"] > 0
    recipe = result["recipe"]
    assert recipe["fit_seconds"] > 0 and recipe["epochs"] == 1
    assert (recipe["train_images"], recipe["val_images"]) == (8, 4)
    for part in ("train", "eval", "data", "recipe"):
        assert result[part]["peak_rss_mib"] > 0 and result[part]["peak_gpu_mib"] is None
    table = capsys.readouterr().out
    assert "train" in table and "data (workers=0)" in table and "recipe fit (1 ep)" in table


def test_in_memory_datamodule_serves_augmented_normalised_batches() -> None:
    images, labels = bench.synthetic_images(6, 32)
    dm = bench.in_memory_datamodule((images, labels), (images[:2], labels[:2]), 32, 4, num_workers=0)
    # the configured augmentation (3 transforms) runs before resize + normalise + to-tensor
    assert len(dm.train_transform.transforms) == 6 and len(dm.eval_transform.transforms) == 3
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (4,)
    xv, yv = next(iter(dm.val_dataloader()))
    expected = (images[0, 0, 0, 0] / 255.0 - 0.485) / 0.229
    assert xv.shape == (2, 3, 32, 32) and torch.equal(yv, torch.from_numpy(labels[:2]))
    assert xv[0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-5)


def test_synthetic_images_are_uint8_rgb_with_balanced_labels() -> None:
    images, labels = bench.synthetic_images(8, 16)
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [2, 2, 2, 2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys) -> None:
    assert bench.main([*TINY, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --device cuda asked for, but torch sees no CUDA device (torch.cuda.is_available() is False)"


def test_unknown_part_and_bad_precision_are_refused(capsys) -> None:
    assert bench.main([*TINY, "--parts", "train,speed"]) == 2
    assert "unknown --parts ['speed']" in capsys.readouterr().err
    assert bench.main([*TINY, "--precision", "fp8"]) == 2
    assert "unknown --precision 'fp8'" in capsys.readouterr().err


def test_bf16_autocast_is_used_only_when_asked() -> None:
    cpu = torch.device("cpu")
    assert bench.resolve_precision("auto", cpu) == "32"
    assert bench.resolve_precision("auto", torch.device("cuda")) == "bf16"
    with bench.autocast(cpu, "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with bench.autocast(cpu, "32"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_peer_comparison_without_the_keras_interpreter_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    from tumorcls.bench import peer as bench_peer

    args = ["--keras-python", str(tmp_path / "no-python"), "--model", "test_efficientnet", "--size", "32"]
    args += ["--batch-size", "2", "--steps", "1", "--data", str(tmp_path / "no-data")]
    assert bench_peer.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --keras-python '{tmp_path / 'no-python'}' not found")
