"""metrics.jsonl: one JSON record per log period and per evaluation, written by rank 0 only."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zenith_det import storage


class MetricsWriter:
    """Appends JSON records to `<output_dir>/metrics.jsonl`; a no-op on non-main ranks."""

    def __init__(self, path: str | Path, enabled: bool) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener(record)` after each record is written (e.g. TensorBoard's scalars)."""
        self._listeners.append(listener)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush, so a crash loses at most the record being written."""
        if not self.enabled:
            return
        # No mkdir: the run made the folder, and one removed under the run is a fault to report.
        with storage.writing(self.path, "metrics.jsonl"):
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(_finite_or_str(record), sort_keys=True) + "\n")
        for listener in self._listeners:
            listener(record)

    def truncate_after(self, global_step: int) -> None:
        """On resume, drop records newer than the checkpoint so the file reads as one run."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= global_step]
        # Atomic: a fault mid-rewrite must not lose the records of the run so far.
        text = "".join(json.dumps(_finite_or_str(r), sort_keys=True) + "\n" for r in kept)
        storage.atomic_write_text(self.path, text, "metrics.jsonl")


_NON_FINITE = {str(v): v for v in (math.nan, math.inf, -math.inf)}


def _str_to_non_finite(value: Any) -> Any:
    # The inverse of _finite_or_str, so readers (plots, the league) get numbers back, not "nan".
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _str_to_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_str_to_non_finite(v) for v in value]
    return value


def _finite_or_str(value: Any) -> Any:
    # JSON has no NaN/inf; keep them visible as strings rather than writing invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_or_str(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_str(v) for v in value]
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl, skipping a torn last line left by a crash."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(_str_to_non_finite(json.loads(line)))
        except json.JSONDecodeError:
            continue
    return records
