"""Ours next to the Keras tutorial's pipeline, on the same machine, images, batch size and threads.

    python -m tumorcls.bench.peer --keras-python /tmp/kerasenv/bin/python [--rounds 2] [--json OUT]

The Keras side (tumorcls/bench/peer_keras.py) runs in its own interpreter (TensorFlow lives in another
virtualenv) and stays up, answering one measurement at a time, so that ours and theirs alternate
(A B A B ...) and see the same machine load. Each figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # python -m tumorcls.bench.peer: before torch loads OpenMP (tumorcls.openmp_policy)
    from tumorcls.openmp_policy import prefer_passive_openmp_wait

    prefer_passive_openmp_wait()

import numpy as np
import torch

from tumorcls.atomic_io import atomic_write_json
from tumorcls.bench.inputs import endless, in_memory_datamodule, load_images, synthetic_images
from tumorcls.bench.timing import seconds_each, time_repeats
from tumorcls.bench.train_eval import BenchError, build_classifier, machine_info, train_step_fn
from tumorcls.errors import TumorclsError

log = logging.getLogger(__name__)

PEER_SCRIPT = Path(__file__).with_name("peer_keras.py")
TARGETS = {"train": 1.5, "inference": 2.0}
MEASURES = ("train", "predict", "latency")


def check_interpreter(python: str) -> None:
    if not Path(python).is_file():
        raise BenchError(
            f"--keras-python '{python}' not found (make it: python -m venv /tmp/kerasenv && "
            "/tmp/kerasenv/bin/pip install tensorflow-cpu numpy)"
        )


class KerasPeer:
    """The peer_keras.py server in a child interpreter: one command line in, one JSON line out."""

    def __init__(self, python: str, images: Path, labels: Path, batch_size: int, threads: int, jit: str) -> None:
        check_interpreter(python)
        cmd = [
            python,
            str(PEER_SCRIPT),
            "--images",
            str(images),
            "--labels",
            str(labels),
            "--serve",
            "--batch-size",
            str(batch_size),
            "--threads",
            str(threads),
            "--jit-compile",
            jit,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        self._read()  # {"ready": true}

    def _read(self) -> dict[str, Any]:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise BenchError(
                    f"the Keras peer exited (code {self.proc.poll()}); run peer_keras.py by hand to see why"
                )
            if line.lstrip().startswith("{"):
                answer = json.loads(line)
                if "error" in answer:
                    raise BenchError(f"Keras peer: {answer['error']}")
                return answer

    def ask(self, command: str) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Ours:
    """Our training step (through the TumorDataModule loaders) and our inference backends."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> None:
        from tumorcls.export.int8 import quantize_onnx_bytes
        from tumorcls.export.spec import spec_for
        from tumorcls.export.to_onnx import onnx_bytes
        from tumorcls.inference.backends import OnnxPredictor, TorchPredictor

        self.args = args
        self.images, self.labels = images, labels
        self.device = torch.device("cpu")
        size = images.shape[1]
        self.model = build_classifier(args.model, size, args.channels_last)
        self.optimizer = self.model.build_optimizer()  # the optimizer training builds
        self.loaders = {
            augment: endless(
                in_memory_datamodule(
                    (images, labels), (images, labels), size, args.batch_size, 0, augment
                ).train_dataloader()
            )
            for augment in (False, True)
        }
        infer_model = build_classifier(args.model, size, args.channels_last)
        infer_model.load_state_dict(self.model.state_dict())
        self.torch_predictor = TorchPredictor(infer_model.eval())
        self.onnx_dir = tempfile.TemporaryDirectory(prefix="tumorcls-peer-")
        fp32 = onnx_bytes(infer_model, spec_for(infer_model))
        onnx_path = Path(self.onnx_dir.name) / "model.onnx"
        onnx_path.write_bytes(fp32)
        self.onnx_predictor = OnnxPredictor(onnx_path, threads=args.threads)
        # int8: calibrated on these same images (this measures speed; export.py calibrates on training images)
        int8_path = Path(self.onnx_dir.name) / "model.int8.onnx"
        int8_path.write_bytes(quantize_onnx_bytes(fp32, images))
        self.int8_predictor = OnnxPredictor(int8_path, threads=args.threads)

    def train(self, augment: bool) -> dict[str, Any]:
        self.model.train()
        batches = self.loaders[augment]
        step = train_step_fn(self.model, self.optimizer, lambda: next(batches), self.device, "32")
        return time_repeats(step, self.args.steps, self.args.warmup, self.args.repeats, self.device)

    def _predictor(self, backend: str) -> Any:
        return {"torch": self.torch_predictor, "onnx": self.onnx_predictor, "int8": self.int8_predictor}[backend]

    def predict(self, backend: str) -> dict[str, Any]:
        predictor, b = self._predictor(backend), self.args.batch_size
        batches = [self.images[np.arange(i * b, (i + 1) * b) % len(self.images)] for i in range(self.args.steps)]
        it = iter(range(10**9))

        def step() -> int:
            batch = batches[next(it) % len(batches)]
            predictor.predict_proba(batch)
            return len(batch)

        # one timed repeat = all ``steps`` batches, like Keras's predict over the same array
        return time_repeats(step, self.args.steps, 1, self.args.repeats, self.device)

    def latency(self, backend: str, n: int) -> dict[str, Any]:
        predictor, one = self._predictor(backend), self.images[:1]
        times = seconds_each(lambda: predictor.predict_proba(one), n, warmup=1)
        return {"seconds": statistics.median(times), "repeats": times}


