"""Export a checkpoint to ONNX and/or Keras .h5: ``python export.py ckpt=<run>/checkpoints/best.ckpt format=onnx``;
an ensemble to one ONNX file: ``python export.py ckpt=[a.ckpt,b.ckpt,c.ckpt] format=onnx out=ensemble.onnx``."""

from __future__ import annotations

import json
import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from tumorcls.errors import TumorclsError
from tumorcls.update_checks import skip_update_checks

skip_update_checks()  # before the exporters import albumentations (why: tumorcls.update_checks)


def _plain(value: Any) -> Any:
    """A list option (``ckpt=[a,b]``, ``images=[...]``) as a Python list; anything else as it is."""
    return OmegaConf.to_container(value) if OmegaConf.is_list(value) else value


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from tumorcls.export.run import export_checkpoint

    images, calibration, ckpt = (_plain(cfg[key]) for key in ("images", "calibration", "ckpt"))
    try:
        results = export_checkpoint(
            ckpt,
            fmt=cfg.format,
            out=cfg.out,
            overwrite=bool(cfg.overwrite),
            opset=int(cfg.opset),
            images=images,
            data_root=cfg.data_root,
            n_check=int(cfg.n_check),
            atol=float(cfg.atol),
            calibration=calibration,
            n_calibrate=int(cfg.n_calibrate),
            int8_min_agreement=float(cfg.int8_min_agreement),
            n_int8_check=int(cfg.n_int8_check),
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
    main()
