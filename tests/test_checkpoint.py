"""Checkpoint files: atomic, safe-loadable, pruned, RNG round trip."""

import random

import numpy as np
import pytest
import torch

from zenith_det.checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    CheckpointManager,
    atomic_save,
    capture_rng_state,
    find_latest,
    load_checkpoint,
    restore_rng_state,
)


def _state(epoch: int, it: int = 0) -> dict:
    return {"model": {"w": torch.full((3,), float(epoch))}, "epoch": epoch, "iter_in_epoch": it}


def test_atomic_save_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.pth"
    atomic_save({"a": torch.ones(2)}, path)
    atomic_save({"a": torch.zeros(2)}, path)
    assert torch.equal(load_checkpoint(path)["a"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pth"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.pth"
    atomic_save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"a": Unpicklable()}, path)
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pth"]


def test_manager_keeps_last_k_snapshots_and_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for epoch in range(1, 5):
        manager.save(_state(epoch), snapshot=True, is_best=epoch == 2)
    names = [p.name for p in manager.snapshots()]
    assert names == ["model_e0003_i000000.pth", "model_e0004_i000000.pth"]
    assert load_checkpoint(tmp_path / LAST)["epoch"] == 4
    assert load_checkpoint(tmp_path / BEST)["epoch"] == 2  # a later last.pth does not touch it
    assert find_latest(tmp_path) == tmp_path / LAST


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_checkpoint(bad)
    truncated = tmp_path / "trunc.pth"
    atomic_save(_state(1), truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="trunc.pth"):
        load_checkpoint(truncated)


def test_rng_round_trip_through_weights_only_file(tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    atomic_save({"rng": capture_rng_state()}, tmp_path / "rng.pth")
    expected = (torch.rand(4), random.random(), np.random.rand())
    restore_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"])
    got = (torch.rand(4), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]
