"""`tumorcls audit`: counts, bad files, exact and near duplicates, leakage and label conflicts, on a planted
synthetic dataset and on the real one; the near-duplicate searches agree with each other."""

from __future__ import annotations

import io
import itertools
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tumorcls.cli.main import main as cli_main
from tumorcls.data import audit
from tumorcls.data.hashing import hamming_pairs, multi_index_pairs, near_pairs, phash
from tumorcls.labels import CLASS_NAMES

NEAR_DISTANCE = 4


def _smooth_image(rng: np.random.Generator, size: tuple[int, int] = (96, 96)) -> Image.Image:
    """A random smooth greyscale field plus noise: distinct images get pHashes far apart (>= 16 bits)."""
    grid = Image.fromarray(rng.uniform(0, 230, (6, 6)).astype(np.uint8))
    field = np.asarray(grid.resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    noisy = field + rng.normal(0, 4, field.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).convert("RGB")


def _jpeg(img: Image.Image, path: Path, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=quality)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kaggle layout with one of each problem the audit must find."""
    root = tmp_path_factory.mktemp("audit") / "kaggle"
    rng = np.random.default_rng(0)
    for split, n in (("Training", 3), ("Testing", 2)):
        for name in CLASS_NAMES:
            for i in range(n):
                _jpeg(_smooth_image(rng), root / split / name / f"img_{i}.jpg")
    train, test = root / "Training", root / "Testing"
    # exact duplicate across splits (leakage), and one within a split under another class (label conflict)
    shutil.copy(train / "glioma_tumor/img_0.jpg", test / "glioma_tumor/leak.jpg")
    shutil.copy(train / "no_tumor/img_0.jpg", train / "meningioma_tumor/relabelled.jpg")
    # near duplicates of one image: re-encoded at low quality, and brightened in the other split
    source = Image.open(train / "pituitary_tumor/img_1.jpg").convert("RGB")
    _jpeg(source, train / "pituitary_tumor/img_1_q60.jpg", quality=60)
    brighter = Image.fromarray((np.asarray(source, dtype=np.int16) + 6).clip(0, 255).astype(np.uint8))
    _jpeg(brighter, test / "pituitary_tumor/bright.jpg")
    # bad files
    (train / "glioma_tumor/empty.jpg").write_bytes(b"")
    (train / "no_tumor/notes.txt").write_text("scanner notes\n")
    whole = (test / "meningioma_tumor/img_0.jpg").read_bytes()
    _jpeg(_smooth_image(rng), test / "meningioma_tumor/broken.jpg")
    (test / "meningioma_tumor/broken.jpg").write_bytes(whole[: len(whole) // 2])  # truncated JPEG
    # a class this project does not know, a file outside the class folders, an extra root entry
    _jpeg(_smooth_image(rng), train / "astrocytoma/a_0.jpg")
    (test / "README.md").write_text("about this split\n")
    (root / "LICENSE.txt").write_text("CC0\n")
    # another size and mode: an 8-bit greyscale PNG
    _smooth_image(rng, (120, 80)).convert("L").save(test / "no_tumor/gray.png")
    return root


@pytest.fixture(scope="module")
def planted_run(planted: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("audit_out") / "report.json"
    capture = io.StringIO()
    with redirect_stdout(capture):
        code = cli_main(["audit", str(planted), "--distance", str(NEAR_DISTANCE), "--json", str(out)])
    assert not list(out.parent.glob("*.tmp"))
    return code, capture.getvalue(), json.loads(out.read_text())


def test_planted_near_copies_are_within_the_distance(planted: Path) -> None:
    """Precondition of the next tests: the planted near copies are near, and not byte-identical."""
    base = planted / "Training/pituitary_tumor"
    hashes = [int(phash(Image.open(p))) for p in (base / "img_1.jpg", base / "img_1_q60.jpg")]
    hashes.append(int(phash(Image.open(planted / "Testing/pituitary_tumor/bright.jpg"))))
    assert max(bin(a ^ b).count("1") for a, b in itertools.combinations(hashes, 2)) <= NEAR_DISTANCE


def test_files_counts_sizes_and_bad_files(planted_run: tuple[int, str, dict[str, Any]]) -> None:
    code, _, report = planted_run
    assert code == 0
    assert report["layout"] == "Training/Testing" and report["splits"] == ["Training", "Testing"]
    assert report["files"] == {"total": 29, "images": 26, "unreadable": 1, "zero_byte": 1, "non_image": 1}
    assert report["counts"] == {
        "Training": {"astrocytoma": 1, "glioma_tumor": 3, "meningioma_tumor": 4, "no_tumor": 3, "pituitary_tumor": 4},
        "Testing": {"glioma_tumor": 3, "meningioma_tumor": 2, "no_tumor": 3, "pituitary_tumor": 3},
    }
    assert report["unknown_classes"] == {"Training": ["astrocytoma"]} and report["missing_classes"] == {}
    [unreadable] = report["unreadable"]
    assert unreadable["path"] == "Testing/meningioma_tumor/broken.jpg"
    assert unreadable["reason"].startswith("corrupt image") and "truncated" in unreadable["reason"]
    assert report["zero_byte"] == ["Training/glioma_tumor/empty.jpg"]
    assert report["non_image"] == ["Training/no_tumor/notes.txt"]
    assert report["outside_class_folders"] == ["Testing/README.md"] and report["ignored"] == ["LICENSE.txt"]
    sizes = report["sizes"]
    assert sizes["distinct"] == 2 and sizes["most_common"][0] == {"size": "96x96", "count": 25}
    assert sizes["smallest"] == {"size": "120x80", "count": 1, "example": "Testing/no_tumor/gray.png"}
    assert report["modes"] == {"RGB": 25, "L": 1} and report["formats"] == {"JPEG": 25, "PNG": 1}


def _groups(stats: dict[str, Any]) -> dict[tuple[str, ...], tuple[bool, bool]]:
    return {tuple(g["files"]): (g["cross_split"], g["label_conflict"]) for g in stats["group_list"]}


def test_exact_duplicates_leakage_and_label_conflict(planted_run: tuple[int, str, dict[str, Any]]) -> None:
    exact = planted_run[2]["exact_duplicates"]
    assert _groups(exact) == {
        ("Testing/glioma_tumor/leak.jpg", "Training/glioma_tumor/img_0.jpg"): (True, False),
        ("Training/meningioma_tumor/relabelled.jpg", "Training/no_tumor/img_0.jpg"): (False, True),
    }
    assert (exact["groups"], exact["files"], exact["cross_split_groups"], exact["label_conflict_groups"]) == (
        2,
        4,
        1,
        1,
    )
    assert exact["copies_in_other_split"] == {"Testing": {"glioma_tumor": 1}, "Training": {"glioma_tumor": 1}}


def test_near_duplicates_add_the_reencoded_and_brightened_copies(planted_run: tuple[int, str, dict[str, Any]]) -> None:
    near = planted_run[2]["near_duplicates"]
    assert near["distance"] == NEAR_DISTANCE
    pituitary = (
        "Testing/pituitary_tumor/bright.jpg",
        "Training/pituitary_tumor/img_1.jpg",
        "Training/pituitary_tumor/img_1_q60.jpg",
    )
    assert _groups(near) == {**_groups(planted_run[2]["exact_duplicates"]), pituitary: (True, False)}
    assert (near["groups"], near["files"], near["cross_split_groups"], near["label_conflict_groups"]) == (3, 7, 2, 1)
    assert near["copies_in_other_split"]["Testing"] == {"glioma_tumor": 1, "pituitary_tumor": 1}


def test_summary_names_what_was_found(planted_run: tuple[int, str, dict[str, Any]]) -> None:
    text = planted_run[1]
    assert "files: 29 scanned, 26 readable images, 1 unreadable, 1 zero-byte, 1 non-image" in text
    assert "exact duplicates (SHA-256): 2 groups holding 4 files; 1 span splits, 1 have conflicting labels" in text
    assert "near duplicates (pHash distance <= 4): 3 groups holding 7 files; 2 span splits" in text
    assert "unknown class folders in Training: astrocytoma" in text
    assert "Training/meningioma_tumor/relabelled.jpg | Training/no_tumor/img_0.jpg" in text
    assert text.rstrip().endswith("report.json")


def test_folder_per_class_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name in ("glioma_tumor", "no_tumor"):
        for i in range(2):
            _jpeg(_smooth_image(rng), tmp_path / name / f"{i}.jpg")
    shutil.copy(tmp_path / "glioma_tumor/0.jpg", tmp_path / "no_tumor/copy.jpg")
    report = audit.audit_dataset(tmp_path)
    assert report["layout"] == "folder-per-class" and report["splits"] == ["all"]
    assert report["counts"] == {"all": {"glioma_tumor": 2, "no_tumor": 3}}
    assert report["missing_classes"] == {"all": ["meningioma_tumor", "pituitary_tumor"]}
    assert _groups(report["exact_duplicates"]) == {("glioma_tumor/0.jpg", "no_tumor/copy.jpg"): (False, True)}


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}"], "error: dataset root '{missing}' is not a directory; expected ROOT/{{Training,Testing}}"),
        (["{empty}"], "error: no files found in class folders under '{empty}' (folder-per-class layout)"),
        (["{empty}", "--distance", "65"], "error: --distance must be between 0 and 64 bits, got 65"),
        ([], "error: audit needs a dataset ROOT folder (or --benchmark)"),
        (["{planted}", "--json", "{planted}/LICENSE.txt/report.json"], "error: cannot write the report to"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(
    tmp_path: Path, planted: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    names = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "planted": planted}
    assert cli_main(["audit", *(a.format(**names) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(**names)) and err.count("\n") == 1


def test_benchmark_runs_both_searches_and_they_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert audit.main(["--benchmark", "--bench-hashes", "3000", "--bench-distances", "0", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("(same pairs)" in line for line in lines[1:])
    assert lines[1].startswith("3000 hashes, distance 0: ") and lines[2].startswith("3000 hashes, distance 5: ")


# ------------------------------------------------------------------------------ near-duplicate search


def _planted_hashes(n: int, seed: int) -> tuple[np.ndarray, dict[int, set[tuple[int, int]]]]:
    """Uniform random hashes (accidental pairs within 8 bits: about 1e-9 expected) plus, for each k in 0..8,
    five copies with exactly k bits flipped; returns the hashes and the planted pairs by k."""
    rng = np.random.default_rng(seed)
    hashes = list(rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False))
    planted: dict[int, set[tuple[int, int]]] = {}
    sources = rng.choice(n, size=(9, 5), replace=False)  # distinct, so copies are near their source only
    for k in range(9):
        for source in sources[k]:
            flip = sum(1 << int(b) for b in rng.choice(64, size=k, replace=False))
            hashes.append(np.uint64(int(hashes[source]) ^ flip))
            planted.setdefault(k, set()).add((int(source), len(hashes) - 1))
    return np.array(hashes, dtype=np.uint64), planted


@pytest.mark.parametrize("distance", [0, 1, 3, 6, 8])
def test_multi_index_finds_exactly_the_planted_pairs_like_the_blocked_search(distance: int) -> None:
    hashes, planted = _planted_hashes(5000, seed=distance)
    expected = set().union(*(pairs for k, pairs in planted.items() if k <= distance))
    blocked = hamming_pairs(hashes, distance)
    multi = multi_index_pairs(hashes, distance, max_candidates=64)  # small batches: the batching is exercised
    assert {tuple(p) for p in blocked.tolist()} == expected
    assert np.array_equal(multi, blocked) and np.array_equal(near_pairs(hashes, distance), blocked)


def test_searches_agree_on_clustered_hashes() -> None:
    """pHash-like hashes with many accidental near pairs (families of similar hashes)."""
    hashes = audit.synthetic_hashes(4000, seed=3)
    for distance in (0, 2, 5, 7):
        blocked = hamming_pairs(hashes, distance, block=100)
        assert len(blocked) > 0
        assert np.array_equal(multi_index_pairs(hashes, distance), blocked)


# ------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_report(real_data: Path) -> dict[str, Any]:
    """One audit of the 3264 real images, shared by the assertions below."""
    return audit.audit_dataset(real_data, distance=0)


@pytest.mark.integration
def test_real_counts_sizes_and_files(real_report: dict[str, Any]) -> None:
    assert real_report["files"] == {"total": 3264, "images": 3264, "unreadable": 0, "zero_byte": 0, "non_image": 0}
    assert real_report["counts"] == {
        "Training": {"glioma_tumor": 826, "meningioma_tumor": 822, "no_tumor": 395, "pituitary_tumor": 827},
        "Testing": {"glioma_tumor": 100, "meningioma_tumor": 115, "no_tumor": 105, "pituitary_tumor": 74},
    }
    assert real_report["unknown_classes"] == {} and real_report["missing_classes"] == {}
    assert real_report["sizes"]["distinct"] == 440
    assert real_report["sizes"]["most_common"][0] == {"size": "512x512", "count": 2341}
    assert real_report["modes"] == {"RGB": 3264} and real_report["formats"] == {"JPEG": 3264}
    json.dumps(real_report)  # JSON-ready


@pytest.mark.integration
def test_real_exact_duplicates_leak_88_no_tumor_test_images(real_report: dict[str, Any]) -> None:
    exact = real_report["exact_duplicates"]
    assert (exact["groups"], exact["files"], exact["cross_split_groups"]) == (166, 403, 64)
    assert exact["label_conflict_groups"] == 0
    assert exact["copies_in_other_split"]["Testing"] == {"no_tumor": 88}


@pytest.mark.integration
def test_real_near_duplicates_and_the_one_label_conflict(real_report: dict[str, Any]) -> None:
    near = real_report["near_duplicates"]
    assert (near["distance"], near["groups"], near["files"], near["cross_split_groups"]) == (0, 305, 740, 209)
    conflicts = [g["files"] for g in near["group_list"] if g["label_conflict"]]
    assert conflicts == [
        [
            "Testing/glioma_tumor/image(48).jpg",
            "Testing/meningioma_tumor/image(58).jpg",
            "Training/meningioma_tumor/m1(168).jpg",
        ]
    ]


@pytest.mark.integration
def test_real_look_shows_the_shortcut_the_readme_describes(real_report: dict[str, Any]) -> None:
    """Training gliomas are the darkest and smallest heads; Testing gliomas are as bright as Training no_tumor."""
    look = {
        split: {k: (v["head_intensity"], v["head_fraction"]) for k, v in c.items()}
        for split, c in real_report["look"].items()
    }
    train, test = look["Training"], look["Testing"]
    assert [round(train[c][0]) for c in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")] == [
        71,
        86,
        97,
        74,
    ]
    assert [round(100 * train[c][1]) for c in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")] == [
        48,
        51,
        57,
        64,
    ]
    assert round(test["glioma_tumor"][0]) == 96 and round(100 * test["glioma_tumor"][1]) == 61


def test_alias_folder_names_are_known_classes(tmp_path: Path) -> None:
    """The newer Kaggle set spells its folders glioma/, notumor/, meningioma/, pituitary/."""
    rng = np.random.default_rng(2)
    for name in ("glioma", "notumor", "meningioma", "pituitary", "astrocytoma"):
        _jpeg(_smooth_image(rng), tmp_path / name / "0.jpg")
    report = audit.audit_dataset(tmp_path)
    assert report["unknown_classes"] == {"all": ["astrocytoma"]}
    assert report["missing_classes"] == {}
    assert report["counts"]["all"]["no_tumor"] == 1 and report["counts"]["all"]["glioma_tumor"] == 1


def _head(brightness: int, radius: int, side: int = 120) -> Image.Image:
    """A uniform disc (the head) of ``brightness`` on black."""
    yy, xx = np.mgrid[:side, :side]
    disc = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= radius**2
    return Image.fromarray((disc * brightness).astype(np.uint8)).convert("RGB")


def test_look_reports_head_brightness_and_size_per_class(tmp_path: Path) -> None:
    """A class that is darker, or whose head is smaller, shows so in the report: the shortcut a model can learn."""
    planted = {"glioma_tumor": (70, 30), "no_tumor": (150, 50)}
    for label, (brightness, radius) in planted.items():
        folder = tmp_path / "Training" / label
        folder.mkdir(parents=True)
        for i in range(3):
            _head(brightness, radius).save(folder / f"{i}.png")
    report = audit.audit_dataset(tmp_path)
    look = report["look"]["Training"]
    for label, (brightness, radius) in planted.items():
        assert look[label]["images"] == 3
        assert look[label]["head_intensity"] == pytest.approx(brightness, abs=1)
        assert look[label]["head_fraction"] == pytest.approx(np.pi * radius**2 / 120**2, rel=0.05)
    summary = audit.format_summary(report)
    assert "  Training: glioma_tumor 70 / 20%, no_tumor 150 / 55%" in summary
