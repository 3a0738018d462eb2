"""Export a checkpoint to ONNX and/or Keras .h5: ``python export.py ckpt=<run>/checkpoints/best.ckpt format=onnx``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from tumorcls.errors import TumorclsError


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from tumorcls.export_run import export_checkpoint

    images = OmegaConf.to_container(cfg.images) if OmegaConf.is_list(cfg.images) else cfg.images
    try:
        results = export_checkpoint(
            cfg.ckpt,
            fmt=cfg.format,
            out=cfg.out,
            overwrite=bool(cfg.overwrite),
            opset=int(cfg.opset),
            images=images,
            data_root=cfg.data_root,
            n_check=int(cfg.n_check),
            atol=float(cfg.atol),
        )
    except TumorclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    for r in results:
        print(f"{r.format}\t{r.path}\t{r.size_bytes / 1e6:.1f} MB\tmax|dp| {r.max_abs_diff:.2e}\t{r.image_source}")


if __name__ == "__main__":
    main()
