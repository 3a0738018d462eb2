"""train.py refuses bad inputs early and in one line (exit 2): a run folder in use, config values out of range,
errors inside Hydra's instantiate, bad resume checkpoints, a missing dataset (downloaded when it is the default
one), an unreachable model hub.

Each check is started as a real train.py once, in tests/test_bad_input_catalogue.py (a bad config value, an unknown
backbone, a missing dataset, a bad resume checkpoint); here the same checks run in-process, one message each, and
train.py is started only for what needs its own process (the run-folder lock, the hub's environment)."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.helpers.paths import REPO
from tests.helpers.refusals import assert_script_refused
from tests.helpers.train_runs import small_run_args
from tumorcls.data import download
from tumorcls.data.download import DEFAULT_DATA_ROOT, ensure_dataset
from tumorcls.errors import CheckpointError, DatasetError, TumorclsError
from tumorcls.run_layout import RunLayout
from tumorcls.training.build import build_callbacks
from tumorcls.training.config_checks import ConfigError, check_config
from tumorcls.training.resume import checked_resume_path
from tumorcls.training.run import run
from tumorcls.training.run_lock import RunFolderBusyError, run_folder_lock


def train_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


# a. one job per run folder


@pytest.mark.slow
def test_a_second_job_on_a_run_folder_in_use_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with run_folder_lock(RunLayout(run_dir)):
        proc = train_cli([*small_run_args(synthetic_root), "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"])
    line = assert_script_refused(proc, f"run folder '{run_dir}' is in use by another train.py job")
    assert f"pid {os.getpid()}" in line
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


def test_the_run_folder_lock_is_exclusive_and_released_when_its_holder_dies(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run")
    busy = pytest.raises(RunFolderBusyError, match="is in use by another train.py job")
    with run_folder_lock(layout), busy, run_folder_lock(layout):
        pass
    with run_folder_lock(layout):  # released at the end of the block: a finished run can be resumed
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tumorcls.run_layout import RunLayout;"
            "from tumorcls.training.run_lock import run_folder_lock\n"
            f"with run_folder_lock(RunLayout({str(layout.root)!r})):\n"
            "    print('locked', flush=True); time.sleep(300)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunFolderBusyError, match=f"pid {holder.pid}"), run_folder_lock(layout):
        pass
    os.kill(holder.pid, signal.SIGKILL)  # a killed run leaves its lock file, but not the lock
    holder.wait()
    with run_folder_lock(layout):
        assert layout.lock_file.read_text().strip() == f"pid {os.getpid()}"


def test_the_extra_processes_of_a_distributed_run_do_not_take_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = RunLayout(tmp_path / "run")
    with run_folder_lock(layout):
        monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's launcher sets in the processes it starts
        with run_folder_lock(layout):
            pass


# b. config values checked first


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.batch_size=abc", "config: data.batch_size must be an integer >= 1, got 'abc'"),
        ("data.batch_size=0", "config: data.batch_size must be an integer >= 1, got 0"),
        ("model.lr=-0.001", "config: model.lr must be a number > 0, got -0.001"),
        ("data.size=7", "config: data.size must be an integer in [32, 2048], got 7"),
        ("trainer.max_epochs=0", "config: trainer.max_epochs must be an integer >= 1, got 0"),
        ("data.crop=brain", "config: data.crop must be one of ['none', 'head'], got 'brain'"),
        ("data.intensity=zscore", "data.intensity must be one of ['none', 'stretch', 'equalize'], got 'zscore'"),
        ("data.eval_batch_size=-4", "data.eval_batch_size must be null or an integer >= 1"),
        ("data.batch_size=true", "data.batch_size must be an integer >= 1, got True"),
        ("data.val_fraction=1.0", "data.val_fraction must be a number in (0, 1), got 1.0"),
        ("data.test_fraction=0", "data.test_fraction must be a number in (0, 1), got 0"),
        ("data.num_workers=many", "data.num_workers must be one of ['auto'] or an integer >= 0"),
        ("data.protocol=random", "data.protocol must be one of ['seed', 'official', 'grouped']"),
        ("data.download=yes", "data.download must be one of ['auto', True, False], got 'yes'"),
        ("model.drop_rate=1.0", "model.drop_rate must be a number in [0, 1), got 1.0"),
        ("model.label_smoothing=-0.1", "model.label_smoothing must be a number in [0, 1)"),
        ("model.weight_decay=-1", "model.weight_decay must be a number >= 0, got -1"),
        ("model.lr=nan", "model.lr must be a number > 0, got nan"),
        ("model.num_classes=3", "model.num_classes must be one of [4], got 3"),
        ("model.scheduler=step", "model.scheduler must be one of ['plateau', 'cosine', 'none']"),
        ("trainer.max_epochs=-1", "trainer.max_epochs must be an integer >= 1, got -1"),
        ("seed=-3", "seed must be null or an integer >= 0, got -3"),
        ("data.augment_on=gpu", "data.augment_on must be one of ['auto', 'cpu', 'device'], got 'gpu'"),
        (
            "data=strong_augment data.augment_on=device",
            "data.augment_on=device: GaussianBlur runs on the CPU only (data.augment_on=device supports",
        ),
    ],
)
def test_config_checks_name_the_key_and_its_range(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_config(_compose(override.split()))
    assert str(info.value).startswith("config: ") and expected in str(info.value)


def test_fractions_must_leave_room_for_training() -> None:
    with pytest.raises(ConfigError, match=r"data.test_fraction \+ data.val_fraction must be < 1, got 1"):
        check_config(_compose(["data.protocol=seed", "data.test_fraction=0.5", "data.val_fraction=0.5"]))
    check_config(_compose(["data.protocol=official", "data.test_fraction=0.5", "data.val_fraction=0.5"]))


def test_the_shipped_configs_pass_the_checks() -> None:
    shipped = ([], ["experiment=best"], ["experiment=tutorial"], ["debug=overfit"], ["data.download=false"])
    for overrides in (*shipped, ["data.augment_on=device"], ["experiment=tutorial", "data.augment_on=device"]):
        check_config(_compose(overrides))


# c. errors inside hydra.utils.instantiate


def test_an_unknown_target_or_a_failing_constructor_is_one_config_line(tmp_path: Path) -> None:
    group = _compose(["+callbacks.extra._target_=nowhere.Missing", f"paths.output_dir={tmp_path}"]).callbacks
    with pytest.raises(
        ConfigError,
        match=r"^cannot build callback 'extra': ImportError: Error loading 'nowhere.Missing': .*No module named",
    ):
        build_callbacks(group)
    group = _compose(
        ["+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping", f"paths.output_dir={tmp_path}"]
    )
    group = group.callbacks
    with pytest.raises(ConfigError) as info:  # EarlyStopping without its required "monitor"
        build_callbacks(group)
    assert str(info.value).startswith("cannot build callback 'stop': TypeError: ") and "\n" not in str(info.value)


# d. resume from a bad checkpoint


class Payload:
    """Any class: unpickling it would run code of the file's choice."""


