"""The Keras tutorial's pipeline, timed: a standalone script for ``tumorcls.bench.peer``.

Imports only TensorFlow/Keras and numpy (it runs in another virtualenv, e.g. /tmp/kerasenv):

    /tmp/kerasenv/bin/python tumorcls/bench/peer_keras.py --images X.npy --labels y.npy --threads 2 --serve

The model is the tutorial's: EfficientNetB0(include_top=False, 150x150x3) -> GlobalAveragePooling2D ->
Dropout(0.5) -> Dense(4, softmax), compiled with Adam, categorical cross-entropy and accuracy, as
``model.compile(loss='categorical_crossentropy', optimizer='Adam', metrics=['accuracy'])``; weights=None
(speed does not depend on them, and nothing is downloaded). With ``--serve`` it reads one command a line
on stdin and answers one JSON line on stdout, so a driver can interleave its own measurements with these:

    train STEPS WARMUP REPEATS     model.fit over STEPS batches (after WARMUP untimed batches): images/s
    predict STEPS REPEATS          model.predict(batch_size=B) over STEPS batches: images/s
    latency N                      model.predict of one image, N times: median seconds
    call_latency N                 model(x, training=False) of one image, N times: median seconds
    info                           versions and settings
    quit
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def build_model(size: int, jit_compile: str):
    from tensorflow import keras

    base = keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dropout(rate=0.5)(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.models.Model(inputs=base.input, outputs=out)
    jit = {"auto": "auto", "true": True, "false": False}[jit_compile]
    model.compile(loss="categorical_crossentropy", optimizer="Adam", metrics=["accuracy"], jit_compile=jit)
    return model


def _seconds(fn) -> float:
    """Wall-clock seconds of one call (this script imports nothing from tumorcls: it runs in another virtualenv)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class KerasBench:
    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, jit_compile: str) -> None:
        # the tutorial reads with cv2: BGR, 0..255, float arrays fed straight to the model
        self.x = np.ascontiguousarray(images[..., ::-1]).astype(np.float32)
        self.y = np.eye(4, dtype=np.float32)[labels % 4]
        self.batch_size = batch_size
        self.model = build_model(images.shape[1], jit_compile)

    def _take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(n) % len(self.x)
        return self.x[idx], self.y[idx]

    def train(self, steps: int, warmup: int, repeats: int) -> dict:
        b = self.batch_size
        x, y = self._take(steps * b)
        wx, wy = self._take(max(1, warmup) * b)
        self.model.fit(wx, wy, batch_size=b, epochs=1, verbose=0, shuffle=True)  # traces the train function
        rates = [
            len(x) / _seconds(lambda: self.model.fit(x, y, batch_size=b, epochs=1, verbose=0, shuffle=True))
            for _ in range(repeats)
        ]
        return {"images_per_s": statistics.median(rates), "repeats": rates}

    def predict(self, steps: int, repeats: int) -> dict:
        x, _ = self._take(steps * self.batch_size)
        self.model.predict(x[: self.batch_size], batch_size=self.batch_size, verbose=0)
        rates = [
            len(x) / _seconds(lambda: self.model.predict(x, batch_size=self.batch_size, verbose=0))
            for _ in range(repeats)
        ]
        return {"images_per_s": statistics.median(rates), "repeats": rates}

    def latency(self, n: int, direct: bool = False) -> dict:
        one = self.x[:1]
        run = (
            (lambda: self.model(one, training=False).numpy())
            if direct
            else (lambda: self.model.predict(one, verbose=0))
        )
        run()
        times = [_seconds(run) for _ in range(n)]
        return {"seconds": statistics.median(times), "repeats": times}

    def info(self) -> dict:
        import keras
        import tensorflow as tf

        return {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "jit_compile": str(self.model.jit_compile),
            "params": int(self.model.count_params()),
        }

    def handle(self, line: str) -> dict | None:
        cmd, *rest = line.split()
        nums = [int(v) for v in rest]
        if cmd == "train":
            return self.train(*nums)
        if cmd == "predict":
            return self.predict(*nums)
        if cmd == "latency":
            return self.latency(*nums)
        if cmd == "call_latency":
            return self.latency(*nums, direct=True)
        if cmd == "info":
            return self.info()
        if cmd == "quit":
            return None
        return {"error": f"unknown command {cmd!r}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help=".npy of (N, H, W, 3) uint8 RGB")
    parser.add_argument("--labels", required=True, help=".npy of (N,) int labels 0..3")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="TF intra-op threads (inter-op: 1)")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--serve", action="store_true", help="answer commands on stdin (see the docstring)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    bench = KerasBench(np.load(args.images), np.load(args.labels), args.batch_size, args.jit_compile)
    out = sys.stdout
    if not args.serve:
        result = {
            "info": bench.info(),
            "train": bench.train(args.steps, 2, args.repeats),
            "predict": bench.predict(args.steps, args.repeats),
            "latency": bench.latency(10),
        }
        out.write(json.dumps(result) + "\n")
        return 0
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = bench.handle(line)
        except Exception as exc:  # noqa: BLE001 - report to the driver, keep serving
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        if answer is None:
            break
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
