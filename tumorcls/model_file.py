"""The model-file contract: what a model file carries besides its weights (class names, input and output spec,
preprocessing, temperature, provenance), written by the exporters into ONNX metadata_props / HDF5 attributes and
read back by the inference backends. It sits below both, so neither imports the other to agree on it.

An ensemble of checkpoints exported as one file (:class:`EnsembleSpec`) declares the contract its members share
(class names, input, preprocessing) and, under the key ``ensemble``, every member's checkpoint (path, SHA-256,
run, temperature, normalisation); it has no single ``temperature`` (each member's is in the graph).

The preprocessing a file goes through before the model (``crop``, ``intensity``: tumorcls.data.preprocess) is
not in the graph: it is declared under the key ``preprocess`` (a JSON object, ``{"crop": "head", "intensity":
"equalize"}``) and applied by whoever decodes the files (predict, evaluate, serve); a file without the key was
trained without any. A value or step this version does not know is refused, never ignored.

It imports only the standard library at module level (h5py and the preprocessing rules when called).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ENSEMBLE_KEY = "ensemble"  # an ensemble export: {"combine": ..., "members": [one record per checkpoint]}
H5_ATTR_PREFIX = "tumorcls_"  # an .h5 export's metadata are the file attributes named tumorcls_<key>
PREPROCESS_KEY = "preprocess"  # {"crop": ..., "intensity": ...}, applied before the model's input
PREPROCESS_STEPS = ("crop", "intensity")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ExportSpec:
    """Everything an exported file must say about the model it holds."""

    class_names: tuple[str, ...]
    backbone: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    temperature: float = 1.0
    crop: str = "none"  # tumorcls.data.preprocess.CROPS, applied before the model (not in the file's graph)
    intensity: str = "none"  # tumorcls.data.preprocess.INTENSITIES
    source: str = ""
    source_sha256: str = ""
    run_dir: str = ""
    epoch: int | None = None
    global_step: int | None = None
    exported_at: str = field(default_factory=_utc_now)

    def training_run(self) -> dict[str, Any]:
        """The checkpoint this spec was read from and its place in training."""
        run = {"checkpoint": self.source, "sha256": self.source_sha256, "run_dir": self.run_dir}
        return {**run, "epoch": self.epoch, "global_step": self.global_step}

    def member_record(self) -> dict[str, Any]:
        """This checkpoint as an ensemble export lists it: its run, backbone, temperature and normalisation."""
        extra = {"backbone": self.backbone, "temperature": float(self.temperature)}
        return {**self.training_run(), **extra, "mean": list(self.mean), "std": list(self.std)}

    def metadata(self, input_spec: dict[str, Any], output_spec: dict[str, Any]) -> dict[str, str]:
        """Flat string key/values (ONNX metadata_props, HDF5 attributes); :func:`read_metadata` parses them."""
        return {
            **_contract_metadata(self, input_spec, output_spec),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "temperature": repr(float(self.temperature)),
            "backbone": self.backbone,
            "source_checkpoint": self.source,
            "training_run": json.dumps(self.training_run()),
            "export_date": self.exported_at,
            "producer": "tumorcls",
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def has_preprocessing(self) -> bool:
        """Whether the input is more than the resized image (a crop or an intensity normalisation first)."""
        return (self.crop, self.intensity) != ("none", "none")

    def input_pixels(self) -> str:
        """What the input pixels must be, in words (the ``pixels`` entry of the file's input spec)."""
        steps = ["cropped to the square around the head"] if self.crop == "head" else []
        steps.append(f"resized to {self.input_size}x{self.input_size} (cv2 bilinear)")
        steps += {
            "stretch": ["its head's 1st..99th intensity percentiles stretched to 0..255"],
            "equalize": ["histogram-equalised over the head"],
        }.get(self.intensity, [])
        where = f"tumorcls.data.decode.prepare_rgb; metadata '{PREPROCESS_KEY}'"
        return f"the image {', then '.join(steps)} ({where})"


def _contract_metadata(spec: Any, input_spec: dict[str, Any], output_spec: dict[str, Any]) -> dict[str, str]:
    """What a file's users decode and read with: class names, input and output specs, preprocessing."""
    return {
        "class_names": json.dumps(list(spec.class_names)),
        "input_spec": json.dumps(input_spec),
        "output_spec": json.dumps(output_spec),
        PREPROCESS_KEY: json.dumps({"crop": spec.crop, "intensity": spec.intensity}),
    }


@dataclass(frozen=True)
class EnsembleSpec:
    """An ensemble of checkpoints exported as one file: the members' specs, which share class names, input size
    and preprocessing (checked by :func:`load_ensemble_for_export`); the shared contract is the first member's."""

    members: tuple[ExportSpec, ...]
    exported_at: str = field(default_factory=_utc_now)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.members[0].class_names

    @property
    def input_size(self) -> int:
        return self.members[0].input_size

    @property
    def crop(self) -> str:
        return self.members[0].crop

    @property
    def intensity(self) -> str:
        return self.members[0].intensity

    @property
    def run_dir(self) -> str:
        """The first member's run (where parity images are looked for)."""
        return self.members[0].run_dir

    @property
    def backbone(self) -> str:
        return ", ".join(dict.fromkeys(m.backbone for m in self.members))

    @property
    def has_preprocessing(self) -> bool:
        return self.members[0].has_preprocessing

    def input_pixels(self) -> str:
        return self.members[0].input_pixels()

    def metadata(self, input_spec: dict[str, Any], output_spec: dict[str, Any]) -> dict[str, str]:
        """The shared contract, and every member's checkpoint, temperature and normalisation under ``ensemble``."""
        members = [m.member_record() for m in self.members]
        combine = "arithmetic mean of the members' probabilities, each at its own temperature"
        return {
            **_contract_metadata(self, input_spec, output_spec),
            "backbone": self.backbone,
            ENSEMBLE_KEY: json.dumps({"combine": combine, "members": members}),
            "export_date": self.exported_at,
            "producer": "tumorcls",
        }


@dataclass(frozen=True)
class DeclaredContract:
    """What a model file's metadata declares (None where it says nothing, e.g. the tutorial's .h5)."""

    class_names: list[str] | None = None
    input_size: int | None = None
    temperature: float | None = None
    crop: str = "none"  # a file without ``preprocess`` metadata was trained without any
    intensity: str = "none"


def _declared_input_size(raw: str | None) -> int | None:
    """The spatial size in an ``input_spec`` (NCHW or NHWC shape), when it is a number."""
    try:
        spec = json.loads(raw) if raw else {}
        shape = spec["shape"]
        size = shape[2] if spec.get("layout", "NCHW") == "NCHW" else shape[1]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return size if isinstance(size, int) and size > 0 else None


def _declared_preprocess(raw: str | None, where: str) -> tuple[str, str]:
    """(crop, intensity) from the ``preprocess`` metadata; ValueError in one line for anything else than a JSON
    object of known steps with known values (a newer tumorcls's step must not be silently skipped)."""
    from tumorcls.data.preprocess import check_preprocess

    if raw is None:
        return "none", "none"
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        shown = raw if len(raw) <= 80 else raw[:77] + "..."
        raise ValueError(f"{where} has {PREPROCESS_KEY} metadata that is not a JSON object: {shown!r}")
    cannot = f"{where} asks for preprocessing this version cannot apply"
    unknown = sorted(set(parsed) - set(PREPROCESS_STEPS))
    if unknown:
        raise ValueError(f"{cannot}: unknown step(s) {unknown}; known {list(PREPROCESS_STEPS)}")
    crop, intensity = parsed.get("crop", "none"), parsed.get("intensity", "none")
    try:
        check_preprocess(crop, intensity)
    except ValueError as exc:
        raise ValueError(f"{cannot}: {exc}") from None
    return crop, intensity


def read_metadata(meta: Mapping[str, str], where: str = "the model file") -> DeclaredContract:
    """Parse what :meth:`ExportSpec.metadata` wrote (class names as JSON, or comma separated by other tools)."""
    names = meta.get("class_names")
    class_names = None
    if names is not None:
        try:
            parsed = json.loads(names)
        except json.JSONDecodeError:
            parsed = [n.strip() for n in str(names).split(",")]
        class_names = [str(n) for n in (parsed if isinstance(parsed, list) else [parsed])]
    temperature = None
    if "temperature" in meta:
        try:
            temperature = float(meta["temperature"])
        except ValueError:
            raise ValueError(f"{where} has a temperature that is not a number: {meta['temperature']!r}") from None
    crop, intensity = _declared_preprocess(meta.get(PREPROCESS_KEY), where)
    return DeclaredContract(class_names, _declared_input_size(meta.get("input_spec")), temperature, crop, intensity)


def h5_attributes(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata as the HDF5 attribute names of an .h5 export."""
    return {f"{H5_ATTR_PREFIX}{key}": value for key, value in metadata.items()}


def read_h5_metadata(path: str | Path) -> dict[str, str]:
    """The metadata an .h5 export carries (empty for a file that is not a tumorcls export)."""
    import h5py

    with h5py.File(path, "r") as f:
        return {k[len(H5_ATTR_PREFIX) :]: str(v) for k, v in f.attrs.items() if k.startswith(H5_ATTR_PREFIX)}


# what every member must share, in the order a difference is reported
CONTRACT = {"class_names": "class names", "input_size": "input size", "crop": "crop", "intensity": "intensity"}
CONTRACT_RULE = "members must share class names (same order), input size and preprocessing (crop, intensity)"


def contract_difference(first: Any, other: Any) -> str | None:
    """What ``other`` declares otherwise than ``first`` (objects with class_names, input_size, crop and
    intensity: predictors or export specs), as 'input size 32, not 64'; None when they agree."""
    for key, words in CONTRACT.items():
        mine, theirs = getattr(first, key), getattr(other, key)
        if key == "class_names":
            mine, theirs = list(mine), list(theirs)
        if mine != theirs:
            return f"{words} {theirs}, not {mine}"
    return None


def mismatch_message(first: str, other: str, difference: str) -> str:
    """The one line refusing an ensemble member that differs from the first member."""
    return f"ensemble member '{other}' differs from '{first}': {difference} ({CONTRACT_RULE})"
