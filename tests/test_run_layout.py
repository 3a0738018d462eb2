"""RunLayout is the one description of a run folder: what training writes (callbacks and logger configs
included) is where export and the benchmarks look."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from tests.helpers.paths import REPO
from tumorcls.export.targets import output_paths
from tumorcls.run_layout import RunLayout


def test_run_layout_paths(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run")
    assert layout.splits_csv == tmp_path / "run" / "splits.csv"
    assert layout.best_checkpoint == tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert layout.last_checkpoint == tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert layout.metrics_json.name == "metrics.json"
    assert layout.classification_report.name == "classification_report.txt"
    assert (layout.confusion_matrix_png.name, layout.curves_png.name) == ("confusion_matrix.png", "curves.png")
    assert layout.tensorboard_dir == tmp_path / "run" / "tensorboard"
    assert layout.hydra_config == tmp_path / "run" / ".hydra" / "config.yaml"
    assert layout.lock_file.parent == layout.root and not layout.root.exists()  # paths only, nothing created


def test_the_run_of_a_checkpoint(tmp_path: Path) -> None:
    assert RunLayout.of_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt").root == tmp_path / "run"
    assert RunLayout.of_checkpoint(tmp_path / "elsewhere" / "model.ckpt").root == tmp_path / "elsewhere"
    assert RunLayout.of_checkpoint("best.ckpt").root == Path(".")


def test_the_configs_write_where_the_layout_says(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["logger=many", f"paths.output_dir={tmp_path}"])
    layout = RunLayout(tmp_path)
    best, last = cfg.callbacks.model_checkpoint, cfg.callbacks.last_checkpoint
    assert Path(best.dirpath) / f"{best.filename}.ckpt" == layout.best_checkpoint
    assert Path(last.dirpath) / f"{last.filename}.ckpt" == layout.last_checkpoint
    tensorboard = cfg.logger.tensorboard
    assert Path(tensorboard.save_dir) / tensorboard.name / tensorboard.version == layout.tensorboard_dir
    assert Path(cfg.trainer.default_root_dir) == layout.root


def test_export_writes_into_the_layouts_export_folder(tmp_path: Path) -> None:
    paths = output_paths(("onnx", "keras"), tmp_path, None)
    assert {p.parent for p in paths.values()} == {RunLayout(tmp_path).export_dir}
