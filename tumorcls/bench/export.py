"""CPU inference speed of one model in three runtimes: PyTorch eager, ONNX Runtime and Keras (TensorFlow).

``python -m tumorcls.bench.export --ckpt <run>/checkpoints/best.ckpt`` times the exported computation
(RGB/BGR 0..255 pixels in, probabilities out, preprocessing included) at batch 32 (images/s) and batch 1
(latency), each the median of several timed runs after warm-up, all in one process; prints a table and
JSON. It uses the run's ``export/model.onnx`` and ``export/model.h5`` (or --onnx/--keras), exporting
into a temporary folder what is missing. A benchmark, not a test: numbers depend on the machine and load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tumorcls.atomic_io import atomic_write_json
from tumorcls.bench.timing import median_seconds
from tumorcls.errors import TumorclsError
from tumorcls.export.run import export_checkpoint
from tumorcls.export.spec import load_for_export
from tumorcls.export.to_onnx import probability_model
from tumorcls.inference.backends import OnnxPredictor
from tumorcls.run_layout import RunLayout

log = logging.getLogger(__name__)


def _runners(
    ckpt: Path, onnx_path: Path | None, keras_path: Path | None, threads: int | None
) -> tuple[dict[str, Callable], int]:
    """backend -> f(rgb uint8 NHWC) computing probabilities, each as it would run in production; input size."""
    model, spec = load_for_export(ckpt)
    wrapper = probability_model(model, spec.temperature)
    # NHWC pixels are channels_last already: keep that layout when the model runs channels_last (faster on CPU)
    layout = torch.channels_last if model.hparams.get("channels_last") else torch.contiguous_format

    def torch_run(rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().contiguous(memory_format=layout)
        with torch.inference_mode():
            return wrapper(x).numpy()

    runners: dict[str, Callable] = {"pytorch-eager": torch_run}
    if onnx_path is not None:
        runners["onnxruntime"] = OnnxPredictor(onnx_path, threads).predict_proba
    if keras_path is not None:
        from tumorcls.export.to_keras import load_keras_model

        keras_model = load_keras_model(keras_path, "keras3")  # tf.keras, as an app would load it
        # predict_on_batch runs a compiled tf.function, as model.predict does (eager __call__ is far slower)
        runners["keras-tf"] = lambda rgb: keras_model.predict_on_batch([np.ascontiguousarray(rgb[..., ::-1])])
    return runners, int(spec.input_size)


def _have_tensorflow() -> bool:
    try:
        from tumorcls.export.to_keras import import_keras

        import_keras()
        return True
    except TumorclsError:
        return False


def benchmark(
    ckpt: str | Path,
    onnx_path: str | Path | None = None,
    keras_path: str | Path | None = None,
    batch: int = 32,
    runs: int = 7,
    latency_runs: int = 30,
    warmup: int = 2,
    threads: int | None = None,
    skip_keras: bool = False,
) -> dict[str, Any]:
    ckpt = Path(ckpt).expanduser()
    if threads:
        torch.set_num_threads(threads)
    export_dir = RunLayout.of_checkpoint(ckpt).export_dir
    onnx_file = Path(onnx_path) if onnx_path else export_dir / "model.onnx"
    keras_file = Path(keras_path) if keras_path else export_dir / "model.h5"
    use_keras = not skip_keras and _have_tensorflow()
    used = {"onnx": str(onnx_file), "keras": str(keras_file) if use_keras else None}
    with tempfile.TemporaryDirectory(prefix="tumorcls-bench-") as tmp:
        if not onnx_file.is_file():
            onnx_file = Path(export_checkpoint(ckpt, "onnx", out=Path(tmp) / "model.onnx", n_check=2)[0].path)
            used["onnx"] = "temporary export"
        if use_keras and not keras_file.is_file():
            keras_file = Path(export_checkpoint(ckpt, "keras", out=Path(tmp) / "model.h5", n_check=2)[0].path)
            used["keras"] = "temporary export"
        runners, size = _runners(ckpt, onnx_file, keras_file if use_keras else None, threads)
        rng = np.random.default_rng(0)
        big = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        one = big[:1].copy()
        rows = []
        for name, fn in runners.items():
            t_batch = median_seconds(lambda fn=fn: fn(big), runs, warmup)
            t_one = median_seconds(lambda fn=fn: fn(one), latency_runs, warmup)
            rows.append(
                {
                    "backend": name,
                    f"images_per_s_batch{batch}": round(batch / t_batch, 1),
                    f"ms_per_batch{batch}": round(t_batch * 1e3, 1),
                    "latency_ms_batch1": round(t_one * 1e3, 2),
                }
            )
    return {
        "checkpoint": str(ckpt),
        **used,
        "input": f"{batch} x {size} x {size} x 3 random pixels",
        "runs": {"batch": runs, "latency": latency_runs, "warmup": warmup, "statistic": "median"},
        "threads": {"torch": torch.get_num_threads(), "requested": threads, "nproc": os.cpu_count()},
        "versions": _versions(use_keras),
        "results": rows,
    }


def _versions(keras: bool) -> dict[str, str]:
    import onnxruntime

    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    if keras:  # TensorFlow was loaded by the Keras runner, through tumorcls.export.to_keras (the one place that may)
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    return versions


def format_table(report: dict[str, Any]) -> str:
    rows = report["results"]
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tumorcls.bench.export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a tumorcls checkpoint")
    parser.add_argument("--onnx", help="the ONNX file (default <run>/export/model.onnx, else a temporary export)")
    parser.add_argument("--keras", help="the .h5 file (default <run>/export/model.h5, else a temporary export)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=7, help="timed runs at --batch (median)")
    parser.add_argument("--latency-runs", type=int, default=30, help="timed runs at batch 1 (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="intra-op threads for torch and ONNX Runtime (default: theirs)")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras backend")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = benchmark(
            args.ckpt,
            args.onnx,
            args.keras,
            args.batch,
            args.runs,
            args.latency_runs,
            args.warmup,
            args.threads,
            args.no_keras,
        )
    except TumorclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(json.dumps(report, indent=2))
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
