"""The README's demo path at reduced size: 2 ranks, train + evaluate + re-score + plot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_trains_evaluates_and_rescoring_gives_the_same_numbers(tmp_path):
    out = tmp_path / "runs"
    cmd = [
        sys.executable,
        "tools/demo.py",
        "--nproc",
        "2",
        "--out",
        str(out),
        "--data-root",
        str(tmp_path / "data"),
        "--set",
        "train.epochs=1",
        "--set",
        "train.max_iters_per_epoch=4",
        "--set",
        "model.min_size=96",
        "--set",
        "model.max_size=128",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| zenith |" in result.stdout and "| multistep |" in result.stdout

    run = out / "faster_rcnn_r18_zenith"
    trained = json.loads((run / "eval" / "metrics.json").read_text())
    rescored = json.loads((run / "eval_best" / "metrics.json").read_text())
    assert all(math.isfinite(v) for v in trained["bbox"].values())
    # best.pth re-scored by tools/eval.py gives exactly the numbers the training loop logged.
    assert rescored == trained
    assert (out / "faster_rcnn_r18_zenith_vs_multistep.png").stat().st_size > 10_000
    # The demo ends by drawing the ZENITH model's predictions on a few val images.
    assert len(list((run / "predict").glob("*.jpg"))) == 6
    assert "predictions of the ZENITH model drawn" in result.stdout
