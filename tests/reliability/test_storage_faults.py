"""Faults of the machine on real file systems: a full disk, a read-only one, a folder removed.

Each fault stops the run with one `error:` line naming the file, the fault and the checkpoint
to resume from, exit code 4; the last good checkpoint stays whole, no temp file is left, and
`--resume` after the fault is cleared ends bit-identical to an uninterrupted run. The full disk
is a small tmpfs under 2 gloo ranks (torchrun); the read-only file system (a tmpfs remounted
`ro`: as root, chmod would not stop a write) and the removed folder are one-process runs with a
loop hook that makes the fault happen right after the first checkpoint. The first tests check
the write path itself on a tiny tmpfs.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from tests.reliability.runs import assert_same_training_state, config_file, run, two_rank_config
from tests.training_setup import tiny_config
from zenith_det import storage
from zenith_det.checkpoint import atomic_save, load_checkpoint
from zenith_det.config import config_from_dict
from zenith_det.engine import Hook
from zenith_det.errors import ENVIRONMENT, PEER_FAILED, StorageError, exit_on_user_error
from zenith_det.metrics_log import read_metrics
from zenith_det.training import run_training

# One checkpoint of the tiny model (ResNet-18, 32 FPN channels, ZENITH momentum) is ~92 MB:
# a 140 MB tmpfs holds last.pth, but not the temp file of the next checkpoint beside it.
SMALL_FS_MB = 140


def _mount(args: list[str]) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a file system needs root and mount(8)")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} refused here: {done.stderr.strip()}")


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, int], Path]]:
    """Mount a tmpfs of `size_mb` at a directory; every mount is undone when the test ends."""
    mounted: list[Path] = []

    def mount(directory: Path, size_mb: int) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        _mount(["-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(directory)])
        mounted.append(directory)
        return directory

    yield mount
    for directory in reversed(mounted):
        # Lazy: a process of a failed run that still holds a file must not keep it mounted.
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _remount(directory: Path, options: str) -> None:
    _mount(["-o", f"remount,{options}", str(directory)])


def _position(path: Path) -> tuple[int, int]:
    progress = load_checkpoint(path)["progress"]
    return progress["epoch"], progress["iter_in_epoch"]


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}


def _assert_nothing_lost(out: Path, position: tuple[int, int]) -> None:
    """last.pth is the whole checkpoint from before the fault and no temp file is left."""
    assert _position(out / "last.pth") == position
    assert not list(out.glob(".*.tmp*")), list(out.iterdir())


def test_torch_save_on_a_full_disk_names_the_errno_and_keeps_the_old_file(tmpfs, tmp_path):
    fs = tmpfs(tmp_path / "fs", 2)
    path = fs / "last.pth"
    atomic_save({"w": torch.ones(1000)}, path)
    # 4 MB into 2 MB: torch's zip writer alone would say "unexpected pos ...".
    with pytest.raises(StorageError) as info:
        atomic_save({"w": torch.zeros(1_000_000)}, path)
    assert str(info.value).startswith(
        f"cannot write checkpoint {path}: no space left on device (ENOSPC): needs about 4.0 MB, "
    )
    assert str(info.value).endswith(f" free on {fs}")
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(1000))
    assert sorted(p.name for p in fs.iterdir()) == ["last.pth"]  # no temp file left
    line = storage.space_warning(fs, 4_000_000, "the next checkpoint")
    assert line.startswith("low disk space: the next checkpoint: about 4.0 MB needed, ")
    assert storage.space_warning(fs, 1000, "the next checkpoint") is None


def test_storage_error_keeps_its_parts_through_pickling():
    # How rank 0's start-up StorageError reaches the other ranks (broadcast_object).
    error = StorageError("/x/last.pth", "checkpoint", "read-only file system (EROFS)")
    copy = pickle.loads(pickle.dumps(error.with_hint("continue with --resume")))
    expected = "cannot write checkpoint /x/last.pth: read-only file system (EROFS); continue with"
    assert str(copy) == str(error) == expected + " --resume"
    assert copy.exit_code == ENVIRONMENT


@pytest.mark.slow
def test_full_disk_under_torchrun_stops_both_ranks_at_once_and_resumes_exactly(
    data_root, reference, tmpfs, tmp_path
):
    fs = tmpfs(tmp_path / "fs", SMALL_FS_MB)
    out = fs / "run"
    cfg = config_file(two_rank_config(data_root, out), tmp_path)
    result = run(["--config", cfg], tmp_path / "first")
    assert result.rank_exits == {0: ENVIRONMENT, 1: PEER_FAILED}, result.stderr[-3000:]
    errors = result.error_lines()
    own = next(line for line in errors if line.startswith("error: [rank 0] "))
    # The second checkpoint (after iteration 2) finds the disk full; the first one is whole.
    assert own.startswith(
        f"error: [rank 0] cannot write checkpoint {out}/last.pth: no space left on device "
        "(ENOSPC): needs about 9"
    ), own
    assert f" MB free on {out}; the last good checkpoint is {out}/last.pth (epoch 0, " in own
    assert own.endswith("iteration 1): clear the fault and continue with --resume"), own
    peer = next(line for line in errors if line.startswith("error: [rank 1] "))
    assert peer == "error: [rank 1] stopped because rank 0 failed with StorageError: " + own[16:]
    assert "[rank0]: Traceback" not in result.stderr and "[rank1]: Traceback" not in result.stderr
    assert "low disk space: the next checkpoint and one snapshot" in result.stderr
    exits = [(tmp_path / "first" / "exits" / f"rank{r}").stat().st_mtime for r in (0, 1)]
    print(f"rank 1 stopped {exits[1] - exits[0]:.2f}s after rank 0; run {result.elapsed:.1f}s")
    # Together: rank 0 sends the failed write's line in place of the checkpoint's barrier (its
    # sockets close only once its process is gone, seconds later with torch loaded).
    assert abs(exits[1] - exits[0]) < 3
    _assert_nothing_lost(out, (0, 1))

    _remount(fs, "size=1g")  # the fault cleared: space freed
    resumed = run(["--config", cfg, "--resume"], tmp_path / "second")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_training_state(out / "last.pth", reference / "last.pth")
    assert _losses(out) == _losses(reference)


class _AfterCheckpoint(Hook):
    """Calls `fault()` once, right after the run's `n`-th checkpoint is written."""

    def __init__(self, n: int, fault: Callable[[], None]) -> None:
        self.n, self.fault, self.seen = n, fault, 0

    def after_checkpoint(self, loop) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.fault()


