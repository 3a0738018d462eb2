"""What ``export.py`` runs: load a checkpoint, write ONNX and/or Keras .h5 files atomically, and keep a
file only if it reproduces the PyTorch model's probabilities on real (or, failing that, synthetic) pixels.

Both sides of that comparison are the inference backends users run: the checkpoint backend gives the
reference, and the written (temporary) file is loaded by the ONNX or Keras backend, contract checks included.
Parity and int8 calibration images are decoded as the model's users decode them, with its crop and intensity
normalisation; the loaded file must declare the same preprocessing as the checkpoint. The int8 file is not exact:
it is kept only if its top-1 class agrees with the float model's on enough check images that are not its
calibration images (tumorcls.export.int8: the gate and its per-class recall report).

Several checkpoints (``ckpt=[a.ckpt,b.ckpt]``) export to one ONNX file whose graph averages the members'
probabilities; its reference is the mean of the members' checkpoint-backend probabilities. Ensembles export to
ONNX only, and to an ``out=`` file of their own (they have no run folder)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tumorcls.config.export import DEFAULTS as EXPORT
from tumorcls.config.export import check_export_config
from tumorcls.data.class_folders import canonical_class
from tumorcls.data.decode import DecodeOptions, ImageDecodeError, read_image
from tumorcls.data.files import find_images
from tumorcls.errors import ExportError
from tumorcls.export.int8 import (
    DEFAULT_CHECK_IMAGES,
    MIN_CHECK_IMAGES,
    gate_summary,
    int8_gate,
)
from tumorcls.export.spec import load_ensemble_for_export, load_for_export
from tumorcls.export.targets import CheckpointArg, checkpoint_paths, export_targets
from tumorcls.export.to_onnx import ExportModel, export_onnx
from tumorcls.inference.backends import ModelFileError, OnnxPredictor, Predictor, TorchPredictor
from tumorcls.inference.backends.ensemble import repeated_member
from tumorcls.model_file import EnsembleSpec, ExportSpec
from tumorcls.models.checkpoint import CheckpointInfo
from tumorcls.models.lit_module import TumorClassifier
from tumorcls.run_layout import RunLayout

log = logging.getLogger(__name__)

ImageArg = Sequence[str | Path] | str | None  # image files, folders or globs; one, several or none
RootArg = str | Path | None
PARITY_BATCH = 32  # the reference is computed this many images at a time


@dataclass(frozen=True)
class ParityImages:
    """uint8 RGB pixels (N, size, size, 3) the exports are checked on, where they came from, their files (when
    read from files) and their class indices (when known)."""

    pixels: np.ndarray
    source: str
    files: tuple[Path, ...] = ()
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class ExportResult:
    format: str
    path: str
    size_bytes: int
    max_abs_diff: float
    n_images: int
    image_source: str
    details: dict[str, float]
    gate: dict[str, Any] | None = None  # format=onnx_int8: the int8 gate's report (tumorcls.export.int8.int8_gate)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- the pixels parity is checked on


def _image_files(items: Sequence[str | Path], purpose: str = "parity") -> list[Path]:
    """The files, folders (searched recursively) and globs given, by the data stage's one finder."""
    files, missing = find_images(items)
    if missing:
        raise ExportError(f"{purpose} image '{missing[0][0]}' not found")
    return files


