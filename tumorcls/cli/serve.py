"""Serve a model, or an ensemble (``--model`` repeated: the mean of the models' probabilities), as a web page and
an HTTP API (POST /api/predict) from one process; binds 127.0.0.1 by default.

Needs the serve extra: pip install -e ".[serve]". The page is a research tool, not a medical device.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorcls.errors import TumorclsError
from tumorcls.serve.config import DEFAULT_HOST, DEFAULT_PORT, MB, ServeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        type=Path,
        help="model file: .ckpt (checkpoint), .onnx or .h5; repeat it for an ensemble (the mean of the models' "
        "probabilities)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this machine only). Another address, e.g. 0.0.0.0, "
        "exposes the model to the network without authentication: only do that on purpose",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any)")
    parser.add_argument("--examples", type=Path, metavar="DIR", help="offer the images of this folder as examples")
    parser.add_argument(
        "--cam",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show Grad-CAM overlays on the page (default: on for a checkpoint; ONNX/Keras models cannot)",
    )
    parser.add_argument("--cam-layer", help="layer for Grad-CAM (default: the backbone's final feature map)")
    parser.add_argument("--tta", action="store_true", help="average each image with its mirror image (as predict)")
    parser.add_argument("--max-file-mb", type=float, default=10.0, help="largest upload accepted, MB (default 10)")
    parser.add_argument("--max-files", type=int, default=16, help="most files per request or batch (default 16)")
    parser.add_argument("--max-batch", type=int, default=32, help="most images per model call (default 32)")
    parser.add_argument(
        "--threads", type=int, help="CPU threads of the model (torch / ONNX Runtime); default: half the cores"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (checkpoints only)")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(
        model=args.model[0] if len(args.model) == 1 else tuple(args.model),
        host=args.host,
        port=args.port,
        examples=args.examples,
        cam=args.cam,
        cam_layer=args.cam_layer,
        tta=args.tta,
        max_file_bytes=int(args.max_file_mb * MB),
        max_files=args.max_files,
        max_batch=args.max_batch,
        device=args.device,
        threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    try:
        from tumorcls.serve.app import serve
    except ImportError as exc:
        missing = exc.name or "a package"
        hint = 'pip install -e ".[serve]"'
        raise TumorclsError(f"tumorcls serve needs the serve extra ({missing} is missing): {hint}") from None
    serve(config_from_args(args))
    return 0