@pytest.fixture()
def bad_checkpoints(tmp_path: Path) -> dict[str, Path]:
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": Payload()}, pickled)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}, "hyper_parameters": {}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps({"state_dict": {}}))
    return {"pickled": pickled, "truncated": truncated, "raw": raw}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("pickled", "it holds pickled objects, which are never loaded"),
        ("truncated", "not a PyTorch checkpoint file"),
        ("raw", "not a PyTorch checkpoint file"),
    ],
)
def test_a_bad_resume_checkpoint_is_refused_before_the_fit(
    kind: str, expected: str, bad_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    path = bad_checkpoints[kind]
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint '{path}' safely: {expected}"):
        checked_resume_path(str(path), RunLayout(tmp_path), _compose([]).model)


def test_a_checkpoint_of_another_backbone_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "other.ckpt"
    hparams = {"backbone": "resnet18", "num_classes": 4, "class_names": ["a", "b", "c", "d"], "drop_rate": 0.5}
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, ckpt)
    with pytest.raises(CheckpointError, match="holds a 'resnet18' model, the config asks for model.backbone=tf_eff"):
        checked_resume_path(str(ckpt), RunLayout(tmp_path), _compose([]).model)


# the order of the checks in train.py's run(): config, dataset, resume checkpoint, then the model; each is one line
# before anything is written to the run folder


@pytest.mark.parametrize(
    ("overrides", "error", "expected"),
    [
        (  # an unknown backbone and pretrained weights from an unreachable hub too: the dataset comes first
            ["data.root={tmp}/nowhere", "model.backbone=no_such_net", "model.pretrained=true"],
            DatasetError,
            "dataset not found at '{tmp}/nowhere'",
        ),
        (  # a bad checkpoint and an unknown backbone: the checkpoint comes before the model
            ["ckpt_path={truncated}", "model.backbone=no_such_net"],
            CheckpointError,
            "cannot read checkpoint '{truncated}' safely: not a PyTorch checkpoint file",
        ),
        (["model.backbone=no_such_net"], TumorclsError, "timm has no model named 'no_such_net'"),
    ],
    ids=["missing-dataset", "bad-resume", "unknown-backbone"],
)
def test_run_refuses_in_one_line_in_the_order_of_its_checks(
    overrides: list[str],
    error: type[TumorclsError],
    expected: str,
    synthetic_root: Path,
    bad_checkpoints: dict[str, Path],
    tmp_path: Path,
) -> None:
    names = {"tmp": tmp_path, "truncated": bad_checkpoints["truncated"]}
    args = [*small_run_args(synthetic_root), *(o.format(**names) for o in overrides)]
    run_dir = tmp_path / "run"
    with pytest.raises(error) as info:
        run(_compose([*args, f"paths.output_dir={run_dir}"]), run_dir)
    assert str(info.value).startswith(expected.format(**names)) and "\n" not in str(info.value)
    assert not (run_dir / "splits.csv").exists() and not (run_dir / "checkpoints").exists()


