"""The on-disk decode cache: decoded once and mapped after; keyed by the files and the pixel settings; safe
against a killed writer and two writers at once; bounded, least recently used out first; and off on request."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.paths import REPO
from tests.helpers.synthetic import make_dataset
from tests.helpers.train_runs import compose_train
from tumorcls.data import cache
from tumorcls.data.datamodule import TumorDataModule, Uint8ToTensor
from tumorcls.data.decode import DecodeOptions, read_image
from tumorcls.data.disk_cache import DecodeCache, default_cache_dir
from tumorcls.data.scan import scan_dataset
from tumorcls.training.config_checks import ConfigError, check_config

PER_CLASS = {"Training": 5, "Testing": 2}  # 28 files: val_fraction=0.2 leaves one val image per class
N_FILES = 28


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts of the decoder's and the hashes' calls in this process."""
    counts: Counter = Counter()
    for name in ("load_image", "sha256_bytes", "phash"):
        original = getattr(cache, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(cache, name, counted)
    return counts


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = make_dataset(tmp_path / "mri", PER_CLASS, side=64, seed=2)
    (root / "Training" / "glioma_tumor" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    return root


def _module(root: Path, cache_dir: Path, **kwargs) -> TumorDataModule:
    settings = {"size": 32, "num_workers": 0, "val_fraction": 0.2, "cache_dir": cache_dir, **kwargs}
    dm = TumorDataModule(root, **settings)
    dm.setup()
    return dm


def _entries(cache_dir: Path) -> list[str]:
    folder = cache_dir / "decoded"
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.exists() else []
    )


def test_a_second_setup_decodes_and_hashes_nothing(root: Path, tmp_path: Path, calls: Counter) -> None:
    first = _module(root, tmp_path / "cache")
    assert first.cache_status["state"] == "written"
    assert calls == {"load_image": N_FILES + 1, "sha256_bytes": N_FILES, "phash": N_FILES}
    calls.clear()
    second = _module(root, tmp_path / "cache")
    assert second.cache_status["state"] == "hit" and second.cache_status["path"] == first.cache_status["path"]
    assert sum(calls.values()) == 0  # no decoding, no hashing
    assert isinstance(second.decoded.images, np.memmap) and not second.decoded.images.flags.writeable
    np.testing.assert_array_equal(second.decoded.images, first.decoded.images)
    assert [r.path for r in second.decoded.records] == [r.path for r in first.decoded.records]
    assert second.decoded.sha256 == first.decoded.sha256
    np.testing.assert_array_equal(second.decoded.phashes, first.decoded.phashes)
    assert second.decoded.failures == first.decoded.failures and len(second.decoded.failures) == 1
    assert second.skipped_files == first.skipped_files == 1
    np.testing.assert_array_equal(second.split, first.split)
    row = [r.path.name for r in second.decoded.records].index("img_3.jpg")
    np.testing.assert_array_equal(
        second.decoded.images[row], read_image(root / "Training/glioma_tumor/img_3.jpg", DecodeOptions(32))
    )
    assert _entries(tmp_path / "cache") == [Path(first.cache_status["path"]).name]


def _rewrite(root: Path) -> dict:
    path = root / "Training" / "no_tumor" / "img_1.jpg"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(path)
    return {}


def _touch(root: Path) -> dict:
    path = root / "Training" / "no_tumor" / "img_1.jpg"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same bytes, another mtime
    return {}


CHANGES = {
    "file content": _rewrite,
    "file mtime": _touch,
    "size": lambda root: {"size": 40},
    "crop": lambda root: {"crop": "head"},
    "intensity": lambda root: {"intensity": "stretch"},
    "interpolation": lambda root: {"interpolation": "area"},
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_file_or_setting_decodes_again(root: Path, tmp_path: Path, calls: Counter, change: str) -> None:
    _module(root, tmp_path / "cache")
    calls.clear()
    settings = CHANGES[change](root)
    dm = _module(root, tmp_path / "cache", **settings)
    assert dm.cache_status["state"] == "written" and calls["load_image"] == N_FILES + 1
    assert len(_entries(tmp_path / "cache")) == 2
    changed = root / "Training" / "no_tumor" / "img_1.jpg"
    row = [r.path for r in dm.decoded.records].index(changed)
    np.testing.assert_array_equal(dm.decoded.images[row], read_image(changed, dm.decode_options))


def test_splits_are_index_arrays_into_the_one_array(root: Path, tmp_path: Path) -> None:
    dm = _module(root, tmp_path / "cache")
    base = dm.decoded.images
    assert all(ds.base_images is base for ds in dm.datasets.values())
    assert sum(len(ds) for ds in dm.datasets.values()) == len(base)
    train = dm.datasets["train"]
    np.testing.assert_array_equal(train.image(3), base[train.indices[3]])
    train.transform = Uint8ToTensor()  # the device-augmentation path: one slice per batch, in the asked order
    asked = [5, 0, 9, 2, 2]
    images, labels = train.__getitems__(asked)
    np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), base[train.indices[asked]])
    assert labels.tolist() == dm.decoded.labels[train.indices[asked]].tolist()


def test_a_pickled_dataset_carries_the_file_not_the_pixels(root: Path, tmp_path: Path) -> None:
    dm = _module(root, tmp_path / "cache")
    dataset = dm.datasets["train"]
    data = pickle.dumps(dataset)
    assert len(data) < dataset.base_images.nbytes / 4
    clone = pickle.loads(data)
    assert isinstance(clone.base_images, np.memmap)
    np.testing.assert_array_equal(clone.image(1), dataset.image(1))
    assert len(pickle.dumps(dm.decoded)) < dm.decoded.images.nbytes / 4


