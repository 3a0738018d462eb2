"""The recipe options of experiment=best: k-fold grouped splits, frozen-backbone warm-up, discriminative
learning rates, flip TTA, EMA weights, and the aggregation of several runs into mean +- std."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.helpers.paths import REPO
from tests.helpers.train_runs import small_run_args, train
from tests.helpers.trainers import quiet_trainer
from tumorcls.config.rules import ConfigError
from tumorcls.data.datamodule import TumorDataModule
from tumorcls.data.splits import make_splits
from tumorcls.errors import TumorclsError
from tumorcls.evaluation.aggregate import aggregate, find_metrics
from tumorcls.models.checkpoint import load_checkpoint
from tumorcls.models.lit_module import TumorClassifier


def test_kfold_puts_every_item_in_exactly_one_test_fold_and_keeps_groups_whole() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=600)
    groups = rng.integers(0, 250, size=600)
    sources = np.full(600, "Training")
    test_count = np.zeros(600, dtype=int)
    for fold in range(5):
        split = make_splits("grouped", labels, sources, seed=4, groups=groups, num_folds=5, fold=fold)
        test_count += split == "test"
        assert 0.14 <= (split == "test").mean() <= 0.26
        assert (split == "val").sum() > 0
        for g in np.unique(groups):
            assert len(set(split[groups == g])) == 1, f"group {g} straddles splits in fold {fold}"
    assert (test_count == 1).all()


def test_kfold_needs_the_grouped_protocol_and_a_valid_fold(synthetic_root: Path) -> None:
    with pytest.raises(ConfigError, match="needs data.protocol=grouped"):
        TumorDataModule(synthetic_root, protocol="official", num_folds=5)
    with pytest.raises(ConfigError, match=r"data.fold must be an integer in \[0, 4\] \(data.num_folds=5\), got 5"):
        TumorDataModule(synthetic_root, protocol="grouped", num_folds=5, fold=5)


def _fit(model: TumorClassifier, root: Path, epochs: int, callbacks: list | None = None, **trainer_kw) -> L.Trainer:
    L.seed_everything(0)
    dm = TumorDataModule(root, size=32, batch_size=16, num_workers=0)
    trainer = quiet_trainer(max_epochs=epochs, callbacks=callbacks or [], **trainer_kw)
    trainer.fit(model, datamodule=dm)
    return trainer


def test_frozen_backbone_warmup_trains_only_the_head_first(synthetic_root: Path) -> None:
    model = TumorClassifier(backbone="test_efficientnet", freeze_backbone_epochs=1)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    _fit(model, synthetic_root, epochs=1, enable_checkpointing=False)
    after = model.net.state_dict()
    backbone_changed = [k for k in before if k.startswith("backbone.") and not torch.equal(before[k], after[k])]
    assert backbone_changed == []  # weights and BatchNorm statistics alike
    assert not torch.equal(before["head.weight"], after["head.weight"])
    _fit(model, synthetic_root, epochs=2, enable_checkpointing=False)  # a fresh fit: epoch 1 unfreezes
    assert not torch.equal(before["backbone.conv_stem.weight"], model.net.state_dict()["backbone.conv_stem.weight"])


def test_discriminative_learning_rates_scale_the_backbone_group() -> None:
    model = TumorClassifier(backbone="test_efficientnet", lr=1e-3, backbone_lr_mult=0.1, scheduler="none")
    groups = model.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    n_backbone = len(list(model.net.backbone.parameters()))
    assert len(groups[0]["params"]) == n_backbone and len(groups[1]["params"]) == 2  # head weight and bias
    with pytest.raises(ValueError, match=r"^config: model.backbone_lr_mult must be a number in \[0, 1\], got 2.0$"):
        TumorClassifier(backbone="test_efficientnet", backbone_lr_mult=2.0)


def test_tta_averages_the_logits_of_the_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    model = TumorClassifier(backbone="test_efficientnet", tta=True).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = (model(x) + model(torch.flip(x, dims=[3]))) / 2
        got = model.eval_logits(x)
        mirrored = model.eval_logits(torch.flip(x, dims=[3]))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, mirrored)  # flip-invariant by construction
    assert not torch.allclose(model(x), got)


class HeadTrajectory(L.Callback):
    """The raw head weights after every optimiser step, from which the test computes the EMA itself."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.steps.append(pl_module.net.head.weight.detach().clone())