def _one_rank_config(data_root: Path, out: Path):
    train = {"epochs": 1, "max_iters_per_epoch": 3, "checkpoint_iters": 1, "eval_period": 0}
    return config_from_dict(tiny_config(data_root, out, train=train))


def _train(cfg, capsys, resume=None, hooks=()) -> tuple[int, str]:
    """run_training inside the tools' exit path: (exit code, stderr)."""
    code = 0
    try:
        with exit_on_user_error():
            run_training(cfg, resume=resume, hooks=hooks)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def one_rank_reference(data_root, tmp_path_factory) -> Path:
    """Output dir of an uninterrupted one-process run of `_one_rank_config`."""
    out = tmp_path_factory.mktemp("one_rank_reference") / "run"
    run_training(_one_rank_config(data_root, out))
    return out


def _error_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return line


@pytest.mark.slow
def test_read_only_file_system_mid_run_and_at_start(
    data_root, one_rank_reference, tmpfs, tmp_path, capsys
):
    fs = tmpfs(tmp_path / "fs", 512)
    out = fs / "run"
    cfg = _one_rank_config(data_root, out)
    code, stderr = _train(cfg, capsys, hooks=[_AfterCheckpoint(1, lambda: _remount(fs, "ro"))])
    assert code == ENVIRONMENT, stderr[-3000:]
    hint = f"the last good checkpoint is {out}/last.pth (epoch 0, iteration 1): clear the fault"
    # Iteration 2's log record is the first write after the remount.
    assert _error_line(stderr) == (
        f"error: cannot write metrics.jsonl {out}/metrics.jsonl: read-only file system (EROFS); "
        f"{hint} and continue with --resume"
    )
    assert "Traceback" not in stderr
    _assert_nothing_lost(out, (0, 1))
    # Still read-only: the start-up check finds it before anything is built.
    code, stderr = _train(cfg, capsys, resume=True)
    assert code == ENVIRONMENT, stderr[-3000:]
    assert _error_line(stderr) == (
        f"error: cannot write output_dir {out}: read-only file system (EROFS); {hint} and "
        "continue with --resume"
    )
    _remount(fs, "rw")
    assert _train(cfg, capsys, resume=True)[0] == 0
    assert_same_training_state(out / "last.pth", one_rank_reference / "last.pth")
    assert _losses(out) == _losses(one_rank_reference)


@pytest.mark.slow
def test_output_folder_removed_mid_run(data_root, one_rank_reference, tmp_path, capsys):
    out, away = tmp_path / "run", tmp_path / "moved-away"
    cfg = _one_rank_config(data_root, out)
    code, stderr = _train(cfg, capsys, hooks=[_AfterCheckpoint(1, lambda: out.rename(away))])
    assert code == ENVIRONMENT, stderr[-3000:]
    assert _error_line(stderr) == (
        f"error: cannot write metrics.jsonl {out}/metrics.jsonl: {out} no longer exists (ENOENT): "
        f"it was removed during the run; {out} is gone, and its checkpoints with it: put it back "
        "and continue with --resume, or start the run again"
    )
    assert not out.exists()  # not quietly recreated: the run's files are elsewhere now
    _assert_nothing_lost(away, (0, 1))
    away.rename(out)
    assert _train(cfg, capsys, resume=True)[0] == 0
    assert_same_training_state(out / "last.pth", one_rank_reference / "last.pth")
    assert _losses(out) == _losses(one_rank_reference)
