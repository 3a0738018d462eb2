"""Writing files when things go wrong: a full disk, a read-only file system, a path under a file, the
temporaries of a writer killed with -9, and an export whose file breaks the inference contract."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.export_fixtures import make_checkpoint
from tumorcls.atomic_io import atomic_write, atomic_write_bytes, atomic_write_text, check_writable
from tumorcls.errors import ExportError, OutputError
from tumorcls.export.run import export_checkpoint
from tumorcls.model_file import ExportSpec

DEAD_PID = 999_999_999  # above Linux's pid_max (4194304): no process has it


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("bad_run"), size=32)


# ---------------------------------------------------------------- atomic writes


def test_temporary_names_carry_the_writers_pid(tmp_path: Path) -> None:
    seen: list[str] = []
    atomic_write(tmp_path / "out.csv", lambda tmp: (seen.append(tmp.name), tmp.write_text("x")))
    assert seen[0].startswith(f".out.csv.{os.getpid()}.") and seen[0].endswith(".tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_stale_temporaries_of_dead_writers_are_removed_on_the_next_write(tmp_path: Path) -> None:
    stale = tmp_path / f".model.onnx.{DEAD_PID}.k2j4h_9x.tmp"
    stale_staged = tmp_path / f".model.h5.{DEAD_PID}.a1b2c3d4.tmp.h5"  # as the Keras export stages its file
    alive = tmp_path / f".model.onnx.{os.getppid()}.zz99yy88.tmp"  # a writer that is still running
    foreign = tmp_path / f".notes.{DEAD_PID}.tmp"  # not named as our temporaries are
    for path in (stale, stale_staged, alive, foreign):
        path.write_bytes(b"\0" * 4096)
    atomic_write_bytes(tmp_path / "model.onnx", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.onnx", alive.name, foreign.name])
    assert (tmp_path / "model.onnx").read_bytes() == b"new"


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
        (OSError(errno.EACCES, "Permission denied"), "permission denied"),
        # h5py: an OSError without errno, the C errno in its text
        (OSError("Can't write data (file write failed: errno = 28, error message = 'No space left')"), "disk full"),
    ],
)
def test_write_failures_are_one_line_and_leave_no_temporary(tmp_path: Path, failure: Exception, reason: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise failure

    with pytest.raises(OutputError) as info:
        atomic_write(tmp_path / "model.h5", write)
    assert str(info.value) == f"cannot write '{tmp_path / 'model.h5'}': {reason}"
    assert list(tmp_path.iterdir()) == []


def test_torch_zip_writer_failure_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(tmp: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(OutputError, match=r"^cannot write '.*last\.ckpt': disk full$"):
        atomic_write(tmp_path / "last.ckpt", write)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_check_keeps_its_own_error(tmp_path: Path) -> None:
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"x")
        raise ExportError("does not reproduce the PyTorch model")

    with pytest.raises(ExportError, match="does not reproduce"):
        atomic_write(tmp_path / "m.onnx", write)
    assert list(tmp_path.iterdir()) == []


def test_check_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_writable(tmp_path / "new" / "deeper" / "x.csv") == tmp_path / "new" / "deeper" / "x.csv"
    assert list(tmp_path.iterdir()) == []  # it creates nothing
    with pytest.raises(OutputError, match=r"^cannot write '.*': it is a folder$"):
        check_writable(tmp_path)
    (tmp_path / "f").write_text("file")
    with pytest.raises(OutputError, match=r"^cannot write '.*f/x/y.csv': '.*f' is a file, not a folder$"):
        check_writable(tmp_path / "f" / "x" / "y.csv")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(OutputError, match=r"^cannot write '.*x.csv': disk full$"):
        check_writable(tmp_path / "x.csv")


def test_a_file_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("file")
    with pytest.raises(OutputError, match=r"^cannot write '.*f/out.json': a parent of it is not a folder$"):
        atomic_write_text(tmp_path / "f" / "out.json", "{}")


# ---------------------------------------------------------------- export


def test_export_under_a_regular_file_is_refused_before_exporting(ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a folder")
    out = tmp_path / "plain" / "m.onnx"
    with pytest.raises(OutputError) as info:
        export_checkpoint(ckpt, "onnx", out=out, n_check=2)
    assert str(info.value) == f"cannot write '{out}': '{tmp_path / 'plain'}' is a file, not a folder"


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError) as info:
        export_checkpoint(ckpt, "onnx", out=tmp_path / "m.onnx", n_check=2)
    assert str(info.value) == f"cannot write '{tmp_path / 'm.onnx'}': disk full"
    assert list(tmp_path.iterdir()) == []


def test_export_removes_what_a_killed_export_left(ckpt: Path, tmp_path: Path) -> None:
    left = tmp_path / f".m.onnx.{DEAD_PID}.q8w7e6r5.tmp"
    left.write_bytes(b"\0" * (1 << 20))  # a kill -9 mid-write leaves such a file (16-17 MB for EfficientNet-B0)
    (result,) = export_checkpoint(ckpt, "onnx", out=tmp_path / "m.onnx", n_check=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and result.max_abs_diff <= 1e-4


def test_export_is_checked_by_the_backend_predict_uses(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose metadata names 3 classes for 4 outputs is what predict refuses: export must refuse it too."""
    real = ExportSpec.metadata

    def three_names(self: ExportSpec, *args: dict) -> dict[str, str]:
        return {**real(self, *args), "class_names": '["a", "b", "c"]'}

    monkeypatch.setattr(ExportSpec, "metadata", three_names)
    with pytest.raises(ExportError, match=r"^the ONNX file is refused by its inference backend: .* names 3 classes"):
        export_checkpoint(ckpt, "onnx", out=tmp_path / "m.onnx", n_check=2)
    assert list(tmp_path.iterdir()) == []
