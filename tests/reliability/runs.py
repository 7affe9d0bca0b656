"""Run tools/train.py (through the fault-injecting launch.py) in subprocesses; inspect results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.training_setup import tiny_config, write_config
from zenith_det.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = Path(__file__).with_name("launch.py")


def two_rank_config(data_root: Path, output_dir: Path, **train) -> dict:
    """The shared run: 2 epochs of 3 iterations, a checkpoint after every iteration."""
    values = {"epochs": 2, "max_iters_per_epoch": 3, "checkpoint_iters": 1, "eval_period": 0}
    return tiny_config(data_root, output_dir, train={**values, **train})


def config_file(cfg: dict, directory: Path, name: str = "cfg.yaml") -> str:
    """Write `cfg` into `directory` and return the path as a string."""
    directory.mkdir(parents=True, exist_ok=True)
    return str(write_config(cfg, directory / name))


def command(args: list[str], nproc: int, torchrun_args: tuple[str, ...] = ()) -> list[str]:
    """launch.py under torchrun with `nproc` ranks, or alone in this interpreter for nproc=1."""
    if nproc == 1:
        return [sys.executable, str(LAUNCH), *args]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*torchrun, f"--nproc_per_node={nproc}", *torchrun_args, str(LAUNCH), *args]


def environment(faults: list[dict], exit_dir: Path) -> dict[str, str]:
    """One thread per rank, the faults to inject, and where ranks record their exit codes."""
    exit_dir.mkdir(parents=True, exist_ok=True)
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        ZENITH_TEST_FAULTS=json.dumps(faults),
        ZENITH_TEST_EXIT_DIR=str(exit_dir),
    )


@dataclass
class Result:
    """What a finished run left: torchrun's exit code, its output, the ranks' own exit codes."""

    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    rank_exits: dict[int, int]

    def error_lines(self) -> list[str]:
        """The one-line `error: ...` reports of tools/train.py, from every rank."""
        return error_lines(self.stderr)


def error_lines(stderr: str) -> list[str]:
    """`error: ...` lines; rank 0's progress bar (no newline) may precede one on its line."""
    segments = stderr.replace("\r", "\n").splitlines()
    return [s[s.index("error: ") :] for s in segments if "error: " in s]


def rank_exits(exit_dir: Path) -> dict[int, int]:
    """Exit codes the ranks recorded (a killed rank records nothing)."""
    return {int(p.name[4:]): int(p.read_text()) for p in exit_dir.glob("rank*")}


def run(
    args: list[str],
    work: Path,
    faults: list[dict] = (),
    nproc: int = 2,
    timeout: float = 240,
    torchrun_args: tuple[str, ...] = (),
) -> Result:
    """Run to the end and collect the result; `work` receives the ranks' exit codes."""
    exit_dir = work / "exits"
    start = time.monotonic()
    done = subprocess.run(
        command(args, nproc, torchrun_args),
        cwd=ROOT,
        env=environment(list(faults), exit_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    elapsed = time.monotonic() - start
    return Result(done.returncode, done.stdout, done.stderr, elapsed, rank_exits(exit_dir))


class Background:
    """A run in its own session (so the whole process tree can be signalled), output to files."""

    def __init__(self, args: list[str], work: Path, faults: list[dict], nproc: int = 2) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        self.exit_dir = work / "exits"
        env = environment(faults, self.exit_dir)
        self._out = open(work / "stdout.txt", "w")  # noqa: SIM115 (closed in wait)
        self._err = open(work / "stderr.txt", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            command(args, nproc),
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,
        )

    def wait_for(self, marker: Path, timeout: float = 180) -> None:
        """Block until a fault wrote `marker`; fail if the run ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"run ended ({self.proc.returncode}): {self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {marker.name} after {timeout}s: {self.stderr()[-3000:]}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        """Send `sig` to torchrun only (it forwards SIGTERM to the workers)."""
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL torchrun and every worker at once: a node failure or the OOM killer."""
        if self.proc.poll() is not None:
            self.wait()
            return  # ended already: its pid may belong to someone else by now
        # torchrun starts each worker in a session of its own: a process-group kill misses them.
        doomed = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in doomed):
            assert time.monotonic() < deadline, "a process of the killed run survived SIGKILL"
            time.sleep(0.05)

    def wait(self, timeout: float = 120) -> int:
        """Wait for torchrun to exit; returns its exit code."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()
            self._err.close()

    def stderr(self) -> str:
        """Everything the run wrote to stderr so far."""
        return (self.work / "stderr.txt").read_text()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` in the process tree (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped by its parent


def assert_same_training_state(a: Path, b: Path) -> None:
    """Two checkpoints hold bit-identical weights and optimizer state (ZENITH's window too)."""
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["model"].keys() == sb["model"].keys()
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), key
    assert _flat(sa["optimizer"]) == _flat(sb["optimizer"])


def _flat(value, prefix: str = "") -> dict:
    """A nested state as {path: comparable value} (tensors by bytes, so NaN and -0.0 count)."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}/{key}").items()
        }
    if isinstance(value, list | tuple):
        return {
            k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}/{i}").items()
        }
    if torch.is_tensor(value):
        return {prefix: (value.dtype, tuple(value.shape), value.numpy().tobytes())}
    return {prefix: value}
