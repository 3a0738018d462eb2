"""DICOM slices through the one decoder: the file's display chain (rescale, window or VOI LUT, else min-max;
MONOCHROME1 inverted) to exact uint8 values; one-line refusals; and DICOM wherever images are read (predict,
evaluate, the data module). The files are built here with pydicom itself."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.synthetic import make_dataset
from tests.helpers.tiny_model import tiny_checkpoint
from tumorcls.cli.main import main
from tumorcls.data.decode import DecodeOptions, ImageDecodeError, load_image, read_image
from tumorcls.data.files import find_images

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid  # noqa: E402


def dicom_bytes(pixels: np.ndarray, preamble: bool = True, pixel_data: bool = True, **elements: object) -> bytes:
    """A single-frame (or, for a 3-D array, multi-frame) MR image, Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if pixel_data:
        ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=preamble)
    return buf.getvalue()


def _stored(seed: int = 0, shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 700, size=shape).astype(np.uint16)


def _grey(data: bytes, **kw: object) -> np.ndarray:
    rgb = load_image(data, **kw).rgb
    assert rgb.dtype == np.uint8 and (rgb == rgb[..., :1]).all()  # grey: three equal channels
    return rgb[..., 0].astype(np.int64)


def _linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 onto 0..255, written out independently of pydicom."""
    c, w = center - 0.5, width - 1
    inside = np.rint(((x - c) / w + 0.5) * 255)
    return np.where(x <= c - w / 2, 0, np.where(x > c + w / 2, 255, inside)).astype(np.int64)


def test_rescale_then_window_gives_exact_values() -> None:
    stored = _stored()
    data = dicom_bytes(stored, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=300, WindowWidth=401)
    expected = _linear_window(stored * 2.0 - 100, 300, 401)
    assert (expected == 0).any() and (expected == 255).any() and ((expected > 0) & (expected < 255)).any()
    assert np.array_equal(_grey(data), expected)


def test_without_a_window_the_rescaled_slice_is_min_max_windowed() -> None:
    stored = np.random.default_rng(1).integers(-500, 1500, size=(24, 40)).astype(np.int16)
    data = dicom_bytes(stored, RescaleSlope=0.5, RescaleIntercept=1024)
    values = stored * 0.5 + 1024
    expected = np.rint((values - values.min()) / (values.max() - values.min()) * 255).astype(np.int64)
    decoded = load_image(data)
    assert decoded.size == (40, 24) and decoded.format == "DICOM" and decoded.mode == "MONOCHROME2"
    assert np.array_equal(_grey(data), expected)


def test_monochrome1_is_inverted() -> None:
    stored = _stored(seed=2)
    data = dicom_bytes(stored, PhotometricInterpretation="MONOCHROME1", WindowCenter=350, WindowWidth=500)
    assert np.array_equal(_grey(data), 255 - _linear_window(stored.astype(float), 350, 500))


def test_the_files_voi_lut_is_preferred_to_its_window() -> None:
    stored = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint16)
    lut = ((np.arange(256) / 255.0) ** 2 * 255).round().astype(int)  # a gamma curve onto 0..255
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new("LUTData", "US", lut.tolist())  # US, not the OW bytes form
    data = dicom_bytes(stored, VOILUTSequence=Sequence([item]), WindowCenter=10, WindowWidth=2)
    assert np.array_equal(_grey(data), lut[stored])


def test_multi_frame_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "series.dcm"
    path.write_bytes(dicom_bytes(np.zeros((3, 32, 32), np.uint16)))
    with pytest.raises(ImageDecodeError) as err:
        read_image(path)
    assert str(err.value) == f"{path}: a multi-frame DICOM (3 frames); only single slices are supported"


def test_file_without_pixel_data_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "report.dcm"
    path.write_bytes(dicom_bytes(_stored(), pixel_data=False))
    with pytest.raises(ImageDecodeError) as err:
        read_image(path)
    assert str(err.value) == f"{path}: DICOM file without pixel data (no image in it)"


def test_size_limits_apply_from_the_header() -> None:
    with pytest.raises(ImageDecodeError, match=r"image too large \(32x32 > 1000 pixels\)"):
        load_image(dicom_bytes(_stored()), DecodeOptions(max_pixels=1000))
    with pytest.raises(ImageDecodeError, match=r"image too small \(8x8 < 16 px\)"):
        load_image(dicom_bytes(_stored(shape=(8, 8))))


def test_found_and_read_by_suffix_or_by_preamble(tmp_path: Path) -> None:
    stored = _stored(seed=3)
    expected = _linear_window(stored.astype(float), 300, 600)
    (tmp_path / "raw.dcm").write_bytes(dicom_bytes(stored, preamble=False, WindowCenter=300, WindowWidth=600))
    (tmp_path / "IM0001").write_bytes(dicom_bytes(stored, WindowCenter=300, WindowWidth=600))
    files, _ = find_images([tmp_path])
    assert files == [tmp_path / "IM0001", tmp_path / "raw.dcm"]
    for path in files:
        assert np.array_equal(read_image(path, DecodeOptions(size=32))[..., 0], expected)


# ------------------------------------------------------------------- DICOM wherever images are read


def _identity_dicom(png: Path) -> bytes:
    """The PNG's greyscale pixels as an 8-bit slice whose window (centre 128, width 256) is the identity."""
    grey = np.asarray(Image.open(png).convert("L"))
    return dicom_bytes(grey, WindowCenter=128, WindowWidth=256)