def _data_root_of_run(run_dir: Path) -> Path | None:
    """The data root the run trained on, from its Hydra config (``data.root``), if it resolves."""
    config = RunLayout(run_dir).hydra_config
    if not config.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        root = OmegaConf.select(OmegaConf.load(config), "data.root", throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable config only means "no hint"
        return None
    return Path(str(root)).expanduser() if root else None


def _manifest_files(
    run_dir: Path, data_root: str | Path | None, n: int, splits: Sequence[str] = ("test", "val", "train")
) -> list[Path]:
    """Up to ``n`` files of the run's splits.csv from ``splits``, in that order, taking the classes in turn."""
    return [path for path, _ in _manifest_rows(run_dir, data_root, n, splits)]


def _manifest_rows(
    run_dir: Path, data_root: str | Path | None, n: int, splits: Sequence[str]
) -> list[tuple[Path, str]]:
    """(file, class name) of up to ``n`` rows of the run's splits.csv from ``splits``, taking the classes in turn."""
    manifest = RunLayout(run_dir).splits_csv
    if not manifest.is_file():
        return []
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    roots = [
        Path(r).expanduser() for r in (data_root, _data_root_of_run(run_dir), os.environ.get("TUMORCLS_DATA")) if r
    ]
    root = next((r for r in roots if rows and (r / rows[0]["path"]).is_file()), None)
    if root is None:
        log.warning("splits.csv found, but none of the data roots %s holds its images", [str(r) for r in roots])
        return []
    order = {name: i for i, name in enumerate(splits)}
    rows = [r for r in rows if r.get("split", "") in order]
    rows.sort(key=lambda r: order[r["split"]])  # stable: keeps the manifest's order inside a split
    by_class: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_class.setdefault(row.get("label", ""), []).append(row)
    picked: list[tuple[Path, str]] = []
    queues = list(by_class.values())
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                row = queue.pop(0)
                picked.append((root / row["path"], row.get("class_name", "")))
    return picked


def decode_options(spec: ExportSpec | EnsembleSpec) -> DecodeOptions:
    """How files become the exported model's input: its size, crop and intensity normalisation (what
    ``tumorcls predict`` applies to the written file, read back from its metadata)."""
    return DecodeOptions(size=spec.input_size, crop=spec.crop, intensity=spec.intensity)


def parity_images(
    spec: ExportSpec | EnsembleSpec, images: ImageArg = None, data_root: RootArg = None, n: int = 32, seed: int = 0
) -> ParityImages:
    """Given images, else the run's splits.csv (test split first), else synthetic pixels."""
    size = spec.input_size
    options = decode_options(spec)
    if isinstance(images, str | Path):
        images = [images]
    if images:
        files, source = _image_files(images)[:n], "given images"
    else:
        files = _manifest_files(Path(spec.run_dir), data_root, n) if spec.run_dir else []
        source = "splits.csv of the run"
    decoded = _decode(files, options, "parity")
    if decoded:
        return ParityImages(np.stack(decoded), f"{source} ({len(decoded)} images)")
    if images:
        raise ExportError("none of the given parity images could be read")
    return ParityImages(synthetic_scans(n, size, seed), f"synthetic pixels ({n} images)")


def _decode(files: Sequence[Path], options: DecodeOptions, purpose: str) -> list[np.ndarray]:
    return [image for _, image in _decode_kept(files, options, purpose)]


def _decode_kept(files: Sequence[Path], options: DecodeOptions, purpose: str) -> list[tuple[int, np.ndarray]]:
    """(index into ``files``, pixels) of each file that decodes; the others are logged and skipped."""
    decoded: list[tuple[int, np.ndarray]] = []
    for i, path in enumerate(files):
        try:
            decoded.append((i, read_image(path, options)))
        except ImageDecodeError as exc:
            log.warning("skipping %s image: %s", purpose, exc)
    return decoded


def calibration_images(
    spec: ExportSpec, images: ImageArg = None, data_root: RootArg = None, n: int = 128
) -> ParityImages:
    """Training images for int8 calibration: the given files or folders (spread evenly over them), else
    the train split of the run's splits.csv. Never synthetic pixels: they would calibrate the wrong ranges."""
    options = decode_options(spec)
    if isinstance(images, str | Path):
        images = [images]
    if images:
        files = _image_files(images, "calibration")
        if len(files) > n:  # evenly spread, so that every class folder contributes
            files = [files[i] for i in np.unique(np.linspace(0, len(files) - 1, n).round().astype(int))]
        source = "given calibration images"
    else:
        files = _manifest_files(Path(spec.run_dir), data_root, n, splits=("train",)) if spec.run_dir else []
        source = "train split of the run's splits.csv"
    decoded = _decode_kept(files, options, "calibration")
    if not decoded and images:
        raise ExportError("none of the given calibration images could be read")
    if not decoded:
        raise ExportError(
            "format=onnx_int8 needs training images to calibrate on: the run's splits.csv and data root were not "
            "found; give calibration=<folder of training images> (or data_root=)"
        )
    kept = tuple(files[i] for i, _ in decoded)
    return ParityImages(np.stack([image for _, image in decoded]), f"{source} ({len(decoded)} images)", kept)


def _class_indices(names: Sequence[str], class_names: Sequence[str]) -> np.ndarray | None:
    """The model's class index of each class (or class folder) name; None unless every name is a known class."""
    index = {canonical_class(c): i for i, c in enumerate(class_names)}
    found = [index.get(canonical_class(name)) for name in names]
    return None if not found or None in found else np.asarray(found, dtype=np.int64)


def int8_check_images(
    spec: ExportSpec,
    images: ImageArg = None,
    data_root: RootArg = None,
    n: int = DEFAULT_CHECK_IMAGES,
    exclude: Sequence[Path] = (),
) -> ParityImages:
    """Up to ``n`` images the int8 gate compares the float and int8 models on, none of them a calibration image
    (``exclude``): the given files or folders (spread evenly over them; a file's class is its folder's name),
    else the test and val splits of the run's splits.csv (classes taken in turn). At least MIN_CHECK_IMAGES must
    decode, or the export is refused. Labelled when every image's class is known."""
    if isinstance(images, str | Path):
        images = [images]
    excluded = {Path(p).resolve() for p in exclude}
    if images:
        rows = [(f, f.parent.name) for f in _image_files(images, "int8 check")]
        source = "given images"
    else:
        rows = _manifest_rows(Path(spec.run_dir), data_root, n + len(excluded), ("test", "val")) if spec.run_dir else []
        source = "test and val splits of the run's splits.csv"
    rows = [(f, c) for f, c in rows if f.resolve() not in excluded]
    if len(rows) > n:
        rows = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))]
    decoded = _decode_kept([f for f, _ in rows], decode_options(spec), "int8 check")
    if len(decoded) < MIN_CHECK_IMAGES:
        raise ExportError(
            f"the int8 gate needs at least {MIN_CHECK_IMAGES} check images that are not calibration images; found "
            f"{len(decoded)} ({source}); give images=<folders of labelled images>"
        )
    kept = [rows[i] for i, _ in decoded]
    labels = _class_indices([c for _, c in kept], spec.class_names)
    pixels = np.stack([image for _, image in decoded])
    return ParityImages(pixels, f"{source} ({len(decoded)} images)", tuple(f for f, _ in kept), labels)