def peer_images(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    root = args.data or os.environ.get("TUMORCLS_DATA")
    n = args.batch_size * args.steps
    if root and (Path(root) / "Training").is_dir():
        images, labels = load_images(root, args.size, n)
        return images, labels, f"real:{root} ({len(images)} JPEGs decoded at {args.size})"
    images, labels = synthetic_images(n, args.size)
    return images, labels, "synthetic"


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def parse_measures(text: str) -> list[str]:
    measures = [m.strip() for m in text.split(",") if m.strip()]
    if not measures or set(measures) - set(MEASURES):
        raise BenchError(f"bad --measures {text!r}; choose from {list(MEASURES)} (comma-separated)")
    return measures


def measure_round(
    ours: Ours, peer: KerasPeer, measures: Sequence[str], args: argparse.Namespace, add: Callable[[str, float], None]
) -> None:
    """One A B round: each of ours next to the Keras figure it is compared with."""
    s, w, r, n = args.steps, args.warmup, args.repeats, args.latency_n
    if "train" in measures:
        add("ours train (no aug) img/s", ours.train(augment=False)["images_per_s"])
        add("keras fit img/s", peer.ask(f"train {s} {w} {r}")["images_per_s"])
        add("ours train (+aug) img/s", ours.train(augment=True)["images_per_s"])
    if "predict" in measures:
        add("ours torch predict img/s", ours.predict("torch")["images_per_s"])
        add("keras predict img/s", peer.ask(f"predict {s} {r}")["images_per_s"])
        add("ours onnx predict img/s", ours.predict("onnx")["images_per_s"])
        add("ours onnx int8 predict img/s", ours.predict("int8")["images_per_s"])
    if "latency" in measures:
        add("ours torch 1-image s", ours.latency("torch", n)["seconds"])
        add("keras predict 1-image s", peer.ask(f"latency {n}")["seconds"])
        add("ours onnx 1-image s", ours.latency("onnx", n)["seconds"])
        add("ours onnx int8 1-image s", ours.latency("int8", n)["seconds"])
        add("keras model(x) 1-image s", peer.ask(f"call_latency {n}")["seconds"])


def compare(med: dict[str, float], measures: Sequence[str]) -> tuple[dict[str, float], dict[str, bool]]:
    """Ours against Keras from the medians: the ratios, and whether each target is met."""
    ratios: dict[str, float] = {}
    targets: dict[str, bool] = {}
    if "train" in measures:
        ratios["train (no aug) vs keras fit"] = med["ours train (no aug) img/s"] / med["keras fit img/s"]
        ratios["train (+aug) vs keras fit"] = med["ours train (+aug) img/s"] / med["keras fit img/s"]
        targets["train >= 1.5x keras fit"] = ratios["train (no aug) vs keras fit"] >= TARGETS["train"]
    if "predict" in measures:
        keras = med["keras predict img/s"]
        best_float = max(med["ours torch predict img/s"], med["ours onnx predict img/s"])
        ratios["inference batch (best float backend) vs keras predict"] = best_float / keras
        ratios["inference batch (onnx int8) vs keras predict"] = med["ours onnx int8 predict img/s"] / keras
        best_batch = max(best_float, med["ours onnx int8 predict img/s"])
        ratios["inference batch (best backend) vs keras predict"] = best_batch / keras
        targets["inference >= 2x keras predict"] = best_batch / keras >= TARGETS["inference"]
    if "latency" in measures:
        best_one = min(med["ours torch 1-image s"], med["ours onnx 1-image s"], med["ours onnx int8 1-image s"])
        ratios["1-image latency: keras predict / ours (best)"] = med["keras predict 1-image s"] / best_one
        ratios["1-image latency: keras model(x) / ours (best)"] = med["keras model(x) 1-image s"] / best_one
    return ratios, targets


def alternate(ours: Ours, peer: KerasPeer, measures: Sequence[str], args: argparse.Namespace) -> tuple[dict, list]:
    """``--rounds`` A B rounds: every figure per round, and the 1-minute load average before and after each."""
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)
        log.info("%-32s %10.4f  (load %.1f)", name, value, os.getloadavg()[0])

    loads = [os.getloadavg()[0]]
    for rnd in range(args.rounds):
        log.info("round %d/%d", rnd + 1, args.rounds)
        measure_round(ours, peer, measures, args, add)
        loads.append(os.getloadavg()[0])
    return rows, loads


