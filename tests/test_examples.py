"""The examples of docs/own_loop.md, each run as a subprocess with its own CLI, on small sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(*args: str, torchrun: bool = False, timeout: float = 300) -> list[dict[str, Any]]:
    """Run an example (under torchrun with 2 ranks if asked); return its JSON summary lines."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command = [sys.executable, *(launcher if torchrun else []), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json_objects(result.stdout)


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text``, also where two ranks' lines ran into one."""
    decoder, found, position = json.JSONDecoder(), [], text.find("{")
    while position != -1:
        value, end = decoder.raw_decode(text, position)
        found.append(value)
        position = text.find("{", end)
    return found


def test_plain_loop_with_amp_clipping_and_accumulation() -> None:
    """One process, GradScaler, clipping and k = 2: one recorded norm per optimizer step."""
    script = str(EXAMPLES / "plain_loop.py")
    [summary] = run_example(script, "--steps", "40", "--accumulate", "2", "--amp", "--clip", "1")
    assert summary["world_size"] == 1
    assert summary["zenith_steps"] == summary["optimizer_steps"] == 40
    assert summary["skipped_steps"] == 0
    assert summary["last_loss"] < 0.8 * summary["first_loss"]


@pytest.mark.slow
def test_plain_loop_under_torchrun_with_two_ranks() -> None:
    """DDP over 2 gloo ranks with no_sync accumulation: both ranks record and apply the same LR."""
    summaries = run_example(
        str(EXAMPLES / "plain_loop.py"), "--steps", "20", "--accumulate", "2", torchrun=True
    )
    assert sorted(s["rank"] for s in summaries) == [0, 1]
    assert all(s["world_size"] == 2 and s["zenith_steps"] == 20 for s in summaries)
    assert summaries[0]["lr"] == summaries[1]["lr"]


def test_zenith_lr_adamw_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """ZenithLR over AdamW: a run resumed at step 12 applies the uninterrupted run's LRs."""
    script, checkpoint = str(EXAMPLES / "zenith_lr_adamw.py"), str(tmp_path / "state.pt")
    [full] = run_example(script, "--steps", "24", "--checkpoint", checkpoint, "--save-at", "12")
    [resumed] = run_example(script, "--steps", "24", "--resume", checkpoint)
    assert resumed["start"] == 12 and resumed["zenith_steps"] == full["zenith_steps"] == 24
    assert resumed["lrs"] == full["lrs"][12:]
    assert min(full["lrs"]) < 3e-3 and full["last_loss"] < full["first_loss"]


def test_lightning_module_in_both_modes_with_both_optimizers() -> None:
    """Zenith from configure_optimizers and ZenithLR beside AdamW, automatic and manual
    optimization (one process for the four fits): one norm per step, the ratio moves, loss falls.
    """
    pytest.importorskip("lightning")
    summaries = run_example(
        str(EXAMPLES / "lightning_module.py"),
        *("--steps", "40", "--clip", "1.0"),
        *("--optimizer", "zenith", "zenith_adamw", "--mode", "automatic", "manual"),
    )
    assert [(s["optimizer"], s["mode"]) for s in summaries] == [
        ("zenith", "automatic"),
        ("zenith", "manual"),
        ("zenith_adamw", "automatic"),
        ("zenith_adamw", "manual"),
    ]
    for summary in summaries:
        assert summary["zenith_steps"] == 40 and summary["ratio"] < 1.0, summary
        assert summary["last_loss"] < summary["first_loss"], summary