def synthetic_scans(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth greyscale images (upsampled 8x8 noise), closer to MRI slices than per-pixel noise: per-pixel
    noise drives the network far outside its training range, where tiny float differences between runtimes
    are amplified into probability differences that real images never show."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 8, 8)).astype(np.float32)
    smooth = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse])
    gray = np.clip(np.rint(smooth), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=3)


# ---------------------------------------------------------------- the checks, through the inference backends


def torch_probabilities(model: TumorClassifier, rgb: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The reference: the checkpoint backend (what ``tumorcls predict --model best.ckpt`` runs) on uint8 RGB
    NHWC pixels, ``temperature`` included."""
    predictor = TorchPredictor(model, "cpu", CheckpointInfo(temperature=float(temperature)))
    batches = [predictor.predict_proba(rgb[i : i + PARITY_BATCH]) for i in range(0, len(rgb), PARITY_BATCH)]
    return np.concatenate(batches) if batches else predictor.predict_proba(rgb)


def reference_probabilities(model: ExportModel, spec: ExportSpec | EnsembleSpec, rgb: np.ndarray) -> np.ndarray:
    """What the exported file must reproduce: the checkpoint backend's probabilities, or for an ensemble the
    mean of its members' (each at its own temperature)."""
    if isinstance(spec, EnsembleSpec):
        return np.mean([torch_probabilities(m, rgb, s.temperature) for m, s in zip(model, spec.members)], axis=0)
    return torch_probabilities(model, rgb, spec.temperature)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ExportError(f"the export returns shape {a.shape}, PyTorch {b.shape}")
    if not np.isfinite(a).all():
        raise ExportError("the export returns non-finite probabilities")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def _require(details: dict[str, float], atol: float, what: str) -> float:
    worst = max(details.values())
    if worst > atol:
        shown = ", ".join(f"{k} {v:.2e}" for k, v in details.items())
        raise ExportError(f"{what} does not reproduce the PyTorch model: max |dp| {worst:.2e} > {atol:g} ({shown})")
    return worst


def _inputs(options: DecodeOptions) -> str:
    return f"size {options.size}, crop={options.crop}, intensity={options.intensity}"


def _load_export(
    backend: type[Predictor], path: Path, what: str, expected: DecodeOptions | None = None, **options: Any
) -> Predictor:
    """The written file through the backend users run it with; a refusal there is the export's failure, and so
    is a file whose users would decode images otherwise than ``expected`` (the checkpoint's size and
    preprocessing), since parity on prepared pixels cannot see that."""
    try:
        predictor = backend(path, **options)
    except ModelFileError as exc:
        raise ExportError(f"{what} is refused by its inference backend: {exc}") from None
    declared = predictor.decode_options()
    if expected is not None and declared != expected:
        raise ExportError(f"{what} declares inputs ({_inputs(declared)}) unlike the model's ({_inputs(expected)})")
    return predictor


def onnx_check(
    reference: np.ndarray,
    pixels: np.ndarray,
    atol: float,
    found: dict[str, float],
    expected: DecodeOptions | None = None,
) -> Callable:
    """A check for ``export_onnx``: batch N and batch 1 through the ONNX backend must match PyTorch (and the
    file declare the ``expected`` decode options)."""

    def check(path: Path) -> None:
        # onnx.checker already passed on these bytes in export_onnx.onnx_bytes
        predictor = _load_export(OnnxPredictor, path, "the ONNX file", expected)
        found["batch_n"] = _max_diff(predictor.predict_proba(pixels), reference)
        found["batch_1"] = _max_diff(predictor.predict_proba(pixels[:1]), reference[:1])
        _require(found, atol, "the ONNX file")

    return check


def onnx_int8_check(
    reference: np.ndarray,
    images: ParityImages,
    class_names: Sequence[str],
    min_agreement: float,
    found: dict[str, float],
    report: dict[str, Any],
    expected: DecodeOptions | None = None,
) -> Callable:
    """A check for the int8 ONNX file: not exact, so its top-1 class must agree with the float model's on at
    least ``min_agreement`` of the int8 check ``images``; fills ``report`` (the gate's, with per-class recall
    where the images are labelled) and the largest probability difference."""

    def check(path: Path) -> None:
        predictor = _load_export(OnnxPredictor, path, "the int8 ONNX file", expected)
        batches = [
            predictor.predict_proba(images.pixels[i : i + PARITY_BATCH]) for i in range(0, len(reference), PARITY_BATCH)
        ]
        probabilities = np.concatenate(batches)
        found["batch_n"] = _max_diff(probabilities, reference)
        report.update(int8_gate(reference, probabilities, images.labels, class_names, min_agreement))
        found["top1_agreement"] = report["top1_agreement"]
        if not report["passed"]:
            raise ExportError(f"the int8 ONNX file is refused: {gate_summary(report)}; keep the float model.onnx")

    return check


def keras_check(
    reference: np.ndarray,
    pixels: np.ndarray,
    atol: float,
    found: dict[str, float],
    expected: DecodeOptions | None = None,
) -> Callable:
    """A check for ``export_keras``: the file, loaded by the Keras backend with Keras 3 and with tf_keras,
    must match PyTorch (and declare the ``expected`` decode options)."""
    from tumorcls.inference.backends.keras_h5 import KerasPredictor

    def check(path: Path) -> None:
        for api in ("tf_keras", "keras3"):
            predictor = _load_export(KerasPredictor, path, f"the .h5 (with {api})", expected, api=api)
            found[api] = _max_diff(predictor.predict_proba(pixels), reference)
        _require(found, atol, "the Keras .h5")

    return check


# ---------------------------------------------------------------- the command


@dataclass(frozen=True)
class ExportPlan:
    """What an export will do, settled (and refused, if it must be) before anything is written."""

    model: ExportModel  # one TumorClassifier, or an ensemble's members
    spec: ExportSpec | EnsembleSpec
    targets: dict[str, Path]
    parity: ParityImages
    reference: np.ndarray  # the checkpoint backend's probabilities on the parity pixels (an ensemble: their mean)
    calibration: ParityImages | None
    int8_check: ParityImages | None = None  # format=onnx_int8: the gate's images, never calibration images
    int8_reference: np.ndarray | None = None  # the checkpoint backend's probabilities on them


def checkpoint_list(ckpt: CheckpointArg) -> list[str | Path]:
    """The checkpoint(s) given, as given, each once: one path, or the members of an ensemble."""
    items = checkpoint_paths(ckpt)
    repeated = repeated_member(items)
    if repeated:
        raise ExportError(repeated)
    return items


def load_models(ckpts: Sequence[str | Path]) -> tuple[ExportModel, ExportSpec | EnsembleSpec]:
    """One checkpoint, or an ensemble's members (they must share the contract)."""
    return load_for_export(ckpts[0]) if len(ckpts) == 1 else load_ensemble_for_export(ckpts)


def plan_export(
    ckpt: CheckpointArg,
    fmt: str,
    out: str | Path | None,
    overwrite: bool,
    opset: int,
    n_check: int,
    parity: dict[str, Any],
    calibration: dict[str, Any],
    int8_check: dict[str, Any] | None = None,
) -> ExportPlan:
    """Refuse unwritable targets, load the checkpoint(s), gather the images (the options are checked already)."""
    ckpts = checkpoint_list(ckpt)
    targets = export_targets(ckpts, fmt, out, overwrite)
    model, spec = load_models(ckpts)
    if "keras" in targets:
        from tumorcls.export.to_keras import import_keras

        import_keras()  # fail before any export when TensorFlow is missing
    calibrate, check, check_reference = None, None, None
    if "onnx_int8" in targets:
        calibrate = calibration_images(spec, **calibration)
        check = int8_check_images(spec, **{**parity, **(int8_check or {})}, exclude=calibrate.files)
        check_reference = reference_probabilities(model, spec, check.pixels)
    images = parity_images(spec, n=n_check, **parity)
    reference = reference_probabilities(model, spec, images.pixels)
    return ExportPlan(model, spec, targets, images, reference, calibrate, check, check_reference)


def _write_one(
    plan: ExportPlan, fmt: str, path: Path, opset: int, overwrite: bool, limits: dict[str, float]
) -> ExportResult:
    """Write one format (checked before it gets its final name) and describe it."""
    found: dict[str, float] = {}
    gate: dict[str, Any] = {}
    pixels, reference, expected = plan.parity.pixels, plan.reference, decode_options(plan.spec)
    images = plan.parity
    if fmt == "onnx":
        check = onnx_check(reference, pixels, limits["atol"], found, expected)
        written = export_onnx(plan.model, path, plan.spec, opset, overwrite, check)
    elif fmt == "onnx_int8":
        log.info("int8 calibration on %s; int8 gate on %s", plan.calibration.source, plan.int8_check.source)
        images, names = plan.int8_check, plan.spec.class_names
        check = onnx_int8_check(plan.int8_reference, images, names, limits["int8_min_agreement"], found, gate, expected)
        written = export_onnx(plan.model, path, plan.spec, opset, overwrite, check, plan.calibration.pixels)
        log.info("int8 gate passed: %s", gate_summary(gate))
    else:
        from tumorcls.export.to_keras import export_keras

        check = keras_check(reference, pixels, limits["atol"], found, expected)
        written = export_keras(plan.model, path, plan.spec, overwrite, check)
    worst = max(v for k, v in found.items() if k != "top1_agreement")
    size = written.stat().st_size
    result = ExportResult(fmt, str(written), size, worst, len(images.pixels), images.source, found, gate or None)
    log.info(
        "wrote %s (%s, %.1f MB); max |p_%s - p_torch| = %.2e on %s",
        written,
        fmt,
        result.size_bytes / 1e6,
        fmt,
        result.max_abs_diff,
        images.source,
    )
    return result


def export_checkpoint(
    ckpt: CheckpointArg,
    fmt: str = EXPORT.format,
    out: str | Path | None = EXPORT.out,
    overwrite: bool = EXPORT.overwrite,
    opset: int = EXPORT.opset,
    images: Sequence[str | Path] | str | None = EXPORT.images,
    data_root: str | Path | None = EXPORT.data_root,
    n_check: int = EXPORT.n_check,
    atol: float = EXPORT.atol,
    calibration: Sequence[str | Path] | str | None = EXPORT.calibration,
    n_calibrate: int = EXPORT.n_calibrate,
    int8_min_agreement: float = EXPORT.int8_min_agreement,
    n_int8_check: int = EXPORT.n_int8_check,
) -> list[ExportResult]:
    """Export ``ckpt`` to each format; every file is verified before it gets its final name. Several checkpoints
    export to one ONNX file averaging their probabilities (``fmt="onnx"`` and ``out`` required). The int8 file
    is gated on up to ``n_int8_check`` images (``images`` when given, else the run's test and val splits; never
    calibration images): kept only if its top-1 agreement with the float model reaches ``int8_min_agreement``.
    The options are conf/export.yaml's keys, checked by its schema (tumorcls.config.export) in one line each."""
    options = {"format": fmt, "out": out, "overwrite": overwrite, "opset": opset, "images": images}
    options |= {"data_root": data_root, "n_check": n_check, "atol": atol, "calibration": calibration}
    check_export_config(
        {**options, "n_calibrate": n_calibrate, "int8_min_agreement": int8_min_agreement, "n_int8_check": n_int8_check}
    )
    plan = plan_export(
        ckpt,
        fmt,
        out,
        overwrite,
        opset,
        n_check,
        parity={"images": images, "data_root": data_root},
        calibration={"images": calibration, "data_root": data_root, "n": n_calibrate},
        int8_check={"n": n_int8_check},
    )
    log.info("parity check on %s; tolerance %g", plan.parity.source, atol)
    if plan.spec.has_preprocessing:
        log.info("inputs are %s", plan.spec.input_pixels())
    limits = {"atol": atol, "int8_min_agreement": int8_min_agreement}
    return [_write_one(plan, f, path, opset, overwrite, limits) for f, path in plan.targets.items()]
