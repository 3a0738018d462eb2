"""The benchmark command runs end to end on CPU with a tiny model and writes every figure it promises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.paths import REPO
from tumorcls.bench import train_eval as bench
from tumorcls.bench.inputs import TRAIN_AUGMENTATIONS

TINY = ["--device", "cpu", "--model", "test_efficientnet", "--size", "32", "--batch-size", "4", "--steps", "2"]
TINY += ["--warmup", "1", "--repeats", "2", "--images", "8", "--threads", "2"]


def test_bench_on_cpu_writes_positive_figures_and_the_expected_keys(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = [*TINY, "--parts", "train,eval,data", "--recipe", "--workers", "0", "--recipe-epochs", "1"]
    args += ["--recipe-train-images", "8", "--recipe-val-images", "4", "--json", str(out)]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"machine", "config", "train", "eval", "data", "recipe"}
    machine = result["machine"]
    for key in ("platform", "nproc", "cpu_model", "gpu", "torch", "date", "load_average"):
        assert key in machine
    assert machine["gpu"] is None and machine["torch"] == torch.__version__
    assert result["config"]["device"] == "cpu" and result["config"]["precision"] == "32"
    for part in ("train", "eval"):
        assert result[part]["images_per_s"] > 0 and len(result[part]["repeats"]) == 2
    assert list(result["data"]["by_workers"]) == ["workers=0"]
    assert result["data"]["images_per_s"] == result["data"]["by_workers"]["workers=0"]["images_per_s"] > 0
    recipe = result["recipe"]
    assert recipe["fit_seconds"] > 0 and recipe["epochs"] == 1
    assert (recipe["train_images"], recipe["val_images"]) == (8, 4)
    for part in ("train", "eval", "data", "recipe"):
        assert result[part]["peak_rss_mib"] > 0 and result[part]["peak_gpu_mib"] is None
    table = capsys.readouterr().out
    assert "train" in table and "data (workers=0)" in table and "recipe fit (1 ep)" in table


def test_in_memory_datamodule_serves_augmented_normalised_batches() -> None:
    images, labels = bench.synthetic_images(6, 32)
    dm = bench.in_memory_datamodule((images, labels), (images[:2], labels[:2]), 32, 4, num_workers=0)
    # the configured augmentation (3 transforms) runs before resize + normalise + to-tensor
    assert len(dm.train_transform.transforms) == 6 and len(dm.eval_transform.transforms) == 3
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (4,)
    xv, yv = next(iter(dm.val_dataloader()))
    expected = (images[0, 0, 0, 0] / 255.0 - 0.485) / 0.229
    assert xv.shape == (2, 3, 32, 32) and torch.equal(yv, torch.from_numpy(labels[:2]))
    assert xv[0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-5)


def test_synthetic_images_are_uint8_rgb_with_balanced_labels() -> None:
    images, labels = bench.synthetic_images(8, 16)
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [2, 2, 2, 2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys) -> None:
    assert bench.main([*TINY, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: device 'cuda' asked for, but torch sees no CUDA device"


def test_unknown_part_and_bad_precision_are_refused(capsys) -> None:
    assert bench.main([*TINY, "--parts", "train,speed"]) == 2
    assert "unknown --parts ['speed']" in capsys.readouterr().err
    assert bench.main([*TINY, "--precision", "fp8"]) == 2
    assert "unknown --precision 'fp8'" in capsys.readouterr().err


def test_bf16_autocast_is_used_only_when_asked() -> None:
    cpu = torch.device("cpu")
    assert bench.resolve_precision("auto", cpu) == "32"
    assert bench.resolve_precision("auto", torch.device("cuda")) == "bf16"
    with bench.autocast(cpu, "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with bench.autocast(cpu, "32"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_peer_comparison_without_the_keras_interpreter_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    from tumorcls.bench import peer as bench_peer

    args = ["--keras-python", str(tmp_path / "no-python"), "--model", "test_efficientnet", "--size", "32"]
    args += ["--batch-size", "2", "--steps", "1", "--data", str(tmp_path / "no-data")]
    assert bench_peer.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --keras-python '{tmp_path / 'no-python'}' not found")


def test_the_training_augmentation_is_the_configured_one() -> None:
    from omegaconf import OmegaConf

    configured = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "data" / "default.yaml").train_augmentations)
    assert list(TRAIN_AUGMENTATIONS) == configured


def _env_without_wait_policy(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return {**env, **extra}


@pytest.mark.slow  # benchmark subprocesses
def test_bench_runs_from_an_installed_package_without_conf_and_sleeps_idle_openmp_threads(tmp_path: Path) -> None:
    """The package alone (as pip installs it: no conf/ beside it), run as ``python -m tumorcls.bench``."""
    shutil.copytree(REPO / "tumorcls", tmp_path / "site" / "tumorcls", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "bench.json"
    args = ["--device", "cpu", "--parts", "data", "--workers", "0", "--size", "32", "--images", "8"]
    args += ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--repeats", "1", "--json", str(out)]
    env = _env_without_wait_policy(PYTHONPATH=str(tmp_path / "site"))
    where = subprocess.run(
        [sys.executable, "-c", "import tumorcls; print(tumorcls.__file__)"],
        env=env,
        cwd=tmp_path,
        text=True,
        capture_output=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "site")  # not this checkout
    proc = subprocess.run(
        [sys.executable, "-m", "tumorcls.bench", *args], env=env, cwd=tmp_path, text=True, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["data"]["images_per_s"] > 0 and result["config"]["images_source"] == "synthetic"
    assert result["machine"]["omp_wait_policy"] == "PASSIVE"


# Records OMP_WAIT_POLICY as torch is first imported, then runs MODULE as ``python -m MODULE --help`` would.
_WATCH_TORCH_IMPORT = r"""
import os, runpy, sys

