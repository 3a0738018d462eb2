"""Throughput benchmark: training and evaluation images/s, the data pipeline alone, and the tutorial's
training recipe timed end to end.

    python -m tumorcls.bench.train_eval [--device auto|cpu|cuda] [--parts train,eval,data,recipe] [--json OUT]

Every figure is the median of ``--repeats`` timed runs of ``--steps`` batches after ``--warmup`` untimed
ones, measured in this one process. Not a test: timings belong here, never in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # python -m tumorcls.bench.train_eval: before torch loads OpenMP (see the module)
    from tumorcls.openmp_policy import prefer_passive_openmp_wait

    prefer_passive_openmp_wait()

import numpy as np
import torch

from tumorcls.atomic_io import atomic_write_json
from tumorcls.bench.inputs import (
    default_train_augmentations,
    endless,
    in_memory_datamodule,
    load_images,
    synthetic_images,
)
from tumorcls.bench.timing import synchronize, time_repeats
from tumorcls.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tumorcls.device import resolve_device
from tumorcls.errors import TumorclsError

log = logging.getLogger(__name__)

PARTS = ("train", "eval", "predict", "data", "recipe")
PRECISIONS = ("auto", "32", "bf16")
# the tutorial: 3264 images pooled, 90 % for training of which Keras's validation_split=0.1 holds out 10 %
RECIPE_TRAIN_IMAGES = 2643
RECIPE_VAL_IMAGES = 294


class BenchError(TumorclsError):
    """A benchmark that cannot run as asked (no CUDA, unknown part, bad option)."""


@dataclass
class PartContext:
    """What every benchmark part runs with: the options, the resolved device and precision, the images."""

    args: argparse.Namespace
    device: torch.device
    precision: str
    images: np.ndarray | None = None
    labels: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------- setup


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 autocast on CUDA, float32 on CPU (as the training config does)."""
    if precision not in PRECISIONS:
        raise BenchError(f"unknown --precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def parse_parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise BenchError(f"unknown --parts {unknown or text!r}; choose from {list(PARTS)} (comma-separated)")
    return parts


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


# ----------------------------------------------------------------------------------------------- data


def bench_images(args: argparse.Namespace, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    if args.data:
        images, labels = load_images(args.data, args.size, n)
        return images, labels, f"real:{args.data}"
    images, labels = synthetic_images(n, args.size)
    return images, labels, "synthetic"


# ----------------------------------------------------------------------------------------------- timing


def build_classifier(
    model_name: str, size: int, channels_last: bool, cuda_graphs: bool = False, cuda_graphs_eval: bool = False
) -> Any:
    """Our TumorClassifier (random weights: speed does not depend on them)."""
    from tumorcls.models.lit_module import TumorClassifier

    logging.getLogger("tumorcls.models.network").setLevel(logging.ERROR)  # the random-init warning is expected here
    return TumorClassifier(
        backbone=model_name,
        pretrained=False,
        weights=None,
        channels_last=channels_last,
        input_size=size,
        cuda_graphs=cuda_graphs,
        cuda_graphs_eval=cuda_graphs_eval,
    )


def host_batch(images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device):
    """One normalised batch in host memory, pinned when it is bound for a GPU."""
    idx = np.arange(batch_size) % len(images)
    x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = ((x - mean) / std).contiguous()
    y = torch.from_numpy(labels[idx]).long()
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    return x, y


def prepare_model(args: argparse.Namespace, device: torch.device) -> Any:
    graphs = (args.cuda_graphs, getattr(args, "eval_graphs", False))
    model = build_classifier(args.model, args.size, args.channels_last, *graphs).to(device)
    if args.compile:
        # reduce-overhead: CUDA graphs, for small batches whose step is bound by kernel launches
        model.net = torch.compile(model.net, mode=None if args.compile_mode == "default" else args.compile_mode)
    return model


def train_step_fn(
    model: Any, optimizer: torch.optim.Optimizer, batches: Callable[[], tuple], device: torch.device, precision: str
) -> Callable[[], int]:
    """One full optimizer step: host->device copy, forward, cross-entropy, backward, Adam step (the forward
    and backward replayed from CUDA graphs when the model was built with ``cuda_graphs``, as in training)."""

    def step() -> int:
        x, y = batches()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model.train_logits(x)
        loss = model._loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(y)

    return step


def whole_step_graph_fn(
    model: Any, batches: Callable[[], tuple], device: torch.device, precision: str
) -> Callable[[], int]:
    """The same step with all of it (forward, loss, backward, a capturable Adam step) recorded as one CUDA graph:
    one launch per step, what no host-side overhead limits. Not what training runs: it measures the step's floor."""
    if device.type != "cuda":
        raise BenchError("--whole-step-graph needs --device cuda")
    params = list(model.net.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3, capturable=True, foreach=True)
    x, y = (t.to(device) for t in batches())
    static_x, static_y = x.clone(), y.clone()

    def forward_backward_step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16", cache_enabled=False):
            logits = model(static_x)
        model._loss(logits, static_y).backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: cuDNN picks its kernels, Adam allocates its state
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            forward_backward_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        forward_backward_step()

    def step() -> int:
        x, y = batches()
        static_x.copy_(x, non_blocking=True)
        static_y.copy_(y, non_blocking=True)
        graph.replay()
        return len(y)

    return step


def eval_step_fn(model: Any, batch: tuple, device: torch.device, precision: str) -> Callable[[], int]:
    """Validation's forward (``eval_logits``: replayed from CUDA graphs when built with ``cuda_graphs_eval``)."""

    def step() -> int:
        x = batch[0].to(device, non_blocking=True)
        with torch.inference_mode(), autocast(device, precision):
            model.eval_logits(x)
        return len(x)

    return step


def bench_train(ctx: PartContext) -> dict[str, Any]:
    args = ctx.args
    model = prepare_model(args, ctx.device).train()
    batch = host_batch(ctx.images, ctx.labels, args.batch_size, ctx.device)
    if args.whole_step_graph:
        step = whole_step_graph_fn(model, lambda: batch, ctx.device, ctx.precision)
    else:
        step = train_step_fn(model, model.build_optimizer(), lambda: batch, ctx.device, ctx.precision)
    return time_repeats(step, args.steps, args.warmup, args.repeats, ctx.device)


def bench_eval(ctx: PartContext) -> dict[str, Any]:
    args = ctx.args
    model = prepare_model(args, ctx.device).eval()
    batch = host_batch(ctx.images, ctx.labels, args.eval_batch_size or args.batch_size, ctx.device)
    step = eval_step_fn(model, batch, ctx.device, ctx.precision)
    return time_repeats(step, args.steps, args.warmup, args.repeats, ctx.device)


def bench_predict(ctx: PartContext) -> dict[str, Any]:
    """``tumorcls predict``'s model path on in-memory images: TorchPredictor.predict_proba on uint8 RGB batches
    of ``--eval-batch-size`` (copy to the device, normalisation, the network in float32 or, with
    ``--predict-bf16``, under bfloat16 autocast on CUDA, probabilities back)."""
    from tumorcls.inference.backends.torch_checkpoint import TorchPredictor

    args = ctx.args
    model = build_classifier(args.model, args.size, args.channels_last)
    predictor = TorchPredictor(model, str(ctx.device), bf16=args.predict_bf16)
    n = args.eval_batch_size or args.batch_size
    batch = np.ascontiguousarray(ctx.images[np.arange(n) % len(ctx.images)])

    def step() -> int:
        return len(predictor.predict_proba(batch))

    return time_repeats(step, args.steps, args.warmup, args.repeats, ctx.device)


def parse_workers(text: str) -> list[int]:
    from tumorcls.data.datamodule import resolve_num_workers

    try:
        return [resolve_num_workers(w.strip()) for w in text.split(",") if w.strip()]
    except ValueError:
        raise BenchError(f"bad --workers {text!r}: a comma-separated list of counts or 'auto'") from None


def bench_data(ctx: PartContext) -> dict[str, Any]:
    """Augmentation + collation from the decoded in-memory array, per worker count (pinned on CUDA)."""
    args, images, labels = ctx.args, ctx.images, ctx.labels
    results: dict[str, Any] = {}
    for workers in parse_workers(args.workers):
        dm = in_memory_datamodule((images, labels), (images, labels), args.size, args.batch_size, workers)
        batches = endless(dm.train_dataloader())

        def step(batches: Any = batches) -> int:
            return len(next(batches)[1])

        results[f"workers={workers}"] = time_repeats(step, args.steps, args.warmup, args.repeats, ctx.device)
        del batches, step  # shuts the persistent workers down
    best = max(results.values(), key=lambda r: r["images_per_s"])
    return {"images_per_s": best["images_per_s"], "by_workers": results}


def recipe_datamodule(args: argparse.Namespace) -> tuple[Any, float | None, str]:
    """The recipe's data, decoded into memory: (datamodule, seconds spent decoding real images, source)."""
    from tumorcls.data.datamodule import TumorDataModule

    if not args.data:
        images, labels = synthetic_images(args.recipe_train_images + args.recipe_val_images, args.size, seed=1)
        n = args.recipe_train_images
        dm = in_memory_datamodule(
            (images[:n], labels[:n]), (images[n:], labels[n:]), args.size, args.batch_size, args.recipe_workers
        )
        return dm, None, "synthetic"
    start = time.perf_counter()
    dm = TumorDataModule(
        root=args.data,
        protocol="official",
        size=args.size,
        batch_size=args.batch_size,
        num_workers=args.recipe_workers,
        train_augmentations=default_train_augmentations(),
    )
    dm.setup("fit")
    return dm, round(time.perf_counter() - start, 2), f"real:{args.data}"


def recipe_trainer(ctx: PartContext, profile_dir: str | None) -> Any:
    """A bare Lightning Trainer for the recipe: no logger, checkpoints, progress bar or sanity check."""
    import lightning as L
    from lightning.pytorch.profilers import SimpleProfiler

    return L.Trainer(
        accelerator="gpu" if ctx.device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if ctx.precision == "bf16" else "32-true",
        max_epochs=ctx.args.recipe_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        benchmark=ctx.device.type == "cuda",
        profiler=SimpleProfiler(profile_dir, "recipe") if profile_dir else None,
    )


def bench_recipe(ctx: PartContext) -> dict[str, Any]:
    """The tutorial's recipe (``--recipe-epochs`` epochs, validation after each) as a real Lightning fit on
    data already decoded in memory; times ``trainer.fit`` alone."""
    args = ctx.args
    dm, decode_seconds, source = recipe_datamodule(args)
    model = prepare_model(args, ctx.device)
    with tempfile.TemporaryDirectory(prefix="tumorcls-bench-") as tmp:
        profile_dir = tmp if args.recipe_profile else None
        trainer = recipe_trainer(ctx, profile_dir)
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        synchronize(ctx.device)
        fit_seconds = time.perf_counter() - start
        profile = "".join(p.read_text() for p in sorted(Path(tmp).glob("*.txt"))) if profile_dir else None
    n_train, n_val = len(dm.datasets["train"]), len(dm.datasets["val"])
    return {
        "fit_seconds": round(fit_seconds, 2),
        "epochs": trainer.current_epoch,
        "train_images": n_train,
        "val_images": n_val,
        "train_images_per_s_incl_val": round(n_train * args.recipe_epochs / fit_seconds, 2),
        "num_workers": dm.num_workers,
        "decode_seconds": decode_seconds,
        "source": source,
        "profile": profile,
    }


PART_RUNNERS: dict[str, Callable[[PartContext], dict[str, Any]]] = {
    "train": bench_train,
    "eval": bench_eval,
    "predict": bench_predict,
    "data": bench_data,
    "recipe": bench_recipe,
}


# ----------------------------------------------------------------------------------------------- driver


def run_part(ctx: PartContext, part: str) -> dict[str, Any]:
    """One part's figures, with the peak host (and GPU) memory it reached."""
    device = ctx.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    log.info("benchmark part %s on %s (%s)", part, device, ctx.precision)
    out = PART_RUNNERS[part](ctx)
    out["peak_rss_mib"] = peak_rss_mib()
    out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
    return out


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    parts = parse_parts(args.parts)
    device = torch.device(resolve_device(args.device))
    ctx = PartContext(args, device, resolve_precision(args.precision, device))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    config = {k: v for k, v in vars(args).items() if k not in ("func",)}
    config.update(device=str(device), precision=ctx.precision)
    result: dict[str, Any] = {"machine": machine_info(device), "config": config}
    if any(p in parts for p in ("train", "eval", "predict", "data")):
        ctx.images, ctx.labels, config["images_source"] = bench_images(args, args.images)
    for part in parts:
        result[part] = run_part(ctx, part)
    result["machine"]["load_average_end"] = result["machine"]["load_average"] and list(os.getloadavg())
    return result


def format_table(result: dict[str, Any]) -> str:
    m, c = result["machine"], result["config"]
    lines = [
        f"tumorcls bench  {m['date']}  {m['platform']}  {m['nproc']} CPUs ({m['cpu_model']})  "
        f"GPU: {m['gpu'] or 'none'}  torch {m['torch']}  load {m['load_average']}",
        f"model {c['model']}  size {c['size']}  batch {c['batch_size']}  device {c['device']}  "
        f"precision {c['precision']}  channels_last {c['channels_last']}  compile {c['compile']}  "
        f"cuda_graphs {c.get('cuda_graphs', False)}  "
        f"threads {m['torch_threads']}",
        f"{'part':<28}{'images/s':>12}{'peak RSS MiB':>14}{'peak GPU MiB':>14}",
    ]

    def row(name: str, rate: Any, part: dict) -> None:
        gpu = part.get("peak_gpu_mib")
        lines.append(f"{name:<28}{rate:>12}{part['peak_rss_mib']:>14}{'-' if gpu is None else gpu:>14}")

    for part in ("train", "eval", "predict"):
        if part in result:
            row(part, result[part]["images_per_s"], result[part])
    if "data" in result:
        for name, timing in result["data"]["by_workers"].items():
            row(f"data ({name})", timing["images_per_s"], result["data"])
    if "recipe" in result:
        r = result["recipe"]
        row(f"recipe fit ({r['epochs']} ep): {r['fit_seconds']} s", r["train_images_per_s_incl_val"], r)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--parts", default="train,eval,data", help=f"comma-separated, from {','.join(PARTS)}")
    parser.add_argument("--model", default="tf_efficientnet_b0", help="timm model name")
    parser.add_argument("--size", type=int, default=150, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--steps", type=int, default=20, help="batches per timed repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, 32 on CPU) | 32 | bf16")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument(
        "--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"]
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="train part: the training forward/backward as CUDA graphs"
    )
    parser.add_argument(
        "--whole-step-graph",
        action="store_true",
        help="train part: forward, backward and Adam as one CUDA graph (the step's floor; not what training runs)",
    )
    parser.add_argument(
        "--eval-graphs", action="store_true", help="eval part: the evaluation forward replayed from CUDA graphs"
    )
    parser.add_argument(
        "--predict-bf16", action="store_true", help="predict part: TorchPredictor under bf16 autocast (CUDA)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--images", type=int, default=256, help="images held in memory for train/eval/data")
    parser.add_argument("--data", default=None, help="dataset ROOT (Kaggle layout): decode real images")
    parser.add_argument("--workers", default="auto", help="data part: DataLoader worker counts, e.g. 0,4,8")
    parser.add_argument("--recipe-epochs", type=int, default=12)
    parser.add_argument("--recipe-train-images", type=int, default=RECIPE_TRAIN_IMAGES)
    parser.add_argument("--recipe-val-images", type=int, default=RECIPE_VAL_IMAGES)
    parser.add_argument("--recipe-workers", default="auto", help="recipe DataLoader workers (auto as training)")
    parser.add_argument("--recipe", action="store_true", help="shorthand: add 'recipe' to --parts")
    parser.add_argument("--recipe-profile", action="store_true", help="Lightning's SimpleProfiler over the fit")
    parser.add_argument("--json", default=None, help="write the results here (JSON)")


def run(args: argparse.Namespace) -> int:
    if args.recipe and "recipe" not in args.parts.split(","):
        args.parts = f"{args.parts},recipe"
    if min(args.steps, args.repeats, args.batch_size, args.images) < 1 or args.warmup < 0:
        raise BenchError("--steps, --repeats, --batch-size and --images must be >= 1, --warmup >= 0")
    result = run_bench(args)
    print(format_table(result))
    if result.get("recipe", {}).get("profile"):
        print(result["recipe"]["profile"])
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumorcls.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no fit banners between the figures
    try:
        return run(args)
    except TumorclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
