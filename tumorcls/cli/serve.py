"""Serve a model, or an ensemble (``--model`` repeated: the mean of the models' probabilities), as a web page and
an HTTP API (POST /api/predict) from one process; binds 127.0.0.1 by default. With an API key (TUMORCLS_API_KEY
or --api-key-file) the API wants ``Authorization: Bearer <key>`` and the page a sign-in; the Host header must be
this server's (--allowed-host adds names); see README "Serve" for what is refused and the limits.

Needs the serve extra: pip install -e ".[serve]". The page is a research tool, not a medical device.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorcls.errors import TumorclsError
from tumorcls.serve.config import DEFAULT_HOST, DEFAULT_MAX_PIXELS, DEFAULT_PORT, KEY_ENV, MB, ServeConfig, read_api_key

_DEFAULTS = ServeConfig(model=Path("-"))


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
        f"exposes the model to the network: without an API key ({KEY_ENV}) to everyone; only do that on purpose",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any)")
    _access_arguments(parser)
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
    _limit_arguments(parser)
    parser.add_argument(
        "--threads", type=int, help="CPU threads of the model (torch / ONNX Runtime); default: half the cores"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (checkpoints only)")


def _access_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help=f"require this key (the file's first line; or set {KEY_ENV}): 'Authorization: Bearer <key>' for the "
        "API, a sign-in for the page. Never on the command line, which other users see",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name clients use besides localhost and the bound address (repeat; '*.example.org' allowed)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages of this origin (e.g. https://app.example.org) call the API from a browser (repeat); "
        "default: none",
    )


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help=f"most pixels of one image (default {d.max_pixels})"
    )
    parser.add_argument(
        "--decode-memory-mb",
        type=float,
        default=d.decode_memory_bytes / MB,
        help=f"memory all decodes in progress may hold, MB (default {d.decode_memory_bytes // MB})",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=d.read_timeout_s,
        help=f"seconds a whole request body may take (default {d.read_timeout_s:g})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout_s,
        help=f"seconds a request's headers or body may stall (default {d.idle_timeout_s:g})",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=d.drain_s,
        help=f"seconds in-flight requests get to finish on SIGTERM/SIGINT (default {d.drain_s:g})",
    )
    parser.add_argument(
        "--upload-quota-mb",
        type=float,
        default=d.upload_quota_bytes / MB,
        help=f"page uploads one client may hold at once, MB (default {d.upload_quota_bytes // MB})",
    )
    parser.add_argument(
        "--upload-ttl",
        type=float,
        default=d.upload_ttl_s,
        help=f"seconds after which page uploads and answers are deleted (default {d.upload_ttl_s:g})",
    )


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
        api_key=read_api_key(args.api_key_file),
        allowed_hosts=tuple(args.allowed_host),
        cors_origins=tuple(args.cors_origin),
        max_pixels=args.max_pixels,
        decode_memory_bytes=int(args.decode_memory_mb * MB),
        read_timeout_s=args.read_timeout,
        idle_timeout_s=args.idle_timeout,
        drain_s=args.drain_timeout,
        upload_quota_bytes=int(args.upload_quota_mb * MB),
        upload_ttl_s=args.upload_ttl,
    )


def run(args: argparse.Namespace) -> int:
    try:
        from tumorcls.serve.runner import serve
    except ImportError as exc:
        missing = exc.name or "a package"
        hint = 'pip install -e ".[serve]"'
        raise TumorclsError(f"tumorcls serve needs the serve extra ({missing} is missing): {hint}") from None
    serve(config_from_args(args))
    return 0
