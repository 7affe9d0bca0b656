"""metrics.jsonl: valid JSON on disk, numbers (NaN and inf included) when read back."""

from __future__ import annotations

import json
import math

from zenith_det.metrics_log import MetricsWriter, read_metrics


def _refuse(name: str) -> None:
    raise AssertionError(f"bare {name} in metrics.jsonl: not valid JSON for other readers")


def test_non_finite_values_are_strings_on_disk_and_floats_when_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path, enabled=True)
    writer.write({"step": 1, "grad_norm_window_mean": math.nan, "lr_per_rank": [0.1, math.inf]})
    writer.write({"step": 2, "grad_norm_window_mean": 2.5, "note": "nanny", "loss": -math.inf})
    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=_refuse)
    first, second = read_metrics(path)
    assert math.isnan(first["grad_norm_window_mean"]) and first["lr_per_rank"] == [0.1, math.inf]
    assert second == {"step": 2, "grad_norm_window_mean": 2.5, "note": "nanny", "loss": -math.inf}


def test_truncate_after_keeps_the_file_valid_json(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path, enabled=True)
    for step in (1, 2, 3):
        writer.write({"step": step, "grad_norm_window_mean": math.nan})
    writer.truncate_after(2)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all('"nan"' in line for line in lines)
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
