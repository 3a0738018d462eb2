"""Export a checkpoint to ONNX and/or Keras .h5: ``python export.py ckpt=<run>/checkpoints/best.ckpt format=onnx``;
an ensemble to one ONNX file: ``python export.py ckpt=[a.ckpt,b.ckpt,c.ckpt] format=onnx out=ensemble.onnx``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from tumorcls.config.check import plain_values
from tumorcls.config.command_line import refuse_bad_overrides
from tumorcls.config.export import check_export_config
from tumorcls.errors import TumorclsError
from tumorcls.export.targets import checkpoint_paths, export_targets
from tumorcls.update_checks import skip_update_checks

skip_update_checks()  # before the exporters import albumentations (why: tumorcls.update_checks)

CONF_DIR = Path(__file__).resolve().parent / "conf"
# conf/export.yaml's keys that export_checkpoint takes by the same name
EXPORT_OPTIONS = ("out", "overwrite", "opset", "images", "data_root", "n_check", "atol", "calibration")
EXPORT_OPTIONS += ("n_calibrate", "int8_min_agreement", "n_int8_check")


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        options = plain_values(cfg)
        check_export_config(options)  # every key and value, before a checkpoint is read
        # the files it would write: one line before the export stack loads (export_checkpoint checks them again)
        export_targets(checkpoint_paths(options["ckpt"]), options["format"], options["out"], options["overwrite"])
        from tumorcls.export.run import export_checkpoint

        results = export_checkpoint(
            options["ckpt"],
            fmt=options["format"],
            **{key: options[key] for key in EXPORT_OPTIONS},
        )
    except TumorclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    for r in results:
        agree = f"\ttop-1 agreement {r.details['top1_agreement']:.1%}" if "top1_agreement" in r.details else ""
        size = f"{r.size_bytes / 1e6:.1f} MB"
        print(f"{r.format}\t{r.path}\t{size}\tmax|dp| {r.max_abs_diff:.2e}{agree}\t{r.image_source}")
        if r.gate is not None:  # the int8 gate's report: agreement, per-class recall float vs int8
            print(json.dumps({"int8_gate": r.gate}))


if __name__ == "__main__":
    refuse_bad_overrides(sys.argv[1:], CONF_DIR, "export")  # a misspelt key: one line, before Hydra composes
    main()
