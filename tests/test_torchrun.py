"""Real 2-process DDP (gloo) runs through torchrun and tools/train.py, for every arch."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training_setup import ARCHS, make_tiny_dataset, tiny_config, write_config
from zenith_det.checkpoint import load_checkpoint
from zenith_det.metrics_log import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run tools/train.py under torchrun on CPU (one thread per rank) and return the result."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(ROOT / "tools" / "train.py"),
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("demo"))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_two_ranks_train_evaluate_and_agree_on_the_lr(arch, data_root, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(data_root, out, arch, train={"max_iters_per_epoch": 3})
    result = torchrun(["--config", str(write_config(cfg, tmp_path / "cfg.yaml"))])
    assert result.returncode == 0, result.stderr[-3000:]
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    for record in train:
        # Both ranks applied the same LR at every step (ZENITH's all-reduced window).
        assert len(record["lr_per_rank"]) == 2
        assert record["lr_per_rank"][0] == record["lr_per_rank"][1] == record["lr"]
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "eval"]
    assert len(evals) == 1 and all(math.isfinite(s["AP"]) for s in evals[0]["metrics"].values())
    state = load_checkpoint(out / "last.pth")
    assert len(state["rng"]) == 2  # every rank's RNG state travels to rank 0's checkpoint
    assert not any(k.startswith("module.") for k in state["model"])
