"""tools/train.py as a user meets it: overrides work, bad input is one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.training_setup import make_tiny_dataset, tiny_config, write_config

ROOT = Path(__file__).resolve().parents[1]


def train_cli(*args: str) -> subprocess.CompletedProcess:
    """Run tools/train.py in one process."""
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("demo"))


def _assert_user_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _bad_cases(
    data_root: Path, tmp_path: Path
) -> dict[str, tuple[dict | str, list[str], list[str]]]:
    good = tiny_config(data_root, tmp_path / "out")
    kp_on_instances = tiny_config(data_root, tmp_path / "out", "keypointrcnn_resnet50_fpn")
    kp_on_instances["data"]["train_annotations"] = "annotations/instances_train.json"
    return {
        "yaml syntax": ("model: {arch: [\n", [], ["cfg.yaml:"]),
        "unknown key": (dict(good, optimzer={}), [], ["optimzer", "did you mean", "optimizer"]),
        "negative lr": (good, ["optimizer.lr=-0.1"], ["optimizer.lr"]),
        "zero window": (good, ["optimizer.window=0"], ["optimizer.window"]),
        "wrong type": (good, ["train.epochs=two"], ["train.epochs"]),
        "missing data": (
            good,
            ["data.val_annotations=nope.json"],
            ["data.val_annotations", "nope.json"],
        ),
        "too few classes": (good, ["model.num_classes=3"], ["num_classes"]),
        "keypoints on instances": (kp_on_instances, [], ["keypoint"]),
    }


@pytest.mark.slow
def test_bad_configs_are_one_line_exit_2_and_write_nothing(data_root, tmp_path):
    for name, (cfg, overrides, fragments) in _bad_cases(data_root, tmp_path).items():
        path = tmp_path / "cfg.yaml"
        if isinstance(cfg, str):
            path.write_text(cfg)
        else:
            write_config(cfg, path)
        args = ["--config", str(path)] + [a for o in overrides for a in ("--set", o)]
        result = train_cli(*args)
        _assert_user_error(result, *fragments)
        assert not (tmp_path / "out").exists(), name


@pytest.mark.slow
def test_set_and_output_dir_override_the_file(data_root, tmp_path):
    cfg = write_config(tiny_config(data_root, tmp_path / "ignored"), tmp_path / "cfg.yaml")
    out = tmp_path / "chosen"
    result = train_cli(
        "--config",
        str(cfg),
        "--output-dir",
        str(out),
        "--set",
        "train.max_iters_per_epoch=1",
        "--set",
        "train.eval_period=0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| bbox |" in result.stdout  # the final summary table
    saved = (out / "config.yaml").read_text()
    assert "max_iters_per_epoch: 1" in saved and not (tmp_path / "ignored").exists()