def _dicom_twin(root: Path, twin: Path) -> Path:
    for png in sorted(root.rglob("*.png")):
        target = twin / png.relative_to(root).with_suffix(".dcm")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_identity_dicom(png))
    return twin


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A PNG dataset and its DICOM twin (same pixels, same folders)."""
    base = tmp_path_factory.mktemp("dicom_twins")
    png = make_dataset(base / "png", {"Training": 6, "Testing": 2}, side=64, seed=5, fmt="PNG")
    return png, _dicom_twin(png, base / "dcm")


def test_the_data_module_decodes_dicom_like_the_png_twin(twins: tuple[Path, Path]) -> None:
    from tumorcls.data.datamodule import TumorDataModule

    modules = [TumorDataModule(root, size=48, batch_size=4, num_workers=0) for root in twins]
    for dm in modules:
        dm.setup()
    png, dcm = (dm.decoded for dm in modules)
    assert [r.path.suffix for r in dcm.records] == [".dcm"] * len(png.records)
    assert np.array_equal(dcm.images, png.images) and np.array_equal(dcm.labels, png.labels)
    assert np.array_equal(dcm.phashes, png.phashes)


def test_predict_and_evaluate_take_dicom(
    twins: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    png, dcm = (root / "Testing" for root in twins)
    ckpt = tiny_checkpoint(tmp_path_factory)
    docs = []
    for folder in (png, dcm):
        assert main(["predict", str(folder), "--model", str(ckpt), "--json"]) == 0
        docs.append(json.loads(capsys.readouterr().out))

    def probabilities(doc: dict) -> np.ndarray:
        return np.array([list(p["probabilities"].values()) for p in doc["predictions"]])

    assert len(docs[1]["predictions"]) == 8 and docs[1]["predictions"][0]["path"].endswith(".dcm")
    np.testing.assert_allclose(probabilities(docs[1]), probabilities(docs[0]), atol=1e-6)
    metrics = []
    for folder in (png, dcm):
        out = tmp_path_factory.mktemp("eval")
        assert main(["evaluate", "--model", str(ckpt), "--data", str(folder), "--out", str(out)]) == 0
        metrics.append(json.loads((out / "metrics.json").read_text()))
    assert metrics[1]["n"] == 8 and metrics[1]["acc"] == metrics[0]["acc"]
