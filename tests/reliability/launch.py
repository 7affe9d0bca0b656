"""Test-only launcher: tools/train.py with faults injected into this process. Never for users.

torchrun (or python) runs this file in place of tools/train.py. The faults live here, in test
code, so the library carries no test switches: this file wraps `run_training` to pass an
`after_backward` loop hook, or wraps `torch.save`, then calls tools/train.py's `main` unchanged.

Environment (all optional):
- ZENITH_TEST_FAULTS: JSON list of faults, each `{"kind": ..., "rank": r, ...}`; a fault
  applies to the process whose RANK is r (0 without torchrun). Kinds:
  - `nan_grads` `{"from_step": k}`: every gradient becomes NaN from global step k on;
  - `pause` `{"step": k, "marker": path, "seconds": s}`: at step k, after backward, write
    `marker` and sleep s seconds, default "forever" (a process to kill, or a stalled rank);
  - `wait_sigterm` `{"step": k, "marker": path}`: at step k write `marker`, then wait until this
    process has received SIGTERM (the run's own handler still sees it) and go on;
  - `block_save` `{"call": n, "marker": path}`: the n-th torch.save into a file writes half
    its bytes, writes `marker` and sleeps (a process to kill in the middle of a checkpoint
    write);
  - `args` `{"args": [...]}`: extra command-line arguments for this rank only;
  - `cwd` `{"dir": path}`: this rank runs in another working directory.
- ZENITH_TEST_EXIT_DIR: each rank writes its exit code to `rank<r>` there.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SLEEP_S = 600  # "forever" for a test: the test kills the process long before


def _faults(rank: int) -> list[dict]:
    faults = json.loads(os.environ.get("ZENITH_TEST_FAULTS", "[]"))
    return [fault for fault in faults if fault.get("rank", 0) == rank]


def _touch(marker: str) -> None:
    Path(marker).write_text(f"{os.getpid()} {time.time()}\n")


def _nan_grads(fault: dict) -> Callable:
    def hook(model: torch.nn.Module, step: int) -> None:
        if step >= fault["from_step"]:
            for param in model.parameters():
                if param.grad is not None:
                    param.grad.fill_(float("nan"))

    return hook


def _pause(fault: dict) -> Callable:
    def hook(model: torch.nn.Module, step: int) -> None:
        if step == fault["step"]:
            if "marker" in fault:
                _touch(fault["marker"])
            time.sleep(fault.get("seconds", SLEEP_S))

    return hook


def _wait_sigterm(fault: dict) -> Callable:
    def hook(model: torch.nn.Module, step: int) -> None:
        if step != fault["step"]:
            return
        received = threading.Event()
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame) -> None:
            received.set()
            if callable(previous):
                previous(signum, frame)  # the run's StopFlag

        signal.signal(signal.SIGTERM, handler)
        _touch(fault["marker"])
        while not received.wait(0.05):  # short waits so the handler runs promptly
            pass
        signal.signal(signal.SIGTERM, previous)

    return hook


def _block_save(fault: dict) -> None:
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        # Object collectives (all_gather_object...) also use torch.save, into memory buffers.
        if isinstance(f, io.BytesIO):
            return real_save(obj, f, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] != fault["call"]:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        _touch(fault["marker"])
        time.sleep(SLEEP_S)

    torch.save = save


_HOOKS = {"nan_grads": _nan_grads, "pause": _pause, "wait_sigterm": _wait_sigterm}


def _install(faults: list[dict]) -> list[str]:
    """Install this rank's faults; returns its extra command-line arguments."""
    hooks, extra_args = [], []
    for fault in faults:
        if fault["kind"] in _HOOKS:
            hooks.append(_HOOKS[fault["kind"]](fault))
        elif fault["kind"] == "block_save":
            _block_save(fault)
        elif fault["kind"] == "args":
            extra_args += fault["args"]
        elif fault["kind"] == "cwd":
            os.chdir(fault["dir"])
        else:
            raise ValueError(f"unknown fault {fault}")
    if hooks:
        import zenith_det.training as training
        from zenith_det.engine import Hook

        run_training = training.run_training

        class Faults(Hook):
            def after_backward(self, loop) -> None:
                for hook in hooks:
                    hook(loop.model, loop.progress.global_step)

        def patched(cfg, resume=None, hooks_=()):
            return run_training(cfg, resume=resume, hooks=[Faults(), *hooks_])

        training.run_training = patched
    return extra_args


def _train_tool():
    spec = importlib.util.spec_from_file_location("train_tool", ROOT / "tools" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record_exit(rank: int, code: int) -> None:
    exit_dir = os.environ.get("ZENITH_TEST_EXIT_DIR")
    if exit_dir:
        Path(exit_dir, f"rank{rank}").write_text(f"{code}\n")


def main() -> int:
    """Install this rank's faults, run tools/train.py's main, record the exit code."""
    rank = int(os.environ.get("RANK", "0"))
    argv = sys.argv[1:] + _install(_faults(rank))
    code = 1  # an exception that escapes main is a crash: Python exits with 1
    try:
        code = _train_tool().main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        raise
    finally:
        _record_exit(rank, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
