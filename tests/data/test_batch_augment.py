"""The device augmentation path (data.batch_augment) runs the albumentations policy of the CPU path: exactly where
the result is deterministic, in distribution where it is random; and a fit with ``data.augment_on=device`` trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from tests.helpers.predictions import accuracy_of
from tests.helpers.train_runs import small_run_args, train
from tumorcls.bench.inputs import default_train_augmentations
from tumorcls.data.batch_augment import AugmentationError, BatchAugment, affine_matrices, unsupported_augmentations
from tumorcls.data.datamodule import TumorDataModule
from tumorcls.data.transforms import build_transforms

SIZE = 32


def pattern_images(n: int, seed: int = 0) -> np.ndarray:
    """uint8 N x H x W x 3 slices: a smooth left-to-right ramp (so a flip shows), noise and a bright block."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, SIZE)[None, None, :].repeat(SIZE, 1)
    images = ramp + rng.normal(0, 8, size=(n, SIZE, SIZE))
    images[:, 4:12, 6:14] += 40
    gray = images.clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=3))


def cpu_path(images: np.ndarray, augmentations: list, seed: int = 0) -> torch.Tensor:
    transform = build_transforms(SIZE, augmentations)
    transform.set_random_seed(seed)
    return torch.stack([transform(image=img)["image"] for img in images])


def device_path(images: np.ndarray, augmentations: list, seed: int = 0, train: bool = True) -> torch.Tensor:
    torch.manual_seed(seed)
    return BatchAugment(augmentations)(torch.from_numpy(images).permute(0, 3, 1, 2), train=train)


def test_normalisation_without_augmentation_is_that_of_the_cpu_path_exactly() -> None:
    images = pattern_images(8)
    expected = cpu_path(images, [])
    assert torch.allclose(device_path(images, []), expected, atol=1e-6, rtol=0)
    policy = default_train_augmentations()
    assert torch.allclose(device_path(images, policy, train=False), expected, atol=1e-6, rtol=0)


def test_a_certain_flip_is_exact_and_an_impossible_one_changes_nothing() -> None:
    images = pattern_images(8)
    for p in (1.0, 0.0):
        policy = [{"_target_": "albumentations.HorizontalFlip", "p": p}]
        assert torch.allclose(device_path(images, policy), cpu_path(images, policy), atol=1e-6, rtol=0)


def test_affine_with_fixed_parameters_warps_as_albumentations_does() -> None:
    # one sampled value per range: both paths apply the same rotation, scale, shear and translation
    policy = [A.Affine(scale=(1.1, 1.1), rotate=(12, 12), translate_percent=(0.1, 0.1), shear=(4, 4), p=1.0)]
    images = pattern_images(4)
    cpu, device = cpu_path(images, policy), device_path(images, policy)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # borders: sub-pixel differences of the samplers
    assert (device[inner] - cpu[inner]).abs().mean() < 0.03  # about 1.5 grey levels of 255
    mirrored = [A.Affine(scale=(1.1, 1.1), rotate=(-12, -12), translate_percent=(0.1, 0.1), shear=(4, 4), p=1.0)]
    assert (device_path(images, mirrored)[inner] - cpu[inner]).abs().mean() > 0.2  # the direction is seen


def test_affine_matrices_have_the_configured_ranges() -> None:
    affine = A.Affine(scale=(0.9, 1.1), rotate=(-10, 10), translate_percent=(-0.05, 0.05), p=1.0)
    torch.manual_seed(0)
    m = affine_matrices(affine, 4000, SIZE, SIZE, torch.zeros(1))
    angle = torch.rad2deg(torch.atan2(-m[:, 1, 0], m[:, 0, 0]))  # first column: (cos, -sin) * scale_x
    scale_x = torch.linalg.norm(m[:, :2, 0], dim=1)
    assert -10.0 <= angle.min() < -9.5 and 9.5 < angle.max() <= 10.0
    assert 0.9 <= scale_x.min() < 0.91 and 1.09 < scale_x.max() <= 1.1
    assert m[:, 0, 2].abs().max() <= math.trunc(0.05 * SIZE) and torch.equal(m[:, 0, 2], m[:, 0, 2].trunc())


def batch_statistics(x: torch.Tensor) -> dict[str, float]:
    """What the default policy changes, from normalised batches of pattern_images: the share of mirrored images
    (the ramp runs the other way), the spread of per-image brightness, and the share of affine border pixels."""
    gray = x[:, 0] * 0.229 + 0.485  # back to 0..1
    left, right = gray[:, :, :8].mean((1, 2)), gray[:, :, -8:].mean((1, 2))
    means = gray.mean((1, 2))
    corners = torch.cat([gray[:, :2, :2].flatten(1), gray[:, -2:, -2:].flatten(1)], 1)
    return {
        "mean": float(means.mean()),
        "std": float(gray.std()),
        "flipped": float((left > right).float().mean()),
        "brightness_spread": float(means.std()),
        "border": float((corners < 0.02).float().mean()),
    }