seen = []


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None


sys.meta_path.insert(0, Watch())
module = sys.argv[1]
if sys.argv[2] == "run":
    sys.argv = [module, "--help"]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    print("POLICY", seen, os.environ.get("OMP_WAIT_POLICY"))
else:  # MODULE may be several, comma-separated: imported one after the other, the policy printed after each
    for name in module.split(","):
        __import__(name)
        print("POLICY", seen, os.environ.get("OMP_WAIT_POLICY"))
"""


def _watched_policy(module: str, mode: str) -> str:
    """What _WATCH_TORCH_IMPORT prints for ``module`` imported or run, in a process without a wait policy."""
    proc = subprocess.run(
        [sys.executable, "-c", _WATCH_TORCH_IMPORT, module, mode],
        env=_env_without_wait_policy(),
        text=True,
        capture_output=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow  # a fresh interpreter importing the benchmarks
def test_importing_a_benchmark_leaves_the_openmp_wait_policy_alone() -> None:
    modules = "tumorcls.bench.train_eval,tumorcls.bench.peer,tumorcls.bench.export"
    assert _watched_policy(modules, "import").splitlines() == ["POLICY [None] None"] * 3


@pytest.mark.slow  # benchmark subprocesses
@pytest.mark.parametrize("module", ["tumorcls.bench", "tumorcls.bench.train_eval", "tumorcls.bench.peer"])
def test_running_a_benchmark_sets_the_openmp_wait_policy_before_torch_loads(module: str) -> None:
    assert "POLICY ['PASSIVE'] PASSIVE" in _watched_policy(module, "run")


@pytest.mark.slow  # a benchmark subprocess
def test_a_wait_policy_the_user_chose_is_kept() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WATCH_TORCH_IMPORT, "tumorcls.bench.peer", "run"],
        env=_env_without_wait_policy(OMP_WAIT_POLICY="ACTIVE"),
        text=True,
        capture_output=True,
        cwd=REPO,
    )
    assert "POLICY ['ACTIVE'] ACTIVE" in proc.stdout


def test_export_benchmark_times_each_runtime_on_a_checkpoint(tmp_path: Path, capsys) -> None:
    from tests.helpers.export_fixtures import make_checkpoint
    from tumorcls.bench import export as bench_export

    ckpt = make_checkpoint(tmp_path / "run", size=32)
    out = tmp_path / "export-bench.json"
    args = ["--ckpt", str(ckpt), "--no-keras", "--batch", "4", "--runs", "2", "--latency-runs", "2"]
    assert bench_export.main([*args, "--warmup", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["onnx"] == "temporary export" and report["keras"] is None
    assert [row["backend"] for row in report["results"]] == ["pytorch-eager", "onnxruntime"]
    assert all(row["images_per_s_batch4"] > 0 and row["latency_ms_batch1"] > 0 for row in report["results"])
    assert "tensorflow" not in report["versions"]
    assert "pytorch-eager" in capsys.readouterr().out


# Answers the Keras peer's protocol with fixed figures, so the driver runs without TensorFlow.
_STAND_IN_PEER = """
import json, sys

print("a log line the driver skips")
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    command = line.split()[0]
    if command == "quit":
        break
    if command == "info":
        answer = {"tensorflow": "stand-in", "keras": "stand-in", "jit_compile": "auto"}
    elif command in ("train", "predict"):
        answer = {"images_per_s": 2.0}
    else:
        answer = {"seconds": 5.0}
    print(json.dumps(answer), flush=True)
"""


def test_peer_comparison_alternates_ours_with_the_keras_peer_and_compares_medians(tmp_path: Path, capsys) -> None:
    from tumorcls.bench import peer as bench_peer

    interpreter = tmp_path / "keras-python"
    interpreter.write_text(f"#!{sys.executable}\n{_STAND_IN_PEER}")  # ignores the peer script it is given
    interpreter.chmod(0o755)
    out = tmp_path / "peer.json"
    args = ["--keras-python", str(interpreter), "--model", "test_efficientnet", "--size", "32", "--batch-size", "4"]
    args += ["--steps", "2", "--warmup", "0", "--repeats", "1", "--rounds", "2", "--latency-n", "2"]
    assert bench_peer.main([*args, "--data", str(tmp_path / "no-data"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["keras"]["tensorflow"] == "stand-in" and len(result["load_average_1min_per_round"]) == 3
    assert all(len(values) == 2 for values in result["raw"].values()) and len(result["raw"]) == 12
    median = result["median"]
    assert result["ratios"]["train (no aug) vs keras fit"] == round(median["ours train (no aug) img/s"] / 2.0, 3)
    best = min(median["ours torch 1-image s"], median["ours onnx 1-image s"], median["ours onnx int8 1-image s"])
    assert result["ratios"]["1-image latency: keras predict / ours (best)"] == round(5.0 / best, 3)
    assert set(result["targets"]) == {"train >= 1.5x keras fit", "inference >= 2x keras predict"}
    assert "target train >= 1.5x keras fit" in capsys.readouterr().out
