"""One training run as the benchmarks see it: its torchrun command, its status, its records.

A run is a spec (a dict): `config` (a YAML file), `overrides` (`--set` values), `nproc` (ranks)
and `run_dir` (the output directory). Relative paths are relative to the repository root, where
every run is started. The curves are read from the run's metrics.jsonl, once per run.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zenith_det.metrics_log import read_metrics  # noqa: E402
from zenith_det.run_dir import run_files  # noqa: E402

DIVERGED_EXIT = 3  # tools/train.py: stopped after train.max_consecutive_nonfinite steps
# torchrun reports any failed worker as exit 1, so a diverged cell is also known by the line
# every rank prints when it stops (zenith_det/engine.py, _diverged_message).
DIVERGED_LINE = "consecutive non-finite steps up to iteration"


def at_root(path: str | Path) -> Path:
    """A path as the benchmarks use it: relative paths are relative to the repository root."""
    return ROOT / path  # an absolute `path` stays itself


def train_command(spec: dict, resume: bool = False) -> list[str]:
    """The torchrun command of one run.

    An output directory that holds a run is continued from its last.pth with `resume`, and
    otherwise started over with --overwrite (the old run is moved aside, never deleted).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={spec['nproc']}", "tools/train.py", "--config", spec["config"]]
    cmd += ["--output-dir", spec["run_dir"]]
    for override in spec["overrides"]:
        cmd += ["--set", override]
    run_dir = at_root(spec["run_dir"])
    if resume and (run_dir / "last.pth").is_file():
        cmd.append("--resume")
    elif run_files(run_dir):
        cmd.append("--overwrite")
    return cmd


def machine() -> str:
    """This machine's CPU model and core count, as a cell's record keeps them."""
    # Wall seconds depend on it, and so do a result's last bits (another CPU's kernels).
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux: platform's name is all there is
    return f"{name}, {os.cpu_count()} cores"


def cell_status(returncode: int, log_text: str) -> str | None:
    """ "ok", "diverged" (exit 3, or a failed torchrun whose ranks said so), None: a failure."""
    if returncode == 0:
        return "ok"
    if returncode == DIVERGED_EXIT or DIVERGED_LINE in log_text:
        return "diverged"
    return None


def run_records(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl records ([] when it wrote none): read once, every curve from them."""
    path = run_dir / "metrics.jsonl"
    return read_metrics(path) if path.is_file() else []


def ap_curve(records: list[dict]) -> list[list[float]]:
    """[epoch, iterations so far, primary AP] after every evaluation of a run."""
    evals = [r for r in records if r.get("type") == "eval"]
    return [[r["epoch"] + 1, r["step"], r["primary_AP"]] for r in evals]


def lr_curve(records: list[dict]) -> list[list[float]]:
    """[iterations so far, step size applied] at every logged training iteration of a run."""
    train = [r for r in records if r.get("type") == "train"]
    return [[r["step"], r.get("effective_lr", r["lr"])] for r in train]


# The window mean a ZENITH run logs: of the gradient norm (the paper's rule) or, with
# optimizer.signal=momentum_snr, of that signal (zenith_det/optim/momentum_snr.py).
WINDOW_MEANS = ("grad_norm_window_mean", "momentum_snr_window_mean")


def norm_curve(records: list[dict]) -> list[list[float]]:
    """ZENITH runs: [iterations so far, window mean mu, ratio mu/Z] at every log period."""
    # With warmup_history=exclude the window mean is NaN during the warm-up; until
    # the window is full, mu is the mean of the norms recorded so far and the ratio is 1.
    train = [r for r in records if r.get("type") == "train"]
    name = next((n for n in WINDOW_MEANS if any(n in r for r in train)), WINDOW_MEANS[0])
    return [[r["step"], r[name], r["zenith_ratio"]] for r in train if is_finite(r.get(name))]


def terms_curve(records: list[dict]) -> dict[str, list[list[float]]]:
    """{name: [[iterations so far, value], ...]} of the raw gradient norm, each loss term and the
    positives the heads sampled per image (`zenith_det.sampling_stats`)."""
    # Kept in results.json so that the mechanism (benchmarks/league_mechanism.py) can say which
    # loss terms move with the norm after the run directories are gone (runs/ is not committed).
    train = [r for r in records if r.get("type") == "train"]
    logged = train[-1] if train else {}
    names = sorted(n for n in logged if n == "grad_norm" or is_term(n))
    return {name: [[r["step"], r[name]] for r in train if is_finite(r.get(name))] for name in names}


def is_term(name: str) -> bool:
    """Whether a metrics field is a loss term or a count of sampled positives."""
    return name.startswith("loss") or name.endswith("_positives")


def is_finite(value: Any) -> bool:
    """Whether a metrics value is a finite float (NaN and inf come back as floats too)."""
    return isinstance(value, float) and math.isfinite(value)