# e. first run: the dataset before anything expensive, its download, an unreachable hub


def offline_env(tmp_path: Path) -> dict[str, str]:
    """No HF_HUB_OFFLINE, an empty hub cache, and a hub address where nothing listens."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_ENDPOINT="http://127.0.0.1:9")
    return env


@pytest.mark.slow
def test_an_unreachable_hub_fails_at_once_in_one_line(synthetic_root: Path, tmp_path: Path) -> None:
    args = [*small_run_args(synthetic_root), "model.backbone=resnet18", "model.pretrained=true"]
    proc = train_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], env=offline_env(tmp_path))
    assert_script_refused(proc, "could not download pretrained weights for 'resnet18' from the model hub")
    assert "Retrying" not in proc.stdout + proc.stderr
    assert "cannot be reached: pretrained weights come from the local cache only" in proc.stdout + proc.stderr


def _fake_kaggle(source: Path, calls: list[tuple[str, Path]]):
    def fetch(handle: str, output_dir: Path) -> Path:
        calls.append((handle, output_dir))
        shutil.copytree(source, output_dir / "brain-tumor-classification-mri")  # one folder level, as some mirrors
        return output_dir

    return fetch


def test_the_default_root_is_downloaded_when_missing(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[str, Path]] = []
    monkeypatch.setattr(download, "kaggle_download", _fake_kaggle(synthetic_root, calls))
    root = ensure_dataset(DEFAULT_DATA_ROOT, "auto")
    assert root == DEFAULT_DATA_ROOT and [c[0] for c in calls] == ["sartajbhuvaji/brain-tumor-classification-mri"]
    assert sorted(p.name for p in (tmp_path / root).iterdir()) == ["Testing", "Training"]
    assert sorted(p.name for p in (tmp_path / root / "Training").iterdir()) == sorted(
        p.name for p in (synthetic_root / "Training").iterdir()
    )
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["brain-tumor-classification-mri"]  # no staging left
    assert ensure_dataset(DEFAULT_DATA_ROOT, "auto") == root and len(calls) == 1  # present: no second download


def test_an_offline_download_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    def offline(handle: str, output_dir: Path) -> Path:
        (output_dir / "partial.zip").write_bytes(b"PK")
        raise ConnectionError("Failed to resolve 'api.kaggle.com' ([Errno -2] Name or service not known)\nmore")

    monkeypatch.setattr(download, "kaggle_download", offline)
    with pytest.raises(DatasetError) as info:
        ensure_dataset(DEFAULT_DATA_ROOT, "auto")
    message = str(info.value)
    assert message.startswith(f"dataset not found at '{DEFAULT_DATA_ROOT}' and the download of Kaggle ")
    assert "(ConnectionError: Failed to resolve 'api.kaggle.com'" in message and "\n" not in message
    assert list((tmp_path / "data").iterdir()) == []  # no half-downloaded dataset, no staging folder


def test_only_the_default_root_is_downloaded_by_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[str, Path]] = []
    monkeypatch.setattr(download, "kaggle_download", _fake_kaggle(tmp_path, calls))
    with pytest.raises(DatasetError, match=f"dataset not found at '{tmp_path / 'mine'}'"):
        ensure_dataset(tmp_path / "mine", "auto")  # an explicit data.root stays an error
    with pytest.raises(DatasetError, match=f"dataset not found at '{DEFAULT_DATA_ROOT}'"):
        ensure_dataset(DEFAULT_DATA_ROOT, False)
    assert calls == []


def test_download_true_fetches_any_missing_root(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Path]] = []
    monkeypatch.setattr(download, "kaggle_download", _fake_kaggle(synthetic_root, calls))
    root = ensure_dataset(tmp_path / "deep" / "mine", True)
    assert (root / "Training" / "glioma_tumor").is_dir() and len(calls) == 1


def test_a_root_without_its_source_folders_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "Training").mkdir()
    with pytest.raises(DatasetError, match=f"'{tmp_path / 'Testing'}' is missing"):
        ensure_dataset(tmp_path, "auto")
