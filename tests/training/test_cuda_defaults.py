"""What ``auto`` means for the speed settings of a run: ``data.augment_on`` (device augmentation when training on
CUDA with a policy that runs there), ``data.num_workers`` (none when a batch is one array slice) and
``model.cuda_graphs`` (on for one CUDA device), decided from the trainer config so that a CPU run is unchanged;
and the batch path of the device loader serves the same pixels as the item path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_configs import compose_with
from tumorcls.data.datamodule import ArrayDataset, CollatedBatch, TumorDataModule, Uint8ToTensor, collate
from tumorcls.run_layout import RunLayout
from tumorcls.training.build import build_datamodule, build_model, single_cuda_device
from tumorcls.training.config_checks import ConfigError, check_config


@pytest.mark.parametrize(
    ("data", "on_cuda", "expected"),
    [("default", True, "device"), ("default", False, "cpu"), ("strong_augment", True, "cpu")],
)
def test_augment_on_auto_follows_the_device_and_the_policy(data: str, on_cuda: bool, expected: str, tmp_path: Path):
    cfg = compose_with([f"data={data}"], tmp_path)
    assert cfg.data.augment_on == "auto"
    dm = build_datamodule(cfg.data, RunLayout(tmp_path / "run"), on_cuda=on_cuda)
    assert dm.augment_on == expected and (dm.batch_augment is not None) == (expected == "device")


def test_an_explicit_augment_on_is_kept(tmp_path: Path) -> None:
    cfg = compose_with(["data.augment_on=cpu"], tmp_path)
    assert build_datamodule(cfg.data, RunLayout(tmp_path / "run"), on_cuda=True).augment_on == "cpu"


@pytest.mark.parametrize(
    ("overrides", "single_gpu", "expected"),
    [
        ([], True, True),
        ([], False, False),
        (["model.compile=true"], True, False),
        (["model.cuda_graphs=false"], True, False),
        (["model.cuda_graphs=true"], False, True),
        (["model.cuda_graphs=step"], True, "step"),  # the whole step as one graph: manual optimisation
        (["model.cuda_graphs=step"], False, "step"),  # kept on CPU/DDP too: the eager manual step runs there
    ],
)
def test_cuda_graphs_auto_is_on_for_one_cuda_device_without_compile(overrides, single_gpu, expected, tmp_path):
    cfg = compose_with(["model.backbone=test_efficientnet", "model.pretrained=false", *overrides], tmp_path)
    dm = build_datamodule(cfg.data, RunLayout(tmp_path / "run"))
    model = build_model(cfg.model, dm, single_gpu=single_gpu)
    for value in (model.settings.runtime.cuda_graphs, model.hparams.cuda_graphs):
        assert value == expected and type(value) is type(expected)
    assert model.automatic_optimization is (expected != "step")


def test_the_whole_step_with_sgd_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    overrides = ["model.backbone=test_efficientnet", "model.pretrained=false", "model.cuda_graphs=step"]
    cfg = compose_with([*overrides, "model.optimizer=sgd"], tmp_path)
    dm = build_datamodule(cfg.data, RunLayout(tmp_path / "run"))
    with pytest.raises(ConfigError) as info:
        build_model(cfg.model, dm)
    assert str(info.value) == (
        "cannot build the model (model): ValueError: "
        "model.cuda_graphs=step needs model.optimizer adam or adamw (SGD is not capturable)"
    )


def test_single_cuda_device_reads_accelerator_devices_and_nodes(tmp_path: Path) -> None:
    for trainer, expected in (("cpu", False), ("ddp", False)):
        cfg = compose_with([f"trainer={trainer}"], tmp_path)
        assert single_cuda_device(cfg.trainer) is expected
    cfg = compose_with(["trainer=gpu"], tmp_path)
    assert single_cuda_device(cfg.trainer) is True  # trainer=gpu asks for one CUDA device


def test_a_bad_cuda_graphs_value_is_one_line(tmp_path: Path) -> None:
    cfg = compose_with(["model.cuda_graphs=sometimes"], tmp_path)
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    assert str(info.value) == "config: model.cuda_graphs must be one of ['auto', True, False, 'step'], got 'sometimes'"


def test_the_device_loader_needs_no_workers_on_a_gpu(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert TumorDataModule(tmp_path, augment_on="device").num_workers == 0
    assert TumorDataModule(tmp_path, augment_on="cpu").num_workers >= 1


def test_a_device_batch_is_one_slice_with_the_pixels_of_the_items() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=10)
    dataset = ArrayDataset(images, labels, Uint8ToTensor())
    batch = dataset.__getitems__([3, 7, 1])
    assert isinstance(batch, CollatedBatch)
    x, y = collate(batch)
    one_by_one = torch.stack([dataset[i][0] for i in (3, 7, 1)])
    assert x.dtype == torch.uint8 and torch.equal(x, one_by_one) and y.tolist() == labels[[3, 7, 1]].tolist()
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate)
    xs = torch.cat([xb for xb, _ in loader])
    assert torch.equal(xs, torch.from_numpy(images).permute(0, 3, 1, 2))