def test_ema_weights_are_the_average_of_the_trajectory_in_the_model_and_its_checkpoint(
    synthetic_root: Path, tmp_path: Path
) -> None:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=best"], return_hydra_config=False)
    assert cfg.callbacks.ema.decay == 0.998 and cfg.model.tta and cfg.model.scheduler == "cosine"
    decay = 0.5
    ema = instantiate({**cfg.callbacks.ema, "update_starting_at_step": 0, "decay": decay})
    trajectory = HeadTrajectory()
    model = TumorClassifier(backbone="test_efficientnet")
    ckpt_cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None)
    trainer = _fit(model, synthetic_root, epochs=2, callbacks=[trajectory, ema, ckpt_cb])
    assert trainer.global_step == len(trajectory.steps) >= 4
    expected = trajectory.steps[0]  # the first update copies the weights, then ema = d * ema + (1 - d) * w
    for weights in trajectory.steps[1:]:
        expected = decay * expected + (1 - decay) * weights
    raw = trajectory.steps[-1]
    assert (expected - raw).abs().max() > 1e-4  # the average is not the last weights: the checks below can tell
    live = model.net.head.weight.detach()  # after fit, the callback has copied the averaged weights in
    torch.testing.assert_close(live, expected, rtol=0, atol=1e-6)
    restored, _ = load_checkpoint(tmp_path / "last.ckpt")  # weights_only=True under the hood
    torch.testing.assert_close(restored.net.head.weight.detach(), expected, rtol=0, atol=1e-6)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)  # the raw weights are kept for resuming
    torch.testing.assert_close(saved["current_model_state"]["net.head.weight"], raw, rtol=0, atol=1e-6)


def _metrics_file(folder: Path, acc: float, f1: float) -> None:
    folder.mkdir(parents=True)
    per_class = {"glioma_tumor": {"recall": acc}, "no_tumor": {"recall": 1.0}}
    run = {"acc": acc, "macro_f1": f1, "per_class": per_class, "protocol": "grouped", "fit_seconds": 10.0}
    (folder / "metrics.json").write_text(json.dumps(run))


def test_aggregate_gives_mean_and_sample_std(tmp_path: Path) -> None:
    for i, (acc, f1) in enumerate([(0.90, 0.80), (0.94, 0.84), (0.98, 0.88)]):
        _metrics_file(tmp_path / "sweep" / str(i), acc, f1)
    summary = aggregate(find_metrics([tmp_path / "sweep"]))
    assert summary["metrics"]["acc"]["mean"] == pytest.approx(0.94)
    assert summary["metrics"]["acc"]["std"] == pytest.approx(0.04)
    assert summary["metrics"]["macro_f1"]["n"] == 3 and summary["protocols"] == ["grouped"]
    with pytest.raises(TumorclsError, match="no metrics.json"):
        (tmp_path / "empty").mkdir()
        find_metrics([tmp_path / "empty"])


@pytest.mark.slow
def test_kfold_multirun_then_aggregate_through_the_cli(synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "folds"
    train(
        [
            "-m",
            *small_run_args(synthetic_root),
            "trainer.max_epochs=1",
            "hparams_search=kfold",
            "data.num_folds=2",
            "data.fold=0,1",
            "data.near_dup_distance=0",
            "logger=csv",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    tests = [json.loads((sweep / j / "metrics.json").read_text()) for j in ("0", "1")]
    assert [t["config"]["data"]["fold"] for t in tests] == [0, 1]
    assert sum(t["n"] for t in tests) == 64  # every synthetic image is tested exactly once
    from tumorcls.cli.main import main

    assert main(["aggregate", str(sweep), "--json", str(tmp_path / "summary.json")]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"]["acc"]["n"] == 2


def test_compile_flag_keeps_checkpoint_keys_those_of_the_plain_network() -> None:
    plain = TumorClassifier(backbone="test_efficientnet")
    compiled = TumorClassifier(backbone="test_efficientnet", compile=True)
    compiled.setup("fit")  # wraps lazily: nothing is compiled until the first forward
    assert "_compiled_net" in compiled.__dict__ and "_compiled_net" not in plain.__dict__
    assert list(compiled.state_dict()) == list(plain.state_dict())


def test_optuna_search_config_composes_when_the_sweep_extra_is_installed() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e '.[sweep]' for Optuna")
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna", "experiment=best"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/acc" and "model.lr" in sweeper.params