def run_peer(args: argparse.Namespace) -> dict[str, Any]:
    check_interpreter(args.keras_python)
    measures = parse_measures(args.measures)
    torch.set_num_threads(args.threads)
    images, labels, source = peer_images(args)
    with tempfile.TemporaryDirectory(prefix="tumorcls-peer-data-") as tmp:
        x_path, y_path = Path(tmp) / "images.npy", Path(tmp) / "labels.npy"
        np.save(x_path, images)
        np.save(y_path, labels)
        log.info("building ours (%s) and the Keras peer; images: %s", args.model, source)
        ours = Ours(images, labels, args)
        peer = KerasPeer(args.keras_python, x_path, y_path, args.batch_size, args.threads, args.jit_compile)
        try:
            keras_info = peer.ask("info")
            rows, loads = alternate(ours, peer, measures, args)
        finally:
            peer.close()
    med = {k: _median(v) for k, v in rows.items()}
    ratios, targets = compare(med, measures)
    return {
        "machine": machine_info(torch.device("cpu")),
        "config": {**vars(args), "images_source": source},
        "keras": keras_info,
        "load_average_1min_per_round": [round(v, 2) for v in loads],
        "raw": rows,
        "median": med,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": targets,
    }


def format_table(result: dict[str, Any]) -> str:
    m, c = result["machine"], result["config"]
    lines = [
        f"tumorcls vs Keras tutorial  {m['date']}  {m['nproc']} CPUs ({m['cpu_model']})  threads {c['threads']}  "
        f"torch {m['torch']}  TF {result['keras']['tensorflow']} (keras {result['keras']['keras']}, "
        f"jit_compile {result['keras']['jit_compile']})",
        f"model {c['model']}  size {c['size']}  batch {c['batch_size']}  channels_last {c['channels_last']}  "
        f"images {c['images_source']}  rounds {c['rounds']}",
        f"load average (1 min) before and after each round: {result['load_average_1min_per_round']}",
        f"{'measure (median over rounds)':<34}{'value':>12}   per round",
    ]
    for name, value in result["median"].items():
        lines.append(f"{name:<34}{value:>12}   {[round(v, 4) for v in result['raw'][name]]}")
    lines.append("")
    for name, value in result["ratios"].items():
        lines.append(f"{name:<52}{value:>8}x")
    for name, ok in result["targets"].items():
        lines.append(f"target {name}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumorcls.bench.peer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keras-python", default="/tmp/kerasenv/bin/python", help="interpreter with tensorflow")
    parser.add_argument("--model", default="tf_efficientnet_b0")
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="batches per timed repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds (ours, theirs) whose medians are reported")
    parser.add_argument("--latency-n", type=int, default=10, help="single-image calls per latency measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch / TF intra-op / ORT intra-op threads")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"], help="Keras compile")
    parser.add_argument("--data", default=None, help="dataset ROOT (default: $TUMORCLS_DATA, else synthetic)")
    parser.add_argument("--measures", default="train,predict,latency", help="comma-separated subset to run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run_peer(args)
    except TumorclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