def test_cache_false_decodes_into_memory_and_writes_nothing(root: Path, tmp_path: Path, calls: Counter) -> None:
    cached = _module(root, tmp_path / "cache")
    for _ in range(2):
        calls.clear()
        plain = _module(root, tmp_path / "off", cache=False)
        assert calls["load_image"] == N_FILES + 1 and plain.cache_status == {
            "state": "off",
            "path": None,
            "decode_seconds": plain.cache_status["decode_seconds"],
        }
    assert not (tmp_path / "off").exists() and not isinstance(plain.decoded.images, np.memmap)
    np.testing.assert_array_equal(plain.decoded.images, cached.decoded.images)
    np.testing.assert_array_equal(plain.split, cached.split)


def test_a_dataset_over_the_limit_decodes_into_memory(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dm = _module(root, tmp_path / "cache", cache_max_gb=1e-6)  # 1 kB; the dataset needs 86 kB
    assert dm.cache_status["state"] == "memory" and _entries(tmp_path / "cache") == []
    assert "this dataset needs 0.00 GB, over the limit of 0.00 GB (data.cache_max_gb)" in caplog.text


def test_an_entry_that_is_not_whole_is_decoded_again(root: Path, tmp_path: Path, calls: Counter) -> None:
    first = _module(root, tmp_path / "cache")
    expected = np.array(first.decoded.images)
    images = Path(first.cache_status["path"]) / "images.u8"
    with open(images, "r+b") as fh:
        fh.truncate(images.stat().st_size - 1)
    calls.clear()
    second = _module(root, tmp_path / "cache")
    assert second.cache_status["state"] == "written" and calls["load_image"] == N_FILES + 1
    np.testing.assert_array_equal(second.decoded.images, expected)


def _child(root: Path, cache_dir: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.data.cache_child", str(root), str(cache_dir), *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_two_processes_at_once_decode_once(root: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    children = [_child(root, tmp_path / "cache", "--go", str(go), "--delay", "0.05") for _ in range(2)]
    time.sleep(0.5)  # both children imported and waiting
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["state"] for o in outputs) == ["hit", "written"]
    assert sorted(o["decoded"] for o in outputs) == [0, N_FILES + 1]
    assert outputs[0]["sum"] == outputs[1]["sum"] > 0
    assert len(_entries(tmp_path / "cache")) == 1


def test_a_killed_writer_leaves_no_entry_that_is_used(root: Path, tmp_path: Path, calls: Counter) -> None:
    folder = tmp_path / "cache" / "decoded"
    writer = _child(root, tmp_path / "cache", "--delay", "0.5")
    _wait_for(lambda: folder.is_dir() and any(p.is_dir() for p in folder.iterdir()), "the writer's folder")
    temp = next(p for p in folder.iterdir() if p.is_dir())
    records = scan_dataset(root).records
    # another key's writer meanwhile: the live writer's temporary folder is left alone (its lock is held)
    other = DecodeCache(tmp_path / "cache", 10**9).load(root, records, DecodeOptions(size=24))
    assert other is not None and other.state == "written" and temp.is_dir() and writer.poll() is None
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert len(_entries(tmp_path / "cache")) == 1  # only the size-24 entry: the killed one published nothing
    calls.clear()
    result = DecodeCache(tmp_path / "cache", 10**9).load(root, records, DecodeOptions(size=32))
    assert result is not None and result.state == "written" and calls["load_image"] == N_FILES + 1
    assert not temp.exists() and not [p for p in folder.iterdir() if p.name.startswith((".tmp-", ".trash-"))]
    row = [r.path.name for r in result.decoded.records].index("img_0.jpg")
    np.testing.assert_array_equal(
        result.decoded.images[row], read_image(result.decoded.records[row].path, DecodeOptions(32))
    )


def test_eviction_keeps_the_total_under_the_limit_least_recently_used_first(root: Path, tmp_path: Path) -> None:
    records = scan_dataset(root).records
    options = {name: DecodeOptions(size=32, interpolation=name) for name in ("linear", "area", "cubic", "nearest")}
    probe = DecodeCache(tmp_path / "probe", 10**9).load(root, records, options["linear"])
    entry_bytes = sum(f.stat().st_size for f in probe.path.iterdir())
    limit = int(2.5 * entry_bytes)  # room for two entries
    store = DecodeCache(tmp_path / "cache", limit)

    def load(name: str) -> str:
        result = store.load(root, records, options[name])
        assert result is not None and abs(sum(f.stat().st_size for f in result.path.iterdir()) - entry_bytes) < 100
        return result.path.name

    keys = {name: load(name) for name in ("linear", "area")}
    assert load("linear") == keys["linear"]  # a hit: linear is now the most recently used
    keys["cubic"] = load("cubic")
    assert _entries(tmp_path / "cache") == sorted([keys["linear"], keys["cubic"]])  # area went
    keys["nearest"] = load("nearest")
    assert _entries(tmp_path / "cache") == sorted([keys["cubic"], keys["nearest"]])  # then linear
    total = sum(f.stat().st_size for key in _entries(tmp_path / "cache") for f in (store.folder / key).iterdir())
    assert total <= limit


def test_the_default_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUMORCLS_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TUMORCLS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tumorcls"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "tumorcls"
    cfg = compose_train([])
    assert cfg.data.cache is True and cfg.data.cache_max_gb == 20


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("data.cache=maybe", "config: data.cache must be true or false, got 'maybe'"),
        ("data.cache_max_gb=0", "config: data.cache_max_gb must be a number > 0, got 0"),
        ("data.cache_dir=''", "config: data.cache_dir must be null or a non-empty string, got ''"),
    ],
)
def test_bad_cache_settings_are_one_line(override: str, line: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_config(compose_train([override]))
    assert str(err.value) == line