TOLERANCE = {"mean": 0.02, "std": 0.015, "flipped": 0.07, "brightness_spread": 0.012, "border": 0.07}


def statistics_agree(a: dict[str, float], b: dict[str, float]) -> bool:
    return all(abs(a[k] - b[k]) <= tol for k, tol in TOLERANCE.items())


def test_the_random_policy_has_the_statistics_of_the_albumentations_one() -> None:
    images = pattern_images(512, seed=1)
    policy = default_train_augmentations()
    cpu, device = batch_statistics(cpu_path(images, policy)), batch_statistics(device_path(images, policy))
    plain = batch_statistics(cpu_path(images, []))
    assert 0.4 < cpu["flipped"] < 0.6 and plain["flipped"] == 0.0 and cpu["border"] > 0.1 > plain["border"]
    assert statistics_agree(cpu, device), (cpu, device)
    # a wrong policy fails the same comparison: no flip, twice the brightness range, affine always applied
    for changed in ({0: {"p": 0.0}}, {2: {"brightness_limit": 0.35}}, {1: {"p": 1.0, "rotate": [-25, 25]}}):
        policy = default_train_augmentations()
        for index, values in changed.items():
            policy[index].update(values)
        assert not statistics_agree(cpu, batch_statistics(device_path(images, policy))), changed


def test_gamma_and_noise_of_the_strong_policy_run_on_batches() -> None:
    images = pattern_images(512, seed=2)
    plain = cpu_path(images, [])
    quantiles = torch.tensor([0.05, 0.5, 0.95])

    def gamma_shifts(limit: list[int]) -> torch.Tensor:  # quantiles of the per-image mean change
        policy = [{"_target_": "albumentations.RandomGamma", "gamma_limit": limit, "p": 1.0}]
        return (device_path(images, policy) - plain).mean((1, 2, 3)).quantile(quantiles)

    gamma = [{"_target_": "albumentations.RandomGamma", "gamma_limit": [80, 120], "p": 1.0}]
    expected = (cpu_path(images, gamma) - plain).mean((1, 2, 3)).quantile(quantiles)
    assert torch.allclose(gamma_shifts([80, 120]), expected, atol=0.05)
    assert not torch.allclose(gamma_shifts([60, 140]), expected, atol=0.05)
    noise = [{"_target_": "albumentations.GaussNoise", "std_range": [0.01, 0.04], "p": 1.0}]
    residual_cpu = float((cpu_path(images, noise) - plain).std())
    residual_device = float((device_path(images, noise) - plain).std())
    assert abs(residual_cpu - residual_device) < 0.05 * residual_cpu


def test_cpu_only_transforms_are_refused_in_one_line() -> None:
    blur = [{"_target_": "albumentations.GaussianBlur", "blur_limit": [3, 5], "p": 0.1}]
    reason = unsupported_augmentations(blur)
    assert reason is not None and reason.startswith("GaussianBlur runs on the CPU only") and "\n" not in reason
    with pytest.raises(AugmentationError, match="GaussianBlur runs on the CPU only"):
        BatchAugment(blur)
    assert unsupported_augmentations([A.Affine(fit_output=True)]).startswith("Affine: fit_output")
    assert unsupported_augmentations(default_train_augmentations()) is None


def test_the_device_path_datamodule_serves_uint8_train_batches_and_augments_after_transfer(synthetic_root: Path):
    dm = TumorDataModule(synthetic_root, size=SIZE, batch_size=8, num_workers=0, augment_on="device")
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (8, 3, SIZE, SIZE) and y.shape == (8,)
    xa, ya = dm.on_after_batch_transfer((x, y), 0)
    assert xa.dtype == torch.float32 and xa.shape == x.shape and ya is y
    xv, yv = next(iter(dm.val_dataloader()))  # evaluation batches arrive normalised, and pass unchanged
    assert xv.dtype == torch.float32 and dm.on_after_batch_transfer((xv, yv), 0)[0] is xv
    assert dm.train_sample(0).shape == (3, SIZE, SIZE) and dm.train_sample(0).dtype == torch.float32


@pytest.mark.slow
def test_a_fit_with_device_augmentation_trains_and_writes_its_artifacts(synthetic_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    overrides = ["data.augment_on=device", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"]
    train([*small_run_args(synthetic_root), *overrides])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["config"]["data"]["augment_on"] == "device"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    history = next(v for k, v in ckpt["callbacks"].items() if "EpochHistory" in k)["history"]
    assert [row["epoch"] for row in history] == [0, 1] and all(math.isfinite(row["train/loss"]) for row in history)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    for name in ("best.ckpt", "last.ckpt"):
        assert (run_dir / "checkpoints" / name).is_file()
    assert metrics["acc"] == pytest.approx(accuracy_of(run_dir / "predictions.csv"))  # the predictions' own figure
