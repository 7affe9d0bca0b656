"""Crash and resume in real 2-rank torchrun runs: SIGKILL mid-epoch, SIGKILL mid-write, SIGTERM.

Every resumed run must end with the same weights and optimizer state, bit for bit, as the
uninterrupted `reference` run (CPU, gloo): the sampler's epoch and position, every rank's RNG
and ZENITH's window all come back from the checkpoint.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.runs import (
    Background,
    assert_same_training_state,
    config_file,
    rank_exits,
    run,
    two_rank_config,
)
from zenith_det.checkpoint import CheckpointError, load_checkpoint
from zenith_det.metrics_log import read_metrics

pytestmark = pytest.mark.slow


def _start(
    start: Callable[..., Background], data_root: Path, work: Path, faults: list[dict]
) -> tuple[Background, str, Path]:
    out = work / "run"
    cfg = config_file(two_rank_config(data_root, out), work)
    return start(["--config", cfg], work / "first", faults), cfg, out


def _resume_and_compare(cfg: str, out: Path, reference: Path, work: Path) -> str:
    """Resume from last.pth, check the end state equals the reference run's; returns stderr."""
    result = run(["--config", cfg, "--resume"], work / "second")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_training_state(out / "last.pth", reference / "last.pth")
    losses = {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}
    expected = {
        r["step"]: r["loss"] for r in read_metrics(reference / "metrics.jsonl") if "loss" in r
    }
    assert losses == expected  # the log was cut back to the checkpoint, then continued alike
    return result.stderr


def _position(path: Path) -> tuple[int, int]:
    progress = load_checkpoint(path)["progress"]
    return progress["epoch"], progress["iter_in_epoch"]


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(
    background, data_root, reference, tmp_path
):
    marker = tmp_path / "paused"
    # Rank 0 stops inside iteration 4 (epoch 1's second); last.pth is the one saved before it.
    fault = {"kind": "pause", "rank": 0, "step": 4, "marker": str(marker)}
    job, cfg, out = _start(background, data_root, tmp_path, [fault])
    job.wait_for(marker)
    job.kill()
    assert _position(out / "last.pth") == (1, 1)
    _resume_and_compare(cfg, out, reference, tmp_path)


def test_sigkill_during_a_checkpoint_write_leaves_only_whole_checkpoints(
    background, data_root, reference, tmp_path
):
    marker = tmp_path / "writing"
    # Saves 1 and 2 are mid-epoch (checkpoint_iters=1); rank 0 writes half of save 3 and stops.
    fault = {"kind": "block_save", "rank": 0, "call": 3, "marker": str(marker)}
    job, cfg, out = _start(background, data_root, tmp_path, [fault])
    job.wait_for(marker)
    job.kill()
    (half,) = out.glob(".last.pth.tmp.*")  # the interrupted write, under its temporary name
    with pytest.raises(CheckpointError):
        load_checkpoint(half)  # really half a file
    assert sorted(p.name for p in out.glob("*.pth")) == ["last.pth"]
    assert _position(out / "last.pth") == (0, 2)  # the previous, complete checkpoint
    stderr = _resume_and_compare(cfg, out, reference, tmp_path)
    assert not list(out.glob(".*.tmp.*")) and f"removed {half}" in stderr
    for path in out.glob("*.pth"):
        load_checkpoint(path)


def test_sigterm_to_torchrun_checkpoints_at_the_next_iteration_and_workers_exit_0(
    background, data_root, reference, tmp_path
):
    marker = tmp_path / "waiting"
    # Rank 0 holds iteration 3 until torchrun has forwarded the SIGTERM to it.
    fault = {"kind": "wait_sigterm", "rank": 0, "step": 3, "marker": str(marker)}
    job, cfg, out = _start(background, data_root, tmp_path, [fault])
    job.wait_for(marker)
    sent = time.monotonic()
    job.signal(signal.SIGTERM)
    torchrun_code = job.wait()
    seconds = time.monotonic() - sent
    print(f"torchrun exited {torchrun_code} {seconds:.1f}s after SIGTERM")
    assert rank_exits(job.exit_dir) == {0: 0, 1: 0}, job.stderr()[-3000:]
    # torchrun itself re-raises the signal after its workers are done: not a clean exit.
    assert torchrun_code != 0 and "SignalException" in job.stderr()
    assert seconds < 30, seconds  # well inside torchrun's 30 s grace before SIGKILL
    assert "stop requested: checkpoint saved" in job.stderr()
    # The flag raised during iteration 3 travels in iteration 4's all-reduce: both stop after it.
    assert _position(out / "last.pth") == (1, 2)
    _resume_and_compare(cfg, out, reference, tmp_path)
